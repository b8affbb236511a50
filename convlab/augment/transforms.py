"""Random augmentation transforms that draw parameters per sample.

The classes subclass ``torchvision.transforms.v2.Transform`` and follow its split: ``make_params``
draws the randomness, ``transform`` calls a pure kernel from :mod:`convlab.augment.functional`.
They compose with ``v2.Compose`` and accept plain tensors and ``tv_tensors.Image``, single
``(C, H, W)`` or batched ``(B, C, H, W)``.

The difference from torchvision: applied to a batch, a v2 transform draws *one* set of parameters
for all images. Here every sample gets its own draw (Kornia's ``same_on_batch=False``), so an
augmentation can run once per batch instead of once per image. Each transform keeps its last draw
in ``last_params``; ``t(x, params=t.last_params)`` (or ``t.replay(x)``) applies exactly that draw
again (e.g. to a mask or to show it). Pass ``generator=torch.Generator().manual_seed(s)`` for
reproducible draws.

Each setting of a transform (``degrees``, ``p``, ...) is declared once, as a :class:`Param` in the
class's ``PARAMS``: its accepted bounds, its default, its unit, the preview slider's range and how it
is drawn. The constructor checks the argument with it, the draw samples from it, the repr prints the
declared settings, and :mod:`convlab.widgets` builds its sliders from it.

Two draws are functions: :func:`sample_resized_crop_boxes` (Inception-style boxes, vectorised) and
:func:`random_crop_batch` (mirrored square crops of each photo, the training views of notebooks 09 and 10).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from convlab._checks import (
    check_generator,
    check_image,
    check_interpolation,
    check_range,
    check_size,
    flatten_batch,
    fmt_arg,
    unflatten_batch,
)

from . import functional as K

__all__ = [
    "Param",
    "P",
    "SCALE",
    "RATIO",
    "DEGREES",
    "SHEAR_X",
    "SHEAR_Y",
    "STRENGTH",
    "SMOOTHNESS",
    "MAGNITUDE",
    "BatchRandomTransform",
    "RandomHorizontalFlip",
    "RandomCrop",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomShear",
    "RandomElasticWarp",
    "RandomColorShift",
    "sample_resized_crop_boxes",
    "random_crop_batch",
]


# ----------------------------------------------------------------------------- declared settings
@dataclass(frozen=True)
class Param:
    """One setting of a random transform, declared once: checked, drawn from, printed and shown as a slider.

    Attributes:
        name: the constructor argument (and the attribute that holds the checked value).
        kind: ``"number"``; ``"range"``, a ``(min, max)`` pair (a number ``v`` means ``(0, v)``); or
            ``"symmetric range"`` (a number ``v`` means ``(-v, v)``).
        bounds: the values it accepts, inclusive (a range's ends); ``math.inf`` for no upper bound.
        default: the constructor's default, and the slider's.
        unit: what the number means, shown beside its slider.
        what: the number's name in an error message (``"p: expected a probability in [0, 1], got 1.5"``).
        slider: ``(min, max, step)`` of the preview slider, a part of ``bounds`` worth showing; None for none.
        sampler: how :meth:`draw` turns the setting into per-sample values: ``"uniform"`` (in the range, or in
            ``[-v, v]`` for a number ``v``), ``"normal"`` (``v`` is the standard deviation), ``"bernoulli"`` (``v`` is
            the probability of True); ``""`` where the transform draws it its own way.
    """

    name: str
    kind: Literal["number", "range", "symmetric range"]
    bounds: tuple[float, float]
    default: float | tuple[float, float]
    unit: str
    what: str = "a number"
    slider: tuple[float, float, float] | None = None
    sampler: Literal["", "uniform", "normal", "bernoulli"] = ""

    def check(self, value: Any) -> Any:
        """``value`` as a float (a ``(min, max)`` pair of floats for a range), or a one-sentence error naming it."""
        lo, hi = self.bounds
        if self.kind != "number":
            return check_range(value, self.name, lo, hi, symmetric=self.kind == "symmetric range")
        if not isinstance(value, numbers.Real) or not (math.isfinite(value) and lo <= value <= hi):  # NaN fails too
            allowed = f"in [{lo:g}, {hi:g}]" if math.isfinite(hi) else f">= {lo:g}"
            raise ValueError(f"{self.name}: expected {self.what} {allowed}, got {value!r}")
        return float(value)

    def draw(self, value: Any, shape: tuple[int, ...], generator: torch.Generator | None) -> Tensor:
        """Independent values of ``shape`` for the checked setting ``value``, drawn through ``generator``."""
        if self.sampler == "uniform":
            lo, hi = value if isinstance(value, tuple) else (-value, value)
            return torch.empty(shape).uniform_(lo, hi, generator=generator)
        if self.sampler == "normal":
            return torch.randn(shape, generator=generator) * value
        if self.sampler == "bernoulli":
            return torch.rand(shape, generator=generator) < value
        raise ValueError(
            f"sampler: expected 'uniform', 'normal' or 'bernoulli' to draw {self.name}, got {self.sampler!r}"
        )


#: the probability of transforming a sample (each sample is chosen independently)
P = Param(
    "p",
    "number",
    bounds=(0.0, 1.0),
    default=1.0,
    unit="probability per image",
    what="a probability",
    slider=(0.0, 1.0, 0.05),
    sampler="bernoulli",
)


# ----------------------------------------------------------------------------- base class
class BatchRandomTransform(v2.Transform):
    """Base: per-sample parameters, probability ``p``, seedable ``generator``, ``last_params``, ``params=``.

    Subclasses declare their settings in ``PARAMS`` (the repr prints them in that order), implement
    ``_draw(n, h, w, generator) -> dict`` (tensors with a leading ``n``) and ``_apply(x, params) -> Tensor``
    for a ``(B, C, H, W)`` batch. Samples not selected by ``p`` are returned unchanged (``params["apply"]``
    is the bool mask).

    ``t(x)`` draws new parameters and keeps them in ``last_params``; ``t(x, params=...)`` applies given ones
    (a previous ``last_params``, same batch size) instead of drawing; ``t.replay(x)`` is ``t(x,
    params=t.last_params)``.
    """

    PARAMS: tuple[Param, ...] = ()
    _changes_size = False

    def __init__(self, p: float = 1.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.p = P.check(p)
        self.generator = check_generator(generator)
        self.last_params: dict[str, Tensor] | None = None

    # -- v2 API
    def forward(self, *inputs: Any, params: dict[str, Tensor] | None = None) -> Any:
        """v2's call (a new draw per call), or with ``params`` that draw applied to one image or batch."""
        if params is None:
            return super().forward(*inputs)
        if not isinstance(params, dict) or "apply" not in params:
            raise TypeError(f"params: expected a dict of drawn parameters (a previous last_params), got {params!r}")
        if len(inputs) != 1:
            raise TypeError(f"inputs: expected one image or batch to apply `params` to, got {len(inputs)} inputs")
        self.check_inputs(list(inputs))
        out = self.transform(inputs[0], params)
        self.last_params = params
        return out

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        for inpt in flat_inputs:
            if isinstance(inpt, PIL.Image.Image):
                raise TypeError(
                    f"{type(self).__name__} works on tensors; convert PIL images with "
                    "v2.PILToTensor() (or v2.ToImage()) first"
                )
            if isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask, tv_tensors.Video)):
                raise TypeError(f"{type(self).__name__} supports images only, got {type(inpt).__name__}")
        if not any(isinstance(i, Tensor) for i in flat_inputs):  # v2 would pass a numpy array through untouched
            check_image(flat_inputs[0] if flat_inputs else None)  # raises, naming the layout it expects

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = next(i for i in flat_inputs if isinstance(i, Tensor))
        check_image(image)
        h, w = image.shape[-2:]
        self.last_params = self.draw(math.prod(image.shape[:-3]), h, w)
        return self.last_params

    def draw(self, n: int, h: int, w: int) -> dict[str, Tensor]:
        """Per-sample parameters for ``n`` images of ``h x w`` pixels, and ``apply`` (the samples ``p`` selects)."""
        params = self._draw(n, h, w, self.generator)
        params["apply"] = P.draw(self.p, (n,), self.generator) if self.p < 1.0 else torch.ones(n, dtype=torch.bool)
        return params

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        image = check_image(inpt)
        x, lead = flatten_batch(image)
        if params["apply"].shape[0] != x.shape[0]:
            raise ValueError(
                f"parameters were drawn for {params['apply'].shape[0]} samples, but the input has {x.shape[0]}"
            )
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
        return self(*inputs, params=self.last_params)

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{param.name}={fmt_arg(getattr(self, param.name))}" for param in self.PARAMS)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


