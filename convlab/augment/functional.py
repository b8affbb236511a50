"""Pure augmentation kernels on ``(..., C, H, W)`` image tensors.

Every kernel is deterministic: the randomness lives in the transform classes
(:mod:`convlab.augment.transforms`), which draw the parameters and call these
functions. Kernels work on ``uint8`` images (values 0..255) and floating point
images (values nominally in [0, 1]), on CPU and CUDA, and take *per-sample*
parameters: an image batch of shape ``(..., C, H, W)`` has
``B = prod(leading dims)`` samples (``B = 1`` for a single ``(C, H, W)`` image),
and a per-sample parameter is a Python number (same for every sample), or a
tensor of shape ``(B,)`` (``(B, k)`` for vector parameters such as an RGB offset).

Conventions follow ``torchvision.transforms.v2.functional`` so the two can be
checked against each other: :func:`affine` uses the same angle/shear sign
conventions as ``F.affine``, :func:`rotate` matches ``F.rotate`` (positive =
counter-clockwise), and :func:`resized_crop` uses ``F.interpolate`` exactly as
torchvision does, so both give bit-identical results.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from convlab._checks import check_image, check_interpolation, flatten_batch, unflatten_batch

__all__ = [
    "hflip",
    "crop",
    "resized_crop",
    "affine",
    "rotate",
    "shear",
    "elastic_field",
    "warp",
    "color_shift",
    "pca_offset",
    "pca_color",
]

Param = float | int | Sequence[float] | Tensor


# ----------------------------------------------------------------------------- checks and helpers
def _per_sample(
    value: Param, n: int, name: str, device: torch.device, width: int | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Broadcast a scalar / (B,) / (B, width) / (width,) parameter to (B,) or (B, width)."""
    t = torch.as_tensor(value, dtype=dtype, device=device) if not isinstance(value, Tensor) else value.to(device, dtype)
    want = (n,) if width is None else (n, width)
    if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: expected finite values, got {_first_bad(t)}")
    if t.ndim == 0 or tuple(t.shape) == want or (width is not None and tuple(t.shape) == (width,)):
        return t.expand(want)
    if width is None and t.numel() == n:
        return t.reshape(n)
    raise ValueError(
        f"{name}: expected a number or a tensor of shape {want} (one value per sample), got shape {tuple(t.shape)}"
    )


def _first_bad(t: Tensor) -> str:
    """The first non-finite value of ``t`` (nan, inf or -inf), for error messages."""
    return str(float(t[~torch.isfinite(t)].flatten()[0]))


def _to_float(x: Tensor) -> Tensor:
    return x if x.is_floating_point() else x.float()


def _back_to(x: Tensor, dtype: torch.dtype) -> Tensor:
    if dtype == torch.uint8:
        return x.round_().clamp_(0, 255).to(torch.uint8)
    return x.to(dtype)


# ----------------------------------------------------------------------------- mirroring and cropping
def hflip(image: Tensor, mask: Param | None = None) -> Tensor:
    """Mirror images left-right, per sample.

    Args:
        image: ``(..., C, H, W)`` uint8 or float.
        mask: ``None`` (flip every sample) or a bool tensor of shape ``(B,)``: flip sample ``b`` where True.

    Returns:
        A new tensor of the same shape and dtype.
    """
    image = check_image(image)
    if mask is None:
        return image.flip(-1)
    x, lead = flatten_batch(image)
    m = _per_sample(mask, x.shape[0], "mask", x.device, dtype=torch.bool)
    out = x.clone()
    idx = m.nonzero().flatten()
    if idx.numel():
        out[idx] = x[idx].flip(-1)
    return unflatten_batch(out, lead)


def _check_box(top: Tensor, left: Tensor, height: Tensor, width: Tensor, h: int, w: int) -> None:
    if bool((height < 1).any()) or bool((width < 1).any()):
        raise ValueError(
            f"height, width: expected crop sizes >= 1, got min height {int(height.min())}, min width {int(width.min())}"
        )
    if (
        bool((top < 0).any())
        or bool((left < 0).any())
        or bool((top + height > h).any())
        or bool((left + width > w).any())
    ):
        raise ValueError(
            f"boxes: expected crops inside the {h}x{w} image, got top in "
            f"[{int(top.min())}, {int(top.max())}], left in [{int(left.min())}, {int(left.max())}], "
            f"bottom up to {int((top + height).max())}, right up to {int((left + width).max())}"
        )


