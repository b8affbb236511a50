"""When do ensembles and 10-crop help, and what do they cost? Measured where one point of accuracy can show.

Notebook 09's food test set has about a hundred photos: one photo is about one point of accuracy, so it cannot resolve
the one- or two-point gains that ensembles and 10-crop bring. This study measures them on Fashion-MNIST (10,000 test
images: one image is 0.01 points) with the small CNN of :mod:`convlab.augregimes`, trained from scratch (its
:func:`~convlab.augregimes.train_model`: the members differ in their initial weights, batch order and augmentation
draws, as independently trained networks do).

One run is one *replication* ``r`` (its seed draws the training images) of one *recipe*:

- ``"crop"``: :data:`MEMBERS` networks trained with random 28 px windows of the 32 px frame and mirroring (AlexNet's
  recipe), so the ten test crops are views of the kind they were trained on;
- ``"plain"``: networks trained on the centre window only (by default one per replication), for the claim that
  test-time views help only when they come from the training distribution.

Each member's logits on every test image are computed once for 12 views: the ten crops (four corners and the centre
of the frame, and the same of its mirror; :meth:`convlab.tta.ViewSet.ten_crop`) and the dense evaluation (the whole
32 px frame and its mirror through the globally pooled network; :func:`convlab.tta.dense_predict`). Every
configuration of :data:`CONFIGS` (``k`` models x some views) is then an average of softmax probabilities over the
chosen members and views, and costs ``k x views`` forward passes per image. "1 model" is the mean accuracy of every
single member; "k models" the mean over the ``M`` cyclic groups of ``k`` consecutive members.

The verdicts are :func:`convlab.verdicts.paired_ci`'s: one paired difference per replication (both configurations
scored with the same members on the same images), a 95% interval, "better" or "worse" only when it excludes zero.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from convlab.augregimes import FRAME, MEAN, SIZE, STD, pad_frame, train_model
from convlab.plots import effect_bars
from convlab.studyrun import StudyResult, mean, run_jobs, same_but, scale_settings, stored_lines
from convlab.tta import ViewSet, dense_predict, predict_views
from convlab.verdicts import PairedCI, paired_ci

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "RECIPES",
    "VIEWS",
    "CONFIGS",
    "MEMBERS",
    "SCALES",
    "KEY",
    "config",
    "compatible",
    "config_name",
    "forwards",
    "jobs",
    "view_logits",
    "combine",
    "config_accuracy",
    "run",
    "EnsembleStudy",
]

#: recipe -> (augregimes condition the members train with, what it does)
RECIPES: dict[str, tuple[str, str]] = {
    "crop": ("mirror + crop", "random 28 px window of the 32 px frame, mirrored half the time"),
    "plain": ("none", "centre window only"),
}

#: view set -> indices into a member's 12 views: 0-9 the ten crops (tl, tr, bl, br, centre, then the same five of the
#: mirrored frame), 10-11 the dense evaluation (the whole frame and its mirror).
VIEWS: dict[str, tuple[int, ...]] = {
    "1 crop": (4,),
    "2 crops": (4, 9),
    "5 crops": (0, 1, 2, 3, 4),
    "10 crops": tuple(range(10)),
    "dense": (10, 11),
}

#: (models, view set) of every configuration scored; its name is ``"k model(s) x views"``.
CONFIGS: tuple[tuple[int, str], ...] = (
    (1, "1 crop"),
    (1, "2 crops"),
    (1, "5 crops"),
    (1, "10 crops"),
    (1, "dense"),
    (2, "1 crop"),
    (3, "1 crop"),
    (5, "1 crop"),
    (5, "2 crops"),
    (5, "10 crops"),
    (5, "dense"),
)

#: Members per replication of the ``"crop"`` recipe.
MEMBERS = 5

KEY = ("recipe", "replication")

#: ``small``: seconds (the tests); ``full``: the stored study (under an hour on one CPU core). Width 12 and 60 epochs
#: keep the full scale within that budget: evaluating 12 views of 10,000 test images costs each member more than its
#: training on 500 images does.
SCALES: dict[str, dict[str, Any]] = {
    "small": {
        "replications": (0, 1),
        "per_class": 5,
        "width": 4,
        "epochs": 2,
        "members": MEMBERS,
        "plain_members": 1,
        "test_per_class": 20,
    },
    "full": {
        "replications": tuple(range(8)),
        "per_class": 50,
        "width": 12,
        "epochs": 60,
        "members": MEMBERS,
        "plain_members": 1,
        "test_per_class": 1000,
    },
}


def config_name(models: int, views: str) -> str:
    """``"1 model x 10 crops"``, ``"5 models x dense"``."""
    return f"{models} model{'' if models == 1 else 's'} x {views}"


def forwards(models: int, views: str) -> int:
    """Forward passes per test image of a configuration: models x views (dense: the frame and its mirror)."""
    return models * len(VIEWS[views])


def config(scale: str) -> dict[str, Any]:
    """What determines a scale's results (stored beside them)."""
    cfg = scale_settings(SCALES, scale)
    return {
        "scale": scale,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "recipes": {k: list(v) for k, v in RECIPES.items()},
        "configs": [config_name(*c) for c in CONFIGS],
        "frame": FRAME,
        "size": SIZE,
        "data": "Fashion-MNIST: training images drawn by the replication's seed, the official test images",
    }


