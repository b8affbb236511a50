"""Hand-engineered image features, and the feature + linear classifiers that learning curves compare.

- :func:`color_histogram`: a joint RGB histogram (``bins**3`` values) or per-channel HSV histograms
  (``3 * bins``), L1-normalised. It only counts colours, so it is invariant to any rearrangement of the pixels
  (flips, rotations by 90 degrees, shuffling) and, after normalisation, nearly to resizing; it changes with
  lighting and white balance, and knows nothing of shape.
- :func:`hog_features`: histograms of gradient orientations (HOG, Dalal & Triggs 2005, via
  ``skimage.feature.hog``) on a grayscale ``size x size`` square. It describes local shape and edges, is robust to
  small shifts and to brightness changes (block normalisation), ignores colour, and is *not* invariant to
  rotation or flips (the cells and orientation bins move).
- Feature + linear classifiers, each with ``fit(images, seed) -> self`` and ``score(images) -> accuracy`` (methods
  that :func:`convlab.learningcurves.learning_curve` compares): :class:`HandFeatureClassifier` (features +
  StandardScaler + logistic regression), :class:`FeatureClassifier` (any feature function, e.g. a learner's own)
  and :class:`FrozenBackboneClassifier` (pretrained pooled features + logistic regression), each computing a
  photo's features once (:class:`PerImageCache`) and reusing them across sizes and seeds. The CNNs they are
  compared with are in :mod:`convlab.cnnclassifiers`.

Methods read ``images.images`` (the raw uint8 photos) and apply their own preprocessing; an ImageSet's
``transform`` is not used. scikit-learn is needed for the linear classifiers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from convlab._checks import check_is_fitted
from convlab.backbones import load_backbone
from convlab.data import ImageSet, Splits
from convlab.preprocess import fit_size

__all__ = [
    "as_rgb",
    "square_batch",
    "PerImageCache",
    "color_histogram",
    "hog_features",
    "hog_dim",
    "hand_features",
    "FeatureClassifier",
    "HandFeatureClassifier",
    "FrozenBackboneClassifier",
]


def _as_batch(images) -> tuple[torch.Tensor | list[torch.Tensor], bool]:
    """A list of (3, H, W) uint8 tensors (sizes may differ) or a (B, 3, H, W) tensor; and whether one was given."""
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images[None]
        single = True
    else:
        single = False
    for i, im in enumerate(images):
        if not isinstance(im, torch.Tensor) or im.dtype != torch.uint8 or im.ndim != 3 or im.shape[0] != 3:
            got = f"{im.dtype} {tuple(im.shape)}" if isinstance(im, torch.Tensor) else type(im).__name__
            raise ValueError(f"images[{i}]: expected a uint8 (3, H, W) RGB tensor, got {got}")
    return images, single


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """float RGB in [0, 1], ``(3, H, W)`` -> HSV in [0, 1] (hue as a fraction of the circle)."""
    r, g, b = x
    maxc, _ = x.max(0)
    minc, _ = x.min(0)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(delta > 0, (h / 6) % 1.0, torch.zeros_like(h))
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([h, s, maxc])


def color_histogram(images: torch.Tensor | Sequence[torch.Tensor], bins: int = 8, space: str = "rgb") -> torch.Tensor:
    """Colour histograms, L1-normalised (each row sums to 1).

    Args:
        images: a uint8 ``(3, H, W)`` image, a ``(B, 3, H, W)`` batch or a list of images of any sizes.
        bins: bins per channel.
        space: ``"rgb"``: one joint histogram over ``bins**3`` colour cells (index ``(r * bins + g) * bins + b``);
            ``"hsv"``: three concatenated per-channel histograms of hue, saturation, value (``3 * bins``).

    Returns:
        float32 ``(D,)`` for one image, ``(B, D)`` for several; ``D = bins**3`` or ``3 * bins``.
    """
    if not isinstance(bins, int) or not 1 <= bins <= 64:
        raise ValueError(f"bins: expected an int in [1, 64], got {bins!r}")
    if space not in ("rgb", "hsv"):
        raise ValueError(f"space: expected 'rgb' or 'hsv', got {space!r}")
    images, single = _as_batch(images)
    out = []
    for im in images:
        if space == "rgb":
            q = (im.long() * bins) // 256  # (3, H, W) cell per channel
            idx = ((q[0] * bins + q[1]) * bins + q[2]).flatten()
            hist = torch.bincount(idx, minlength=bins**3).float()
        else:
            hsv = _rgb_to_hsv(im.float() / 255)
            q = (hsv * bins).long().clamp_(0, bins - 1).flatten(1)
            hist = torch.cat([torch.bincount(c, minlength=bins) for c in q]).float()
        out.append(hist / hist.sum())
    out = torch.stack(out)
    return out[0] if single else out


def hog_dim(size: int = 64, orientations: int = 9, pixels_per_cell: int = 8, cells_per_block: int = 2) -> int:
    """Length of :func:`hog_features`: ``blocks**2 * cells_per_block**2 * orientations`` with
    ``blocks = size // pixels_per_cell - cells_per_block + 1`` (1764 for the defaults)."""
    blocks = size // pixels_per_cell - cells_per_block + 1
    if blocks < 1:
        raise ValueError(
            f"size: expected room for a {cells_per_block}x{cells_per_block} block of "
            f"{pixels_per_cell} px cells, got {size} px"
        )
    return blocks**2 * cells_per_block**2 * orientations


