"""A fused training pipeline: random-resized-crop + mirror + colour shift + PCA colour + normalise.

Why fuse? Run as separate ops on a batch, each step allocates and writes a full float batch
(38.5 MB for 64 images at 224 px); on a 2-core CPU the page faults of fresh allocations alone
cost ~10 ms per batch, as much as the useful work. Here the work is done in two steps, into reused buffers:

1. **Geometry** (crop + resize + mirror). ``method="loop"``: each sample's crop is a uint8 *view*
   of the input, resized by ``F.interpolate`` (PyTorch's vectorised uint8 bilinear path on
   channels_last) into a reused uint8 buffer, mirrored on the way in. ``method="matmul"``: the
   bilinear resize is separable, so crop, resize and mirror become two small per-sample matrices
   (``out = Wy @ x @ Wx^T``); one batched matmul beats a Python loop when images are small
   (32 px), and on GPUs.
2. **Colour** (shift + PCA + normalise) is a single per-sample, per-channel affine map
   ``y = x * a[c] + b[n, c]``, done in place in the output buffer (``out=``, reuse it across batches).

On the CPU ``"loop"`` path the float output is still written three times (the uint8 result of step 1 is converted
into it, then multiplied and shifted in place, ``mul_`` and ``add_``), but chunk by chunk of ~8 MB, so the second and
third passes read from cache. Folding the conversion into the multiply (``torch.mul(u8, a, out=out)``, or one
``torch.addcmul``) was measured and is *slower* (colour pass ~4 ms -> ~17 ms for 64 images at 224 px, 2 threads):
PyTorch's mixed uint8/float kernels are not vectorised. On a channels_last output, ``a`` and ``b`` are tiled along W
first so the innermost loop is not 3 channels long (colour pass ~9 ms -> ~3 ms). Results are bit-identical to the
plain ``out.copy_(u8); out.mul_(a).add_(b)``.

The result equals the composition of the separate kernels in :mod:`convlab.augment.functional`
(checked in the tests): :meth:`FusedTrainPipeline.reference` computes that composition.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import torch
from torch import Tensor

from convlab._checks import check_generator as _check_generator
from convlab._checks import check_image
from convlab._checks import check_p as _check_p
from convlab._checks import check_range as _check_range
from convlab._checks import check_size as _check_size
from convlab.preprocess import IMAGENET_MEAN, IMAGENET_STD

from . import functional as K
from .pca import PCAColor
from .transforms import sample_resized_crop_boxes

__all__ = ["FusedTrainPipeline", "IMAGENET_MEAN", "IMAGENET_STD"]


_METHODS = ("auto", "loop", "matmul")


def _bilinear_matrix(start: Tensor, length: Tensor, out_size: int, in_size: int, flip: Tensor) -> Tensor:
    """``(B, out_size, in_size)`` rows of bilinear weights reading ``[start, start+length)``.

    Same sampling as ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` on the
    crop: source ``s = (j + 0.5) * length / out - 0.5``, clamped at 0, neighbours clamped to the crop.
    A mirrored sample simply gets its rows in reverse order.
    """
    dev = start.device
    j = torch.arange(out_size, device=dev, dtype=torch.float32)
    j = torch.where(flip[:, None], out_size - 1 - j, j)  # a mirrored sample reads its rows backwards
    scale = length.float()[:, None] / out_size
    src = ((j + 0.5) * scale - 0.5).clamp(min=0)
    i0 = src.floor()
    lam = (src - i0)[..., None]
    last = (length[:, None] - 1)
    i1 = torch.minimum(i0.long() + 1, last) + start[:, None]
    i0 = torch.minimum(i0.long(), last) + start[:, None]
    m = torch.zeros(start.shape[0], out_size, in_size, device=dev)
    m.scatter_(2, i0[..., None], 1 - lam)  # two non-zeros per row (the same one at the crop's last pixel)
    return m.scatter_add_(2, i1[..., None], lam)


_CHUNK_BYTES = 8 << 20  # float output per colour-pass chunk: stays in a (server) L3 cache between the passes


def _colour_pass(out: Tensor, src: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
    """``out = (src if given, else out) * a + b`` in place; ``a`` (1, C, 1, 1), ``b`` (B, C, 1, 1).

    Done in chunks of images, so the conversion from ``src`` (uint8), the multiply and the add
    each re-read the chunk from cache instead of memory. On a channels_last ``out``, ``a`` and
    ``b`` are first tiled along W in channels_last, so that the innermost loop runs over whole
    ``(W, C)`` rows (with ``(1, C, 1, 1)`` operands it would run over C = 3 values at a time);
    this changes no value, only the loop shape.
    """
    n, c, _, w = out.shape
    if c > 1 and out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous():
        a = a.expand(1, c, 1, w).contiguous(memory_format=torch.channels_last)
        b = b.expand(n, c, 1, w).contiguous(memory_format=torch.channels_last)
    step = max(1, _CHUNK_BYTES // max(1, out[:1].numel() * out.element_size()))
    for i in range(0, n, step):
        o = out[i:i + step]
        if src is not None:
            o.copy_(src[i:i + step])
        o.mul_(a).add_(b[i:i + step])
    return out


class FusedTrainPipeline:
    """Fast batched training augmentation: uint8 ``(B, 3, H, W)`` in, normalised float ``(B, 3, h, w)`` out.

    Per sample: an Inception-style random resized crop (``scale``, ``ratio``), a horizontal flip with
    probability ``flip_p``, an RGB offset uniform in ``[-color_shift, color_shift]``, optionally AlexNet
    PCA colour (pass a fitted :class:`PCAColor`, e.g. ``PCAColor.imagenet()``), then
    ``(x - mean) / std``. Colour offsets are not clamped (so the colour steps stay one affine map).

    Args:
        size: output size.
        method: ``"loop"`` (per-sample uint8 resize; fastest at ImageNet sizes on CPU), ``"matmul"``
            (batched separable resize; fastest for small images and on GPU), or ``"auto"``.
        channels_last: produce a channels_last output (faster convolutions on CPU).
        generator: optional ``torch.Generator`` for reproducible draws.

    Call ``pipe(images, out=buffer)`` to write into a reused buffer; the last draw is in
    ``pipe.last_params`` and can be passed back as ``params=`` to replay it.
    """

    def __init__(self, size: int | Sequence[int] = 224, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_p: float = 0.5, color_shift: float = 0.1,
                 pca: PCAColor | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, *, antialias: bool = False, method: str = "auto",
                 channels_last: bool = False, generator: torch.Generator | None = None) -> None:
        self.size = _check_size(size)
        self.scale = _check_range(scale, "scale", 1e-6, 1.0, symmetric=False)
        self.ratio = _check_range(ratio, "ratio", 1e-3, 1e3, symmetric=False)
        self.flip_p = _check_p(flip_p)
        if not isinstance(color_shift, numbers.Real) or not 0.0 <= color_shift <= 1.0:
            raise ValueError(f"`color_shift` must be in [0, 1], got {color_shift!r}")
        self.color_shift = float(color_shift)
        if pca is not None:
            if not isinstance(pca, PCAColor):
                raise TypeError(f"`pca` must be a PCAColor or None, got {type(pca).__name__}")
            pca.check_is_fitted()
        self.pca = pca
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        if self.mean.shape != (3,) or self.std.shape != (3,) or not bool((self.std > 0).all()) \
                or not bool(torch.isfinite(self.mean).all() and torch.isfinite(self.std).all()):
            raise ValueError(f"`mean` and `std` must be 3 finite numbers (RGB), std > 0; got {mean!r}, {std!r}")
        if method not in _METHODS:
            raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}")
        if method == "matmul" and antialias:
            raise ValueError("`antialias=True` is only implemented for method='loop'")
        self.method = method
        self.antialias = bool(antialias)
        self.channels_last = bool(channels_last)
        self.generator = _check_generator(generator)
        self.last_params: dict[str, Tensor] | None = None
        self._buffers: dict[str, Tensor] = {}

    def __repr__(self) -> str:
        pca = "None" if self.pca is None else repr(self.pca)
        return (f"FusedTrainPipeline(size={self.size}, scale={self.scale}, flip_p={self.flip_p:g}, "
                f"color_shift={self.color_shift:g}, pca={pca}, method={self.method!r})")

    # -- parameters
    def draw(self, n: int, h: int, w: int) -> dict[str, Tensor]:
        """Per-sample parameters: ``boxes`` (n, 4), ``flip`` (n,), ``shift`` (n, 3), ``alpha`` (n, 3)."""
        g = self.generator
        boxes = sample_resized_crop_boxes(n, h, w, self.scale, self.ratio, g)
        flip = torch.rand(n, generator=g) < self.flip_p
        shift = torch.empty(n, 3).uniform_(-self.color_shift, self.color_shift, generator=g)
        sigma = 0.0 if self.pca is None else self.pca.sigma
        alpha = torch.randn(n, 3, generator=g) * sigma
        return {"boxes": boxes, "flip": flip, "shift": shift, "alpha": alpha}

    def _offsets(self, params: dict[str, Tensor]) -> Tensor:
        off = params["shift"].float()
        if self.pca is not None:
            off = off + self.pca.offsets(params["alpha"])
        return off

    def _resolve(self, device: torch.device) -> str:
        if self.method != "auto":
            return self.method
        if device.type != "cpu":
            return "matmul"
        return "matmul" if self.size[0] * self.size[1] <= 64 * 64 and not self.antialias else "loop"

    def _buffer(self, key: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                channels_last: bool) -> Tensor:
        b = self._buffers.get(key)
        if b is None or b.shape != shape or b.dtype != dtype or b.device != device:
            b = torch.empty(shape, dtype=dtype, device=device)
            if channels_last:
                b = b.contiguous(memory_format=torch.channels_last)
            self._buffers[key] = b
        return b

    # -- the fused pass
    def __call__(self, images: Tensor, out: Tensor | None = None,
                 params: dict[str, Tensor] | None = None) -> Tensor:
        """Augment a batch. ``images``: ``(B, 3, H, W)`` uint8 (or float in [0, 1]).

        Returns ``out`` (allocated if None): float32 ``(B, 3, h, w)``, normalised.
        """
        x = check_image(images, "images", channels=3)
        if x.ndim != 4:
            raise ValueError(f"`images` must be a batch (B, 3, H, W), got shape {tuple(x.shape)}")
        n, _, h, w = x.shape
        oh, ow = self.size
        params = self.draw(n, h, w) if params is None else params
        if params["boxes"].shape[0] != n:
            raise ValueError(f"`params` were drawn for {params['boxes'].shape[0]} samples, images has {n}")
        self.last_params = params
        shape = (n, 3, oh, ow)
        if out is None:
            out = torch.empty(shape, device=x.device)
            if self.channels_last:
                out = out.contiguous(memory_format=torch.channels_last)
        elif out.shape != shape or out.dtype != torch.float32 or out.device != x.device:
            raise ValueError(f"`out` must be a float32 tensor of shape {shape} on {x.device}, "
                             f"got {out.dtype} {tuple(out.shape)} on {out.device}")
        unit = 255.0 if x.dtype == torch.uint8 else 1.0
        dev = x.device
        if self._resolve(dev) == "loop":
            src = self._geometry_loop(x, params, out)
        else:
            src = None
            self._geometry_matmul(x, params, out)
        # colour shift + PCA + normalise: y = x / (unit * std) + (offset - mean) / std, in place
        std = self.std.to(dev)
        a = (1.0 / (unit * std)).view(1, 3, 1, 1)
        b = ((self._offsets(params).to(dev) - self.mean.to(dev)) / std).view(n, 3, 1, 1)
        return _colour_pass(out, src, a, b)

    def _geometry_loop(self, x: Tensor, params: dict[str, Tensor], out: Tensor) -> Tensor | None:
        """Resize into ``out``, or (uint8 on the CPU) into a reused uint8 buffer that is returned."""
        n = x.shape[0]
        oh, ow = self.size
        if x.dtype == torch.uint8 and x.device.type == "cpu":
            # PyTorch's fast uint8 bilinear resize wants channels_last; one copy of the batch pays off.
            if not x.is_contiguous(memory_format=torch.channels_last):
                src = self._buffer("src", tuple(x.shape), torch.uint8, x.device, True)
                src.copy_(x)
                x = src
            tmp = self._buffer("u8", (n, 3, oh, ow), torch.uint8, x.device, True)
            K.resized_crop(x, params["boxes"], (oh, ow), flip=params["flip"], antialias=self.antialias, out=tmp)
            return tmp  # converted to float by the colour pass, chunk by chunk
        else:
            if x.dtype != torch.float32:
                raise TypeError(f"`images` must be uint8 or float32, got {x.dtype}")
            K.resized_crop(x, params["boxes"], (oh, ow), flip=params["flip"], antialias=self.antialias, out=out)
            return None

    def _geometry_matmul(self, x: Tensor, params: dict[str, Tensor], out: Tensor) -> None:
        n, c, h, w = x.shape
        oh, ow = self.size
        dev = x.device
        boxes = params["boxes"].to(dev)
        flip = params["flip"].to(dev)
        wy = _bilinear_matrix(boxes[:, 0], boxes[:, 2], oh, h, torch.zeros_like(flip))
        wx = _bilinear_matrix(boxes[:, 1], boxes[:, 3], ow, w, flip)
        xf = x if x.dtype == torch.float32 else self._buffer("f32", tuple(x.shape), torch.float32, dev, False).copy_(x)
        # resize along W first: (n, c*h, w) @ (n, w, ow) -> (n, c, h, ow); then along H
        cols = torch.bmm(xf.reshape(n, c * h, w), wx.transpose(1, 2)).view(n, c, h, ow)
        torch.matmul(wy[:, None], cols, out=out)

    # -- the same thing, step by step (for tests and teaching)
    def reference(self, images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """The composition of separate kernels that the fused pass must equal."""
        x = check_image(images, "images", channels=3)
        if self._resolve(x.device) == "matmul" and x.dtype == torch.uint8:
            x = x.float()  # the matmul path resizes in float
        y = K.resized_crop(x, params["boxes"], self.size, flip=params["flip"], antialias=self.antialias)
        y = y.float() / 255.0 if images.dtype == torch.uint8 else y
        y = K.color_shift(y, params["shift"])
        if self.pca is not None:
            y = K.pca_color(y, params["alpha"], self.pca.eigenvalues_, self.pca.eigenvectors_)
        return (y - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)