def compatible(old: Mapping[str, Any], new: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether stored ``rows`` made under config ``old`` stay valid under ``new``: everything but the list of
    replications is the same (a study extended by, or cut to, other replications keeps the runs it has)."""
    return same_but(old, new, "replications")


def jobs(scale: str) -> list[dict[str, Any]]:
    """Every run of a scale as key dicts ``{recipe, replication}``, replication by replication (an interrupted study
    has whole replications)."""
    return [{"recipe": rc, "replication": r} for r in scale_settings(SCALES, scale)["replications"] for rc in RECIPES]


@torch.no_grad()
def view_logits(model: torch.nn.Module, frames: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """A member's logits on every view of :data:`VIEWS`: uint8 frames ``(N, 1, 32, 32)`` -> ``(N, 12, K)``."""
    # channels_last: twice as fast as the default layout for this network on one CPU thread (measured)
    kw = {"mean": MEAN, "std": STD, "chunk_size": chunk, "channels_last": True, "average": "none"}
    crops = predict_views(model, frames, ViewSet.ten_crop(SIZE), **kw)
    dense = dense_predict(model, frames, None, **kw)
    return torch.cat([crops, dense], dim=1)


def combine(logits: torch.Tensor, members: Sequence[int], views: Sequence[int]) -> torch.Tensor:
    """The mean softmax over ``members`` and ``views`` of logits ``(M, N, V, K)`` -> probabilities ``(N, K)``."""
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        raise ValueError(f"logits: expected an (M, N, V, K) tensor, got {getattr(logits, 'shape', type(logits))}")
    return logits[list(members)][:, :, list(views)].softmax(-1).mean(dim=(0, 2))


def config_accuracy(logits: torch.Tensor, labels: torch.Tensor, models: int, views: str) -> float:
    """Accuracy of ``models`` members on view set ``views`` (a key of :data:`VIEWS`): the mean over the ``M``
    cyclic groups of ``models`` consecutive members (one group when ``models`` is ``M``)."""
    M = logits.shape[0]
    if not 1 <= models <= M:
        raise ValueError(f"models: expected 1 to {M} members, got {models!r}")
    starts = range(M) if models < M else range(1)
    accs = [
        (combine(logits, [(j + i) % M for i in range(models)], VIEWS[views]).argmax(-1) == labels).float().mean()
        for j in starts
    ]
    return float(torch.stack(accs).mean())


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


def _replication(
    recipe: str, r: int, cfg: Mapping[str, Any], test: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, Any]:
    from convlab.data import load_fashion_mnist

    t0 = time.perf_counter()
    sp = load_fashion_mnist(train_per_class=cfg["per_class"], val_per_class=1, seed=r)
    train = (sp.train.images, sp.train.labels)
    train_frames = pad_frame(sp.train.images)
    test_frames, test_labels = test
    n = cfg["members"] if recipe == "crop" else cfg["plain_members"]
    logits, members = [], []
    for j in range(n):
        seed = 100 * r + j
        t = time.perf_counter()
        model, history = train_model(RECIPES[recipe][0], cfg["width"], cfg["epochs"], seed, train)
        train_s = time.perf_counter() - t
        member = view_logits(model, test_frames)
        train_centre = predict_views(
            model, train_frames, ViewSet.center(SIZE), mean=MEAN, std=STD, chunk_size=500, channels_last=True
        )
        members.append(
            {
                "seed": seed,
                "train_acc": _accuracy(train_centre, sp.train.labels),
                "train_acc_augmented": history.train_acc[-1],
                "test_acc": _accuracy(member[:, VIEWS["1 crop"][0]], test_labels),
                "test_acc_10_crops": _accuracy(member[:, : len(VIEWS["10 crops"])].softmax(-1).mean(1), test_labels),
                "test_acc_dense": _accuracy(member[:, 10:].softmax(-1).mean(1), test_labels),
                "epochs": cfg["epochs"],
                "steps": cfg["epochs"] * -(-len(sp.train.labels) // 64),
                "seconds": round(train_s, 2),
            }
        )
        logits.append(member)
    stacked = torch.stack(logits)
    acc = {config_name(k, v): config_accuracy(stacked, test_labels, k, v) for k, v in CONFIGS if k <= n}
    return {
        "per_class": cfg["per_class"],
        "width": cfg["width"],
        "members": members,
        "acc": acc,
        "forwards": {config_name(k, v): forwards(k, v) for k, v in CONFIGS if k <= n},
        "test_images": len(test_labels),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def run(scale: str = "small", record=None, *, progress: bool = True) -> EnsembleStudy:
    """Run (or finish) a scale's study. With a :class:`convlab.studyrun.StudyRecord` ``record`` each run is stored
    as it ends and runs already there are skipped; without one the rows live in memory only."""
    from convlab.data import load_fashion_mnist

    cfg = scale_settings(SCALES, scale)
    test = load_fashion_mnist(train_per_class=10, val_per_class=1, test_per_class=cfg["test_per_class"], seed=0).test
    frames = (pad_frame(test.images), test.labels)

    def one(job: Mapping[str, Any]) -> dict[str, Any]:
        return _replication(job["recipe"], job["replication"], cfg, frames)

    rows = run_jobs(record, jobs(scale), one, progress=progress, desc="ensemble runs")
    return EnsembleStudy.from_run(rows, config(scale), record)


@dataclass
class EnsembleStudy(StudyResult):
    """The rows of :func:`run` (or of a stored JSON) and what they show."""

    def _rows(self, recipe: str) -> list[dict]:
        return sorted((r for r in self.rows if r["recipe"] == recipe), key=lambda r: r["replication"])

    def replications(self, recipe: str = "crop") -> list[int]:
        """The replications stored for ``recipe``."""
        return [r["replication"] for r in self._rows(recipe)]

    def accs(self, name: str, recipe: str = "crop") -> list[float]:
        """Test accuracy of configuration ``name`` (e.g. ``"1 model x 10 crops"``), one per replication."""
        return [r["acc"][name] for r in self._rows(recipe) if name in r["acc"]]

    def _paired(self, new: str, base: str, recipe: str, label: str | None = None) -> PairedCI:
        rows = [r for r in self._rows(recipe) if new in r["acc"] and base in r["acc"]]
        return paired_ci(
            [r["acc"][new] for r in rows], [r["acc"][base] for r in rows], label or f"{new} vs {base} ({recipe})"
        )

    def effect(self, new: str, base: str = "1 model x 1 crop", recipe: str = "crop") -> PairedCI:
        """Accuracy of configuration ``new`` minus ``base`` (the same members, the same test images), paired over
        replications, with its 95% interval."""
        return self._paired(new, base, recipe)

    def trained_distribution(self, views: str = "10 crops") -> PairedCI:
        """``views``' gain over the centre crop for crop-trained members minus the same gain for plain-trained
        ones, paired over replications: do test-time views help more when training saw views of their kind?"""
        crop = {r["replication"]: r for r in self._rows("crop")}
        plain = {r["replication"]: r for r in self._rows("plain")}
        both = sorted(set(crop) & set(plain))
        name, centre = config_name(1, views), config_name(1, "1 crop")
        return paired_ci(
            [crop[r]["acc"][name] - crop[r]["acc"][centre] for r in both],
            [plain[r]["acc"][name] - plain[r]["acc"][centre] for r in both],
            f"{views}' gain: crop-trained minus plain-trained members",
        )

    def crop_training(self) -> PairedCI:
        """A crop-trained member against a plain-trained one, both on the centre crop, paired over replications."""
        crop = {r["replication"]: r for r in self._rows("crop")}
        plain = {r["replication"]: r for r in self._rows("plain")}
        both = sorted(set(crop) & set(plain))
        name = config_name(1, "1 crop")
        return paired_ci(
            [crop[r]["acc"][name] for r in both],
            [plain[r]["acc"][name] for r in both],
            "crop-trained vs plain-trained member, centre crop",
        )

    def comparisons(self) -> list[PairedCI]:
        """The study's verdicts: ensemble gain, more views, ensembles vs crops at equal forward passes, dense
        evaluation against 10 crops, crops on top of an ensemble, and views against the training distribution."""
        one = config_name(1, "1 crop")
        pairs = [
            ("2 models x 1 crop", one),
            ("3 models x 1 crop", one),
            ("5 models x 1 crop", one),
            ("1 model x 2 crops", one),
            ("1 model x 5 crops", one),
            ("1 model x 10 crops", one),
            ("2 models x 1 crop", "1 model x 2 crops"),
            ("5 models x 1 crop", "1 model x 5 crops"),
            ("5 models x 2 crops", "1 model x 10 crops"),
            ("1 model x dense", "1 model x 10 crops"),
            ("1 model x dense", one),
            ("5 models x 10 crops", "5 models x 1 crop"),
        ]
        out = [self.effect(a, b) for a, b in pairs]
        if len(self._rows("plain")) >= 2:
            out += [
                self._paired("1 model x 10 crops", one, "plain"),
                self.trained_distribution(),
                self.crop_training(),
            ]
        return out

    def table(self, recipe: str = "crop") -> list[dict]:
        """One row per configuration: test accuracy (mean over replications), forward passes and training runs per
        model, and the paired gain over one model on the centre crop with its interval and verdict."""
        one = config_name(1, "1 crop")
        out = []
        for k, v in CONFIGS:
            name = config_name(k, v)
            acc = self.accs(name, recipe)
            if not acc:
                continue
            row = {
                "configuration": name,
                "test acc": f"{mean(acc):.4f}",
                "forwards / image": forwards(k, v),
                "training runs": k,
                "replications": len(acc),
            }
            if name != one and len(acc) >= 2:
                ci = self.effect(name, one, recipe)
                row.update(ci.columns("gain"))
            out.append(row)
        return out

    def fit_table(self) -> list[dict]:
        """How the members fitted, per recipe: training accuracy on the clean and the augmented training images and
        test accuracy (centre crop), means over every member of every replication."""
        out = []
        for recipe in RECIPES:
            ms = [m for r in self._rows(recipe) for m in r["members"]]
            if not ms:
                continue
            out.append(
                {
                    "recipe": recipe,
                    "training": RECIPES[recipe][1],
                    "members": len(ms),
                    "epochs": ms[0]["epochs"],
                    "train acc (clean)": f"{mean([m['train_acc'] for m in ms]):.4f}",
                    "train acc (augmented, last epoch)": f"{mean([m['train_acc_augmented'] for m in ms]):.4f}",
                    "test acc (centre crop)": f"{mean([m['test_acc'] for m in ms]):.4f}",
                }
            )
        return out

    def claims(self) -> list[str]:
        """Sentences computed from the rows: how the members fitted, each verdict with its interval, and when
        ensembles and crops help for their cost."""
        return _claims(self)

    def plot(self) -> Figure:
        """Left: accuracy against forward passes per image (mean over replications). Right: the paired effects with
        their 95% intervals."""
        import matplotlib.pyplot as plt

        fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.25]})
        families = {
            "1 model, more crops": [(1, v) for v in ("1 crop", "2 crops", "5 crops", "10 crops")],
            "more models, 1 crop": [(k, "1 crop") for k in (1, 2, 3, 5)],
            "5 models, more crops": [(5, v) for v in ("1 crop", "2 crops", "10 crops")],
        }
        for i, (label, configs) in enumerate(families.items()):
            pts = [(forwards(k, v), mean(self.accs(config_name(k, v)))) for k, v in configs]
            pts = [(f, a) for f, a in pts if a == a]
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", color=f"C{i}", label=label)
        for k, marker in ((1, "s"), (5, "D")):
            a = self.accs(config_name(k, "dense"))
            if a:
                ax.plot(
                    forwards(k, "dense"), 100 * mean(a), marker, color="C3", label=f"{k} model{'s' * (k > 1)}, dense"
                )
        plain = self.accs(config_name(1, "10 crops"), "plain")
        if plain:
            xs = [forwards(1, v) for v in ("1 crop", "2 crops", "5 crops", "10 crops")]
            ys = [
                100 * mean(self.accs(config_name(1, v), "plain")) for v in ("1 crop", "2 crops", "5 crops", "10 crops")
            ]
            ax.plot(xs, ys, "x--", color="0.4", label="1 plain-trained model, more crops")
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 3, 5, 10, 50], ["1", "2", "3", "5", "10", "50"])
        ax.set_xlabel("forward passes per test image")
        ax.set_ylabel("test accuracy (%), mean over replications")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        cis = self.comparisons()
        effect_bars(bx, cis, [ci.label.replace(" (crop)", "") for ci in cis], fontsize=7)
        bx.set_xlabel("paired difference (points, 95% CI over replications)")
        n = len(self.replications())
        fig.suptitle(
            f"ensembles and crops on Fashion-MNIST ({self.rows[0]['test_images']} test images, {n} replications)",
            fontsize=10,
        )
        fig.tight_layout()
        return fig


