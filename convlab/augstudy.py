"""Does an augmentation help on a small data set? Measure it with and without, over several splits.

The recipe (head-only transfer, cheap enough for a 2-core CPU):

1. The frozen backbone (stages + global pooling) turns each image into a feature vector. The clean view, the
   backbone's eval preprocessing, is computed once per image.
2. A feature cache cannot hold augmented views: it stores ONE fixed view per image, so a random augmentation would
   be drawn once and replayed every epoch (:class:`convlab.featcache.RandomTransformError` says so). True
   on-the-fly augmentation needs a forward pass through the backbone per image *per epoch*. Here, instead, every
   training image gets ``copies`` augmented views, drawn once with a seed and extracted once ("offline
   augmentation"): the head sees the clean view and the same ``copies`` views in every epoch. That is a finite
   sample of the augmentation distribution, deliberately chosen and said so, for ``copies`` forward passes per
   image instead of ``epochs``.
3. For each split seed, two heads start from the same initialisation and take the same number of optimiser steps:
   one on the clean views only, one on the clean + augmented views. Both are tested on clean test views.

The images are re-split with :func:`resplit` (no decoding again); for :func:`convlab.data.load_food` this gives
exactly ``load_food(seed=s)``. Only training images are ever augmented.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from convlab.data import ImageSet, Splits, _stratified_split
from convlab.device import resolve_device
from convlab.engine import evaluate, fit
from convlab.featcache import CachedFeatures, extract_features
from convlab.transfer import Preprocess, freeze, split_at

__all__ = ["SplitResult", "AugmentationStudy", "resplit", "augmented_features", "augmentation_study"]


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


def _frames(images: Sequence[torch.Tensor], short_side: int) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)``: each image resized (shorter side ``short_side``), centre-cropped to a common size."""
    from torchvision.transforms.v2 import functional as F

    resized = [F.resize(im, [short_side], antialias=True) for im in images]
    h = min(r.shape[-2] for r in resized)
    w = min(r.shape[-1] for r in resized)
    return torch.stack([F.center_crop(r, [h, w]) for r in resized])


