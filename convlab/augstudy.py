"""What does each augmentation do on its own? Train from scratch, augment on the fly, repeat over seeds.

Where augmentation matters is where the layers that learn see the pixels and the training set is small: here a
small CNN trained **from scratch** on the food photos (about 140 training photos, 3 classes) at a small input size
(32 x 56 px by default, so a whole study fits a 2-core CPU). The set-up, per condition and seed:

1. Split the photos with the seed (:func:`resplit`, stratified; 60 % train, 40 % test, no validation set: nothing
   is tuned on the test set, every condition uses the same fixed recipe).
2. Resize every photo once to a *frame* a little larger than the network input (36 x 64), keeping its aspect.
3. Train the CNN for ``epochs`` epochs. Every batch is augmented **on the fly**, a fresh draw per image per epoch,
   with convlab's batched per-sample transforms (:mod:`convlab.augment`), whose random draws come from one
   ``torch.Generator`` seeded with the seed. Then the input is cut from the frame: at random for ``"crop"``, else
   at the centre (the eval view).
4. Test on the clean centre views of the test photos.

Every condition of a seed shares the split, the initial weights and the batch order, so the *effect* of a
transform is the paired difference ``acc(transform) - acc(none)`` per seed: its mean and standard deviation over
seeds are what :class:`TransformStudy` reports, with the course's one verdict rule per transform
(:func:`convlab.verdicts.paired_ci`: "better" or "worse" when the 95% interval of the mean effect excludes zero,
else a tie).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import TensorDataset

from convlab.data import ImageSet, Splits
from convlab.data import stratified_split as _stratified_split
from convlab.device import resolve_device
from convlab.engine import evaluate, fit
from convlab.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize
from convlab.smallcnn import SmallCNN
from convlab.studyrun import read_study, stored_lines
from convlab.verdicts import format_interval, paired_ci

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "StudyConfig",
    "CONFIGS",
    "TRANSFORMS",
    "GEOMETRY",
    "COLOUR",
    "RECOMMENDED",
    "resplit",
    "make_augment",
    "train_model",
    "centre_accuracy",
    "train_once",
    "frames",
    "Run",
    "TransformRow",
    "TransformStudy",
    "transform_study",
    "LITERATURE",
]


# ----------------------------------------------------------------------------------------------- data
def _pool(splits: Splits) -> ImageSet:
    """train + val + test of ``splits`` as one ImageSet ordered by image id."""
    sets = (splits.train, splits.val, splits.test)
    ids = [i for s in sets for i in s.ids]
    if len(set(ids)) != len(ids):
        raise ValueError("splits: image ids must be unique across train/val/test to re-split them")
    items = sorted(((s.ids[j], s.images[j], int(s.labels[j])) for s in sets for j in range(len(s))), key=lambda t: t[0])
    return ImageSet([im for _, im, _ in items], [y for _, _, y in items], splits.classes, [i for i, _, _ in items])


def resplit(splits: Splits, seed: int, fractions: Sequence[float] = (0.6, 0.2, 0.2)) -> Splits:
    """The images of ``splits`` (train + val + test) split again, per class, with another ``seed``.

    The pool is ordered by image id, so for :func:`convlab.load_food` (ids are the file names) the result equals
    ``load_food(seed=seed, fractions=fractions)``, without decoding and de-duplicating the photos again.
    """
    pool = _pool(splits)
    train, val, test = (pool.subset(idx) for idx in _stratified_split(pool.labels, fractions, seed))
    return Splits(train, val, test, splits.classes, seed, {**splits.info, "resplit_from": splits.seed})


@dataclass(frozen=True)
class StudyConfig:
    """One scale of the study. ``frame`` is what photos are resized to; ``size`` the network input cut from it."""

    frame: tuple[int, int] = (36, 64)
    size: tuple[int, int] = (32, 56)
    width: int = 12
    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 1e-3
    batch_size: int = 32
    test_fraction: float = 0.4
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        if self.size[0] > self.frame[0] or self.size[1] > self.frame[1]:
            raise ValueError(f"size: expected at most the frame {self.frame}, got {self.size}")
        if len(self.seeds) < 2:
            raise ValueError(f"seeds: expected at least 2 seeds to measure a spread, got {self.seeds}")


#: ``"small"``: the notebooks' default (about 1-2 s per training run on one core); ``"full"``: more epochs, a larger
#: input and 5 seeds (about 10x longer: a patient CPU or a GPU).
CONFIGS = {
    "small": StudyConfig(),
    "full": StudyConfig(frame=(54, 96), size=(48, 84), width=16, epochs=60, seeds=(0, 1, 2, 3, 4)),
}


def frames(images: Sequence[torch.Tensor], frame: tuple[int, int]) -> torch.Tensor:
    """uint8 photos of any sizes -> one uint8 batch ``(N, 3, *frame)``, each resized (antialiased) to ``frame``."""
    from torchvision.transforms.v2 import functional as TF

    return torch.stack([TF.resize(im, list(frame), antialias=True) for im in images])


def _centre(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


# ----------------------------------------------------------------------------------------------- transforms
def _pca(generator: torch.Generator, train: torch.Tensor):
    from convlab.augment import PCAColor

    return PCAColor(0.1, generator=generator).fit(train)


#: name -> (what it does, factory(generator, training frames) -> uint8 batch transform). The "crop" is applied by
#: the study itself (a random instead of the centre window), so its factory returns None.
TRANSFORMS: dict[str, tuple[str, Callable]] = {}


def _register() -> None:
    from convlab import augment as aug

    TRANSFORMS.update(
        {
            "none": ("centre view only", lambda g, tr: None),
            "mirror": ("RandomHorizontalFlip(p=0.5)", lambda g, tr: aug.RandomHorizontalFlip(generator=g)),
            "crop": ("RandomCrop: window at a random position of the frame", lambda g, tr: None),
            "rotation": ("RandomRotation(10, fill=255)", lambda g, tr: aug.RandomRotation(10, fill=255, generator=g)),
            "shear": ("RandomShear(10, fill=255)", lambda g, tr: aug.RandomShear(10, fill=255, generator=g)),
            "local warp": (
                "RandomElasticWarp(2, 8, fill=255)",
                lambda g, tr: aug.RandomElasticWarp(2.0, 8.0, fill=255, generator=g),
            ),
            "colour shift": ("RandomColorShift(0.1)", lambda g, tr: aug.RandomColorShift(0.1, generator=g)),
            "PCA colour": ("PCAColor(0.1) fitted on the training frames", lambda g, tr: _pca(g, tr)),
            "mirror + crop + PCA colour": (
                "AlexNet's recipe",
                lambda g, tr: _compose(aug.RandomHorizontalFlip(generator=g), _pca(g, tr)),
            ),
        }
    )


def _compose(*ts):
    from torchvision.transforms import v2

    return v2.Compose(list(ts))


_register()
GEOMETRY = ("none", "mirror", "crop", "rotation", "shear", "local warp")
COLOUR = ("none", "colour shift", "PCA colour", "mirror + crop + PCA colour")
RECOMMENDED = "mirror + crop + PCA colour"


def make_augment(
    name: str,
    generator: torch.Generator,
    train_frames: torch.Tensor,
    size: tuple[int, int],
    color_shift: Callable | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 frames ``(B, 3, H, W)`` -> uint8 network inputs ``(B, 3, *size)``: transform ``name``, then the window.

    The window is random (drawn from ``generator``) for names containing ``"crop"``, else the centre one.
    ``color_shift(images, magnitude, generator)`` (notebook 06's exercise) does ``"colour shift"`` instead of
    convlab's ``RandomColorShift(0.1)``; it draws as that does, so a correct one gives the same batches.
    """
    from convlab import augment as aug

    if name not in TRANSFORMS:
        raise ValueError(f"name: expected one of {list(TRANSFORMS)}, got {name!r}")
    if name == "colour shift" and color_shift is not None:
        transform = lambda x: color_shift(x, 0.1, generator)  # noqa: E731
    else:
        transform = TRANSFORMS[name][1](generator, train_frames)
    crop = aug.RandomCrop(size, generator=generator) if "crop" in name else None

    def augment(x: torch.Tensor) -> torch.Tensor:
        if transform is not None:
            x = transform(x)
        return crop(x) if crop is not None else _centre(x, size)

    return augment


