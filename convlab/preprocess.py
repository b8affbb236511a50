"""The deterministic view a backbone sees: resize, centre crop, scale to [0, 1], normalise (one definition).

- :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`: the per-channel statistics torchvision's ImageNet weights expect
  (declared with the weights, in :mod:`convlab.weights`).
- :func:`crop_resize`: the shorter side to resize to before a centre crop of ``size`` (ImageNet eval: 256 for 224),
  scaled with ``size`` so that smaller inputs keep the same crop ratio.
- :func:`resize_center_crop`: the uint8 resize + centre-crop kernel; :func:`fit_size`: the same to cover any
  ``(h, w)``, keeping the aspect ratio; :func:`normalize`: [0, 255] pixels to normalised floats.
- :func:`affine_coefficients` and :func:`affine_`: the same normalisation as one in-place ``x * scale + shift``
  (with a per-sample colour offset folded in if wanted), its operands tiled by :func:`tile_w` in the memory format
  of ``x``; test-time augmentation and the fused training pipeline run it on every batch.
- :class:`Preprocess`: the three together as a frozen dataclass; its fields are part of a feature-cache key.

A backbone's spec says which statistics and sizes apply (``BackboneSpec.mean``, ``input_size``, ...);
``Preprocess.from_spec(spec)`` is its eval preprocessing, and everything else in the package builds on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import torch
from torchvision.transforms.v2 import functional as F

from convlab._checks import check_mean_std
from convlab.weights import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalSettings",
    "crop_resize",
    "resize_center_crop",
    "fit_size",
    "normalize",
    "affine_coefficients",
    "tile_w",
    "affine_",
    "Preprocess",
]


class EvalSettings(Protocol):
    """What the eval preprocessing reads from a weights record or a backbone's spec (both have these)."""

    @property
    def input_size(self) -> int: ...

    @property
    def resize_size(self) -> int: ...

    @property
    def mean(self) -> Sequence[float]: ...

    @property
    def std(self) -> Sequence[float]: ...


def crop_resize(size: int, spec: EvalSettings) -> int:
    """The shorter side to resize to before a ``size`` centre crop: ``spec``'s ratio (256/224) at ``size``."""
    return round(size * spec.resize_size / spec.input_size)


def resize_center_crop(x: torch.Tensor, size: int, resize: int | None) -> torch.Tensor:
    """``(..., C, H, W)`` -> ``(..., C, size, size)``: shorter side to ``resize``, then the centre ``size x size``.

    ``resize=None`` resizes the whole image to ``size x size`` (no crop). Antialiased; uint8 stays uint8.
    """
    if resize is None:
        return F.resize(x, [size, size], antialias=True)
    return F.center_crop(F.resize(x, [resize], antialias=True), [size, size])