# ----------------------------------------------------------------------------- geometry
class RandomHorizontalFlip(BatchRandomTransform):
    """Mirror each sample left-right with probability ``p`` (default 0.5)."""

    PARAMS = (replace(P, default=0.5),)

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(p, generator)

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return x.flip(-1)


class RandomCrop(BatchRandomTransform):
    """Cut a ``size`` window at a random position, drawn independently per sample (no ``p``: sizes must match)."""

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

    def extra_repr(self) -> str:
        return f"size={fmt_arg(self.size)}"


def sample_resized_crop_boxes(
    n: int,
    h: int,
    w: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    tries: int = 10,
) -> Tensor:
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


def random_crop_batch(photos: Tensor, crop: int, n_crops: int, generator: torch.Generator) -> Tensor:
    """``n_crops`` random crops of each photo: square side in ``[crop, min(H, W)]``, random place, mirrored half
    the time, resized to ``crop``. uint8 ``(B, C, H, W)`` -> uint8 ``(B, n_crops, C, crop, crop)``.

    The AlexNet-style training views of notebooks 09 and 10, drawn crop by crop from ``generator`` (side, top,
    left, then the mirror), so a seed gives the same views on every machine."""
    from torchvision.transforms.v2 import functional as TF

    B, C, H, W = photos.shape
    out = torch.empty(B, n_crops, C, crop, crop, dtype=photos.dtype)
    for b in range(B):
        for r in range(n_crops):
            side = int(torch.randint(crop, min(H, W) + 1, (1,), generator=generator))
            top = int(torch.randint(H - side + 1, (1,), generator=generator))
            left = int(torch.randint(W - side + 1, (1,), generator=generator))
            x = photos[b, :, top : top + side, left : left + side]
            if side != crop:
                x = TF.resize(x, [crop, crop], antialias=True)
            if bool(torch.rand((), generator=generator) < 0.5):
                x = x.flip(-1)
            out[b, r] = x
    return out


