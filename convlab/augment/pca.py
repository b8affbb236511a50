"""AlexNet-style PCA colour augmentation ("fancy PCA", Krizhevsky et al. 2012, section 4.1).

One PCA basis for the whole training set: fit the 3x3 covariance of RGB pixel values over the
training images, eigen-decompose it (``C = P diag(lambda) P^T``), and to every pixel of an image add
the same offset ``P @ (alpha * lambda)`` with ``alpha ~ N(0, sigma)`` drawn once per image. The
offset moves the image's colours along the directions in which natural colours vary most (mostly
brightness, then a blue-yellow and a red-green axis), imitating changes of illumination.

Not to be confused with Albumentations' ``FancyPCA``, which computes a PCA *per image* (of that
image's own pixels) and so perturbs each image along its own colour axes; it costs an eigen-
decomposition per image (``benchmarks/bench_augment.py`` measures both). AlexNet's version, implemented
here, has one fixed basis and costs one addition per pixel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from convlab._checks import check_image, check_is_fitted

from . import functional as K
from .transforms import BatchRandomTransform, P, Param

__all__ = ["IMAGENET_EIGENVALUES", "IMAGENET_EIGENVECTORS", "fit_rgb_pca", "SIGMA", "PCAColor"]

#: ImageNet RGB eigenvalues for pixel values in [0, 1], largest first. Source: Facebook's
#: fb.resnet.torch (``datasets/imagenet.lua``, the ``pca`` table fed to ``Lighting`` in
#: ``datasets/transforms.lua``), the ResNet-era reimplementation of AlexNet's lighting noise.
IMAGENET_EIGENVALUES = torch.tensor([0.2175, 0.0188, 0.0045])
#: Matching eigenvectors, one per *column*, rows in R, G, B order (same source).
IMAGENET_EIGENVECTORS = torch.tensor(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]
)


def fit_rgb_pca(
    images: Tensor | Iterable[Tensor], max_pixels: int | None = None, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of the RGB covariance of the training pixels.

    Args:
        images: a ``(..., 3, H, W)`` tensor or an iterable of them (uint8 or float in [0, 1]).
        max_pixels: optionally use a random subset of this many pixels per tensor (fast on big sets).
        generator: for that subset.

    Returns:
        ``(eigenvalues (3,), eigenvectors (3, 3))`` as float32 (accumulated in float64), eigenvalues
        sorted largest first, eigenvector ``i`` in column ``i``, signed so that its R component is
        negative as in the ImageNet constants (an eigenvector's sign is arbitrary; alpha is symmetric).
    """
    batches = [images] if isinstance(images, Tensor) else list(images)
    if not batches:
        raise ValueError("images: expected at least one (..., 3, H, W) image, got none (empty)")
    s = torch.zeros(3, dtype=torch.float64)
    ss = torch.zeros(3, 3, dtype=torch.float64)
    count = 0
    for b in batches:
        b = check_image(b, "images", channels=3)
        px = b.movedim(-3, -1).reshape(-1, 3).to(torch.float64)
        if b.dtype == torch.uint8:
            px = px / 255.0
        if max_pixels is not None and px.shape[0] > max_pixels:
            px = px[torch.randperm(px.shape[0], generator=generator)[:max_pixels]]
        s += px.sum(0)
        ss += px.T @ px
        count += px.shape[0]
    if count < 2:
        raise ValueError(f"images: expected at least 2 pixels, got {count}")
    mean = s / count
    cov = (ss - count * torch.outer(mean, mean)) / (count - 1)
    vals, vecs = torch.linalg.eigh(cov)  # ascending
    vals, vecs = vals.flip(0), vecs.flip(1)
    vecs = vecs * torch.where(vecs[0] > 0, -1.0, 1.0).to(vecs)  # sign convention of the ImageNet constants
    return vals.float(), vecs.float()