# ----------------------------------------------------------------------------------------------- training
def _normalise(x: torch.Tensor) -> torch.Tensor:
    return normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def train_model(
    name: str,
    train_frames: torch.Tensor,
    train_labels: torch.Tensor,
    num_classes: int,
    seed: int,
    config: StudyConfig,
    device: str | torch.device = "cpu",
    color_shift: Callable | None = None,
) -> torch.nn.Module:
    """Train a 3-block :class:`~convlab.smallcnn.SmallCNN` from scratch with augmentation ``name`` on the fly.

    ``seed`` fixes the initial weights and the batch order (the same for every ``name``) and, through a separate
    generator, the augmentation draws (on the CPU). AdamW with a one-cycle learning-rate schedule, trained by
    :func:`convlab.engine.fit` on ``device``. Returns the model in eval mode. ``color_shift``: see
    :func:`make_augment`.
    """
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(num_classes, config.width, depth=3, dropout=0.0, conv_bias=True)
    augment = make_augment(name, torch.Generator().manual_seed(10_000 + seed), train_frames, config.size, color_shift)
    fit(
        model,
        TensorDataset(train_frames, train_labels),
        epochs=config.epochs,
        lr=config.lr,
        weight_decay=config.weight_decay,
        batch_size=config.batch_size,
        scheduler=lambda opt, steps: torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=steps),
        transform=lambda x: _normalise(augment(x)),
        seed=seed,
        device=dev,
        channels_last=False,
        progress=False,
    )
    return model.eval()