def crop(image: Tensor, top: Param, left: Param, height: int, width: int) -> Tensor:
    """Cut a ``height x width`` window at a per-sample position.

    Args:
        image: ``(..., C, H, W)``.
        top, left: ints or int tensors of shape ``(B,)``: upper-left corner of each sample's window.
        height, width: window size, the same for every sample (so the result stacks).

    Returns:
        ``(..., C, height, width)``, same dtype.
    """
    image = check_image(image)
    x, lead = flatten_batch(image)
    n, _, h, w = x.shape
    t = _per_sample(top, n, "top", torch.device("cpu"), dtype=torch.long)
    l_ = _per_sample(left, n, "left", torch.device("cpu"), dtype=torch.long)
    if n == 0:  # an empty batch: nothing to cut (t[0] below would not exist)
        if not (1 <= height <= h and 1 <= width <= w):
            raise ValueError(f"height, width: expected crop sizes in [1, {h}] / [1, {w}], got {height}, {width}")
        return unflatten_batch(x[..., :height, :width].clone(), lead)
    _check_box(t, l_, torch.tensor([height]), torch.tensor([width]), h, w)
    if bool((t == t[0]).all()) and bool((l_ == l_[0]).all()):  # one window for all: a single view
        out = x[..., int(t[0]) : int(t[0]) + height, int(l_[0]) : int(l_[0]) + width].clone()
    else:  # slicing a view per sample and stacking is the fastest on CPU (no gather index tensors)
        out = torch.stack(
            [x[i, :, ti : ti + height, li : li + width] for i, (ti, li) in enumerate(zip(t.tolist(), l_.tolist()))]
        )
    return unflatten_batch(out, lead)


def resized_crop(
    image: Tensor,
    boxes: Tensor,
    size: int | Sequence[int],
    *,
    flip: Param | None = None,
    antialias: bool = False,
    out: Tensor | None = None,
) -> Tensor:
    """Crop a per-sample box and resize it (bilinear) to a fixed size, optionally mirroring it.

    Uses ``F.interpolate(..., mode="bilinear", align_corners=False)`` on each crop, exactly as
    ``torchvision.transforms.v2.functional.resized_crop`` does, so results are identical to it
    (uint8 stays uint8 and uses PyTorch's native uint8 resize on CPU).

    Args:
        image: ``(..., C, H, W)`` uint8 or float.
        boxes: int tensor ``(B, 4)`` of ``(top, left, height, width)`` per sample.
        size: output ``(h, w)`` (or one int for a square).
        flip: optional bool ``(B,)``: mirror those samples' crops (folded into the same pass).
        antialias: as in ``F.interpolate``; False matches OpenCV/Albumentations ``INTER_LINEAR``.
        out: optional preallocated ``(B, C, h, w)`` tensor of the image dtype to write into.

    Returns:
        ``(..., C, h, w)``.
    """
    image = check_image(image)
    x, lead = flatten_batch(image)
    n, c, h, w = x.shape
    oh, ow = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if oh < 1 or ow < 1:
        raise ValueError(f"size: expected positive values, got {size}")
    boxes = torch.as_tensor(boxes).to("cpu", torch.long)
    if boxes.shape != (n, 4):
        raise ValueError(
            f"boxes: expected shape ({n}, 4) = (top, left, height, width) per sample, got {tuple(boxes.shape)}"
        )
    _check_box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3], h, w)
    fl = [False] * n if flip is None else _per_sample(flip, n, "flip", torch.device("cpu"), dtype=torch.bool).tolist()
    if out is None:
        out = torch.empty((n, c, oh, ow), dtype=x.dtype, device=x.device)
    elif out.shape != (n, c, oh, ow) or out.dtype != x.dtype:
        raise ValueError(
            f"out: expected a {x.dtype} tensor of shape {(n, c, oh, ow)}, got {out.dtype} {tuple(out.shape)}"
        )
    for i, (t, l_, bh, bw) in enumerate(boxes.tolist()):
        r = F.interpolate(
            x[i : i + 1, :, t : t + bh, l_ : l_ + bw],
            size=(oh, ow),
            mode="bilinear",
            align_corners=False,
            antialias=antialias,
        )
        out[i : i + 1].copy_(r.flip(-1) if fl[i] else r)
    return unflatten_batch(out, lead)