def square_batch(images: torch.Tensor | Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Photos with the shorter side resized to ``size`` and centre-cropped: a float ``(B, 3, size, size)`` batch in
    [0, 1]."""

    return torch.stack([fit_size(im, (size, size)) for im in images]).float() / 255


def hog_features(
    images: torch.Tensor | Sequence[torch.Tensor],
    size: int = 64,
    orientations: int = 9,
    pixels_per_cell: int = 8,
    cells_per_block: int = 2,
) -> torch.Tensor:
    """HOG of each image on a grayscale ``size x size`` square (shorter side resized, centre-cropped).

    Returns float32 ``(hog_dim(...),)`` for one image or ``(B, hog_dim(...))``; L2-Hys block normalisation.
    """
    from skimage.feature import hog

    dim = hog_dim(size, orientations, pixels_per_cell, cells_per_block)
    images, single = _as_batch(images)
    gray = (square_batch(images, size) * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1).numpy()
    out = np.stack(
        [
            hog(
                g,
                orientations=orientations,
                pixels_per_cell=(pixels_per_cell,) * 2,
                cells_per_block=(cells_per_block,) * 2,
                block_norm="L2-Hys",
                feature_vector=True,
            )
            for g in gray
        ]
    ).astype(np.float32)
    assert out.shape[1] == dim  # our formula and skimage agree
    out = torch.from_numpy(out)
    return out[0] if single else out


_KINDS = ("color", "hsv", "hog")


def _check_kinds(kinds) -> None:
    if isinstance(kinds, str) or not kinds or not set(kinds) <= set(_KINDS):
        raise ValueError(f"kinds: expected a non-empty sequence from {sorted(_KINDS)}, got {kinds!r}")


def hand_features(
    images: torch.Tensor | Sequence[torch.Tensor],
    kinds: Sequence[str] = ("color", "hog"),
    bins: int = 8,
    size: int = 64,
) -> torch.Tensor:
    """Concatenated features per image, ``(B, D)``: ``"color"`` (joint RGB, ``bins**3``), ``"hsv"`` (``3*bins``),
    ``"hog"`` (``hog_dim(size)``), in the order given."""
    _check_kinds(kinds)
    images, _ = _as_batch(images)
    parts = {
        "color": lambda: color_histogram(images, bins, "rgb"),
        "hsv": lambda: color_histogram(images, bins, "hsv"),
        "hog": lambda: hog_features(images, size),
    }
    return torch.cat([parts[k]() for k in kinds], dim=1)


def _image_key(image: torch.Tensor) -> str:
    h = hashlib.sha1(repr(tuple(image.shape)).encode())
    h.update(image.contiguous().numpy().tobytes())
    return h.hexdigest()


class PerImageCache:
    """``extract(images) -> (B, D)`` computed once per distinct image: rows are kept per image, keyed by the image's
    bytes (the extractor's settings are fixed per owner object), so a learning curve that sees the same photo at
    every size and seed extracts it once."""

    def __init__(self, extract: Callable[[Sequence[torch.Tensor]], np.ndarray]) -> None:
        self.extract, self.store = extract, {}

    def __call__(self, images: Sequence[torch.Tensor]) -> np.ndarray:
        """The rows of ``images`` (uint8 ``(3, H, W)`` photos), extracting only those not seen before."""
        keys = [_image_key(im) for im in images]
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        if missing:
            feats = self.extract([images[i] for i in missing])
            for i, f in zip(missing, feats):
                self.store[keys[i]] = np.asarray(f, dtype=np.float32)
        return np.stack([self.store[k] for k in keys])


def _logistic(C: float, seed: int):
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the linear classifiers need scikit-learn: install convlab[dev] or scikit-learn>=1.4"
        ) from exc
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))


class _FeatureLinear:
    """Shared by the feature + logistic-regression methods: cache features, fit, score."""

    name = "features + linear"

    def _features(self, images) -> np.ndarray:
        raise NotImplementedError

    def fit(self, images, seed: int = 0):
        """Fit on an ImageSet (raw photos in ``images.images``, labels in ``images.labels``); returns ``self``."""
        self.model_ = _logistic(self.C, seed).fit(self._features(images.images), images.labels.numpy())
        return self

    def _check_fitted(self):
        check_is_fitted(self, "model_", "call fit(train_images) before predict/score")

    def predict(self, images) -> np.ndarray:
        """Class index per image of an ImageSet."""
        self._check_fitted()
        return self.model_.predict(self._features(images.images))

    def score(self, images) -> float:
        """Accuracy on an ImageSet."""
        return float((self.predict(images) == images.labels.numpy()).mean())


class FeatureClassifier(_FeatureLinear):
    """Features from any function ``extract(images) -> (B, D)`` (a list of uint8 ``(3, H, W)`` photos in, one row
    per photo out) -> StandardScaler -> logistic regression; each distinct photo's row is computed once and cached.
    A learner's own features run in a learning curve this way."""

    def __init__(self, extract, name: str = "features + linear", C: float = 0.1):
        if not callable(extract):
            raise TypeError(f"extract: expected a function images -> (B, D) features, got {extract!r}")
        self.extract, self.name, self.C = extract, name, C
        self._cache = PerImageCache(lambda ims: np.asarray(torch.as_tensor(extract(list(ims))), dtype=np.float32))

    def _features(self, images) -> np.ndarray:
        return self._cache(list(images))


class HandFeatureClassifier(_FeatureLinear):
    """Hand-engineered features (see :func:`hand_features`) -> StandardScaler -> logistic regression.

    ``C`` is the inverse L2 strength; features are computed once per distinct image and cached in the object.
    """

    def __init__(self, kinds: Sequence[str] = ("color", "hog"), bins: int = 8, size: int = 64, C: float = 0.1):
        _check_kinds(kinds)
        if not isinstance(bins, int) or not 1 <= bins <= 64:
            raise ValueError(f"bins: expected an int in [1, 64], got {bins!r}")
        hog_dim(size)  # checks that a HOG block fits
        self.kinds, self.bins, self.size, self.C = tuple(kinds), bins, size, C
        self.name = " + ".join(kinds) + " + linear"
        self._cache = PerImageCache(lambda ims: hand_features(ims, self.kinds, bins, size).numpy())

    def _features(self, images) -> np.ndarray:
        return self._cache(list(images))


class FrozenBackboneClassifier(_FeatureLinear):
    """A pretrained backbone's pooled features (``forward_features`` on its own eval preprocessing) -> logistic
    regression. The backbone is loaded on first use, in eval mode, and never trained; each distinct image is
    passed through it once per object, so a learning curve pays for feature extraction only once.
    """

    def __init__(
        self,
        backbone: str | nn.Module = "mobilenet_v2",
        weights: str | None = "imagenet",
        C: float = 0.1,
        batch_size: int = 32,
    ):
        self.backbone, self.weights, self.C, self.batch_size = backbone, weights, C, batch_size
        self.name = f"frozen {backbone if isinstance(backbone, str) else type(backbone).__name__} + linear"
        self._cache = PerImageCache(self._extract)
        self._model: nn.Module | None = None

    @torch.inference_mode()
    def _extract(self, images: Sequence[torch.Tensor]) -> np.ndarray:
        if self._model is None:  # loaded once, on first use; the ``backbone`` setting stays as given
            self._model = (
                load_backbone(self.backbone, weights=self.weights) if isinstance(self.backbone, str) else self.backbone
            )
        model = self._model.eval()
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(images), self.batch_size):
            x = model.spec.preprocess(list(images[start : start + self.batch_size])).to(device)
            out.append(model.forward_features(x).float().cpu())
        return torch.cat(out).numpy()

    def _features(self, images) -> np.ndarray:
        return self._cache(list(images))


def as_rgb(splits: Splits) -> Splits:
    """Grayscale splits (e.g. Fashion-MNIST's uint8 ``(N, 1, 28, 28)``) as 3-channel images (a broadcast view, no
    copy), so the colour/HOG features and :class:`~convlab.smallcnn.SmallCNN` take them unchanged."""

    def rgb(s: ImageSet) -> ImageSet:
        images = (
            s.images.expand(-1, 3, -1, -1)
            if isinstance(s.images, torch.Tensor)
            else [im.expand(3, -1, -1) for im in s.images]
        )
        return ImageSet(images, s.labels, s.classes, s.ids, s.transform)

    return Splits(rgb(splits.train), rgb(splits.val), rgb(splits.test), splits.classes, splits.seed, dict(splits.info))