def centre_accuracy(
    model: torch.nn.Module,
    frames: torch.Tensor,
    labels: torch.Tensor,
    config: StudyConfig,
    device: str | torch.device = "cpu",
) -> float:
    """Accuracy of ``model`` on the centre views of uint8 ``frames`` ``(N, 3, H, W)``, in one batch (a batch size
    changes the last bits of the logits, so the study always evaluates in one)."""
    test = TensorDataset(_centre(frames, config.size), labels)
    dev = resolve_device(device)
    return evaluate(model, test, transform=_normalise, batch_size=len(test), device=dev, channels_last=False).accuracy


def train_once(
    name: str,
    train_frames: torch.Tensor,
    train_labels: torch.Tensor,
    test_frames: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    seed: int,
    config: StudyConfig,
    device: str | torch.device = "cpu",
) -> float:
    """:func:`train_model`, then its test accuracy on the centre views of ``test_frames``."""
    model = train_model(name, train_frames, train_labels, num_classes, seed, config, device)
    return centre_accuracy(model, test_frames, test_labels, config, device)


# ----------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Run:
    """One training run: a transform, a seed, its test accuracy."""

    transform: str
    seed: int
    test_acc: float


@dataclass(frozen=True)
class TransformRow:
    """One transform over all seeds: accuracy and the paired effect against ``none`` (mean, sd and 95% interval
    over seeds), with :func:`convlab.verdicts.paired_ci`'s verdict."""

    transform: str
    what: str
    seeds: int
    acc_mean: float
    acc_sd: float
    effect_mean: float
    effect_sd: float
    ci_low: float
    ci_high: float
    verdict: str


#: What the literature reports, to set beside this run's numbers.
LITERATURE = (
    "Krizhevsky et al. (2012, AlexNet, ImageNet): random 224 crops of 256 images and their mirrors were needed "
    "against 'substantial overfitting'; PCA colour reduced top-1 error by over 1 %.",
    "Shorten & Khoshgoftaar (2019, survey, J. Big Data): geometric transforms (crops, flips) give the most "
    "consistent gains on small data sets; label safety depends on the data (no mirroring of digits or text).",
    "Taylor & Nitschke (2018, Caltech101, from scratch): cropping was the most effective single transform, "
    "colour changes helped much less.",
)


