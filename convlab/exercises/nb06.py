"""Notebook 06 (colour augmentation): fit AlexNet's PCA colour basis, compute its per-image offsets; the quiz.

Three exercises on the real food photos:

- ``COLOR_SHIFT``: random colour shifting of a batch: one offset per image and channel, uniform in
  ``[-magnitude, magnitude]`` (drawn ``torch.empty(B, 3).uniform_(-m, m, generator=g)``), added to uint8 photos with
  saturation at 0 and 255; checked against ``convlab.augment.RandomColorShift`` with the same generator.
- ``FIT_PCA`` (the main one): the eigenvalues and eigenvectors of the 3 x 3 covariance of the RGB values of all
  training pixels (values in [0, 1]), largest first, eigenvector ``i`` in column ``i``. Checked against numpy
  (``np.cov`` + ``np.linalg.eigh``) on the food training photos; an eigenvector's sign is arbitrary, so columns are
  compared up to sign.
- ``PCA_COLOR``: AlexNet's PCA colour augmentation of a batch of photos with a fitted basis: ``alpha`` drawn
  ``torch.randn(B, 3, generator=g) * sigma``, offsets ``eigenvectors @ (alpha[b] * eigenvalues)``, added to the uint8
  photos with saturation; checked against ``convlab.augment.PCAColor`` fitted on the food photos, same generator.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from convlab.exercises.core import Exercise, Question, Quiz, expect

__all__ = [
    "color_shift_reference",
    "rgb_pca_reference",
    "pca_color_reference",
    "COLOR_SHIFT",
    "FIT_PCA",
    "PCA_COLOR",
    "QUIZ",
    "train_photos",
]


def color_shift_reference(images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
    """Shift the colour of each uint8 photo of ``images`` (B, 3, H, W): offsets uniform in ``[-magnitude,
    magnitude]`` (a fraction of 0..255), one per image and channel, drawn ``torch.empty(B, 3).uniform_(-magnitude,
    magnitude, generator=generator)``; the result rounded and saturated to 0..255, uint8."""
    offsets = torch.empty(images.shape[0], 3).uniform_(-magnitude, magnitude, generator=generator)
    shifted = images.float() + 255 * offsets.view(-1, 3, 1, 1)
    return shifted.round().clamp(0, 255).to(torch.uint8)


def rgb_pca_reference(images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(eigenvalues (3,), eigenvectors (3, 3))`` of the RGB covariance over all pixels of ``images`` (uint8
    (3, H, W) each, values scaled to [0, 1]); largest first, eigenvector ``i`` in column ``i``."""
    px = torch.cat([im.reshape(3, -1).T for im in images]).double() / 255  # (N, 3)
    centred = px - px.mean(0)
    cov = centred.T @ centred / (len(px) - 1)
    vals, vecs = torch.linalg.eigh(cov)  # ascending
    return vals.flip(0).float(), vecs.flip(1).float()