# ----------------------------------------------------------------------------- rotation, shear, warps
def _affine_theta(angle: Tensor, shear_xy: Tensor, translate: Tensor, scale: Tensor, h: int, w: int) -> Tensor:
    """Per-sample inverse affine maps in ``affine_grid``'s normalised coordinates, shape (B, 2, 3).

    Forward map about the image centre, in pixel coordinates with y pointing down:
    ``A = R(angle) @ S(scale) @ SHy(shear_y) @ SHx(shear_x)`` then a translation, the same
    convention as torchvision's ``F.affine``. grid_sample needs the inverse (output -> input).
    """
    a = torch.deg2rad(angle.double())
    sx, sy = torch.deg2rad(shear_xy[:, 0].double()), torch.deg2rad(shear_xy[:, 1].double())
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    rot = torch.stack([torch.stack([a.cos(), -a.sin()], -1), torch.stack([a.sin(), a.cos()], -1)], -2)
    shx = torch.stack([torch.stack([one, -sx.tan()], -1), torch.stack([zero, one], -1)], -2)
    shy = torch.stack([torch.stack([one, zero], -1), torch.stack([-sy.tan(), one], -1)], -2)
    fwd = rot @ shy @ shx * scale.double()[:, None, None]
    inv = torch.linalg.inv(fwd)
    shift = -(inv @ translate.double()[:, :, None])[:, :, 0]
    # pixel (centred) -> normalised coordinates: x_n = x * 2 / W, y_n = y * 2 / H
    d = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64, device=a.device)
    theta = torch.cat([inv * d[:, None] / d[None, :], (shift * d)[:, :, None]], dim=2)
    return theta


def _sample(x: Tensor, grid: Tensor, interpolation: str, fill: Param) -> Tensor:
    """grid_sample with a constant outside value: sample (x - fill) with zero padding, add fill back."""
    dtype = x.dtype
    xf = _to_float(x)
    f = torch.as_tensor(fill, dtype=xf.dtype, device=xf.device)
    if f.ndim == 1:
        f = f.view(1, -1, 1, 1)
    has_fill = bool((f != 0).any())
    src = xf - f if has_fill else xf
    out = F.grid_sample(src, grid.to(xf.dtype), mode=interpolation, padding_mode="zeros", align_corners=False)
    if has_fill:
        out = out + f
    return _back_to(out, dtype)


def affine(
    image: Tensor,
    angle: Param = 0.0,
    translate: Param = (0.0, 0.0),
    scale: Param = 1.0,
    shear: Param = (0.0, 0.0),
    *,
    interpolation: str = "bilinear",
    fill: float | Sequence[float] = 0.0,
) -> Tensor:
    """Per-sample affine transform about the image centre (same conventions as torchvision ``F.affine``).

    Args:
        image: ``(..., C, H, W)``.
        angle: degrees, ``(B,)`` or a number (torchvision ``F.affine`` sign convention).
        translate: pixels ``(B, 2)`` as (dx, dy), or a pair.
        scale: ``(B,)`` or a number, > 0.
        shear: degrees ``(B, 2)`` as (shear_x, shear_y), or a pair.
        interpolation: ``"bilinear"`` or ``"nearest"``.
        fill: value (in the image's units) for pixels that come from outside; a number or one per channel.

    Returns:
        Same shape and dtype as ``image``.
    """
    image = check_image(image)
    check_interpolation(interpolation)
    x, lead = flatten_batch(image)
    n, c, h, w = x.shape
    dev = x.device
    ang = _per_sample(angle, n, "angle", dev)
    tr = _per_sample(translate, n, "translate", dev, width=2)
    sc = _per_sample(scale, n, "scale", dev)
    sh = _per_sample(shear, n, "shear", dev, width=2)
    if bool((sc <= 0).any()):
        raise ValueError(f"scale: expected values > 0, got min {float(sc.min())}")
    if n == 0:  # affine_grid refuses an empty batch; an empty batch maps to an empty batch
        return image.clone()
    theta = _affine_theta(ang, sh, tr, sc, h, w)
    grid = F.affine_grid(theta.to(torch.float32), [n, c, h, w], align_corners=False)
    return unflatten_batch(_sample(x, grid, interpolation, fill), lead)


def rotate(
    image: Tensor, angle: Param, *, interpolation: str = "bilinear", fill: float | Sequence[float] = 0.0
) -> Tensor:
    """Rotate each sample about its centre by ``angle`` degrees, counter-clockwise (as torchvision ``F.rotate``).

    Args: ``image`` ``(..., C, H, W)``; ``angle`` number or ``(B,)``. Returns the same shape (corners filled).
    """
    image = check_image(image)
    n = flatten_batch(image)[0].shape[0]
    return affine(image, angle=-_per_sample(angle, n, "angle", image.device), interpolation=interpolation, fill=fill)


