"""Where colour augmentation matters: test photos under another light than the training photos.

On test photos taken under the same light as the training photos, a colour augmentation adds variation the test
data does not have, and its effect is small. Under another illumination it is the variation the model must survive.
This study trains the food-photo CNN of :mod:`convlab.augstudy` with no colour augmentation, with a random colour
shift and with AlexNet's PCA colour, and tests every model on the clean test photos and on the same photos under two
stated colour casts (:data:`CASTS`: a warm and a cool white balance, as uint8 offsets per R, G, B). The verdicts are
:func:`convlab.verdicts.paired_ci`'s: paired over seeds, 95% intervals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from convlab.augstudy import StudyConfig, centre_accuracy, frames, resplit, train_model
from convlab.studyrun import StudyResult, mean, run_jobs, scale_settings, stored_lines
from convlab.verdicts import PairedCI, paired_by_seed

__all__ = ["CASTS", "CONDITIONS", "SCALES", "KEY", "apply_cast", "config", "run", "ColourStudy"]

#: name -> offsets added to R, G, B (uint8 units, clamped to 0..255): a warm and a cool light.
CASTS: dict[str, tuple[int, int, int]] = {"warm": (28, 4, -28), "cool": (-28, 0, 28)}
CONDITIONS = ("none", "colour shift", "PCA colour")
KEY = ("condition", "seed")

#: ``small``: a notebook's live run; ``full``: the stored study (10 seeds).
SCALES: dict[str, dict[str, Any]] = {
    "small": {"seeds": (0, 1, 2)},
    "full": {"seeds": tuple(range(10))},
}


def apply_cast(images: torch.Tensor, cast: tuple[int, int, int]) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` -> the same under a colour cast: ``clamp(x + offset[c], 0, 255)`` per channel."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    off = torch.tensor(cast, dtype=torch.int16).view(1, 3, 1, 1)
    return (images.to(torch.int16) + off).clamp_(0, 255).to(torch.uint8)


def _study_config(scale: str) -> StudyConfig:
    return StudyConfig(seeds=scale_settings(SCALES, scale)["seeds"])


def config(scale: str) -> dict[str, Any]:
    """What determines a scale's results."""
    cfg = asdict(_study_config(scale))
    return {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "casts": {k: list(v) for k, v in CASTS.items()},
        "conditions": list(CONDITIONS),
        "data": "food photos, groups E, D, P",
    }


def run(
    scale: str = "small", record=None, *, progress: bool = True, color_shift: Callable | None = None
) -> ColourStudy:
    """Train every condition for every seed of ``scale``; with a :class:`convlab.studyrun.StudyRecord` each run
    is stored as it ends and runs already there are skipped. ``color_shift(images, magnitude, generator)``
    (notebook 06's exercise) draws the ``"colour shift"`` condition (see :func:`convlab.augstudy.make_augment`);
    a stored study (``record``) runs convlab's own transforms only."""
    from convlab.data import load_food

    if color_shift is not None and record is not None:
        raise ValueError("color_shift: a stored study runs convlab's own transforms; expected None with a record")

    cfg = _study_config(scale)
    base = load_food()
    jobs = [{"condition": c, "seed": s} for s in cfg.seeds for c in CONDITIONS]
    cache: dict[int, tuple] = {}

    def one(job: Mapping[str, Any]) -> dict[str, Any]:
        seed = job["seed"]
        if seed not in cache:
            cache.clear()
            sp = resplit(base, seed, (1 - cfg.test_fraction, 0.0, cfg.test_fraction))
            tr, te = frames(sp.train.images, cfg.frame), frames(sp.test.images, cfg.frame)
            cache[seed] = (tr, sp.train.labels, te, sp.test.labels, len(base.classes))
        tr, ytr, te, yte, k = cache[seed]
        model = train_model(job["condition"], tr, ytr, k, seed, cfg, color_shift=color_shift)
        row = {"test_clean": centre_accuracy(model, te, yte, cfg)}
        for name, cast in CASTS.items():
            row[f"test_{name}"] = centre_accuracy(model, apply_cast(te, cast), yte, cfg)
        row["test_cast"] = sum(row[f"test_{n}"] for n in CASTS) / len(CASTS)
        row.update(train_acc=centre_accuracy(model, tr, ytr, cfg), test_images=len(yte), train_images=len(ytr))
        return row

    rows = run_jobs(record, jobs, one, progress=progress, desc="colour runs")
    return ColourStudy.from_run(rows, config(scale), record)


@dataclass
class ColourStudy(StudyResult):
    """Rows of :func:`run` (or a stored JSON): test accuracy on clean and colour-cast photos, per condition and seed."""

    def _by_seed(self, condition: str, test: str) -> dict[int, float]:
        return {r["seed"]: r[f"test_{test}"] for r in self.rows if r["condition"] == condition}

    def accs(self, condition: str, test: str = "cast") -> list[float]:
        """``test_<test>`` of ``condition`` in seed order."""
        by_seed = self._by_seed(condition, test)
        return [by_seed[s] for s in sorted(by_seed)]

    def effect(self, condition: str, test: str = "cast") -> PairedCI:
        """``condition`` minus ``none`` on test set ``test`` (``clean``, ``cast``, or a cast's name), paired by seed."""
        new, base = self._by_seed(condition, test), self._by_seed("none", test)
        return paired_by_seed(new, base, f"{condition} vs none ({test} test)")

    def claims(self) -> list[str]:
        """Sentences computed from the rows: each colour transform's effect on clean and colour-cast photos, with
        its 95% interval and verdict (and, for a stored study, when, where and how it ran)."""
        lines = stored_lines(self.meta)
        n = len(self.accs("none"))
        r0 = self.rows[0]
        lines.append(
            f"{n} seeds; each seed: {r0['train_images']} training and {r0['test_images']} test photos (one test photo "
            f"= {100 / r0['test_images']:.1f} points); casts {', '.join(f'{k} {v}' for k, v in CASTS.items())}."
        )
        lines.append(
            f"none: clean test {mean(self.accs('none', 'clean')):.3f}, under the casts {mean(self.accs('none')):.3f}"
        )
        for c in CONDITIONS[1:]:
            if len(self.accs(c)) >= 2:
                lines += [str(self.effect(c, "clean")), str(self.effect(c, "cast"))]
        return lines

    def table(self) -> list[dict]:
        """Per condition: mean accuracy on clean and cast photos, training accuracy, and the effects with intervals."""
        out = []
        for c in CONDITIONS:
            if not self.accs(c):
                continue
            row = {
                "condition": c,
                "train acc": round(mean(r["train_acc"] for r in self.rows if r["condition"] == c), 3),
                "clean test": round(mean(self.accs(c, "clean")), 3),
                "cast test": round(mean(self.accs(c, "cast")), 3),
            }
            if c != "none" and len(self.accs(c)) >= 2:
                for test in ("clean", "cast"):
                    e = self.effect(c, test)
                    row[f"effect on {test} (points)"] = e.estimate(1)
                    row[f"{test} verdict"] = e.verdict
            out.append(row)
        return out