def pca_color_reference(
    images: torch.Tensor,
    eigenvalues: torch.Tensor,
    eigenvectors: torch.Tensor,
    sigma: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """AlexNet's PCA colour augmentation of uint8 photos ``images`` (B, 3, H, W): ``alpha = torch.randn(B, 3,
    generator=generator) * sigma``; photo ``b`` gets ``255 * eigenvectors @ (alpha[b] * eigenvalues)`` added to every
    pixel, rounded and saturated to 0..255 (eigenvector ``i`` in column ``i``)."""
    alpha = torch.randn(images.shape[0], 3, generator=generator) * sigma
    offsets = (alpha * eigenvalues) @ eigenvectors.T  # (B, 3): row b = eigenvectors @ (alpha[b] * eigenvalues)
    return (images.float() + 255 * offsets.view(-1, 3, 1, 1)).round().clamp(0, 255).to(torch.uint8)


def train_photos() -> tuple[torch.Tensor, ...]:
    """The food training photos: fresh copies of a memoised load (loaded on first use, not at import)."""
    return tuple(p.clone() for p in _train_photos())


@lru_cache(maxsize=1)
def _train_photos() -> tuple[torch.Tensor, ...]:
    from convlab.data import load_food

    return tuple(load_food().train.images)


def _test_color_shift(color_shift) -> None:
    from convlab import augment as aug

    batch = torch.stack([p[:, :96, :96] for p in train_photos()[:12]])
    out = color_shift(batch, 0.1, torch.Generator().manual_seed(0))
    expect(isinstance(out, torch.Tensor), f"return a tensor, got {type(out).__name__}")
    expect(tuple(out.shape) == tuple(batch.shape), f"keep the shape {tuple(batch.shape)}, got {tuple(out.shape)}")
    expect(out.dtype == torch.uint8, f"return uint8 photos like the input, got {out.dtype}")
    diff = out.float() - batch.float()
    inside = (batch > 40) & (batch < 215)  # pixels that no offset of at most 0.1 x 255 can saturate
    per_channel = [diff[b, c][inside[b, c]] for b in range(12) for c in range(3)]
    expect(
        all(len(d) == 0 or float(d.max() - d.min()) <= 1 for d in per_channel),
        "within one photo, every pixel of a channel must move by the same offset (a global colour cast, not noise)",
    )
    expect(
        float(diff.abs().amax()) <= 0.1 * 255 + 1,
        f"an offset of {float(diff.abs().amax()):.0f} levels is larger than magnitude 0.1 allows (25.5): offsets "
        "are fractions of the 0..255 range",
    )
    expect(
        len({round(float(d.mean())) for d in per_channel if len(d)}) > 6,
        "every photo and channel needs its own random offset: draw a (B, 3) tensor",
    )
    for magnitude, seed in ((0.1, 0), (0.3, 1), (0.05, 2)):
        want = aug.RandomColorShift(magnitude, generator=torch.Generator().manual_seed(seed))(batch)
        got = color_shift(batch, magnitude, torch.Generator().manual_seed(seed))
        expect(
            bool(((got.int() - want.int()).abs() <= 1).all()),
            f"magnitude {magnitude}, seed {seed}: not equal to convlab's RandomColorShift with the same generator: "
            "draw torch.empty(B, 3).uniform_(-magnitude, magnitude, generator=generator), add 255 x offset to each "
            "channel, and saturate at 0 and 255 (no wrap-around: compute in float, clamp, then uint8)",
        )


COLOR_SHIFT = Exercise(
    name="color_shift",
    test=_test_color_shift,
    reference=color_shift_reference,
    hints=[
        "A colour shift is a global cast: draw three numbers per photo (R, G, B offsets), and add each to every "
        "pixel of its channel. uint8 arithmetic wraps around (250 + 10 = 4), so compute in float and clamp.",
        "The API: torch.empty(B, 3).uniform_(-magnitude, magnitude, generator=generator); broadcasting with "
        "offsets.view(B, 3, 1, 1); images.float() + 255 * offsets, then .round().clamp(0, 255).to(torch.uint8).",
    ],
    skill="random colour shifting of a batch, reproducible from a torch.Generator",
    handle="nb06.COLOR_SHIFT",
)


def _numpy_pca(images) -> tuple[np.ndarray, np.ndarray]:
    px = np.concatenate([im.reshape(3, -1).numpy() for im in images], axis=1).astype(np.float64) / 255
    vals, vecs = np.linalg.eigh(np.cov(px))
    return vals[::-1], vecs[:, ::-1]


def _test_fit(rgb_pca) -> None:
    photos = list(train_photos()[:40])
    out = rgb_pca(photos)
    expect(
        isinstance(out, tuple) and len(out) == 2, f"return a pair (eigenvalues, eigenvectors), got {type(out).__name__}"
    )
    vals, vecs = (torch.as_tensor(t, dtype=torch.float64) for t in out)
    expect(
        vals.shape == (3,) and vecs.shape == (3, 3),
        f"expected eigenvalues (3,) and eigenvectors (3, 3), got {tuple(vals.shape)} and {tuple(vecs.shape)}",
    )
    ref_vals, ref_vecs = _numpy_pca(photos)
    expect(bool((vals[:-1] >= vals[1:]).all()), f"sort the eigenvalues largest first, got {vals.tolist()}")
    if np.allclose(vals.numpy(), ref_vals * 255**2, rtol=1e-3):
        expect(False, "the eigenvalues are 255^2 too large: scale the pixel values to [0, 1] first")
    expect(
        np.allclose(vals.numpy(), ref_vals, rtol=1e-3, atol=1e-7),
        f"eigenvalues {np.round(vals.numpy(), 5).tolist()} differ from numpy's {np.round(ref_vals, 5).tolist()} "
        "(np.cov of all pixels of all images, values in [0, 1]): centre on the mean over ALL training pixels "
        "(one covariance for the training set, not one per image)",
    )
    cos = (vecs * torch.from_numpy(ref_vecs.copy())).sum(0).abs()
    expect(
        bool((cos > 0.999).all()),
        f"eigenvector columns are not numpy's (|cos| per column {np.round(cos.numpy(), 3).tolist()}): eigenvector "
        "i is COLUMN i of the matrix, reordered with the eigenvalues (largest first)",
    )


def _test_pca_color(pca_color) -> None:
    from convlab import augment as aug

    photos = train_photos()
    fitted = aug.PCAColor(sigma=0.5).fit(list(photos))
    vals, vecs = fitted.eigenvalues_, fitted.eigenvectors_
    batch = torch.stack([p[:, :96, :96] for p in photos[:8]])
    out = pca_color(batch, vals, vecs, 0.5, torch.Generator().manual_seed(0))
    expect(isinstance(out, torch.Tensor), f"return a tensor, got {type(out).__name__}")
    expect(tuple(out.shape) == tuple(batch.shape), f"keep the shape {tuple(batch.shape)}, got {tuple(out.shape)}")
    expect(out.dtype == torch.uint8, f"return uint8 photos like the input, got {out.dtype}")
    diff = out.float() - batch.float()
    inside = (batch > 60) & (batch < 195)
    expect(
        all(float(d.max() - d.min()) <= 1 for b in range(8) for c in range(3) if len(d := diff[b, c][inside[b, c]])),
        "within one photo, every pixel of a channel must move by the same offset: one alpha per photo, not per pixel",
    )
    grey = torch.full((1, 3, 4, 4), 128, dtype=torch.uint8)
    lam = torch.tensor([0.5, 0.1, 0.01])
    swap = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # columns: the G, B and R axes
    g = torch.Generator().manual_seed(3)
    a0 = float(torch.randn(1, 3, generator=torch.Generator().manual_seed(3))[0, 0])
    moved = pca_color(grey, lam, swap, 0.1, g).float()[0, :, 0, 0] - 128
    expect(
        abs(float(moved[1]) - round(255 * 0.1 * a0 * 0.5)) <= 1 and abs(float(moved[0])) <= 1,
        "eigenvector i is COLUMN i: the first component of alpha must move along column 0 (here the G axis), by "
        "255 x alpha_0 x lambda_0",
    )
    for sigma, seed in ((0.5, 0), (0.1, 1), (1.0, 2)):
        fitted.sigma = sigma
        fitted.generator = torch.Generator().manual_seed(seed)
        want = fitted(batch)
        got = pca_color(batch, vals, vecs, sigma, torch.Generator().manual_seed(seed))
        expect(
            bool(((got.int() - want.int()).abs() <= 1).all()),
            f"sigma {sigma}, seed {seed}: not equal to convlab's PCAColor on the food basis with the same generator: "
            "draw alpha = torch.randn(B, 3, generator=generator) * sigma, multiply by the eigenvalues, combine the "
            "eigenvector COLUMNS, add 255 x offset and saturate at 0 and 255",
        )


FIT_PCA = Exercise(
    name="rgb_pca",
    test=_test_fit,
    reference=rgb_pca_reference,
    hints=[
        "Treat every pixel of every training image as one 3-vector (R, G, B) in [0, 1]: stack them all into an "
        "(N, 3) matrix, centre it on its mean, form the 3 x 3 covariance, and eigen-decompose it.",
        "The API: Tensor.reshape(3, -1).T gives an image's pixels as rows; torch.cat joins images; scale to [0, 1] "
        "in float64; the covariance of centred rows c is c.T @ c / (N - 1). torch.linalg.eigh returns eigenvalues "
        "in ASCENDING order and eigenvectors as COLUMNS: the task wants them largest first.",
    ],
    skill="AlexNet's PCA colour basis fitted on the training pixels",
    handle="nb06.FIT_PCA",
)

PCA_COLOR = Exercise(
    name="pca_color",
    test=_test_pca_color,
    reference=pca_color_reference,
    hints=[
        "Per photo: three random numbers alpha ~ N(0, sigma); the photo's offset is a weighted sum of the three "
        "eigenvectors (columns), weight i = alpha_i * lambda_i; add it to every pixel, as in your color_shift.",
        "Broadcasting: alpha (B, 3) times eigenvalues (3,) gives the weights per photo; applying a matrix M to "
        "each row of a (B, 3) tensor is one product with M's transpose; view(B, 3, 1, 1) adds it to every pixel.",
    ],
    skill="AlexNet's PCA colour augmentation of a batch, with a fitted basis",
    handle="nb06.PCA_COLOR",
)


QUIZ = Quiz(
    "Notebook 06 quiz",
    {
        "q1": Question(
            "What distinguishes AlexNet's PCA colour augmentation from Albumentations' `FancyPCA`?",
            "b",
            "AlexNet fits ONE basis on all training pixels and adds a constant offset along it per image; FancyPCA "
            "runs a PCA of each image's own pixels (an eigen-decomposition per image, much slower, image-specific "
            "axes).",
            options={
                "a": "nothing: two names for the same method",
                "b": "AlexNet: one basis for the training set; FancyPCA: a PCA of each image",
                "c": "AlexNet's works per pixel, FancyPCA per image",
                "d": "FancyPCA uses ImageNet's constants, AlexNet fits its own",
            },
            wrong={
                "a": "they share a name, not the method: compare where the basis comes from.",
                "c": "both add one offset per image, to every pixel.",
                "d": "FancyPCA fits per image; AlexNet's constants are ImageNet's own fitted basis.",
            },
        ),
        "q2": Question(
            "With ImageNet's basis (lambda_1 = 0.2175, eigenvector 1 = (-0.5675, -0.5808, -0.5836)) and alpha = "
            "(0.1, 0, 0), by how many levels (of 255) does the RED channel of every pixel change? (a signed number)",
            -3.15,
            "0.1 * 0.2175 * (-0.5675) = -0.01234 in [0, 1] units, x255 = -3.15 levels: AlexNet's sigma = 0.1 gives "
            "changes of a few levels, mostly in brightness.",
            wrong={
                "low": "multiply alpha by the eigenvalue and the eigenvector's R component, then by 255.",
                "high": "check the sign: the eigenvector's R component is negative.",
            },
            tolerance=0.05,
        ),
        "q3": Question(
            "For which task would a strong colour shift destroy the label?",
            "c",
            "When the exact hue is the label (ripe vs unripe, traffic light colours, some stains), a shift that moves "
            "colours between classes teaches the network that the deciding cue does not matter.",
            options={
                "a": "cats vs dogs",
                "b": "cars vs bicycles",
                "c": "ripe vs unripe bananas",
                "d": "digits in grey-scale scans",
            },
            wrong={
                "a": "a colour cast does not turn a cat into a dog.",
                "b": "shape decides here, not hue.",
                "d": "grey-scale images have no hue to shift.",
            },
        ),
        "q4": Question(
            "Why fit the PCA colour basis on the training photos only?",
            "a",
            "Anything fitted from data (a basis, a mean, a normalisation) must come from the training set: using test "
            "pixels leaks test information into training, however small it looks.",
            options={
                "a": "fitting on test pixels leaks test information into training",
                "b": "the test photos have no colours",
                "c": "numpy cannot handle more pixels",
                "d": "the basis must differ between train and test",
            },
            wrong={
                "b": "they do, which is why it is tempting to use them.",
                "c": "it is a 3 x 3 covariance: cheap.",
                "d": "the basis is used only for training: test images are not augmented.",
            },
        ),
        "q5": Question(
            (
                "From your run: what percentage of the colour variance of the food training pixels does your first "
                "eigenvalue carry (`rgb_pca` above)? (1 decimal)"
            ),
            answer=None,
            measured="top_share",
            tolerance=0.15,
            why=(
                "Most of the colour variance of natural photos lies along one axis, brightness; PCA colour "
                "augmentation moves mostly along it."
            ),
            wrong={
                "low": "divide the first eigenvalue by the sum of the three.",
                "high": "divide the first eigenvalue by the sum of all three.",
            },
        ),
        "q6": Question(
            "What does the first eigenvector of natural photos' RGB covariance mostly encode?",
            options={
                "a": "brightness: R, G and B move together, about (0.58, 0.58, 0.58) up to sign",
                "b": "redness",
                "c": "noise",
            },
            answer="a",
            why=(
                "ImageNet's first eigenvector is (-0.5675, -0.5808, -0.5836): almost equal weights, i.e. lighter "
                "or darker."
            ),
            wrong={
                "b": "redness would weigh R alone.",
                "c": "the largest eigenvalue is the largest systematic variation.",
            },
        ),
        "q7": Question(
            (
                "A uint8 pixel of 250 plus an offset of 10 levels, computed as uint8 + uint8 in PyTorch: what "
                "value comes out?"
            ),
            answer=4,
            tolerance=0.0,
            why=(
                "uint8 wraps around modulo 256: 260 becomes 4, a dark pixel in a bright area. That is why your "
                "color_shift computes in float and clamps."
            ),
            wrong={
                "low": "260 modulo 256.",
                "high": "uint8 does not saturate: it wraps modulo 256.",
            },
        ),
        "q8": Question(
            "Why draw AlexNet's alpha once per image rather than once per pixel?",
            options={
                "a": "per-pixel draws would change the labels",
                "b": "it mimics a change of illumination, which shifts the colour of the whole image",
                "c": "it is faster",
            },
            answer="b",
            why=(
                "One offset per image is a global colour cast; a draw per pixel would be colour noise, another "
                "augmentation with another effect."
            ),
            wrong={
                "a": "noise keeps labels too; it is just another thing.",
                "c": "speed is a side benefit, not the reason.",
            },
        ),
        "q9": Question(
            "A colour shift of magnitude 0.1: up to how many levels of 255 can a channel move?",
            answer=25.5,
            tolerance=0.05,
            why="Offsets are fractions of the value range: 0.1 x 255 = 25.5 levels.",
            wrong={
                "low": "0.1 x 255.",
                "high": "0.1 x 255.",
            },
        ),
    },
    research=[
        (
            "Fit the PCA basis on the test photos instead of the training photos: how much do the eigenvalues "
            "differ, and why must you not do it anyway?"
        ),
        (
            "Apply Albumentations' FancyPCA (a PCA per image) and AlexNet's PCA colour to the same photo: which "
            "changes the colours more, and which keeps the photo's own colour statistics?"
        ),
    ],
)