#: the standard deviation of the alphas, each drawn from N(0, sigma) (AlexNet: 0.1)
SIGMA = Param(
    "sigma",
    "number",
    bounds=(0.0, math.inf),
    default=0.1,
    unit="std of AlexNet's alphas",
    what="a finite standard deviation",
    slider=(0.0, 1.0, 0.01),
    sampler="normal",
)


class PCAColor(BatchRandomTransform):
    """AlexNet PCA colour augmentation with a training-set basis (see the module docstring).

    Follows scikit-learn conventions: ``fit(images)`` learns ``eigenvalues_`` (3,) and
    ``eigenvectors_`` (3, 3, columns) and returns ``self``; ``PCAColor.imagenet()`` gives a transform
    with the published ImageNet constants. Each sample gets ``alpha ~ N(0, sigma)`` (3 numbers) and the
    offset ``eigenvectors_ @ (alpha * eigenvalues_)`` (in [0, 1] units, x255 on uint8) is added to
    every pixel.

    Args:
        sigma: standard deviation of alpha (AlexNet: 0.1).
        p: probability of applying it to a sample.
        clamp: clamp float results to [0, 1] (uint8 always saturates).
        generator: optional ``torch.Generator``.
    """

    PARAMS = (SIGMA, P)

    def __init__(
        self, sigma: float = 0.1, p: float = 1.0, *, clamp: bool = False, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(p, generator)
        self.sigma = SIGMA.check(sigma)
        self.clamp = bool(clamp)

    @classmethod
    def imagenet(
        cls, sigma: float = 0.1, p: float = 1.0, *, clamp: bool = False, generator: torch.Generator | None = None
    ) -> PCAColor:
        """A transform using ImageNet's published PCA (no fitting needed)."""
        t = cls(sigma, p, clamp=clamp, generator=generator)
        t.eigenvalues_ = IMAGENET_EIGENVALUES.clone()
        t.eigenvectors_ = IMAGENET_EIGENVECTORS.clone()
        t._basis = "imagenet"
        return t

    def fit(self, images: Tensor | Iterable[Tensor], max_pixels: int | None = None) -> PCAColor:
        """Learn the RGB basis from training images (a tensor or an iterable of tensors); returns self."""
        self.eigenvalues_, self.eigenvectors_ = fit_rgb_pca(images, max_pixels, self.generator)
        self._basis = "fitted"
        return self

    def check_is_fitted(self) -> None:
        """Raise :class:`~convlab._checks.NotFittedError` (a ``RuntimeError``) unless a basis is fitted or given."""
        check_is_fitted(
            self,
            "eigenvectors_",
            "call `fit(train_images)` first, or use `PCAColor.imagenet()` for ImageNet's published basis",
        )

    def _draw(self, n: int, h: int, w: int, generator: torch.Generator | None) -> dict[str, Tensor]:
        self.check_is_fitted()
        return {"alpha": SIGMA.draw(self.sigma, (n, 3), generator)}

    def offsets(self, alpha: Tensor) -> Tensor:
        """``(B, 3)`` RGB offsets for given alphas (as drawn in ``last_params["alpha"]``)."""
        self.check_is_fitted()
        return K.pca_offset(alpha, self.eigenvalues_, self.eigenvectors_)

    def _apply(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return K.pca_color(x, params["alpha"].to(x.device), self.eigenvalues_, self.eigenvectors_, clamp=self.clamp)

    def extra_repr(self) -> str:
        clamp = ", clamp=True" if self.clamp else ""
        fitted = {"imagenet": "", "fitted": ", fitted"}.get(getattr(self, "_basis", ""), ", unfitted")
        return f"{super().extra_repr()}{clamp}{fitted}"

    def __repr__(self) -> str:
        # With ImageNet's basis the repr is the code that builds the same transform.
        imagenet = getattr(self, "_basis", "") == "imagenet"
        return f"{type(self).__name__}{'.imagenet' if imagenet else ''}({self.extra_repr()})"
