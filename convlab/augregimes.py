"""When does augmentation help? The same transforms in a model that overfits and in one that underfits.

AlexNet's augmentation fought overfitting: a big network, few images, many epochs. Whether a transform helps depends
on that set-up, so this study measures each geometric transform where the effect can show and where it cannot, on
Fashion-MNIST (10,000 test images: one image is 0.01 points) with a small CNN trained from scratch:

- **overfit**: 50 training images per class, a wide network (width 32) and a long budget; it fits its training set
  perfectly, and its test accuracy is far below its training accuracy.
- **underfit**: 500 images per class, a narrow network (width 16) and a short budget; its training accuracy stays
  below 1, so harder training data costs it more than it teaches.
- **size**: the random crop (and none) at larger training sets, to see the effect shrink as data grows.

Images are padded from 28 to 32 px (the *frame*); the network sees a 28 px window: the centre one, or a random one
for ``"crop"`` (a shift of up to 2 px). Every condition of a seed shares the training images, the initial weights
and the batch order, so ``acc(transform) - acc(none)`` per seed is a paired difference, and the verdict is
:func:`convlab.verdicts.paired_ci`'s. Each model is also tested on views that *have* a variation (shifted,
mirrored, rotated test images): a transform helps where the test data has the variation it adds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import TensorDataset

from convlab.plots import effect_bars
from convlab.studyrun import StudyResult, mean, run_jobs, same_but, scale_settings, stored_lines
from convlab.verdicts import PairedCI, paired_by_seed

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from convlab.data import Splits
    from convlab.engine import History

__all__ = [
    "FRAME",
    "SIZE",
    "CONDITIONS",
    "TEST_VIEWS",
    "Setting",
    "SCALES",
    "make_augment",
    "test_views",
    "train_run",
    "jobs",
    "KEY",
    "config",
    "compatible",
    "run",
    "RegimeStudy",
    "MATCHING_VIEW",
    "MEAN",
    "STD",
    "pad_frame",
    "train_model",
]

FRAME = 32  # images are padded to this
SIZE = 28  # the network's input window
#: Fashion-MNIST's pixel mean and standard deviation on ``[0, 1]`` (one channel): every network here sees
#: ``(x / 255 - MEAN) / STD``.
MEAN, STD = (0.2860,), (0.3530,)
_MEAN, _STD = MEAN[0] * 255, STD[0] * 255  # in uint8 units


def _transforms() -> dict[str, tuple[str, Callable[[torch.Generator], Callable | None]]]:
    from convlab import augment as aug

    return {
        "none": ("centre window only", lambda g: None),
        "mirror": ("RandomHorizontalFlip(p=0.5)", lambda g: aug.RandomHorizontalFlip(generator=g)),
        "crop": ("random 28 px window of the 32 px frame (shift <= 2 px)", lambda g: None),
        "rotation": ("RandomRotation(10)", lambda g: aug.RandomRotation(10, generator=g)),
        "shear": ("RandomShear(10)", lambda g: aug.RandomShear(10, generator=g)),
        "local warp": ("RandomElasticWarp(1.5, 8)", lambda g: aug.RandomElasticWarp(1.5, 8.0, generator=g)),
        "mirror + crop": ("mirror, then a random window", lambda g: aug.RandomHorizontalFlip(generator=g)),
    }


#: condition -> what it does. ``"mirror + crop"`` is the recommended combination (flip + translate).
CONDITIONS = {name: what for name, (what, _) in _transforms().items()}

#: Test views: the clean test set, and views that carry one variation each (drawn once with a fixed seed).
TEST_VIEWS = ("clean", "shifted", "mirrored", "rotated")


@dataclass(frozen=True)
class Setting:
    """One part of the study: ``per_class`` training images, a network of ``width``, ``epochs`` of training;
    ``seeds``: this part's seeds when they differ from the scale's."""

    name: str
    per_class: int
    width: int
    epochs: int
    conditions: tuple[str, ...]
    seeds: tuple[int, ...] | None = None


#: ``small``: what a notebook runs live (a few minutes on 2 cores); ``full``: the stored study.
SCALES: dict[str, dict[str, Any]] = {
    "small": {
        "seeds": (0, 1, 2),
        "test_per_class": 300,
        "view_per_class": 100,
        "settings": (
            Setting("overfit", 20, 16, 60, ("none", "mirror", "crop", "mirror + crop")),
            Setting("underfit", 100, 8, 10, ("none", "mirror", "crop", "mirror + crop")),
        ),
    },
    "full": {
        "seeds": (0, 1, 2, 3, 4),
        "test_per_class": 1000,
        "view_per_class": 200,
        "settings": (
            # Seeds per part sized for precision: the paired effects spread most in the overfitting parts, which
            # need these many seeds for every interval to fall under +-1 point; the other parts reach it with 5.
            Setting("overfit", 10, 32, 200, tuple(CONDITIONS), tuple(range(24))),
            Setting("overfit", 50, 32, 100, tuple(CONDITIONS), tuple(range(12))),
            Setting("underfit", 500, 16, 15, tuple(CONDITIONS)),
            Setting("size", 200, 32, 40, ("none", "crop")),
        ),
    },
}

_LR, _WD, _BATCH = 3e-3, 5e-4, 64

#: The fields that name one run in a stored study.
KEY = ("setting", "per_class", "width", "condition", "seed")


def pad_frame(x: torch.Tensor) -> torch.Tensor:
    """uint8 images ``(..., 28, 28)`` -> their frames ``(..., 32, 32)``: zero (black background) padding all round."""
    p = (FRAME - x.shape[-1]) // 2
    return torch.nn.functional.pad(x, (p, p, p, p))


def _centre(x: torch.Tensor) -> torch.Tensor:
    o = (x.shape[-1] - SIZE) // 2
    return x[..., o : o + SIZE, o : o + SIZE]


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x.float() - _MEAN) / _STD


def make_augment(
    name: str, generator: torch.Generator, mirror_crop: Callable | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 frames ``(B, 1, 32, 32)`` -> uint8 windows ``(B, 1, 28, 28)``: the condition's transform, drawn per
    sample from ``generator``, then the window (random for conditions with ``"crop"``, else the centre).

    ``mirror_crop(images, size, p, generator)`` (notebook 05's exercise) does ``"mirror + crop"`` instead of convlab's
    transforms; it draws as they do, so a correct one gives the same batches.
    """
    from convlab import augment as aug

    table = _transforms()
    if name not in table:
        raise ValueError(f"name: expected one of {list(table)}, got {name!r}")
    if name == "mirror + crop" and mirror_crop is not None:
        return lambda x: mirror_crop(x, (SIZE, SIZE), 0.5, generator)
    transform = table[name][1](generator)
    crop = aug.RandomCrop(SIZE, generator=generator) if "crop" in name else None

    def augment(x: torch.Tensor) -> torch.Tensor:
        if transform is not None:
            x = transform(x)
        return crop(x) if crop is not None else _centre(x)

    return augment