def augmented_features(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    augment: Callable[[torch.Tensor], torch.Tensor],
    preprocess: Preprocess,
    *,
    copies: int = 4,
    batch_size: int = 16,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> torch.Tensor:
    """Pooled features of ``copies`` augmented views of each image: float32 ``(copies, N, D)``.

    Each image is first resized to the preprocessing's shorter side (``preprocess.resize``) *without* the centre
    crop, so geometric augmentations can use the whole frame; ``augment`` gets uint8 ``(B, 3, H, W)`` batches and
    must return uint8 (per-sample transforms such as :mod:`convlab.augment` draw a different view per image).
    Outputs larger than ``preprocess.size`` are centre-cropped to it (so a colour-only augmentation sees exactly
    the eval view), then normalised like ``preprocess``. Global random state is seeded with ``seed`` inside
    :func:`torch.random.fork_rng` (transforms that carry their own ``generator`` use that instead).
    """
    from torchvision.transforms.v2 import functional as F

    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies: expected an int >= 1, got {copies!r}")
    if len(images) == 0:
        raise ValueError("images: expected at least one image")
    dev = resolve_device(device)
    frozen, _ = split_at(model, "all")
    modes = {m: m.training for m in frozen.modules()}
    frozen.eval().to(dev)
    frames = _frames(images, preprocess.resize or preprocess.size)
    s = preprocess.size
    mean = torch.tensor(preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std).view(1, 3, 1, 1)
    out = []
    try:
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            for _ in range(copies):
                feats = []
                for start in range(0, len(frames), batch_size):
                    x = augment(frames[start:start + batch_size])
                    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
                        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
                        raise TypeError(f"augment: expected it to return a uint8 (B, 3, H, W) batch, got {got}")
                    if min(x.shape[-2:]) < s:
                        raise ValueError(f"augment: returned {tuple(x.shape[-2:])} images, smaller than the "
                                         f"network input {s}x{s}; crop to at least that size")
                    x = F.center_crop(x.as_subclass(torch.Tensor), [s, s]).float().div_(255).sub_(mean).div_(std)
                    if dev.type == "cpu":
                        x = x.contiguous(memory_format=torch.channels_last)
                    feats.append(frozen(x.to(dev)).float().cpu())
                out.append(torch.cat(feats))
    finally:
        for m, mode in modes.items():
            m.training = mode
    return torch.stack(out)


@dataclass(frozen=True)
class SplitResult:
    """One split: test accuracy of the head trained without and with the augmented views (``gain`` = with - without)."""

    split_seed: int
    train_images: int
    train_views_with: int
    test_images: int
    acc_without: float
    acc_with: float
    gain: float


@dataclass
class AugmentationStudy:
    """Per-split results and their summary. ``rows`` go straight into ``convlab.display.Table``."""

    rows: list[SplitResult]
    augment: str
    backbone: str
    size: int
    copies: int
    epochs_with: int
    epochs_without: int
    forward_passes: int
    seconds: dict = field(default_factory=dict)

    @property
    def mean_without(self) -> float:
        return statistics.fmean(r.acc_without for r in self.rows)

    @property
    def mean_with(self) -> float:
        return statistics.fmean(r.acc_with for r in self.rows)

    @property
    def mean_gain(self) -> float:
        return self.mean_with - self.mean_without

    @property
    def spread(self) -> float:
        """Split-to-split spread: the larger standard deviation (over splits) of the two conditions' accuracies."""
        if len(self.rows) < 2:
            return float("nan")
        return max(statistics.stdev(r.acc_without for r in self.rows), statistics.stdev(r.acc_with for r in self.rows))

    @property
    def one_image(self) -> float:
        """What one test image is worth in accuracy (the finest step the test set can measure)."""
        return 1.0 / min(r.test_images for r in self.rows)

    def summary_rows(self) -> list[dict]:
        return [
            {"condition": "without augmentation", "mean test acc": self.mean_without,
             "std over splits": statistics.stdev(r.acc_without for r in self.rows) if len(self.rows) > 1 else float("nan")},
            {"condition": f"with {self.copies} augmented views", "mean test acc": self.mean_with,
             "std over splits": statistics.stdev(r.acc_with for r in self.rows) if len(self.rows) > 1 else float("nan")},
        ]

    def verdict(self) -> str:
        """A sentence built from the measurements: is the difference larger than the split-to-split spread?"""
        n, g = len(self.rows), self.mean_gain
        better = sum(r.gain > 0 for r in self.rows)
        worse = sum(r.gain < 0 for r in self.rows)
        head = (f"Mean test accuracy over {n} splits: {self.mean_with:.3f} with augmentation vs "
                f"{self.mean_without:.3f} without ({g:+.3f}; better on {better}, worse on {worse} of {n} splits). "
                f"Split-to-split spread (std): {self.spread:.3f}; one test image = {self.one_image:.3f}. ")
        if math.isnan(self.spread):
            return head + "One split cannot tell a difference from noise: use several."
        if abs(g) <= self.spread or abs(g) < self.one_image:
            return head + ("The difference is within the split-to-split spread: this experiment cannot tell the two "
                           "apart.")
        direction = "helped" if g > 0 else "hurt"
        consistent = (better == n) if g > 0 else (worse == n)
        return head + (f"The difference exceeds the spread: here augmentation {direction}"
                       + (" on every split." if consistent else ", though not on every split: treat it as a hint."))


def _head(model: nn.Module, num_classes: int, classes: Sequence[str], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.reset_classifier(num_classes, classes)
    return copy.deepcopy(model.head)


def augmentation_study(
    splits: Splits,
    augment: Callable[[torch.Tensor], torch.Tensor],
    seeds: Sequence[int] = (0, 1, 2),
    *,
    backbone: str | nn.Module = "mobilenet_v2",
    size: int = 160,
    copies: int = 4,
    epochs: int = 20,
    lr: float = 3e-3,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device = "auto",
) -> AugmentationStudy:
    """Head-only test accuracy with and without ``copies`` augmented views per training image, per split seed.

    Args:
        splits: the data (e.g. ``load_food()``); its images are re-split with each of ``seeds`` (:func:`resplit`).
        augment: uint8 batch -> uint8 batch, e.g. a ``v2.Compose`` of :mod:`convlab.augment` transforms.
        backbone: a name for :func:`convlab.load_backbone` or a loaded backbone (it is frozen; its head is replaced).
        size: network input side; the clean view is the backbone's eval preprocessing scaled to it.
        epochs: passes over the clean + augmented training views. The head without augmentation gets
            ``epochs * (copies + 1)`` passes over the clean views, so both take the same number of optimiser steps.
        seed: seeds the augmented views and the heads' initialisation and shuffling (the same for both conditions).

    Forward passes through the backbone: one per image (clean) plus ``copies`` per image that is in some
    training set; the heads train on cached vectors and cost little.
    """
    from convlab.backbones import load_backbone

    if not seeds:
        raise ValueError("seeds: expected at least one split seed, e.g. (0, 1, 2)")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    dev = resolve_device(device)
    t0 = time.perf_counter()
    model = load_backbone(backbone, device=dev) if isinstance(backbone, str) else backbone
    freeze(model, "all")
    prep = Preprocess.from_spec(model.spec, size=size)
    pool = _pool(splits)
    row_of = {i: r for r, i in enumerate(pool.ids)}
    all_splits = [resplit(splits, s) for s in seeds]
    clean = extract_features(model, pool, "all", prep, device=dev).features.float()
    t1 = time.perf_counter()
    trained_ids = sorted({i for sp in all_splits for i in sp.train.ids})
    aug_rows = {i: r for r, i in enumerate(trained_ids)}
    views = augmented_features(model, [pool.images[row_of[i]] for i in trained_ids], augment, prep, copies=copies,
                               seed=seed, device=dev)
    t2 = time.perf_counter()
    labels = pool.labels
    rows = []
    for sp in all_splits:
        tr = torch.tensor([row_of[i] for i in sp.train.ids])
        te = torch.tensor([row_of[i] for i in sp.test.ids])
        ar = torch.tensor([aug_rows[i] for i in sp.train.ids])
        plain = CachedFeatures(clean[tr], labels[tr], splits.classes)
        mixed = CachedFeatures(torch.cat([clean[tr], views[:, ar].flatten(0, 1)]),
                               torch.cat([labels[tr], labels[tr].repeat(copies)]), splits.classes)
        test = CachedFeatures(clean[te], labels[te], splits.classes)
        acc = {}
        for name, data, ep in (("without", plain, epochs * (copies + 1)), ("with", mixed, epochs)):
            head = _head(model, len(splits.classes), splits.classes, seed)
            fit(head, data, epochs=ep, lr=lr, batch_size=batch_size, seed=seed, device=dev, progress=False)
            acc[name] = evaluate(head, test, device=dev).accuracy
        rows.append(SplitResult(sp.seed, len(tr), len(mixed), len(te), acc["without"], acc["with"],
                                acc["with"] - acc["without"]))
    t3 = time.perf_counter()
    return AugmentationStudy(
        rows=rows, augment=repr(augment), backbone=model.spec.name, size=size, copies=copies, epochs_with=epochs,
        epochs_without=epochs * (copies + 1), forward_passes=len(pool) + copies * len(trained_ids),
        seconds={"clean features": t1 - t0, "augmented features": t2 - t1, "heads": t3 - t2},
    )
