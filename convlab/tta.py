"""Test-time augmentation: several views of each photo (10-crop, 5-crop, mirror, several scales), averaged.

The crops are *tensor slices* of a whole batch, not per-image PIL operations, and they are built chunk by chunk
straight from the uint8 source into one reused float buffer, so memory stays bounded by ``chunk_size`` crops
however many views or images there are::

    views = ViewSet.ten_crop(224)                        # torchvision TenCrop's crops, in TenCrop's order
    photos = prepare_images(splits.test.images)          # shorter side -> 256, still uint8
    probs = predict_views(model, photos, views)          # (B, K): mean of the 10 softmaxes

View order follows torchvision: ``five_crop`` gives ``(tl, tr, bl, br, center)``; ``ten_crop`` gives those five,
then the same five positions *taken on the mirrored image*. Mirroring first matters: "top-left of the mirrored
image" is the mirror of the original's top-right crop, and the mirrored centre crop sits one pixel to the right
of the original's when ``W - w`` is odd (torchvision rounds the centre half to even). ``crop_views`` reproduces
``TenCrop`` pixel for pixel (tests check it).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from convlab._checks import check_mean_std, check_size, check_uint8_images
from convlab.device import eval_mode, model_device, use_channels_last
from convlab.preprocess import affine_, affine_coefficients

__all__ = [
    "View",
    "ViewSet",
    "crop_views",
    "prepare_images",
    "average_views",
    "predict_views",
    "dense_predict",
    "CPU_CHUNK_SIZE",
    "CUDA_CHUNK_SIZE",
    "default_chunk_size",
    "POSITIONS",
    "AVERAGES",
]

#: Crops per forward pass on a CPU, chosen by measurement (``benchmarks/bench_tta.py`` sweeps it; the figures are in
#: README and ``benchmarks/results/tta_cpu.json``): small chunks keep the activations in the CPU's caches, and large
#: ones also need far more memory.
CPU_CHUNK_SIZE = 4
#: Crops per forward pass on a GPU: large batches keep it busy (``benchmarks/gpu_check.py`` sweeps it).
CUDA_CHUNK_SIZE = 256

POSITIONS = ("tl", "tr", "bl", "br", "center")
AVERAGES = ("softmax", "logits", "none")
_FLIPS = (None, "h", "v")


@dataclass(frozen=True)
class View:
    """One view of an image.

    Args:
        position: which crop, on the (mirrored, resized) image: ``"tl"``, ``"tr"``, ``"bl"``, ``"br"``, ``"center"``.
        flip: ``None``, ``"h"`` (mirror left-right) or ``"v"`` (upside down), applied *before* cropping, as
            torchvision does.
        resize: resize the shorter side to this many pixels (uint8, antialiased bilinear) before cropping;
            ``None`` crops the image as given.
    """

    position: str = "center"
    flip: str | None = None
    resize: int | None = None

    def __post_init__(self):
        if self.position not in POSITIONS:
            raise ValueError(f"position: expected one of {POSITIONS}, got {self.position!r}")
        if self.flip not in _FLIPS:
            raise ValueError(f"flip: expected None, 'h' or 'v', got {self.flip!r}")
        if self.resize is not None and (
            not isinstance(self.resize, int) or isinstance(self.resize, bool) or self.resize < 1
        ):
            raise ValueError(f"resize: expected None or an int >= 1, got {self.resize!r}")


@dataclass(frozen=True)
class ViewSet:
    """A crop size and an ordered tuple of :class:`View`; ``crop_views`` returns them in this order."""

    size: tuple[int, int]
    views: tuple[View, ...]
    name: str = "views"

    def __post_init__(self):
        object.__setattr__(self, "size", check_size(self.size))
        views = tuple(self.views)
        if not views or not all(isinstance(v, View) for v in views):
            raise ValueError(f"views: expected a non-empty sequence of View, got {self.views!r}")
        object.__setattr__(self, "views", views)

    def __len__(self) -> int:
        return len(self.views)

    @classmethod
    def center(cls, size: int | Sequence[int]) -> ViewSet:
        """The usual single centre crop (1 view)."""
        return cls(size, (View("center"),), "center")

    @classmethod
    def flips(cls, size: int | Sequence[int]) -> ViewSet:
        """Centre crop and its mirror (2 views)."""
        return cls(size, (View("center"), View("center", "h")), "center+mirror")

    @classmethod
    def five_crop(cls, size: int | Sequence[int]) -> ViewSet:
        """torchvision ``FiveCrop``: ``(tl, tr, bl, br, center)``."""
        return cls(size, tuple(View(p) for p in POSITIONS), "5-crop")

    @classmethod
    def ten_crop(cls, size: int | Sequence[int], vertical_flip: bool = False) -> ViewSet:
        """torchvision ``TenCrop``: the five crops, then the five crops of the mirrored (or upside-down) image."""
        flip = "v" if vertical_flip else "h"
        return cls(size, tuple(View(p) for p in POSITIONS) + tuple(View(p, flip) for p in POSITIONS), "10-crop")

    @classmethod
    def multi_scale(
        cls,
        size: int | Sequence[int],
        scales: Sequence[int],
        positions: Sequence[str] = ("center",),
        mirror: bool = True,
    ) -> ViewSet:
        """For each shorter-side ``scale``, crops at ``positions`` (and their mirrors).

        That makes ``len(scales) * len(positions) * (1 + mirror)`` views.

        Order: scale, then mirror (unmirrored first), then position. GoogLeNet's 144 crops are of this family.
        """
        if not scales:
            raise ValueError("scales: expected at least one shorter-side size, got none")
        flips = (None, "h") if mirror else (None,)
        views = tuple(View(p, f, s) for s in scales for f in flips for p in positions)
        return cls(size, views, f"{len(views)} views at scales {tuple(scales)}")


# ----------------------------------------------------------------------------- kernels
def _resize(x: Tensor, size: int) -> Tensor:
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(x, [size], antialias=True)


def _crop(x: Tensor, position: str, size: tuple[int, int]) -> Tensor:
    """The crop of ``x (..., C, H, W)`` at ``position`` as torchvision's five crop takes it (a view, no copy)."""
    h, w = size
    H, W = x.shape[-2:]
    if h > H or w > W:
        raise ValueError(
            f"size: the crop {(h, w)} is larger than the image {(H, W)}; resize the images first "
            "(prepare_images) or use a smaller crop"
        )
    if position == "center":  # torchvision's rounding (half to even), kept for pixel equality
        top, left = int(round((H - h) / 2.0)), int(round((W - w) / 2.0))
    else:
        top = 0 if position[0] == "t" else H - h
        left = 0 if position[1] == "l" else W - w
    return x[..., top : top + h, left : left + w]