def shear(
    image: Tensor,
    shear_x: Param,
    shear_y: Param = 0.0,
    *,
    interpolation: str = "bilinear",
    fill: float | Sequence[float] = 0.0,
) -> Tensor:
    """Shear each sample about its centre by ``shear_x`` / ``shear_y`` degrees (torchvision ``F.affine`` shear).

    Args: ``image`` ``(..., C, H, W)``; ``shear_x``, ``shear_y`` numbers or ``(B,)``.
    """
    image = check_image(image)
    n = flatten_batch(image)[0].shape[0]
    dev = image.device
    sh = torch.stack([_per_sample(shear_x, n, "shear_x", dev), _per_sample(shear_y, n, "shear_y", dev)], dim=1)
    return affine(image, shear=sh, interpolation=interpolation, fill=fill)


def elastic_field(noise: Tensor, size: Sequence[int]) -> Tensor:
    """Smooth displacement field from a coarse random grid (elastic-style local warping).

    Upsampling a coarse grid of random offsets with bicubic interpolation gives a field that
    is smooth between control points: the grid spacing sets the smoothness, the noise amplitude
    the strength. This is cheaper than Simard et al.'s Gaussian-filtered full-resolution noise
    and looks the same for augmentation purposes.

    Args:
        noise: ``(B, 2, gh, gw)`` displacements in pixels (dx, dy) at the control points, ``gh, gw >= 2``.
        size: output ``(H, W)``.

    Returns:
        ``(B, 2, H, W)`` displacement in pixels.
    """
    if not isinstance(noise, Tensor) or noise.ndim != 4 or noise.shape[1] != 2 or min(noise.shape[2:]) < 2:
        got = tuple(noise.shape) if isinstance(noise, Tensor) else type(noise).__name__
        raise ValueError(f"noise: expected a float tensor of shape (B, 2, gh, gw) with gh, gw >= 2, got {got}")
    return F.interpolate(noise.float(), size=tuple(int(s) for s in size), mode="bicubic", align_corners=True)


def warp(
    image: Tensor, displacement: Tensor, *, interpolation: str = "bilinear", fill: float | Sequence[float] = 0.0
) -> Tensor:
    """Resample each sample at ``pixel + displacement`` (a dense per-pixel warp).

    Args:
        image: ``(..., C, H, W)``.
        displacement: ``(B, 2, H, W)`` in pixels: output pixel (y, x) reads input (y + dy, x + dx).
        interpolation, fill: as in :func:`affine`.
    """
    image = check_image(image)
    check_interpolation(interpolation)
    x, lead = flatten_batch(image)
    n, c, h, w = x.shape
    if not isinstance(displacement, Tensor) or tuple(displacement.shape) != (n, 2, h, w):
        got = tuple(displacement.shape) if isinstance(displacement, Tensor) else type(displacement).__name__
        raise ValueError(f"displacement: expected shape {(n, 2, h, w)}, got {got}")
    if displacement.numel() and not bool(torch.isfinite(displacement).all()):
        raise ValueError(f"displacement: expected finite values, got {_first_bad(displacement)}")
    ys = (torch.arange(h, device=x.device, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=x.device, dtype=torch.float32) * 2 + 1) / w - 1
    d = displacement.to(x.device, torch.float32)
    grid = torch.stack([xs.view(1, 1, w) + d[:, 0] * (2.0 / w), ys.view(1, h, 1) + d[:, 1] * (2.0 / h)], dim=-1)
    return unflatten_batch(_sample(x, grid, interpolation, fill), lead)


# ----------------------------------------------------------------------------- colour
def _add_rgb_u8(x: Tensor, off255: Tensor) -> Tensor:
    """The uint8 formula ``round(float(x) + off255)`` saturated to [0, 255], bit for bit (round half to even)."""
    return (x.float() + off255).round_().clamp_(0, 255).to(torch.uint8)


def _add_rgb_u8_int(x: Tensor, off255: Tensor) -> Tensor:
    """Same bytes as :func:`_add_rgb_u8` on the CPU, without float temporaries (faster).

    As ``x`` is an integer, the float formula equals the saturating integer add ``x + k``,
    ``k = round(off255)``, unless ``off255`` is (within float32 rounding of ``x + off255``) half-way
    between integers. Rather than reason about those cases, the float formula is evaluated on all
    256 uint8 levels for every (image, channel) offset and compared with the integer one; images
    where they differ anywhere (rare: ~4e-5 of images for random offsets) take the float path.
    The integer path is a per-channel clamp to ``[max(0, -k), min(255, 255 - k)]`` followed by a
    wrapping uint8 add of ``k mod 256``: two passes over uint8 memory, no overflow.
    """
    levels = torch.arange(256, device=x.device, dtype=torch.int16)
    k = off255.round().clamp_(-255, 255).to(torch.int16)  # NaN offsets: garbage k, caught by the check
    exact = _add_rgb_u8(levels.to(torch.uint8), off255)  # (B, 3, 1, 256), the formula on every level
    bad = ((levels + k).clamp_(0, 255).to(torch.uint8) != exact).flatten(1).any(1)
    out = torch.clamp(x, (-k).clamp_(min=0).to(torch.uint8), (255 - k).clamp_(max=255).to(torch.uint8))
    out.add_(k.remainder(256).to(torch.uint8))
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(1)
        out[idx] = _add_rgb_u8(x[idx], off255[idx])
    return out


