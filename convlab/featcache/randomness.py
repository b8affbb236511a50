"""The refusal of random transforms: a feature cache holds one fixed view of each image.

An augmentation drawn once and replayed every epoch would be a silent bug, so :func:`check_deterministic` refuses
known random components by name (torchvision v2 ``Random*`` and friends, convlab.augment transforms, anything with
``random = True``) and runs anything else twice under different seeds.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from convlab.preprocess import Preprocess

if TYPE_CHECKING:  # annotations only
    from collections.abc import Callable

    from torch.utils.data import Dataset

__all__ = ["RandomTransformError", "check_deterministic"]


class RandomTransformError(ValueError):
    """A random transform or data set was given to the feature cache (it can only hold a fixed view)."""


_RANDOM_NAMES = {
    "AutoAugment",
    "RandAugment",
    "TrivialAugmentWide",
    "AugMix",
    "GaussianNoise",
    "ColorJitter",
    "ElasticTransform",
    "GaussianBlur",
    "JPEG",
    "CutMix",
    "MixUp",
    "ScaleJitter",
}


def _random_parts(transform, seen=None) -> list[str]:
    """Names of the components of ``transform`` known to be random (torchvision v2, convlab.augment, ``.random``)."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2._transform import _RandomApplyTransform

    seen = set() if seen is None else seen
    if transform is None or id(transform) in seen:
        return []
    seen.add(id(transform))
    name = type(transform).__name__
    found = []
    if (
        getattr(transform, "random", False) is True
        or name.startswith("Random")
        or name in _RANDOM_NAMES
        or isinstance(transform, v2.Transform)
        and (
            type(transform).make_params is not v2.Transform.make_params or isinstance(transform, _RandomApplyTransform)
        )
    ):
        found.append(name)
    children = list(getattr(transform, "transforms", []) or [])
    if isinstance(transform, nn.Module):
        children += list(transform.children())
    for child in children:
        found += _random_parts(child, seen)
    return found


def _refuse(what: str, detail: str) -> RandomTransformError:
    return RandomTransformError(
        f"{what} is random ({detail}). A feature cache holds ONE fixed view of each image, so a random augmentation "
        "would be drawn once and then replayed in every epoch, silently. Cache the non-augmented view (give the "
        "data set no transform and use the deterministic eval preprocessing, e.g. Preprocess.from_spec(model.spec)), "
        "augment after the frozen part if you need to, or train without the cache."
    )


def check_deterministic(dataset: Dataset, preprocess: Preprocess | Callable | None) -> None:
    """Raise :class:`RandomTransformError` if the data set's items or the preprocessing are random.

    Known random components (torchvision v2 ``Random*`` and friends, convlab.augment transforms, any object with
    ``random = True``) are refused by name; anything else is also run twice on the first item under different
    seeds, and refused if the two outputs differ.
    """
    parts = _random_parts(getattr(dataset, "transform", None))
    if parts:
        raise _refuse("the data set's transform", "contains " + ", ".join(parts))
    if not isinstance(preprocess, Preprocess):
        parts = _random_parts(preprocess)
        if parts:
            raise _refuse("preprocess", "contains " + ", ".join(parts))
    if len(dataset) == 0:
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        outs = []
        with torch.random.fork_rng(devices=[]):
            for seed in (1, 2):
                torch.manual_seed(seed)
                random.seed(seed)
                np.random.seed(seed)
                x = dataset[0][0]
                outs.append((x, preprocess([x]) if not isinstance(preprocess, Preprocess) else None))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    (x1, p1), (x2, p2) = outs
    if not _same(x1, x2):
        raise _refuse("the data set", "dataset[0] differed between two reads")
    if p1 is not None and not _same(p1, p2):
        raise _refuse("preprocess", "two calls on the same image gave different outputs")


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))