#: the crop's area as a fraction of the image's (drawn by :func:`sample_resized_crop_boxes`)
SCALE = Param("scale", "range", bounds=(1e-6, 1.0), default=(0.08, 1.0), unit="crop area / photo area")
#: the crop's aspect ratio, width / height (drawn log-uniformly by :func:`sample_resized_crop_boxes`)
RATIO = Param("ratio", "range", bounds=(1e-3, 1e3), default=(3 / 4, 4 / 3), unit="crop width / crop height")


class RandomResizedCrop(BatchRandomTransform):
    """Random area/aspect crop resized to ``size`` (bilinear), a different box per sample.

    ``antialias=False`` (default) matches OpenCV/Albumentations ``INTER_LINEAR`` and is twice as fast
    on CPU; torchvision's v2 default is ``antialias=True``.
    """

    PARAMS = (SCALE, RATIO)
    _changes_size = True

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        antialias: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(1.0, generator)
        self.size = check_size(size)
        self.scale = SCALE.check(scale)
        self.ratio = RATIO.check(ratio)
        self.antialias = bool(antialias)

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {"boxes": sample_resized_crop_boxes(n, h, w, self.scale, self.ratio, generator)}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return K.resized_crop(x, params["boxes"], self.size, antialias=self.antialias)

    def extra_repr(self) -> str:
        return f"size={fmt_arg(self.size)}, {super().extra_repr()}, antialias={self.antialias}"


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


#: the rotation angle's range in degrees, counter-clockwise positive (a number ``v``: ``(-v, v)``)
DEGREES = Param(
    "degrees",
    "symmetric range",
    bounds=(-180.0, 180.0),
    default=15.0,
    unit="largest angle, \u00b0",
    slider=(0.0, 180.0, 1.0),
    sampler="uniform",
)


class RandomRotation(_FillMixin, BatchRandomTransform):
    """Rotate each sample by an angle drawn uniformly from ``degrees`` (counter-clockwise positive)."""

    PARAMS = (DEGREES, P)

    def __init__(
        self,
        degrees: float | tuple[float, float] = 15.0,
        p: float = 1.0,
        *,
        fill: float = 0.0,
        interpolation: str = "bilinear",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator)
        self.degrees = DEGREES.check(degrees)
        self._set_fill(fill, interpolation)

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {"angle": DEGREES.draw(self.degrees, (n,), generator)}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return K.rotate(x, params["angle"], interpolation=self.interpolation, fill=self.fill)