@dataclass
class TransformStudy:
    """All runs of a study and their summary; ``rows()`` go straight into ``convlab.display.Table``."""

    runs: list[Run]
    config: StudyConfig
    scale: str
    train_images: int
    test_images: int
    seconds: float = 0.0
    per_run_seconds: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def transforms(self) -> list[str]:
        return list(dict.fromkeys(r.transform for r in self.runs))

    def select(self, names: Sequence[str]) -> TransformStudy:
        """The same study restricted to the transforms ``names`` (``"none"`` first, the paired baseline)."""
        names = list(names)
        missing = [n for n in names if n not in self.transforms]
        if not names or names[0] != "none" or missing:
            raise ValueError(
                f"names: expected 'none' first and only measured transforms {self.transforms}, got {names}"
            )
        runs = sorted((r for r in self.runs if r.transform in names), key=lambda r: (r.seed, names.index(r.transform)))
        per_run = {n: t for n, t in self.per_run_seconds.items() if n in names}
        return TransformStudy(
            runs,
            self.config,
            self.scale,
            self.train_images,
            self.test_images,
            sum(per_run.values()) * len(self.config.seeds),
            per_run,
            dict(self.meta),
        )

    def to_json(self, path: str | Path, **meta: object) -> Path:
        """Write every run, the config and ``meta`` (say when, where and with what command it ran) to ``path``."""
        path = Path(path)
        record = {
            "meta": {**self.meta, **meta},
            "scale": self.scale,
            "config": asdict(self.config),
            "train_images": self.train_images,
            "test_images": self.test_images,
            "seconds": self.seconds,
            "per_run_seconds": self.per_run_seconds,
            "runs": [asdict(r) for r in self.runs],
        }
        path.write_text(json.dumps(record, indent=1))
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> TransformStudy:
        """A study written by :meth:`to_json` (a stored run: its ``meta`` says when, where and how it ran)."""
        d = read_study(path)
        cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in d["config"].items()}
        return cls(
            [Run(**r) for r in d["runs"]],
            StudyConfig(**cfg),
            d["scale"],
            d["train_images"],
            d["test_images"],
            d["seconds"],
            d["per_run_seconds"],
            d["meta"],
        )

    def accs(self, name: str) -> list[float]:
        """Test accuracies of ``name`` in seed order."""
        return [r.test_acc for r in sorted(self.runs, key=lambda r: r.seed) if r.transform == name]

    def effects(self, name: str) -> list[float]:
        """Paired effects ``acc(name) - acc(none)``, per seed."""
        return [a - b for a, b in zip(self.accs(name), self.accs("none"))]

    def rows(self) -> list[TransformRow]:
        out = []
        for name in self.transforms:
            acc, eff = self.accs(name), self.effects(name)
            sd = statistics.stdev(acc) if len(acc) > 1 else float("nan")
            if name == "none":
                em, es, lo, hi, verdict = 0.0, 0.0, 0.0, 0.0, "baseline"
            elif len(eff) < 2:
                em, es, lo, hi, verdict = eff[0], float("nan"), float("nan"), float("nan"), "one seed: no interval"
            else:
                ci = paired_ci(self.accs(name), self.accs("none"), f"{name} vs none")
                em, es, lo, hi, verdict = ci.mean, statistics.stdev(eff), ci.low, ci.high, ci.verdict
            what = TRANSFORMS.get(name, ("", None))[0]
            out.append(TransformRow(name, what, len(acc), statistics.fmean(acc), sd, em, es, lo, hi, verdict))
        return out

    def one_image(self) -> float:
        """What one test photo is worth in accuracy (the finest step the test set can measure)."""
        return 1.0 / self.test_images

    def claims(self) -> list[str]:
        """Sentences built from the measurements, with their uncertainty."""
        rows = self.rows()
        base = rows[0] if rows and rows[0].transform == "none" else None
        lines = [
            f"{self.scale} scale: small CNN from scratch, {self.train_images} training / {self.test_images} "
            f"test photos at {self.config.size[0]}x{self.config.size[1]} px, {self.config.epochs} epochs, "
            f"{len(self.config.seeds)} seeds; one test photo = {self.one_image():.3f} accuracy."
        ]
        lines[:0] = stored_lines(self.meta)
        if base is not None:
            lines.append(f"Without augmentation: {base.acc_mean:.3f} ± {base.acc_sd:.3f} (mean ± sd over seeds).")
        shown = [r for r in rows if r.verdict in ("better", "worse")]
        for r in rows[1:]:
            lines.append(
                f"{r.transform}: effect {r.effect_mean:+.3f}, 95% CI {format_interval(r.ci_low, r.ci_high, 3, 1.0)} "
                f"-> {r.verdict}."
            )
        widths = [(r.ci_high - r.ci_low) / 2 for r in rows[1:] if not math.isnan(r.ci_high)]
        if widths:
            w = statistics.median(widths)
            lines.append(
                f"Resolution of this run: the median 95% interval is ± {w:.3f}, i.e. ± {w * self.test_images:.1f} "
                "test photos; a smaller effect reads as a tie."
            )
        if not shown:
            lines.append(
                "No transform's interval excludes zero: every effect is a tie at this resolution (AlexNet's 1 % "
                f"from PCA colour would be {0.01 * self.test_images:.1f} test photos here)."
            )
        return lines

    def plot(self, title: str = "") -> Figure:
        """Effect against ``none`` per transform: the mean and its 95% interval (bars) and each seed (dots)."""
        import matplotlib.pyplot as plt

        rows = [r for r in self.rows() if r.transform != "none"]
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
        ys = list(range(len(rows)))[::-1]
        for y, r in zip(ys, rows):
            colour = {"better": "C2", "worse": "C3"}.get(r.verdict, "0.4")
            err = [[r.effect_mean - r.ci_low], [r.ci_high - r.effect_mean]]
            ax.errorbar(r.effect_mean, y, xerr=err, fmt="o", color=colour, capsize=4)
            ax.scatter(self.effects(r.transform), [y] * len(self.effects(r.transform)), s=12, color="C1", zorder=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(ys, [r.transform for r in rows])
        ax.set_xlabel("test accuracy minus 'none' (paired per seed)")
        ax.set_title(title or f"effect of each augmentation ({self.scale} scale, {len(self.config.seeds)} seeds)")
        fig.tight_layout()
        return fig


def transform_study(
    splits: Splits,
    names: Sequence[str],
    scale: str | StudyConfig = "small",
    *,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> TransformStudy:
    """Train once per transform in ``names`` and seed of the scale's config; one :class:`Run` each.

    ``names`` must start with ``"none"`` (the baseline of the paired effects). The images of ``splits`` are re-split
    per seed (train ``1 - test_fraction``, test ``test_fraction``); PCA colour is fitted on each split's training
    frames only.
    """
    from tqdm.auto import tqdm

    if isinstance(scale, str) and scale not in CONFIGS:
        raise ValueError(f"scale: expected one of {list(CONFIGS)} or a StudyConfig, got {scale!r}")
    config = CONFIGS[scale] if isinstance(scale, str) else scale
    names = list(names)
    if not names or names[0] != "none":
        raise ValueError(f"names: expected 'none' first (the baseline), got {names}")
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ValueError(f"names: unknown transforms {unknown}; expected some of {list(TRANSFORMS)}")
    t0 = time.perf_counter()
    runs: list[Run] = []
    spent = dict.fromkeys(names, 0.0)
    bar = tqdm(total=len(names) * len(config.seeds), desc="training runs", disable=not progress)
    fractions = (1 - config.test_fraction, 0.0, config.test_fraction)
    n_train = n_test = 0
    for seed in config.seeds:
        sp = resplit(splits, seed, fractions)
        tr, te = frames(sp.train.images, config.frame), frames(sp.test.images, config.frame)
        n_train, n_test = len(tr), len(te)
        for name in names:
            t = time.perf_counter()
            acc = train_once(name, tr, sp.train.labels, te, sp.test.labels, len(splits.classes), seed, config, device)
            spent[name] += time.perf_counter() - t
            runs.append(Run(name, seed, acc))
            bar.set_postfix(seed=seed, transform=name, acc=f"{acc:.3f}")
            bar.update(1)
    bar.close()
    per_run = {n: s / len(config.seeds) for n, s in spent.items()}
    return TransformStudy(
        runs, config, scale if isinstance(scale, str) else "custom", n_train, n_test, time.perf_counter() - t0, per_run
    )
