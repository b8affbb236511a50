"""Random augmentation transforms that draw parameters per sample.

The classes subclass ``torchvision.transforms.v2.Transform`` and follow its split: ``make_params``
draws the randomness, ``transform`` calls a pure kernel from :mod:`convlab.augment.functional`.
They compose with ``v2.Compose`` and accept plain tensors and ``tv_tensors.Image``, single
``(C, H, W)`` or batched ``(B, C, H, W)``.

The difference from torchvision: applied to a batch, a v2 transform draws *one* set of parameters
for all images. Here every sample gets its own draw (Kornia's ``same_on_batch=False``), so an
augmentation can run once per batch instead of once per image. Each transform keeps its last draw
in ``last_params``; ``replay(x)`` applies exactly that draw again (e.g. to a mask or to show it).
Pass ``generator=torch.Generator().manual_seed(s)`` for reproducible draws.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from convlab._checks import (
    check_generator,
    check_image,
    check_interpolation,
    check_p,
    check_range,
    check_size,
    flatten_batch,
    fmt_arg,
    unflatten_batch,
)

from . import functional as K

__all__ = [
    "BatchRandomTransform",
    "RandomHorizontalFlip",
    "RandomCrop",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomShear",
    "RandomElasticWarp",
    "RandomColorShift",
    "sample_resized_crop_boxes",
]


# ----------------------------------------------------------------------------- base class
class BatchRandomTransform(v2.Transform):
    """Base: per-sample parameters, probability ``p``, seedable ``generator``, ``last_params``/``replay``.

    Subclasses implement ``_draw(n, h, w, generator) -> dict`` (tensors with a leading ``n``) and
    ``_apply(x, params) -> Tensor`` for a ``(B, C, H, W)`` batch. Samples not selected by ``p``
    are returned unchanged (``params["apply"]`` is the bool mask).
    """

    _repr_args: tuple[str, ...] = ()
    _changes_size = False

    def __init__(self, p: float = 1.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = check_p(p)
        self.generator = check_generator(generator)
        self.last_params: dict[str, Tensor] | None = None
        self._replaying: dict[str, Tensor] | None = None

    # -- v2 API
    def check_inputs(self, flat_inputs: list[Any]) -> None:
        for inpt in flat_inputs:
            if isinstance(inpt, PIL.Image.Image):
                raise TypeError(f"{type(self).__name__} works on tensors; convert PIL images with "
                                "v2.PILToTensor() (or v2.ToImage()) first")
            if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask, tv_tensors.Video)):
                raise TypeError(f"{type(self).__name__} supports images only, got {type(inpt).__name__}")
        if not any(isinstance(i, Tensor) for i in flat_inputs):  # v2 would pass a numpy array through untouched
            check_image(flat_inputs[0] if flat_inputs else None)  # raises, naming the layout it expects

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if self._replaying is not None:
            return self._replaying
        image = next(i for i in flat_inputs if isinstance(i, Tensor))
        check_image(image)
        n = math.prod(image.shape[:-3])
        h, w = image.shape[-2:]
        params = self._draw(n, h, w, self.generator)
        apply = torch.rand(n, generator=self.generator) < self.p if self.p < 1.0 else torch.ones(n, dtype=torch.bool)
        params["apply"] = apply
        self.last_params = params
        return params

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        image = check_image(inpt)
        x, lead = flatten_batch(image)
        if params["apply"].shape[0] != x.shape[0]:
            raise ValueError(f"parameters were drawn for {params['apply'].shape[0]} samples, "
                             f"but the input has {x.shape[0]}")
        apply = params["apply"]
        if self._changes_size or bool(apply.all()):
            out = self._apply(x, params)
        elif not bool(apply.any()):
            out = x.clone()
        else:  # transform the selected samples only (cheaper than transforming all and selecting)
            idx = apply.nonzero().flatten()
            out = x.clone()
            out[idx.to(x.device)] = self._apply(x[idx.to(x.device)], {k: v[idx] for k, v in params.items()})
        out = unflatten_batch(out, lead)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    # -- replay and repr
    def replay(self, *inputs: Any) -> Any:
        """Apply the last drawn parameters again (same batch size), e.g. to a second view or a mask."""
        if self.last_params is None:
            raise RuntimeError(f"{type(self).__name__}.replay() needs a previous call to draw parameters")
        self._replaying = self.last_params
        try:
            return self(*inputs)
        finally:
            self._replaying = None

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={fmt_arg(getattr(self, name))}" for name in self._repr_args)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def _uniform(n: int, rng: tuple[float, float], generator: torch.Generator | None, k: int | None = None) -> Tensor:
    shape = (n,) if k is None else (n, k)
    return torch.empty(shape).uniform_(rng[0], rng[1], generator=generator)


# ----------------------------------------------------------------------------- geometry
class RandomHorizontalFlip(BatchRandomTransform):
    """Mirror each sample left-right with probability ``p`` (default 0.5)."""

    _repr_args = ("p",)

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator)

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return x.flip(-1)


class RandomCrop(BatchRandomTransform):
    """Cut a ``size`` window at a random position, drawn independently per sample (no ``p``: sizes must match)."""

    _repr_args = ("size",)
    _changes_size = True

    def __init__(self, size: int | Sequence[int], generator: torch.Generator | None = None) -> None:
        super().__init__(1.0, generator)
        self.size = check_size(size)

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        ch, cw = self.size
        if ch > h or cw > w:
            raise ValueError(f"size: expected at most the input's ({h}, {w}), got {self.size}, larger than the input")
        top = torch.randint(0, h - ch + 1, (n,), generator=generator)
        left = torch.randint(0, w - cw + 1, (n,), generator=generator)
        return {"top": top, "left": left}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return K.crop(x, params["top"], params["left"], *self.size)


def sample_resized_crop_boxes(n: int, h: int, w: int, scale: tuple[float, float] = (0.08, 1.0),
                              ratio: tuple[float, float] = (3 / 4, 4 / 3),
                              generator: torch.Generator | None = None, tries: int = 10) -> Tensor:
    """Inception-style crop boxes, vectorised: ``(n, 4)`` int ``(top, left, height, width)``.

    Same distribution as torchvision's ``RandomResizedCrop.get_params``: area fraction uniform in
    ``scale``, aspect ratio log-uniform in ``ratio``; up to ``tries`` attempts per sample, then the
    central crop with the aspect ratio clamped to ``ratio``.
    """
    area = h * w
    target = area * torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    ar = torch.exp(log_r)
    cw = torch.sqrt(target * ar).round().long()
    ch = torch.sqrt(target / ar).round().long()
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(ok.any(1), ok.long().argmax(1), torch.full((n,), -1))
    # fallback: central crop with the ratio clamped
    in_ratio = w / h
    if in_ratio < ratio[0]:
        fw, fh = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = h, int(round(h * ratio[1]))
    else:
        fw, fh = w, h
    rows = torch.arange(n)
    pick = first.clamp(min=0)
    bh = torch.where(first >= 0, ch[rows, pick], torch.tensor(fh))
    bw = torch.where(first >= 0, cw[rows, pick], torch.tensor(fw))
    u = torch.rand(n, 2, generator=generator)
    top = torch.where(first >= 0, (u[:, 0] * (h - bh + 1)).long(), (h - bh) // 2)
    left = torch.where(first >= 0, (u[:, 1] * (w - bw + 1)).long(), (w - bw) // 2)
    return torch.stack([top, left, bh, bw], dim=1)


class RandomResizedCrop(BatchRandomTransform):
    """Random area/aspect crop resized to ``size`` (bilinear), a different box per sample.

    ``antialias=False`` (default) matches OpenCV/Albumentations ``INTER_LINEAR`` and is twice as fast
    on CPU; torchvision's v2 default is ``antialias=True``.
    """

    _repr_args = ("size", "scale", "ratio", "antialias")
    _changes_size = True

    def __init__(self, size: int | Sequence[int], scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), antialias: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(1.0, generator)
        self.size = check_size(size)
        self.scale = check_range(scale, "scale", 1e-6, 1.0, symmetric=False)
        self.ratio = check_range(ratio, "ratio", 1e-3, 1e3, symmetric=False)
        self.antialias = bool(antialias)

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {"boxes": sample_resized_crop_boxes(n, h, w, self.scale, self.ratio, generator)}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return K.resized_crop(x, params["boxes"], self.size, antialias=self.antialias)


class _FillMixin:
    fill: float
    interpolation: str

    def _set_fill(self, fill: float, interpolation: str) -> None:
        if not isinstance(fill, numbers.Real):
            raise TypeError(f"fill: expected a number (in the image's units), got {fill!r}")
        if not math.isfinite(fill):
            raise ValueError(f"fill: expected a finite number (in the image's units), got {fill!r}")
        self.fill = float(fill)
        self.interpolation = check_interpolation(interpolation)


class RandomRotation(_FillMixin, BatchRandomTransform):
    """Rotate each sample by an angle drawn uniformly from ``degrees`` (counter-clockwise positive)."""

    _repr_args = ("degrees", "p")

    def __init__(self, degrees: float | tuple[float, float] = 15.0, p: float = 1.0, *, fill: float = 0.0,
                 interpolation: str = "bilinear", generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator)
        self.degrees = check_range(degrees, "degrees", -180.0, 180.0)
        self._set_fill(fill, interpolation)

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {"angle": _uniform(n, self.degrees, generator)}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return K.rotate(x, params["angle"], interpolation=self.interpolation, fill=self.fill)


class RandomShear(_FillMixin, BatchRandomTransform):
    """Shear each sample by angles (degrees) drawn uniformly from ``shear_x`` and ``shear_y``."""

    _repr_args = ("shear_x", "shear_y", "p")

    def __init__(self, shear_x: float | tuple[float, float] = 10.0, shear_y: float | tuple[float, float] = 0.0,
                 p: float = 1.0, *, fill: float = 0.0, interpolation: str = "bilinear",
                 generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator)
        self.shear_x = check_range(shear_x, "shear_x", -80.0, 80.0)
        self.shear_y = check_range(shear_y, "shear_y", -80.0, 80.0)
        self._set_fill(fill, interpolation)

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {"shear": torch.stack([_uniform(n, self.shear_x, generator), _uniform(n, self.shear_y, generator)], 1)}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        s = params["shear"]
        return K.shear(x, s[:, 0], s[:, 1], interpolation=self.interpolation, fill=self.fill)


class RandomElasticWarp(_FillMixin, BatchRandomTransform):
    """Local elastic-style warping: random offsets on a coarse grid, upsampled smoothly.

    Args:
        strength: largest displacement at a control point, in pixels.
        smoothness: spacing of the control points in pixels (larger = smoother, more global bends).
    """

    _repr_args = ("strength", "smoothness", "p")

    def __init__(self, strength: float = 8.0, smoothness: float = 32.0, p: float = 1.0, *, fill: float = 0.0,
                 interpolation: str = "bilinear", generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator)
        if not isinstance(strength, numbers.Real) or not 0 <= strength < math.inf:
            raise ValueError(f"strength: expected a number of pixels >= 0, got {strength!r}")
        if not isinstance(smoothness, numbers.Real) or not 1 <= smoothness < math.inf:
            raise ValueError(f"smoothness: expected a grid spacing in pixels >= 1, got {smoothness!r}")
        self.strength = float(strength)
        self.smoothness = float(smoothness)
        self._set_fill(fill, interpolation)

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        gh = max(2, math.ceil(h / self.smoothness) + 1)
        gw = max(2, math.ceil(w / self.smoothness) + 1)
        noise = torch.empty(n, 2, gh, gw).uniform_(-self.strength, self.strength, generator=generator)
        return {"noise": noise}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        field = K.elastic_field(params["noise"].to(x.device), x.shape[-2:])
        return K.warp(x, field, interpolation=self.interpolation, fill=self.fill)


# ----------------------------------------------------------------------------- colour
class RandomColorShift(BatchRandomTransform):
    """Add a random offset, uniform in ``[-magnitude, magnitude]``, to each of R, G, B of each image.

    Offsets are in [0, 1] units (x255 on uint8). ``clamp`` clamps float results to [0, 1].
    """

    _repr_args = ("magnitude", "p")

    def __init__(self, magnitude: float = 0.1, p: float = 1.0, *, clamp: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator)
        if not isinstance(magnitude, numbers.Real) or not 0.0 <= magnitude <= 1.0:
            raise ValueError(f"magnitude: expected a value in [0, 1] (fraction of the value range), got {magnitude!r}")
        self.magnitude = float(magnitude)
        self.clamp = bool(clamp)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", clamp=True" if self.clamp else "")

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {"shift": _uniform(n, (-self.magnitude, self.magnitude), generator, k=3)}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return K.color_shift(x, params["shift"], clamp=self.clamp)