def _transform(x: Tensor, resize: int | None, flip: str | None) -> Tensor:
    """Resize the shorter side, then mirror: the image a view's crop is cut from."""
    x = x if resize is None else _resize(x, resize)
    # Mirror the whole (contiguous) image once rather than each crop: torch.flip of a strided crop is many
    # times slower per pixel, and the five crops cover the image about twice over.
    return x if flip is None else x.flip(-1 if flip == "h" else -2)


def _fill(out: Tensor, source: Tensor | list[Tensor], views: ViewSet, start: int, stop: int) -> None:
    """Write crops ``start .. stop-1`` of the flat ``(image, view)`` order into ``out[: stop - start]``.

    Crop ``f`` is view ``f % V`` of image ``f // V``. For each view the crops of a chunk sit every ``V`` rows of
    ``out``, so one strided ``copy_`` per view writes a whole batch (and converts uint8 to float on the way).
    Resizing and mirroring happen once per chunk and distinct ``(resize, flip)``, not once per view.
    """
    V = len(views)
    i0, i1 = start // V, (stop - 1) // V + 1
    groups: dict[tuple, list[int]] = {}
    for v, view in enumerate(views.views):
        groups.setdefault((view.resize, view.flip), []).append(v)
    for (resize, flip), vs in groups.items():
        if isinstance(source, Tensor):
            src = _transform(source[i0:i1], resize, flip)
        else:
            src = [_transform(im, resize, flip) for im in source[i0:i1]]
        for v in vs:
            lo, hi = max(i0, -(-(start - v) // V)), min(i1, -(-(stop - v) // V))
            if lo >= hi:
                continue
            dst = out[lo * V + v - start :: V][: hi - lo]
            if isinstance(src, Tensor):
                dst.copy_(_crop(src[lo - i0 : hi - i0], views.views[v].position, views.size))
            else:
                for k in range(hi - lo):
                    dst[k].copy_(_crop(src[lo - i0 + k], views.views[v].position, views.size))


def crop_views(images: Tensor | Sequence[Tensor], views: ViewSet, *, out: Tensor | None = None) -> Tensor:
    """All views of all images: ``(B, C, H, W)`` (or a list of ``(C, H, W)`` of any sizes) -> ``(B, V, C, h, w)``.

    ``out[b, v]`` is view ``views.views[v]`` of image ``b``; for ``ViewSet.ten_crop`` this is
    ``torchvision.transforms.v2.TenCrop(size)(image)[v]``. The dtype is kept (uint8 in, uint8 out) unless ``out``
    is given: a reused ``(B, V, C, h, w)`` buffer of any dtype (the copy converts), which avoids paying page
    faults for a fresh large tensor on every call.
    """
    if not isinstance(views, ViewSet):
        raise TypeError(f"views: expected a ViewSet (e.g. ViewSet.ten_crop(224)), got {type(views).__name__}")
    source = check_uint8_images(images)
    B, V, C = len(source), len(views), source[0].shape[-3]
    shape = (B, V, C, *views.size)
    if out is None:
        out = torch.empty(shape, dtype=source[0].dtype, device=source[0].device)
    elif not isinstance(out, Tensor) or tuple(out.shape) != shape or not out.is_contiguous():
        raise ValueError(
            f"out: expected a contiguous tensor of shape {shape}, got "
            f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"
        )
    _fill(out.view(B * V, C, *views.size), source, views, 0, B * V)
    return out


def prepare_images(images: Tensor | Sequence[Tensor], resize_size: int = 256) -> Tensor | list[Tensor]:
    """Resize the shorter side to ``resize_size`` (antialiased, kept uint8: 4x less memory than float).

    Returns one ``(B, C, H, W)`` uint8 tensor when all resized images share a shape, else a list of
    ``(C, H, W)`` tensors; both are accepted by :func:`crop_views` and :func:`predict_views`.
    """
    if not isinstance(resize_size, int) or isinstance(resize_size, bool) or resize_size < 1:
        raise ValueError(f"resize_size: expected an int >= 1, got {resize_size!r}")
    source = check_uint8_images(images)
    if isinstance(source, Tensor):
        return _resize(source, resize_size).contiguous()
    out = [_resize(im, resize_size).contiguous() for im in source]
    return torch.stack(out) if len({tuple(im.shape) for im in out}) == 1 else out


def average_views(logits: Tensor, average: str = "softmax") -> Tensor:
    """Combine per-view logits ``(B, V, K)``.

    ``"softmax"``: mean of the per-view probabilities -> ``(B, K)`` probabilities (the default, as in AlexNet and
    GoogLeNet). ``"logits"``: mean of the logits -> ``(B, K)`` logits (apply softmax yourself; a geometric mean of
    the probabilities, up to normalisation). ``"none"``: the ``(B, V, K)`` logits unchanged.
    """
    if not isinstance(logits, Tensor) or logits.ndim != 3:
        raise ValueError(f"logits: expected a (B, V, K) tensor, got {getattr(logits, 'shape', type(logits).__name__)}")
    if average not in AVERAGES:
        raise ValueError(f"average: expected 'softmax', 'logits' or 'none', got {average!r}")
    if average == "softmax":
        return logits.softmax(dim=-1).mean(dim=1)
    if average == "logits":
        return logits.mean(dim=1)
    return logits  # "none"


def _wants_channels_last(model: nn.Module) -> bool:
    """True when the model's convolution weights are stored channels_last (then the input should be too)."""
    for p in model.parameters():
        if p.ndim == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last):
            return True
    return False


def default_chunk_size(device: str | torch.device) -> int:
    """Crops per forward pass for ``device``: :data:`CUDA_CHUNK_SIZE` on a GPU, :data:`CPU_CHUNK_SIZE` elsewhere."""
    return CUDA_CHUNK_SIZE if torch.device(device).type == "cuda" else CPU_CHUNK_SIZE


def _normaliser(
    spec, mean: Sequence[float] | None, std: Sequence[float] | None, channels: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """``(scale, shift)``, each ``(1, C, 1, 1)``, with ``(x / 255 - mean) / std = x * scale + shift`` on uint8 levels.

    ``mean`` and ``std`` are the caller's, else ``spec``'s (a model's ``.spec``); the error says what to pass.
    """
    mean = mean if mean is not None else getattr(spec, "mean", None)
    std = std if std is not None else getattr(spec, "std", None)
    if mean is None or std is None:
        raise ValueError("mean, std: the model has no .spec with the normalisation; pass mean=... and std=...")
    mean, std = check_mean_std(mean, std, channels)
    return affine_coefficients(mean, std, device=device)


@dataclass(frozen=True)
class _Setup:
    """What :func:`predict_views` and :func:`dense_predict` share once their arguments are checked."""

    device: torch.device
    source: Tensor | list[Tensor]
    scale: Tensor
    shift: Tensor
    chunk_size: int


def _setup(
    model: nn.Module,
    images: Tensor | Sequence[Tensor],
    average: str,
    chunk_size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    device: str | torch.device | None,
    unit: str,
) -> _Setup:
    """Check the shared arguments; resolve the device, the uint8 source, the normalisation and the chunk size.

    ``unit`` names what ``chunk_size`` counts in its error ("crops", "images").
    """
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"chunk_size: expected an int >= 1 ({unit} per forward pass) or None, got {chunk_size!r}")
    if average not in AVERAGES:
        raise ValueError(f"average: expected 'softmax', 'logits' or 'none', got {average!r}")
    device = model_device(model) if device is None else torch.device(device)
    source = check_uint8_images(images)
    scale, shift = _normaliser(getattr(model, "spec", None), mean, std, source[0].shape[-3], device)
    return _Setup(device, source, scale, shift, chunk_size or default_chunk_size(device))


@contextmanager
def _evaluating(model: nn.Module, device: torch.device, channels_last: bool | None) -> Iterator[torch.memory_format]:
    """Run ``model`` in eval mode, in channels_last if asked (``None``: on the CPU); yields the inputs' memory format.

    Weights that are not channels_last already are converted for the block and converted back afterwards, and
    the caller's train/eval mode is restored, also when the block raises. (A lazy module's weights do not exist
    before its first forward: those run in the format they have.) Gradients are the caller's business: the
    public functions are decorated with ``torch.inference_mode``.
    """
    use_cl = use_channels_last(channels_last, device)
    lazy = any(nn.parameter.is_lazy(p) for p in model.parameters())
    convert = use_cl and not lazy and not _wants_channels_last(model)
    if convert:
        model.to(memory_format=torch.channels_last)
    try:
        with eval_mode(model):
            yield torch.channels_last if use_cl else torch.contiguous_format
    finally:
        if convert:
            model.to(memory_format=torch.contiguous_format)


@torch.inference_mode()
def predict_views(
    model: nn.Module,
    images: Tensor | Sequence[Tensor],
    views: ViewSet | None = None,
    *,
    average: str = "softmax",
    chunk_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    channels_last: bool | None = None,
) -> Tensor:
    """Run every view of every image through ``model`` in chunks of ``chunk_size`` crops, then average.

    Args:
        model: maps normalised float ``(n, C, h, w)`` to logits ``(n, K)``; a :class:`~convlab.backbones.Backbone`
            or :class:`~convlab.ensemble.Ensemble` brings its own ``spec`` (crop size, mean, std).
        images: uint8 ``(B, C, H, W)`` or a list of uint8 ``(C, H, W)`` of any sizes (see :func:`prepare_images`).
        views: default ``ViewSet.ten_crop(model.spec.input_size)``.
        average: ``"softmax"`` -> ``(B, K)`` mean probabilities; ``"logits"`` -> ``(B, K)`` mean logits;
            ``"none"`` -> ``(B, V, K)`` logits (see :func:`average_views`).
        chunk_size: crops per forward pass; memory is one float buffer of ``chunk_size`` crops plus the model's
            activations for that many, whatever ``B`` and ``V``. Default :func:`default_chunk_size` of the device.
        mean, std: per-channel normalisation of ``[0, 1]`` pixels; default ``model.spec.mean`` / ``.std``.
        device: where to run; default the model's device (the uint8 source is moved there once).
        channels_last: run crops and convolution weights in ``channels_last`` memory format. ``None`` (default):
            on the CPU, where it makes MobileNetV2 faster (README's benchmarks); the model's weights are converted for
            the call and converted back afterwards (results are the same up to float rounding).

    The model runs in eval mode (restored afterwards) and in ``torch.inference_mode``. Chunks follow the flat
    order image-major, view-minor, so the result does not depend on ``chunk_size`` (up to float rounding).
    """
    run = _setup(model, images, average, chunk_size, mean, std, device, "crops")
    spec = getattr(model, "spec", None)
    if views is None:
        if spec is None:
            raise ValueError(
                "views: the model has no .spec to take the crop size from; pass e.g. ViewSet.ten_crop(224)"
            )
        views = ViewSet.ten_crop(spec.input_size)
    if not isinstance(views, ViewSet):
        raise TypeError(f"views: expected a ViewSet (e.g. ViewSet.ten_crop(224)), got {type(views).__name__}")
    device, C = run.device, run.source[0].shape[-3]
    source = run.source.to(device) if isinstance(run.source, Tensor) else [im.to(device) for im in run.source]
    total = len(source) * len(views)
    n = min(run.chunk_size, total)
    logits = None
    with _evaluating(model, device, channels_last) as fmt:
        buf = torch.empty(n, C, *views.size, device=device).contiguous(memory_format=fmt)
        for start in range(0, total, n):
            stop = min(start + n, total)
            x = buf[: stop - start]
            _fill(x, source, views, start, stop)
            affine_(x, run.scale, run.shift)
            out = model(x)
            if logits is None:
                logits = torch.empty(total, out.shape[-1], dtype=out.dtype, device=out.device)
            logits[start:stop] = out
    return average_views(logits.view(len(source), len(views), -1), average)


@torch.inference_mode()
def dense_predict(
    model: nn.Module,
    images: Tensor | Sequence[Tensor],
    resize: int | None = None,
    *,
    mirror: bool = True,
    average: str = "softmax",
    chunk_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    channels_last: bool | None = None,
) -> Tensor:
    """VGG's dense evaluation: the *whole* image (shorter side ``resize``), and its mirror, through ``model`` once.

    Simonyan & Zisserman (2015, sec. 3.2) turn the fully connected layers into convolutions, run the net on the
    uncropped test image, sum-pool the class score map and average with the mirrored image's: no crops, and no
    recomputation where crops overlap. For a network that ends in global average pooling and a linear layer
    (MobileNetV2, EfficientNet, ResNet) that is exactly ``model(whole image)``: the linear layer commutes with the
    spatial mean. So the model must accept inputs of any size (global pooling before the classifier).

    Args:
        model: normalised float ``(n, C, H, W)`` of any ``H, W`` -> logits ``(n, K)``; ``.spec`` gives mean/std.
        images: uint8 ``(B, C, H, W)`` or a list of uint8 ``(C, H, W)`` of any sizes.
        resize: shorter side before evaluation (VGG's test scale ``Q``); ``None`` evaluates the images as given.
        mirror: also evaluate the left-right mirrored image (2 views), as VGG did.
        average: as in :func:`predict_views` (``"none"`` gives ``(B, 1 + mirror, K)``).
        chunk_size: images (mirrors count) per forward pass; default :func:`default_chunk_size` of the device.
            Images of different shapes run in separate passes.
        mean, std, device, channels_last: as in :func:`predict_views`.

    Cost: ``(1 + mirror) * H * W`` pixels per image against ``V * h * w`` for ``V`` crops of ``h x w``; for a
    4:3 image at ``Q = h`` that is ``2 * 4/3 / 10 = 0.27`` of 10-crop's pixels.
    """
    if resize is not None and (not isinstance(resize, int) or isinstance(resize, bool) or resize < 1):
        raise ValueError(f"resize: expected None or an int >= 1 (the shorter side), got {resize!r}")
    run = _setup(model, images, average, chunk_size, mean, std, device, "images")
    device = run.device
    source = list(run.source) if isinstance(run.source, Tensor) else run.source
    n_views = 2 if mirror else 1
    per_pass = max(1, run.chunk_size // n_views)
    # group images by their shape after resizing, so each forward pass stacks images of one shape
    resized = [(im.to(device) if resize is None else _resize(im.to(device), resize)) for im in source]
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(resized):
        groups.setdefault(tuple(im.shape), []).append(i)
    logits = None
    with _evaluating(model, device, channels_last) as fmt:
        for idx in groups.values():
            for start in range(0, len(idx), per_pass):
                part = idx[start : start + per_pass]
                x = torch.stack([resized[i] for i in part])
                if mirror:
                    x = torch.stack([x, x.flip(-1)], dim=1).flatten(0, 1)  # image-major, then unmirrored/mirrored
                x = affine_(x.float().contiguous(memory_format=fmt), run.scale, run.shift)
                out = model(x)
                if logits is None:
                    logits = torch.empty(len(source), n_views, out.shape[-1], dtype=out.dtype, device=out.device)
                logits[part] = out.view(len(part), n_views, -1)
    return average_views(logits, average)