def _add_rgb(image: Tensor, offset: Tensor, clamp: bool) -> Tensor:
    x, lead = flatten_batch(image)
    off = offset.to(x.device, torch.float32 if x.dtype == torch.uint8 else x.dtype).view(x.shape[0], 3, 1, 1)
    if x.dtype == torch.uint8:  # offsets are in [0, 1] units; uint8 saturates
        # the integer path's exactness check needs a host sync: CPU only (on a GPU the float path is cheap)
        out = (_add_rgb_u8_int if x.device.type == "cpu" else _add_rgb_u8)(x, off * 255.0)
    else:
        out = x + off
        if clamp:
            out.clamp_(0.0, 1.0)
    return unflatten_batch(out, lead)


def color_shift(image: Tensor, shift: Param, *, clamp: bool = False) -> Tensor:
    """Add a per-image offset to R, G and B (a small global colour cast).

    Args:
        image: ``(..., 3, H, W)`` RGB; float in [0, 1] or uint8.
        shift: ``(B, 3)`` (or ``(3,)`` for all) offsets in [0, 1] units (x255 for uint8 images).
        clamp: clamp float results to [0, 1]. uint8 results always saturate at 0 and 255.
            The default (no clamp) keeps the op affine, so it fuses with normalisation.
    """
    image = check_image(image, channels=3)
    n = flatten_batch(image)[0].shape[0]
    return _add_rgb(image, _per_sample(shift, n, "shift", image.device, width=3), clamp)


def pca_offset(alpha: Tensor, eigenvalues: Tensor, eigenvectors: Tensor) -> Tensor:
    """AlexNet PCA colour offsets ``P @ (alpha * lambda)`` per image.

    Args:
        alpha: ``(B, 3)`` draws from N(0, sigma).
        eigenvalues: ``(3,)`` of the RGB covariance.
        eigenvectors: ``(3, 3)``, eigenvector ``i`` in column ``i``.

    Returns:
        ``(B, 3)`` RGB offsets in [0, 1] units.
    """
    if not isinstance(alpha, Tensor) or alpha.ndim != 2 or alpha.shape[1] != 3:
        got = tuple(alpha.shape) if isinstance(alpha, Tensor) else type(alpha).__name__
        raise ValueError(f"alpha: expected a tensor of shape (B, 3), got {got}")
    lam = torch.as_tensor(eigenvalues, dtype=torch.float32, device=alpha.device)
    vec = torch.as_tensor(eigenvectors, dtype=torch.float32, device=alpha.device)
    if lam.shape != (3,) or vec.shape != (3, 3):
        raise ValueError(
            f"eigenvalues, eigenvectors: expected shapes (3,) and (3, 3), got {tuple(lam.shape)} and {tuple(vec.shape)}"
        )
    for arg, t in (("alpha", alpha), ("eigenvalues", lam), ("eigenvectors", vec)):
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{arg}: expected finite values, got {_first_bad(t)}")
    return (alpha.float() * lam) @ vec.T


def pca_color(
    image: Tensor, alpha: Tensor, eigenvalues: Tensor, eigenvectors: Tensor, *, clamp: bool = False
) -> Tensor:
    """AlexNet-style PCA colour augmentation: add ``P @ (alpha * lambda)`` to every pixel of each image.

    Args:
        image: ``(..., 3, H, W)`` RGB, float in [0, 1] or uint8.
        alpha: ``(B, 3)``; eigenvalues ``(3,)``; eigenvectors ``(3, 3)`` (columns), see :func:`pca_offset`.
        clamp: as in :func:`color_shift`.
    """
    image = check_image(image, channels=3)
    n = flatten_batch(image)[0].shape[0]
    if isinstance(alpha, Tensor) and alpha.shape == (3,):
        alpha = alpha.expand(n, 3)
    off = pca_offset(alpha, eigenvalues, eigenvectors)
    if off.shape[0] != n:
        raise ValueError(f"alpha: expected one row per sample ({n}), got {off.shape[0]}")
    return _add_rgb(image, off, clamp)
