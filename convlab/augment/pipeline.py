"""A fused training pipeline: random-resized-crop + mirror + colour shift + PCA colour + normalise.

Why fuse? Run as separate ops on a batch, each step allocates and writes a full float batch
(38.5 MB for 64 images at 224 px) and reads the previous one back from memory. Here each output
pixel is computed from the uint8 source and written as float once (plus one pass over it while it is
still in cache):

1. **Geometry** (crop + resize + mirror). ``method="loop"``: each sample's crop is a uint8 *view*
   of the input, resized by ``F.interpolate`` (PyTorch's vectorised uint8 bilinear path, fastest on
   channels_last: a CHW source is converted crop by crop, an HWC one is read as it is), mirrored on
   the way out. ``method="matmul"``: the bilinear resize is separable, so crop, resize and mirror
   become two small per-sample matrices (``out = Wy @ x @ Wx^T``); one batched matmul beats a Python
   loop when images are small (32 px), and on GPUs.
2. **Colour** (shift + PCA + normalise) is a single per-sample, per-channel affine map
   ``y = x * a[c] + b[n, c]``. On the loop path it is applied sample by sample right after that
   sample's resize (``copy_`` converts the cached uint8 result into the output, ``addcmul`` maps it in
   place while it is in the core's cache): no full-size uint8 or float intermediate, no float copy of
   the source. On the matmul path the scale is folded into the small intermediate ``x @ Wx^T`` and the
   offset added to the output.

This writes each output pixel once, instead of a uint8 batch buffer followed by float passes over the whole
batch; ``benchmarks/bench_augment.py`` measures the result. On several cores the samples are shared among Python
threads (:func:`_resized_crop_affine`): one sample's uint8 resize runs on one core whatever the intra-op thread
count, so intra-op threads alone would leave a core idle. The uint8 -> float conversion stays a separate
``copy_`` rather than being folded into ``torch.addcmul(b, u8, a)``: PyTorch's mixed uint8/float kernels are not
vectorised. The operands ``a`` and ``b`` are tiled along W in the output's memory format, so that the innermost
loop of ``addcmul`` runs over contiguous rows of all operands (vectorised; :func:`convlab.preprocess.tile_w`, shared
with test-time augmentation); that changes no value.

The result equals the composition of the separate kernels in :mod:`convlab.augment.functional`
(checked in the tests): :meth:`FusedTrainPipeline.reference` computes that composition.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from convlab._checks import check_generator as _check_generator
from convlab._checks import check_image, check_mean_std, fmt_arg
from convlab._checks import check_size as _check_size
from convlab.preprocess import IMAGENET_MEAN, IMAGENET_STD, affine_, affine_coefficients, tile_w

from . import functional as K
from .pca import SIGMA, PCAColor
from .transforms import MAGNITUDE, RATIO, SCALE, P, Param, sample_resized_crop_boxes

__all__ = ["FusedTrainPipeline", "IMAGENET_MEAN", "IMAGENET_STD"]

#: the probability of mirroring a sample (RandomHorizontalFlip's ``p``)
FLIP_P = replace(P, name="flip_p", default=0.5, unit="mirror probability per image")
#: the largest RGB offset (RandomColorShift's ``magnitude``)
COLOR_SHIFT = replace(MAGNITUDE, name="color_shift")


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
    last = length[:, None] - 1
    i1 = torch.minimum(i0.long() + 1, last) + start[:, None]
    i0 = torch.minimum(i0.long(), last) + start[:, None]
    m = torch.zeros(start.shape[0], out_size, in_size, device=dev)
    m.scatter_(2, i0[..., None], 1 - lam)  # two non-zeros per row (the same one at the crop's last pixel)
    return m.scatter_add_(2, i1[..., None], lam)


# PyTorch runs an elementwise op on fewer elements than this in the calling thread (at::internal::GRAIN_SIZE)
_GRAIN = 32768


@functools.cache
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """A thread pool per process (``pid``: a forked child must not reuse its parent's threads, it has none)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="convlab-augment")


def _resized_crop_affine(
    x: Tensor,
    boxes: Tensor,
    flip: Tensor,
    size: tuple[int, int],
    antialias: bool,
    a: Tensor,
    b: Tensor,
    out: Tensor,
    threads: int = 1,
    rows: int | None = None,
) -> Tensor:
    """``out[i] = resized_crop(x[i]) * a + b[i]``: crops resampled in the source's dtype, the float output written once.

    ``x`` uint8 or float ``(B, C, H, W)`` (uint8 channels_last is PyTorch's fast vectorised bilinear path), ``boxes``
    ``(B, 4)`` (top, left, height, width), ``flip`` bool ``(B,)``, ``a`` ``(1, C, 1, 1)``, ``b`` ``(B, C, 1, 1)``.
    Sample by sample, so the uint8 resize result (150 kB at 224 px) is still in the core's cache when it is
    converted to float, and that float image (600 kB) still is when the affine map runs over it; no full-size
    uint8 or float intermediate exists, and the source is never converted to float. The values are those of
    :func:`~convlab.augment.functional.resized_crop` (for uint8: rounded to uint8) followed by ``* a + b``.

    ``threads`` > 1: the samples are split among that many Python threads, one per core. Why threads: one sample's
    uint8 resize runs on one core whatever ``torch.get_num_threads()`` says, so with intra-op threads only the colour
    ops would use the other cores. PyTorch releases the GIL inside its ops, so Python threads, each with its share of
    the samples, keep every core busy. Each thread converts and maps its images in bands of ``rows`` output rows,
    fewer than ``_GRAIN`` elements, which PyTorch runs in the calling thread: no OpenMP team is started from inside
    the pool (that would put two threads on each core). ``rows`` default: the whole image in one band with one
    thread, the largest band under ``_GRAIN`` with several.
    """
    if threads > 1:
        n, c, _, ow = out.shape
        rows = rows if rows is not None else max(1, (_GRAIN - 1) // (c * ow))
        parts = [slice(k * n // threads, (k + 1) * n // threads) for k in range(threads)]
        pool = _pool(threads, os.getpid())
        jobs = [
            pool.submit(_resized_crop_affine, x[s], boxes[s], flip[s], size, antialias, a, b[s], out[s], 1, rows)
            for s in parts
            if s.stop > s.start
        ]
        for job in jobs:
            job.result()
        return out
    a, b = tile_w(a, out), tile_w(b, out)  # once per batch, not once per band of the loop below
    oh = out.shape[-2]
    rows = rows or oh
    # PyTorch's vectorised uint8 bilinear resize wants channels_last: a CHW source is converted crop by crop (only
    # the pixels read, and they stay in cache for the resize). A batch of HWC photos (PIL, OpenCV), e.g.
    # torch.from_numpy(hwc).permute(2, 0, 1) stacked, is channels_last already.
    u8, cpu = x.dtype == torch.uint8, x.device.type == "cpu"
    to_cl = u8 and cpu and not x.is_contiguous(memory_format=torch.channels_last)
    for i, ((t, l_, bh, bw), fl) in enumerate(zip(boxes.tolist(), flip.tolist())):
        crop = x[i : i + 1, :, t : t + bh, l_ : l_ + bw]
        crop = crop.contiguous(memory_format=torch.channels_last) if to_cl else crop
        if u8 and not cpu:  # GPUs resize float images: resize in float, round to uint8 levels as the CPU does
            r = F.interpolate(crop.float(), size=size, mode="bilinear", align_corners=False, antialias=antialias)
            r = r.round_().clamp_(0, 255)
        else:
            r = F.interpolate(crop, size=size, mode="bilinear", align_corners=False, antialias=antialias)
        r = r.flip(-1) if fl else r
        for r0 in range(0, oh, rows):
            o = out[i : i + 1, :, r0 : r0 + rows]
            o.copy_(r[:, :, r0 : r0 + rows])
            affine_(o, a, b[i : i + 1])
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
    ``pipe.last_params`` and ``pipe(images, params=pipe.last_params)`` (or ``pipe.replay(images)``)
    applies it again, as for the transforms in :mod:`convlab.augment.transforms`; ``PARAMS`` declares
    the random settings (the transforms' declarations under the pipeline's names). Fastest on the CPU: a
    channels_last uint8 source (a batch of HWC photos as decoded, viewed as ``(B, 3, H, W)``) and a
    channels_last ``out``; with ``torch.get_num_threads() > 1`` the samples are shared among that many
    Python threads.
    """

    PARAMS: tuple[Param, ...] = (SCALE, RATIO, FLIP_P, COLOR_SHIFT)

    def __init__(
        self,
        size: int | Sequence[int] = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        color_shift: float = 0.1,
        pca: PCAColor | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        antialias: bool = False,
        method: str = "auto",
        channels_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.size = _check_size(size)
        self.scale = SCALE.check(scale)
        self.ratio = RATIO.check(ratio)
        self.flip_p = FLIP_P.check(flip_p)
        self.color_shift = COLOR_SHIFT.check(color_shift)
        if pca is not None:
            if not isinstance(pca, PCAColor):
                raise TypeError(f"pca: expected a PCAColor or None, got {type(pca).__name__}")
            pca.check_is_fitted()
        self.pca = pca
        mean, std = check_mean_std(mean, std, 3)
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        if method not in _METHODS:
            raise ValueError(f"method: expected one of {_METHODS}, got {method!r}")
        if method == "matmul" and antialias:
            raise ValueError(
                "antialias: expected False with method='matmul' (antialiasing is implemented only for "
                "method='loop'), got True"
            )
        self.method = method
        self.antialias = bool(antialias)
        self.channels_last = bool(channels_last)
        self.generator = _check_generator(generator)
        self.last_params: dict[str, Tensor] | None = None
        self._buffers: dict[str, Tensor] = {}

    def __repr__(self) -> str:
        settings = ", ".join(f"{param.name}={fmt_arg(getattr(self, param.name))}" for param in self.PARAMS)
        return f"FusedTrainPipeline(size={fmt_arg(self.size)}, {settings}, pca={self.pca!r}, method={self.method!r})"

    # -- parameters
    def draw(self, n: int, h: int, w: int) -> dict[str, Tensor]:
        """Per-sample parameters: ``boxes`` (n, 4), ``flip`` (n,), ``shift`` (n, 3), ``alpha`` (n, 3)."""
        g = self.generator
        boxes = sample_resized_crop_boxes(n, h, w, self.scale, self.ratio, g)
        flip = FLIP_P.draw(self.flip_p, (n,), g)
        shift = COLOR_SHIFT.draw(self.color_shift, (n, 3), g)
        alpha = SIGMA.draw(0.0 if self.pca is None else self.pca.sigma, (n, 3), g)
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

    def _buffer(
        self, key: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, channels_last: bool
    ) -> Tensor:
        b = self._buffers.get(key)
        if b is None or b.shape != shape or b.dtype != dtype or b.device != device:
            b = torch.empty(shape, dtype=dtype, device=device)
            if channels_last:
                b = b.contiguous(memory_format=torch.channels_last)
            self._buffers[key] = b
        return b

    # -- the fused pass
    def __call__(self, images: Tensor, out: Tensor | None = None, params: dict[str, Tensor] | None = None) -> Tensor:
        """Augment a batch. ``images``: ``(B, 3, H, W)`` uint8 (or float in [0, 1]).

        Draws new parameters, or applies ``params`` (a previous ``last_params``) when given; either is kept in
        ``last_params``. Returns ``out`` (allocated if None): float32 ``(B, 3, h, w)``, normalised.
        """
        x = check_image(images, "images", channels=3)
        if x.ndim != 4:
            raise ValueError(f"images: expected a batch (B, 3, H, W), got shape {tuple(x.shape)}")
        n, _, h, w = x.shape
        oh, ow = self.size
        params = self.draw(n, h, w) if params is None else params
        if not isinstance(params, dict) or "boxes" not in params:
            raise TypeError(f"params: expected a dict of drawn parameters (a previous last_params), got {params!r}")
        if params["boxes"].shape[0] != n:
            raise ValueError(f"`params` were drawn for {params['boxes'].shape[0]} samples, images has {n}")
        self.last_params = params
        shape = (n, 3, oh, ow)
        if out is None:
            out = torch.empty(shape, device=x.device)
            if self.channels_last:
                out = out.contiguous(memory_format=torch.channels_last)
        elif out.shape != shape or out.dtype != torch.float32 or out.device != x.device:
            raise ValueError(
                f"out: expected a float32 tensor of shape {shape} on {x.device}, "
                f"got {out.dtype} {tuple(out.shape)} on {out.device}"
            )
        if x.dtype not in (torch.uint8, torch.float32):
            raise TypeError(f"images: expected uint8 or float32 pixels, got {x.dtype}")
        # colour shift + PCA + normalise: y = x / (unit * std) + (offset - mean) / std, one affine map per sample
        dev = x.device
        unit = 255.0 if x.dtype == torch.uint8 else 1.0
        a, b = affine_coefficients(self.mean.tolist(), self.std.tolist(), unit, self._offsets(params), dev)
        if self._resolve(dev) == "matmul":
            return self._matmul(x, params, a, b, out)
        args = (x, params["boxes"], params["flip"], self.size, self.antialias, a, b, out)
        threads = min(torch.get_num_threads(), n) if dev.type == "cpu" else 1
        return _resized_crop_affine(*args, threads)

    def replay(self, images: Tensor, out: Tensor | None = None) -> Tensor:
        """Apply the last drawn parameters again (same batch size): ``self(images, out, params=self.last_params)``."""
        if self.last_params is None:
            raise RuntimeError("FusedTrainPipeline.replay() needs a previous call to draw parameters")
        return self(images, out, params=self.last_params)

    def _matmul(self, x: Tensor, params: dict[str, Tensor], a: Tensor, b: Tensor, out: Tensor) -> Tensor:
        """Crop + resize + mirror as ``Wy @ x @ Wx^T`` (two small per-sample matrices), colour folded in.

        The scale ``a`` multiplies the small intermediate ``x @ Wx^T`` (linear maps commute with a per-channel
        scale), and ``b`` is added in one more pass over the output.
        """
        n, c, h, w = x.shape
        oh, ow = self.size
        dev = x.device
        boxes = params["boxes"].to(dev)
        flip = params["flip"].to(dev)
        wy = _bilinear_matrix(boxes[:, 0], boxes[:, 2], oh, h, torch.zeros_like(flip))
        wx = _bilinear_matrix(boxes[:, 1], boxes[:, 3], ow, w, flip)
        xf = x if x.dtype == torch.float32 else self._buffer("f32", tuple(x.shape), torch.float32, dev, False).copy_(x)
        # resize along W first: (n, c*h, w) @ (n, w, ow) -> (n, c, h, ow); then along H
        cols = torch.bmm(xf.reshape(n, c * h, w), wx.transpose(1, 2)).view(n, c, h, ow).mul_(a)
        # the matmul writes a contiguous result: straight into ``out``, or into a reused buffer copied into a
        # channels_last ``out`` (a plain transposing copy is about twice as fast as one that also adds)
        res = out if out.is_contiguous() else self._buffer("res", tuple(out.shape), torch.float32, dev, False)
        torch.matmul(wy[:, None], cols, out=res)
        return (out if res is out else out.copy_(res)).add_(tile_w(b, out))

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