def fit_size(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (keeping the aspect ratio) so the image covers ``size = (h, w)``, then centre-crop to it.

    Returns the image unchanged if it already has that size; works on uint8 and float ``(..., C, H, W)``.
    """
    h, w = image.shape[-2:]
    if (h, w) == tuple(size):
        return image
    scale = max(size[0] / h, size[1] / w)
    new = (max(size[0], round(h * scale)), max(size[1], round(w * scale)))
    return F.center_crop(F.resize(image, list(new), antialias=True), list(size))


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Pixels in [0, 255] (uint8 or float) ``(B, C, H, W)`` -> float32 ``(x / 255 - mean) / std`` per channel."""
    if x.ndim != 4:
        raise ValueError(f"x: expected a batch (B, {len(mean)}, H, W), got shape {tuple(x.shape)}")
    mean, std = check_mean_std(mean, std, x.shape[1])
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return x.to(torch.float32).div(255).sub_(mean_t).div_(std_t)


def affine_coefficients(
    mean: Sequence[float],
    std: Sequence[float],
    unit: float = 255.0,
    offset: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``(x / unit + offset - mean) / std == x * scale + shift`` per channel.

    ``scale`` is ``(1, C, 1, 1)``; ``shift`` is ``(1, C, 1, 1)``, or ``(N, C, 1, 1)`` for a per-sample ``offset``
    ``(N, C)`` (a colour shift in [0, 1] units). ``unit``: 255 for uint8 pixels, 1 for floats in [0, 1].
    """
    mean, std = check_mean_std(mean, std, len(mean))
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)
    shift = -mean_t / std_t if offset is None else (offset.to(device) - mean_t) / std_t
    return (1.0 / (unit * std_t)).view(1, -1, 1, 1), shift.view(-1, len(mean), 1, 1)


def tile_w(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` ``(N, C, 1, 1)`` expanded along W to ``(N, C, 1, W)`` of ``like``, in ``like``'s memory format.

    Then the innermost loop of an elementwise op on ``like`` and ``t`` runs over contiguous rows of all operands and
    is vectorised: with ``(N, C, 1, 1)`` operands it would run over C = 3 values at a time (channels_last), or, with
    two operands broadcast along W (``addcmul``), fall back to PyTorch's scalar loop. This changes no value, only the
    loop shape. An operand already tiled comes back as it is.
    """
    c, w = like.shape[1], like.shape[-1]
    cl = c > 1 and like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous()
    return t.expand(t.shape[0], c, 1, w).contiguous(
        memory_format=torch.channels_last if cl else torch.contiguous_format
    )


def affine_(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x = x * scale + shift`` in place (``x`` float ``(B, C, H, W)``, operands from :func:`affine_coefficients`).

    One vectorised pass in any memory format (:func:`tile_w`). Per-sample ``shift`` must have ``B`` rows.
    """
    return torch.addcmul(tile_w(shift, x), x, tile_w(scale, x), out=x)


@dataclass(frozen=True)
class Preprocess:
    """Deterministic backbone preprocessing of uint8 images: resize, centre crop, scale to [0, 1], normalise.

    Args:
        size: output side ``S`` (the network input is ``(B, 3, S, S)``).
        resize: shorter side before the centre crop (ImageNet eval: 256 for 224). ``None``: resize the whole image
            straight to ``S x S`` (no crop; right for small, centred images such as Fashion-MNIST).
        mean, std: per-channel normalisation of ``[0, 1]`` pixels.

    Grayscale ``(1, H, W)`` images are repeated to three channels. Call it on a ``(C, H, W)`` image, a
    ``(B, C, H, W)`` uint8 batch or a list of images of any sizes; it returns float32 ``(B, 3, S, S)``.
    """

    size: int = 224
    resize: int | None = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size < 8:
            raise ValueError(f"size: expected an int >= 8, got {self.size!r}")
        if self.resize is not None and (not isinstance(self.resize, int) or self.resize < self.size):
            raise ValueError(f"resize: expected None or an int >= size ({self.size}), got {self.resize!r}")
        mean, std = check_mean_std(self.mean, self.std, 3)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @classmethod
    def from_spec(cls, spec: EvalSettings, size: int | None = None, crop: bool = True) -> Preprocess:
        """The backbone's own eval preprocessing; ``size`` scales it down (keeping the 224/256 crop ratio).

        ``crop=False`` resizes the whole image to ``size x size`` instead of cropping its centre.
        """
        size = spec.input_size if size is None else size
        resize = crop_resize(size, spec) if crop else None
        return cls(size=size, resize=resize, mean=tuple(spec.mean), std=tuple(spec.std))

    def key(self) -> dict:
        """What determines the output (part of a feature cache key)."""
        # "kind" names the module this class was first defined in: changing it would orphan every cached feature.
        return {
            "kind": "convlab.transfer.Preprocess",
            "version": 1,
            **asdict(self),
            "antialias": True,
            "interpolation": "bilinear",
        }

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if isinstance(images, torch.Tensor):
            if images.ndim == 3:
                images = images.unsqueeze(0)
            if images.ndim != 4:
                raise ValueError(f"images: expected (C, H, W) or (B, C, H, W), got shape {tuple(images.shape)}")
            return self._batch(images)
        images = list(images)
        if not images:
            raise ValueError("images: expected at least one image, got an empty sequence")
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) == 1:
            return self._batch(torch.stack(images))
        out = torch.empty(len(images), 3, self.size, self.size)
        for shape in shapes:  # one batched resize per distinct image size
            idx = [i for i, im in enumerate(images) if tuple(im.shape) == shape]
            out[idx] = self._batch(torch.stack([images[i] for i in idx]))
        return out

    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"images: expected 1 or 3 channels, got shape {tuple(x.shape)}")
        # Resize while still uint8 (torchvision's fast antialiased uint8 kernels), then crop, then go to float.
        x = resize_center_crop(x, self.size, self.resize)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return normalize(x, self.mean, self.std).contiguous()
