"""Argument checks shared by the package's modules (a private module with public names: see tests/test_architecture).

One owner per check: a module that needs to validate a probability, a size, a generator, an image batch or
whether an estimator is fitted imports the check from here instead of writing its own. Learners never need this
module; its names are public so that other convlab modules may import them.

``check_is_fitted`` and :class:`NotFittedError` follow scikit-learn: an estimator's learned attributes end in an
underscore and are set by ``fit``; using it before then raises an error that says what to call.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "NotFittedError",
    "check_is_fitted",
    "check_image",
    "flatten_batch",
    "unflatten_batch",
    "INTERPOLATIONS",
    "check_interpolation",
    "check_range",
    "check_size",
    "check_generator",
    "fmt_arg",
    "check_uint8_image",
    "check_uint8_images",
    "check_mean_std",
]

INTERPOLATIONS = ("bilinear", "nearest")


class NotFittedError(RuntimeError):
    """An estimator was used before ``fit`` (cf. ``sklearn.exceptions.NotFittedError``)."""


def check_is_fitted(estimator: object, attribute: str, fix: str) -> None:
    """Raise :class:`NotFittedError` unless ``estimator`` has the learned ``attribute`` (set by its ``fit``).

    ``fix`` says what to do, e.g. ``"call fit(train_images) first"``.
    """
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"{type(estimator).__name__} is not fitted yet: {fix}")


def check_image(image: object, name: str = "image", channels: int | None = None) -> Tensor:
    """The one image check: a uint8 or floating-point tensor ``(..., C, H, W)`` (``C == channels`` when given),
    channels first (a batch that looks channels-last is refused with the permute that fixes it); returned as a plain
    ``Tensor``. :func:`check_uint8_image` and :func:`check_uint8_images` add what photos need on top of it."""
    if not isinstance(image, Tensor):
        hint = ""
        if type(image).__module__ == "numpy":  # the usual (H, W, C) array from PIL or OpenCV
            hint = "; convert an (H, W, C) array with torch.from_numpy(a).permute(2, 0, 1) first"
        raise TypeError(f"{name}: expected a torch.Tensor of shape (..., C, H, W), got {type(image).__name__}{hint}")
    if image.ndim < 3:
        raise ValueError(f"{name}: expected shape (..., C, H, W) (at least 3 dims), got shape {tuple(image.shape)}")
    if not (image.dtype == torch.uint8 or image.is_floating_point()):
        raise TypeError(f"{name}: expected uint8 or floating point, got dtype {image.dtype}")
    c, w = image.shape[-3], image.shape[-1]
    if c > 4 and w in (1, 3, 4) and channels != c:
        # (B, H, W, 3) would otherwise be read as C = H images of width 3: refuse instead of returning garbage
        raise ValueError(
            f"{name}: expected channels-first (..., C, H, W), got shape {tuple(image.shape)}, which "
            f"looks channels-last (..., H, W, C); "
            f"convert a (B, H, W, C) batch with x.permute(0, 3, 1, 2)"
        )
    if channels is not None and c != channels:
        raise ValueError(f"{name}: expected {channels} channels (RGB) at dim -3, got shape {tuple(image.shape)}")
    return image.as_subclass(Tensor) if type(image) is not Tensor else image


def flatten_batch(image: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """(..., C, H, W) -> (B, C, H, W) plus the leading shape to restore."""
    lead = tuple(image.shape[:-3])
    return image.reshape((-1,) + tuple(image.shape[-3:])), lead


def unflatten_batch(x: Tensor, lead: tuple[int, ...]) -> Tensor:
    return x.reshape(lead + tuple(x.shape[-3:]))


def check_interpolation(interpolation: str) -> str:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {interpolation!r}")
    return interpolation


def check_range(value: Any, name: str, lo: float, hi: float, symmetric: bool = True) -> tuple[float, float]:
    """A number v means (-v, v) (or (0, v) if not symmetric); a pair (a, b) must have lo <= a <= b <= hi."""
    if isinstance(value, numbers.Real):
        v = float(value)
        if not v >= 0:  # also NaN
            raise ValueError(f"{name}: expected a number >= 0 when given as a single number, got {value!r}")
        rng = (-v, v) if symmetric else (0.0, v)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, numbers.Real) for v in value):
        rng = (float(value[0]), float(value[1]))
    else:
        raise TypeError(f"{name}: expected a number or a (min, max) pair, got {value!r}")
    if not (lo <= rng[0] <= rng[1] <= hi):
        raise ValueError(f"{name}: expected a range in [{lo}, {hi}] with min <= max, got {value!r}")
    return rng


def check_size(size: Any, name: str = "size") -> tuple[int, int]:
    """An int ``s`` (meaning ``(s, s)``) or an ``(h, w)`` pair of positive ints -> ``(h, w)``."""

    def ok(s: Any) -> bool:
        return isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0

    if ok(size):
        size = (int(size), int(size))
    if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(ok(s) for s in size):
        raise ValueError(f"{name}: expected a positive int or an (h, w) pair of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def check_generator(generator: Any) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    return generator


def fmt_arg(v: Any) -> str:
    """Short, valid-Python rendering for reprs: 1.0, 0.75, (0.08, 1.0); a symmetric range (-a, a) as a."""
    if isinstance(v, bool):
        return repr(v)
    if isinstance(v, float):
        s = f"{v:.4g}"
        if float(s) != v:  # keep the repr exact, so the printed line reproduces the transform
            return repr(v)
        return s if any(ch in s for ch in ".en") else s + ".0"
    if isinstance(v, tuple):
        if len(v) == 2 and all(isinstance(x, float) for x in v) and v[0] == -v[1]:
            return fmt_arg(abs(v[1]))
        return "(" + ", ".join(fmt_arg(x) for x in v) + ")"
    return repr(v)


def check_uint8_image(image: object, name: str = "image", channels: int | None = None) -> Tensor:
    """One photo: a uint8 ``(C, H, W)`` tensor (``C == channels`` when given); :func:`check_image` first.

    ``TypeError`` when it is not a uint8 tensor, ``ValueError`` when its shape is wrong; the message names ``name``.
    """
    want = f"a uint8 tensor of shape ({'C' if channels is None else channels}, H, W)"
    if isinstance(image, Tensor) and image.ndim == 3 and image.dtype == torch.uint8:
        image = check_image(image, name, channels)  # a channels-last (H, W, 3) photo is refused with a hint
    if not isinstance(image, Tensor) or image.dtype != torch.uint8:
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, Tensor) else type(image).__name__
        raise TypeError(f"{name}: expected {want}, got {got}")
    if image.ndim != 3:
        raise ValueError(f"{name}: expected {want}, got shape {tuple(image.shape)}")
    return image


def check_uint8_images(
    images: Tensor | Sequence[Tensor], name: str = "images", channels: int | None = None
) -> Tensor | list[Tensor]:
    """A uint8 ``(B, C, H, W)`` tensor (a ``(C, H, W)`` one becomes a batch of one) stays as is; a sequence of uint8
    ``(C, H, W)`` tensors (:func:`check_uint8_image` each) becomes a list. ``channels``: the ``C`` required.

    For functions that take photos of any sizes (test-time augmentation, ensembles, a backbone's preprocessing).
    """
    if isinstance(images, Tensor):
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4:
            raise ValueError(f"{name}: expected (B, C, H, W) or (C, H, W), got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise TypeError(f"{name}: expected uint8 pixels in [0, 255], got {images.dtype}")
        return check_image(images, name, channels)
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise TypeError(
            f"{name}: expected a uint8 tensor or a sequence of uint8 (C, H, W) tensors, got {type(images).__name__}"
        )
    out = list(images)
    if not out:
        raise ValueError(f"{name}: expected at least one image, got none")
    return [check_uint8_image(im, f"{name}[{i}]", channels) for i, im in enumerate(out)]


def check_mean_std(
    mean: Sequence[float], std: Sequence[float], channels: int = 3
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel normalisation: ``channels`` finite numbers each, every ``std > 0``; returned as float tuples."""
    try:
        m, s = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        m = s = ()
    finite = all(math.isfinite(v) for v in m + s)
    if len(m) != channels or len(s) != channels or not finite or min(s) <= 0:
        raise ValueError(
            f"mean, std: expected {channels} finite numbers each (one per channel), std > 0; got {mean!r}, {std!r}"
        )
    return m, s