def test_views(images: torch.Tensor, per_class_views: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The clean test windows and the varied views: uint8 ``(N, 1, 28, 28)`` -> view name -> ``(M, 1, 28, 28)``.

    ``shifted``: a random window of the padded frame (up to 2 px); ``mirrored``: left-right flipped; ``rotated``:
    by an angle uniform in +-15 degrees. The varied views use the images at ``per_class_views`` (default all), drawn
    with a fixed generator, so every model is tested on the same pictures.
    """
    from convlab import augment as aug

    frames = pad_frame(images)
    sub = frames if per_class_views is None else frames[per_class_views]
    g = torch.Generator().manual_seed(12345)
    return {
        "clean": _centre(frames),
        "shifted": aug.RandomCrop(SIZE, generator=g)(sub),
        "mirrored": _centre(sub.flip(-1)),
        "rotated": _centre(aug.RandomRotation(15, generator=g)(sub)),
    }


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    from convlab.engine import evaluate

    return evaluate(model, TensorDataset(x, y), transform=_normalise, batch_size=500, channels_last=False).accuracy


def train_model(
    condition: str,
    width: int,
    epochs: int,
    seed: int,
    train: tuple[torch.Tensor, torch.Tensor],
    mirror_crop: Callable | None = None,
) -> tuple[torch.nn.Module, History]:
    """Train one :class:`~convlab.smallcnn.SmallCNN` (3 blocks of ``width``, ``2 width``, ``4 width`` channels, no
    dropout) from scratch for ``epochs`` on the CPU, with ``condition``'s augmentation drawn on the fly.

    ``train``: uint8 images ``(N, 1, 28, 28)`` and labels; they are padded to the 32 px frame and the network sees
    28 px windows (see :func:`make_augment`). ``seed`` fixes the initial weights and the batch order and, through a
    separate generator, the augmentation draws. AdamW with a one-cycle schedule. Returns the model (in eval mode)
    and its :class:`~convlab.engine.History` (``train_acc`` of each epoch, on the augmented windows).
    """
    from convlab.engine import fit
    from convlab.smallcnn import SmallCNN

    images, labels = train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(10, width, depth=3, dropout=0.0, in_channels=1)
    augment = make_augment(condition, torch.Generator().manual_seed(10_000 + seed), mirror_crop)
    history = fit(
        model,
        TensorDataset(pad_frame(images), labels),
        epochs=epochs,
        lr=_LR,
        weight_decay=_WD,
        batch_size=_BATCH,
        scheduler=lambda opt, steps: torch.optim.lr_scheduler.OneCycleLR(opt, _LR, total_steps=steps),
        transform=lambda x: _normalise(augment(x)),
        seed=seed,
        device="cpu",
        channels_last=False,
        progress=False,
    )
    return model.eval(), history


def train_run(
    condition: str,
    setting: Setting,
    seed: int,
    train: tuple[torch.Tensor, torch.Tensor],
    views: Mapping[str, torch.Tensor],
    view_labels: Mapping[str, torch.Tensor],
    mirror_crop: Callable | None = None,
) -> dict[str, Any]:
    """Train one network with ``condition`` (:func:`train_model`: the same initial weights and batch order for every
    condition of a ``seed``); return its row. The row holds the test accuracy on every view, the accuracy on the
    clean training images (``train_acc``) and on the augmented ones of the last epoch (``train_acc_augmented``).
    """
    images, labels = train
    t = time.perf_counter()
    model, history = train_model(condition, setting.width, setting.epochs, seed, train, mirror_crop)
    train_s = time.perf_counter() - t
    row: dict[str, Any] = {f"test_{v}": _accuracy(model, x, view_labels[v]) for v, x in views.items()}
    row.update(
        test_acc=row["test_clean"],
        train_acc=_accuracy(model, images, labels),
        train_acc_augmented=history.train_acc[-1],
        epochs=setting.epochs,
        steps=setting.epochs * -(-len(labels) // _BATCH),
        seconds=round(train_s, 2),
    )
    return row


def jobs(scale: str) -> list[dict[str, Any]]:
    """Every run of a scale as key dicts ``{setting, per_class, width, condition, seed}``: part by part, and in a
    part seed by seed (an interrupted study has whole seeds of the first parts)."""
    cfg = scale_settings(SCALES, scale)
    return [
        {"setting": s.name, "per_class": s.per_class, "width": s.width, "condition": c, "seed": seed}
        for s in cfg["settings"]
        for seed in (s.seeds or cfg["seeds"])
        for c in s.conditions
    ]


def config(scale: str) -> dict[str, Any]:
    """What determines a scale's results (stored beside them)."""
    cfg = scale_settings(SCALES, scale)
    return {
        "scale": scale,
        "seeds": list(cfg["seeds"]),
        "test_per_class": cfg["test_per_class"],
        "view_per_class": cfg["view_per_class"],
        "settings": [asdict(s) for s in cfg["settings"]],
        "lr": _LR,
        "weight_decay": _WD,
        "batch_size": _BATCH,
        "frame": FRAME,
        "size": SIZE,
    }


def compatible(old: Mapping[str, Any], new: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether stored ``rows`` made under config ``old`` stay valid under ``new``: everything but the parts is the
    same, and every part that has rows is in ``new`` unchanged but for its seeds (a study extended by, or cut to,
    other parts or seeds)."""
    import json

    old, new = json.loads(json.dumps(dict(old))), json.loads(json.dumps(dict(new)))  # tuples as lists, as stored
    for s in old.get("settings", []) + new.get("settings", []):
        s.pop("seeds", None)  # which seeds run does not change what a stored run means
    if not same_but(old, new, "settings"):
        return False
    used = {(r["setting"], r["per_class"]) for r in rows}
    kept = [s for s in old.get("settings", []) if (s["name"], s["per_class"]) in used]
    return all(s in new.get("settings", []) for s in kept)


def run(
    scale: str = "small", record=None, *, mirror_crop: Callable | None = None, progress: bool = True
) -> RegimeStudy:
    """Run (or finish) a scale's study. With a :class:`convlab.studyrun.StudyRecord` ``record`` each run is stored
    as it ends and runs already there are skipped; without one the rows live in memory only. ``mirror_crop``: see
    :func:`make_augment`."""
    from convlab.data import load_fashion_mnist

    cfg = scale_settings(SCALES, scale)
    settings = {(s.name, s.per_class): s for s in cfg["settings"]}
    data: dict[tuple[int, int], Splits] = {}
    test = load_fashion_mnist(train_per_class=10, val_per_class=1, test_per_class=cfg["test_per_class"], seed=0).test
    per_view = test.per_class(cfg["view_per_class"], seed=1)
    where = {i: j for j, i in enumerate(test.ids)}
    pick = torch.tensor([where[i] for i in per_view.ids])
    views = test_views(test.images, pick)
    view_labels = {v: (test.labels if v == "clean" else test.labels[pick]) for v in views}

    def one(job: Mapping[str, Any]) -> dict[str, Any]:
        key = (job["seed"], job["per_class"])
        if key not in data:
            data.clear()
            data[key] = load_fashion_mnist(train_per_class=job["per_class"], val_per_class=1, seed=job["seed"])
        sp = data[key]
        setting = settings[(job["setting"], job["per_class"])]
        train = (sp.train.images, sp.train.labels)
        return train_run(job["condition"], setting, job["seed"], train, views, view_labels, mirror_crop)

    rows = run_jobs(record, jobs(scale), one, progress=progress, desc="augmentation runs")
    return RegimeStudy.from_run(rows, config(scale), record)


@dataclass
class RegimeStudy(StudyResult):
    """The rows of :func:`run` (or of a stored JSON) and what they show."""

    def _by_seed(self, setting: str, per_class: int, condition: str, key: str = "test_acc") -> dict[int, float]:
        return {
            r["seed"]: r[key]
            for r in sorted(self.rows, key=lambda r: r["seed"])
            if r["setting"] == setting and r["per_class"] == per_class and r["condition"] == condition
        }

    def _acc(self, setting: str, per_class: int, condition: str, key: str = "test_acc") -> list[float]:
        return list(self._by_seed(setting, per_class, condition, key).values())

    def parts(self) -> list[tuple[str, int]]:
        """``(setting, per_class)`` of every part, in the order they ran."""
        return list(dict.fromkeys((r["setting"], r["per_class"]) for r in self.rows))

    def conditions(self, setting: str, per_class: int) -> list[str]:
        """The conditions a part has runs of, ``none`` included, in the order they ran."""
        return list(
            dict.fromkeys(r["condition"] for r in self.rows if (r["setting"], r["per_class"]) == (setting, per_class))
        )

    def effect(self, setting: str, per_class: int, condition: str, view: str = "clean") -> PairedCI:
        """The paired effect of ``condition`` against ``none`` on test ``view``, with its 95% interval, over the
        seeds both have."""
        key = "test_acc" if view == "clean" else f"test_{view}"
        new, base = self._by_seed(setting, per_class, condition, key), self._by_seed(setting, per_class, "none", key)
        return paired_by_seed(new, base, f"{condition} vs none ({setting}, {per_class}/class, {view} test)")

    def table(self, setting: str, per_class: int, view: str = "clean") -> list[dict]:
        """One row per condition: test and training accuracy (mean over seeds), effect and verdict."""
        out = []
        for c in self.conditions(setting, per_class):
            acc = self._acc(setting, per_class, c)
            row = {
                "condition": c,
                "test acc": f"{sum(acc) / len(acc):.4f}",
                "train acc": f"{mean(self._acc(setting, per_class, c, 'train_acc')):.4f}",
                "seeds": len(acc),
            }
            if c != "none" and len(acc) >= 2:
                ci = self.effect(setting, per_class, c, view)
                row.update(ci.columns())
            out.append(row)
        return out

    def claims(self) -> list[str]:
        """Sentences computed from the rows: each part's fit (training vs test accuracy), each effect with its 95%
        interval and verdict on the clean test set and on the view that has the transform's variation."""
        return _claims(self)

    def plot(self, view: str = "clean") -> Figure:
        """Effect of each condition against none, with its 95% interval, one panel per part of the study."""
        import matplotlib.pyplot as plt

        parts = self.parts()
        fig, axes = plt.subplots(1, len(parts), figsize=(3.3 * len(parts), 3.2), sharex=False, squeeze=False)
        for ax, (setting, n) in zip(axes[0], parts):
            conds = [c for c in self.conditions(setting, n) if c != "none"]
            cis = [self.effect(setting, n, c, view) for c in conds if len(self._acc(setting, n, c)) >= 2]
            effect_bars(ax, cis, [ci.label.split(" vs ")[0] for ci in cis])
            ax.set_title(f"{setting}: {n}/class", fontsize=9)
            ax.set_xlabel("effect vs none (points, 95% CI)", fontsize=8)
        fig.suptitle(f"augmentation effects on the {view} test set", fontsize=10)
        fig.tight_layout()
        return fig


#: condition -> the test view that carries the variation it adds
MATCHING_VIEW = {"mirror": "mirrored", "crop": "shifted", "rotation": "rotated", "mirror + crop": "shifted"}


def _claims(study: RegimeStudy) -> list[str]:
    lines = stored_lines(study.meta)
    settings = {(s["name"], s["per_class"]): s for s in study.config["settings"]}
    helped, not_helped = [], []
    for setting, n in study.parts():
        s = settings[(setting, n)]
        base_tr = mean(study._acc(setting, n, "none", "train_acc"))
        base_te = mean(study._acc(setting, n, "none"))
        seeds = len(study._acc(setting, n, "none"))
        lines.append(
            f"{setting}, {n}/class, width {s['width']}, {s['epochs']} epochs, {seeds} seeds: without augmentation "
            f"training accuracy {base_tr:.3f}, test {base_te:.3f} (gap {base_tr - base_te:+.3f})."
        )
        conds = [c for c in s["conditions"] if c != "none" and len(study._acc(setting, n, c)) >= 2]
        cis = [study.effect(setting, n, c) for c in conds]
        for c, ci in zip(conds, cis):
            lines.append(f"  {c}: {ci.summary()} -> {ci.verdict}")
        gains = [c for c, ci in zip(conds, cis) if ci.verdict == "better"]
        (helped if gains else not_helped).append(f"{setting} {n}/class" + (f" ({', '.join(gains)})" if gains else ""))
        for c in conds:
            v = MATCHING_VIEW.get(c)
            if v and f"test_{v}" in study.rows[0]:
                ci = study.effect(setting, n, c, v)
                lines.append(f"  {c} on the {v} test view: {ci.summary()} -> {ci.verdict}")
    if helped:
        lines.append("A transform helped beyond its interval in: " + "; ".join(helped) + ".")
    if not_helped:
        lines.append("No transform helped beyond its interval in: " + "; ".join(not_helped) + ".")
    return lines
