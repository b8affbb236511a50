"""Data augmentation: pure kernels, per-sample random transforms, AlexNet PCA colour, a fused pipeline.

- :mod:`convlab.augment.functional`: deterministic kernels on ``(..., C, H, W)`` tensors.
- :mod:`convlab.augment.transforms`: ``torchvision.transforms.v2``-compatible classes that draw
  parameters per sample, each setting declared once as a :class:`Param`; and the seeded draws of crop boxes
  (``sample_resized_crop_boxes``) and of mirrored square crops (``random_crop_batch``).
- :mod:`convlab.augment.pca`: AlexNet's PCA colour augmentation (``PCAColor``) and ImageNet constants.
- :mod:`convlab.augment.pipeline`: ``FusedTrainPipeline``, the fast batched training pipeline.
"""

from . import functional
from .pca import IMAGENET_EIGENVALUES, IMAGENET_EIGENVECTORS, PCAColor, fit_rgb_pca
from .pipeline import IMAGENET_MEAN, IMAGENET_STD, FusedTrainPipeline
from .transforms import (
    BatchRandomTransform,
    Param,
    RandomColorShift,
    RandomCrop,
    RandomElasticWarp,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomShear,
    random_crop_batch,
    sample_resized_crop_boxes,
)

__all__ = [
    "functional",
    "BatchRandomTransform",
    "Param",
    "RandomHorizontalFlip",
    "RandomCrop",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomShear",
    "RandomElasticWarp",
    "RandomColorShift",
    "PCAColor",
    "fit_rgb_pca",
    "IMAGENET_EIGENVALUES",
    "IMAGENET_EIGENVECTORS",
    "FusedTrainPipeline",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "sample_resized_crop_boxes",
    "random_crop_batch",
]