def _claims(study: EnsembleStudy) -> list[str]:
    lines = stored_lines(study.meta)
    cfg = study.config
    n_img = study.rows[0]["test_images"] if study.rows else 0
    for row in study.fit_table():
        lines.append(
            f"{row['recipe']}-trained members ({row['training']}; {cfg['per_class']} images per class, width "
            f"{cfg['width']}, {row['epochs']} epochs, {row['members']} members): training accuracy "
            f"{row['train acc (clean)']} on the clean images, test {row['test acc (centre crop)']} on {n_img} images."
        )
    one = config_name(1, "1 crop")
    for ci in study.comparisons():
        lines.append(f"  {ci.label}: {ci.summary()} -> {ci.verdict}")
    # when each helps, and what it costs
    ens = study.effect("5 models x 1 crop", one)
    ten = study.effect("1 model x 10 crops", one)
    lines.append(
        f"Cost for gain: 5 models cost 5 training runs and 5 forward passes per image for {ens.mean * 100:+.2f} "
        f"points ({ens.verdict}); 10 crops cost 1 training run and 10 forward passes for {ten.mean * 100:+.2f} points "
        f"({ten.verdict}); per forward pass beyond the first that is {ens.mean * 100 / 4:+.2f} and "
        f"{ten.mean * 100 / 9:+.2f} points."
    )
    for new, base in (("2 models x 1 crop", "1 model x 2 crops"), ("5 models x 1 crop", "1 model x 5 crops")):
        ci = study.effect(new, base)
        said = {"better": "the models win", "worse": "the crops win", "tie": "a tie"}[ci.verdict]
        lines.append(f"At {forwards(*_parse(new))} forward passes per image, {new} vs {base}: {said} ({ci.summary()}).")
    dense = study.effect("1 model x dense", "1 model x 10 crops")
    said = {"better": "beats", "worse": "falls short of", "tie": "ties with"}[dense.verdict]
    lines.append(
        f"Dense evaluation (2 forward passes of the 32 px frame, {2 * FRAME**2 / SIZE**2:.2f} crops' worth of pixels) "
        f"{said} 10 crops ({dense.summary()})."
    )
    if len(study._rows("plain")) >= 2:
        plain = study._paired("1 model x 10 crops", one, "plain")
        diff = study.trained_distribution()
        said = {
            "better": "help more when the members were trained on views of their kind",
            "worse": "help less when the members were trained on views of their kind",
            "tie": "help about as much either way (a tie)",
        }[diff.verdict]
        lines.append(
            f"10 crops on plain-trained members (centre windows only): {plain.summary()} -> {plain.verdict}; on "
            f"crop-trained members {ten.summary()}. Test-time views {said}: difference {diff.summary()}."
        )
    return lines


def _parse(name: str) -> tuple[int, str]:
    k, views = name.split(" x ", 1)
    return int(k.split()[0]), views