#: the range of the shear angle along x, in degrees (a number ``v``: ``(-v, v)``)
SHEAR_X = Param(
    "shear_x",
    "symmetric range",
    bounds=(-80.0, 80.0),
    default=10.0,
    unit="largest angle, \u00b0",
    slider=(0.0, 45.0, 1.0),
    sampler="uniform",
)
#: the same along y
SHEAR_Y = replace(SHEAR_X, name="shear_y", default=0.0)


class RandomShear(_FillMixin, BatchRandomTransform):
    """Shear each sample by angles (degrees) drawn uniformly from ``shear_x`` and ``shear_y``."""

    PARAMS = (SHEAR_X, SHEAR_Y, P)

    def __init__(
        self,
        shear_x: float | tuple[float, float] = 10.0,
        shear_y: float | tuple[float, float] = 0.0,
        p: float = 1.0,
        *,
        fill: float = 0.0,
        interpolation: str = "bilinear",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator)
        self.shear_x = SHEAR_X.check(shear_x)
        self.shear_y = SHEAR_Y.check(shear_y)
        self._set_fill(fill, interpolation)

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        sx = SHEAR_X.draw(self.shear_x, (n,), generator)
        sy = SHEAR_Y.draw(self.shear_y, (n,), generator)
        return {"shear": torch.stack([sx, sy], 1)}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        s = params["shear"]
        return K.shear(x, s[:, 0], s[:, 1], interpolation=self.interpolation, fill=self.fill)


#: the largest displacement of a control point, in pixels (drawn uniformly in ``[-strength, strength]``)
STRENGTH = Param(
    "strength",
    "number",
    bounds=(0.0, math.inf),
    default=8.0,
    unit="largest shift, px",
    what="a number of pixels",
    slider=(0.0, 30.0, 0.5),
    sampler="uniform",
)
#: the spacing of the control points, in pixels
SMOOTHNESS = Param(
    "smoothness",
    "number",
    bounds=(1.0, math.inf),
    default=32.0,
    unit="control-point spacing, px",
    what="a grid spacing in pixels",
    slider=(4.0, 96.0, 1.0),
)


class RandomElasticWarp(_FillMixin, BatchRandomTransform):
    """Local elastic-style warping: random offsets on a coarse grid, upsampled smoothly.

    Args:
        strength: largest displacement at a control point, in pixels.
        smoothness: spacing of the control points in pixels (larger = smoother, more global bends).
    """

    PARAMS = (STRENGTH, SMOOTHNESS, P)

    def __init__(
        self,
        strength: float = 8.0,
        smoothness: float = 32.0,
        p: float = 1.0,
        *,
        fill: float = 0.0,
        interpolation: str = "bilinear",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(p, generator)
        self.strength = STRENGTH.check(strength)
        self.smoothness = SMOOTHNESS.check(smoothness)
        self._set_fill(fill, interpolation)

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        gh = max(2, math.ceil(h / self.smoothness) + 1)
        gw = max(2, math.ceil(w / self.smoothness) + 1)
        return {"noise": STRENGTH.draw(self.strength, (n, 2, gh, gw), generator)}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        field = K.elastic_field(params["noise"].to(x.device), x.shape[-2:])
        return K.warp(x, field, interpolation=self.interpolation, fill=self.fill)


# ----------------------------------------------------------------------------- colour
#: the largest RGB offset, as a fraction of the value range (drawn uniformly in ``[-magnitude, magnitude]``)
MAGNITUDE = Param(
    "magnitude",
    "number",
    bounds=(0.0, 1.0),
    default=0.1,
    unit="largest shift / value range",
    what="a fraction of the value range",
    slider=(0.0, 0.5, 0.01),
    sampler="uniform",
)


class RandomColorShift(BatchRandomTransform):
    """Add a random offset, uniform in ``[-magnitude, magnitude]``, to each of R, G, B of each image.

    Offsets are in [0, 1] units (x255 on uint8). ``clamp`` clamps float results to [0, 1].
    """

    PARAMS = (MAGNITUDE, P)

    def __init__(
        self, magnitude: float = 0.1, p: float = 1.0, *, clamp: bool = False, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(p, generator)
        self.magnitude = MAGNITUDE.check(magnitude)
        self.clamp = bool(clamp)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", clamp=True" if self.clamp else "")

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        return {"shift": MAGNITUDE.draw(self.magnitude, (n, 3), generator)}

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return K.color_shift(x, params["shift"], clamp=self.clamp)
