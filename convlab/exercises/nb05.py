"""Notebook 05 (geometric augmentation): the batched mirror + random crop exercise and the quiz.

The exercise: mirror and randomly crop a whole batch with per-sample parameters drawn from a ``torch.Generator``,
in plain PyTorch. The draw order is part of the specification (so the check can compare with an oracle draw for
draw): first ``torch.rand(B, generator=g) < p`` (which images are mirrored), then
``torch.randint(0, H - h + 1, (B,), generator=g)`` (tops), then ``torch.randint(0, W - w + 1, (B,), generator=g)``
(lefts). That is exactly what ``convlab.augment.RandomHorizontalFlip(p)`` followed by ``RandomCrop((h, w))`` draw
with the same generator, so convlab's transforms are the oracle; :func:`mirror_crop_reference` is the same thing
in plain PyTorch.

The second exercise, ``rotate_shear``: rotate and shear a whole batch, each image by its own angles, with one
``affine_grid`` + ``grid_sample`` (the inverse map, in normalised coordinates); checked on the real photos against
``convlab.augment.functional``'s ``rotate``, ``shear`` and ``affine`` kernels.

The third, ``local_warp``: elastic-style local warping of a batch, a smooth displacement field upsampled from a coarse
grid of random offsets per image, resampled with one ``grid_sample``; checked on the real photos against
``convlab.augment.functional``'s ``elastic_field`` and ``warp`` (the kernels of ``RandomElasticWarp``).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from convlab.exercises.core import Exercise, Question, Quiz, expect

__all__ = [
    "mirror_crop_reference",
    "rotate_shear_reference",
    "local_warp_reference",
    "MIRROR_CROP",
    "ROTATE_SHEAR",
    "LOCAL_WARP",
    "QUIZ",
    "real_batch",
]


def mirror_crop_reference(
    images: torch.Tensor, size: tuple[int, int], p: float, generator: torch.Generator
) -> torch.Tensor:
    """Mirror each image of ``images`` (B, C, H, W) with probability ``p``, then cut a ``size`` = (h, w) window at a
    random position per image; returns (B, C, h, w), same dtype. Draws: flips, then tops, then lefts (module doc)."""
    b, _, hh, ww = images.shape
    h, w = size
    flip = torch.rand(b, generator=generator) < p
    top = torch.randint(0, hh - h + 1, (b,), generator=generator)
    left = torch.randint(0, ww - w + 1, (b,), generator=generator)
    x = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    return torch.stack([x[i, :, t : t + h, l_ : l_ + w] for i, (t, l_) in enumerate(zip(top.tolist(), left.tolist()))])


def real_batch() -> torch.Tensor:
    """16 food photos resized to 72 x 128, uint8 (16, 3, 72, 128): a fresh copy of a memoised batch (loaded on first
    use, not at import), so a function that changes it changes nothing for the next caller."""
    return _real_batch().clone()


@lru_cache(maxsize=1)
def _real_batch() -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    from convlab.data import load_food

    food = load_food()
    return torch.stack([TF.resize(im, [72, 128], antialias=True) for im in food.train.images[:16]])


def rotate_shear_reference(images: torch.Tensor, angles: torch.Tensor, shears: torch.Tensor) -> torch.Tensor:
    """Shear each image of ``images`` (float (B, C, H, W)) horizontally by ``shears[b]`` degrees, then rotate it
    counter-clockwise by ``angles[b]`` degrees, both about its centre; bilinear, zeros outside; (B, C, H, W).

    In pixel coordinates centred on the image (x to the right, y down), the forward map is ``A = R @ S`` with
    ``S = [[1, -tan(shear)], [0, 1]]`` and ``R = [[cos a, sin a], [-sin a, cos a]]`` (counter-clockwise on screen);
    ``grid_sample`` needs the inverse map, in coordinates normalised to [-1, 1] (x by 2 / W, y by 2 / H)."""
    b, c, h, w = images.shape
    a, s = torch.deg2rad(angles.double()), torch.deg2rad(shears.double())
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    rot = torch.stack([torch.stack([a.cos(), a.sin()], -1), torch.stack([-a.sin(), a.cos()], -1)], -2)
    shear = torch.stack([torch.stack([one, -s.tan()], -1), torch.stack([zero, one], -1)], -2)
    inverse = torch.linalg.inv(rot @ shear)  # (B, 2, 2): output pixel -> input pixel
    to_unit = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, :, :2] = inverse * to_unit[:, None] / to_unit[None, :]  # D @ inverse @ D^-1
    grid = torch.nn.functional.affine_grid(theta.to(images.dtype), [b, c, h, w], align_corners=False)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _oracle(images: torch.Tensor, size: tuple[int, int], p: float, seed: int) -> torch.Tensor:
    from convlab import augment as aug

    g = torch.Generator().manual_seed(seed)
    return aug.RandomCrop(size, generator=g)(aug.RandomHorizontalFlip(p, generator=g)(images))


def _test(mirror_crop) -> None:
    x = real_batch()
    before = x.clone()
    out = mirror_crop(x, (64, 112), 0.5, torch.Generator().manual_seed(0))
    expect(isinstance(out, torch.Tensor), f"return a tensor, got {type(out).__name__}")
    expect(
        tuple(out.shape) == (16, 3, 64, 112),
        f"expected shape (16, 3, 64, 112) for size (64, 112), got {tuple(out.shape)}",
    )
    expect(out.dtype == torch.uint8, f"keep the input's dtype (uint8), got {out.dtype}")
    expect(torch.equal(x, before), "do not modify the input batch in place")
    # structure first (a clearer message than a failed oracle comparison)
    flipped = x.flip(-1)
    for i in range(4):
        found = any(
            torch.equal(out[i], src[i, :, t : t + 64, l_ : l_ + 112])
            for src in (x, flipped)
            for t in range(9)
            for l_ in range(17)
        )
        expect(
            found,
            f"output image {i} is not a 64 x 112 window of input image {i} (mirrored or not): crop each "
            "image from itself, with a per-image top/left",
        )
    expect(
        not torch.equal(
            mirror_crop(x, (64, 112), 0.0, torch.Generator().manual_seed(0)),
            mirror_crop(x, (64, 112), 0.0, torch.Generator().manual_seed(1)),
        ),
        "different generator seeds should give different windows: draw the offsets from `generator`",
    )
    for p, seed in ((0.5, 0), (0.5, 1), (0.8, 2), (0.0, 3)):  # p < 1: convlab skips the flip draw at p = 1
        got = mirror_crop(x, (64, 112), p, torch.Generator().manual_seed(seed))
        expect(
            torch.equal(got, _oracle(x, (64, 112), p, seed)),
            f"p={p}, seed={seed}: not equal to convlab's RandomHorizontalFlip + RandomCrop with the same generator: "
            "keep the draw order (flips with torch.rand(B) < p, then tops, then lefts with torch.randint) and "
            "use inclusive ranges (H - h + 1 possible tops)",
        )


MIRROR_CROP = Exercise(
    name="mirror_crop",
    test=_test,
    reference=mirror_crop_reference,
    hints=[
        "Draw everything first, one value per image, in the order the text gives: a bool 'mirror?' per image, then a "
        "top and a left per image. Mirror the chosen images, then cut each image's own window and stack.",
        "The API: torch.rand and torch.randint both take generator=; Tensor.flip(-1) mirrors left-right; "
        "torch.where with a (B, 1, 1, 1) mask picks per image; slicing x[i, :, top:top + h, left:left + w] and "
        "torch.stack build the batch of windows.",
    ],
    skill="batched per-sample mirror + random crop, reproducible from a torch.Generator",
    handle="nb05.MIRROR_CROP",
)


def _test_rotate_shear(rotate_shear) -> None:
    from convlab.augment import functional as K

    x = real_batch()[:8].float() / 255
    zero = torch.zeros(8)
    angles = torch.tensor([0.0, 10.0, -10.0, 30.0, -45.0, 90.0, 5.0, -20.0])
    shears = torch.tensor([0.0, 0.0, 15.0, -15.0, 10.0, 0.0, -30.0, 20.0])
    out = rotate_shear(x, zero, zero)
    expect(isinstance(out, torch.Tensor), f"return a tensor, got {type(out).__name__}")
    expect(tuple(out.shape) == (8, 3, 72, 128), f"keep the shape (8, 3, 72, 128), got {tuple(out.shape)}")
    expect(
        torch.allclose(out.float(), x, atol=1e-4),
        "angles and shears of 0 must return the photos unchanged: the identity is theta = [[1, 0, 0], [0, 1, 0]], "
        "and affine_grid/grid_sample both need align_corners=False",
    )
    got = rotate_shear(x, angles, zero).float()
    err = (got - K.rotate(x, angles)).abs().amax(dim=(1, 2, 3))
    if not bool((err < 1e-3).all()):
        mirrored = (rotate_shear(x, -angles, zero).float() - K.rotate(x, angles)).abs().amax() < 1e-3
        expect(not mirrored, "your rotations turn the wrong way: positive angles turn counter-clockwise on screen")
        expect(
            False,
            f"rotations (no shear) differ from convlab's rotate by up to {float(err.max()):.3f} on photo "
            f"{int(err.argmax())} (angle {float(angles[err.argmax()]):g}): use the INVERSE map (output -> input), "
            "and scale x by 2 / W and y by 2 / H (the photos are not square)",
        )
    got = rotate_shear(x, zero, shears).float()
    expect(
        torch.allclose(got, K.shear(x, shears), atol=1e-3),
        "shears (no rotation) differ from convlab's shear: x' = x - tan(shear) * y, about the centre",
    )
    got = rotate_shear(x, angles, shears).float()
    want = K.affine(x, angle=-angles, shear=torch.stack([shears, zero], dim=1))
    expect(
        torch.allclose(got, want, atol=1e-3),
        "rotation and shear together differ from convlab's affine: shear first, then rotate (A = R @ S)",
    )


ROTATE_SHEAR = Exercise(
    name="rotate_shear",
    test=_test_rotate_shear,
    reference=rotate_shear_reference,
    hints=[
        "Build one 2 x 3 matrix per image and let PyTorch resample the whole batch: grid_sample asks, for every "
        "OUTPUT pixel, where to read in the INPUT, so the matrix is the inverse of the forward map A = R @ S.",
        "The API: torch.deg2rad, torch.linalg.inv on a (B, 2, 2) stack, then theta (B, 2, 3) with a zero last "
        "column; in normalised coordinates the 2 x 2 part is D @ inv(A) @ inv(D) with D = diag(2 / W, 2 / H); "
        "torch.nn.functional.affine_grid(theta, images.shape, align_corners=False) and grid_sample(images, grid, "
        "align_corners=False).",
    ],
    skill="per-sample rotation and shear of a batch with affine_grid + grid_sample",
    handle="nb05.ROTATE_SHEAR",
)


def local_warp_reference(images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Warp each image of ``images`` (float (B, C, H, W)) by its own smooth displacement field.

    ``noise`` (B, 2, gh, gw) holds displacements in pixels (dx, dy) on a coarse grid of control points spanning the
    image, upsampled bicubically (corners on the image's corners) to (B, 2, H, W); output pixel (y, x) reads the
    input at (y + dy, x + dx), bilinear, zeros outside; returns (B, C, H, W)."""
    b, c, h, w = images.shape
    field = torch.nn.functional.interpolate(noise.float(), size=(h, w), mode="bicubic", align_corners=True)
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1  # pixel centres in [-1, 1]
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    grid = torch.stack([xs.view(1, 1, w) + field[:, 0] * (2.0 / w), ys.view(1, h, 1) + field[:, 1] * (2.0 / h)], -1)
    return torch.nn.functional.grid_sample(
        images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
    )


def _test_local_warp(local_warp) -> None:
    from convlab.augment import functional as K

    x = real_batch()[:8].float() / 255
    still = torch.zeros(8, 2, 4, 6)
    out = local_warp(x, still)
    expect(isinstance(out, torch.Tensor), f"return a tensor, got {type(out).__name__}")
    expect(tuple(out.shape) == (8, 3, 72, 128), f"keep the shape (8, 3, 72, 128), got {tuple(out.shape)}")
    expect(
        torch.allclose(out.float(), x, atol=1e-4),
        "zero displacements must return the photos unchanged: sample at the pixel centres, with grid_sample's "
        "align_corners=False",
    )
    shift = torch.zeros(8, 2, 4, 6)
    shift[:, 0] = 3.0  # every pixel reads 3 pixels to its right
    got = local_warp(x, shift).float()
    if not torch.allclose(got[..., :-3], x[..., 3:], atol=1e-4):
        expect(
            not torch.allclose(got[..., 3:], x[..., :-3], atol=1e-4),
            "a displacement dx = +3 moved the photos the wrong way: output pixel (y, x) reads the input at x + dx",
        )
        expect(
            False,
            "a constant displacement dx = +3 pixels should read every output pixel from 3 pixels to its right: "
            "convert pixels to grid_sample's [-1, 1] coordinates with 2 / W for x and 2 / H for y",
        )
    g = torch.Generator().manual_seed(0)
    noise = torch.empty(8, 2, 4, 6).uniform_(-6, 6, generator=g)
    want = K.warp(x, K.elastic_field(noise, (72, 128)))
    got = local_warp(x, noise).float()
    err = (got - want).abs().amax(dim=(1, 2, 3))
    expect(
        bool((err < 1e-3).all()),
        f"random fields differ from convlab's warp(elastic_field(noise)) by up to {float(err.max()):.3f} on photo "
        f"{int(err.argmax())}: upsample the coarse offsets with interpolate(..., mode='bicubic', align_corners=True) "
        "(the control points sit on the image's corners), one field per image, (dx, dy) in that order",
    )


LOCAL_WARP = Exercise(
    name="local_warp",
    test=_test_local_warp,
    reference=local_warp_reference,
    hints=[
        "A local warp is a displacement per pixel. Make it smooth by upsampling the coarse grid of offsets to the "
        "image's size, add it to each pixel's own position, and let grid_sample read the photo there.",
        "The API: torch.nn.functional.interpolate(noise, size=(H, W), mode='bicubic', align_corners=True) gives "
        "(B, 2, H, W) in pixels; pixel centres in grid_sample's coordinates are (2 * i + 1) / n - 1; a pixel offset "
        "d becomes d * 2 / W in x and d * 2 / H in y; the grid is (B, H, W, 2) with x first; grid_sample(images, "
        "grid, align_corners=False).",
    ],
    skill="elastic-style local warping of a batch, one smooth random field per image, with grid_sample",
    handle="nb05.LOCAL_WARP",
)

QUIZ = Quiz(
    "Notebook 05 quiz",
    {
        "q1": Question(
            "A network trained on random 32 x 56 crops of 36 x 64 frames: what should it see at test time?",
            "a",
            "The centre crop is the expected training view, and the same every time the photo is tested; averaging "
            "several fixed crops (notebook 09's 10-crop) is better still, at a cost.",
            options={
                "a": "the centre 32 x 56 crop (or several fixed crops, averaged)",
                "b": "a random 32 x 56 crop, a new one each time the photo is tested",
                "c": "a 24 x 42 crop, to be safe",
            },
            wrong={
                "b": "a random test crop makes the prediction for one photo change from run to run.",
                "c": "a crop of another size shows objects at a scale the network never saw in training.",
            },
        ),
        "q2": Question(
            "For which data is a horizontal mirror a label-changing (wrong) augmentation?",
            "c",
            "Left and right carry meaning in text and digits (a mirrored 'R' or '3' is not that character), in road "
            "signs ('turn left') and in medical images with a known side. Food, animals and most objects keep their "
            "label.",
            options={
                "a": "photos of fruit on a plate",
                "b": "photos of cats and dogs",
                "c": "handwritten digits and letters",
                "d": "satellite images of fields",
            },
            wrong={
                "a": "a mirrored pepper is still a pepper.",
                "b": "a mirrored cat is still a cat.",
                "d": "aerial images have no preferred side: mirrors (and vertical flips) are safe there.",
            },
        ),
        "q3": Question(
            "A random crop of 32 x 56 px from a 36 x 64 px frame: how many different windows (top, left) are possible?",
            45,
            "Tops 0..4 (36 - 32 + 1 = 5 values) times lefts 0..8 (64 - 56 + 1 = 9 values) = 45: the '+ 1' is why "
            "torch.randint's upper bound is H - h + 1 (it is exclusive).",
            wrong={
                "low": "count both ends: H - h + 1 tops and W - w + 1 lefts (32 = 4 x 8 forgets the + 1).",
                "high": "the window must lie inside the frame: only H - h + 1 tops and W - w + 1 lefts.",
            },
            tolerance=0.0,
        ),
        "q4": Question(
            "Over 5 paired seeds a transform's effect is +0.4 points with a 95% interval of [-0.3, +1.1]. What does "
            "this run say?",
            "a",
            "The interval includes zero, so by the course's rule the run is a tie: it cannot tell the effect from "
            "zero. Its width says what it could have missed: an effect larger than about 1 point would have shown.",
            options={
                "a": "it cannot tell the effect from noise",
                "b": "the transform helps by 2 points",
                "c": "the transform hurts",
                "d": "the transform has no effect at all",
            },
            wrong={
                "b": "+0.4 is the mean, but the interval reaches below zero: the sign could flip with other seeds.",
                "c": "the mean is positive, and within the noise anyway.",
                "d": "absence of evidence is not evidence of absence: the run is too small to tell.",
            },
        ),
        "q5": Question(
            (
                "From your run: what fraction of the pixels of your rotated and sheared photos (the grid under "
                "`rotate_shear`) is fill, zero in all three channels? (2 decimals)"
            ),
            answer=None,
            measured="fill_fraction",
            tolerance=0.01,
            why=(
                "Every rotated or sheared frame has corners that come from outside the photo: the model sees black "
                "wedges in training that no test photo has."
            ),
            wrong={
                "low": "count the pixels whose three channels are all zero.",
                "high": "count only pixels that are zero in all three channels.",
            },
        ),
        "q6": Question(
            (
                "`grid_sample` gets, for every output pixel, where to read in the input. For a rotation by +a, "
                "which map do you give it?"
            ),
            options={
                "a": "either: they give the same image",
                "b": "the inverse map: output to input, a rotation by -a",
                "c": "the forward map, a rotation by +a",
            },
            answer="b",
            why=(
                "Resampling pulls: each output pixel asks where it came from, so the grid is the inverse of the "
                "transform you want."
            ),
            wrong={
                "a": "a rotation by +a and by -a are mirror images of each other.",
                "c": "the forward map turns the image the other way.",
            },
        ),
        "q7": Question(
            "Rotating a 72 x 128 photo: why not rotate its normalised [-1, 1] coordinates directly?",
            options={
                "a": (
                    "normalised x and y have different pixel scales (2 / W and 2 / H): a rotation there "
                    "stretches and shears the photo"
                ),
                "b": "grid_sample cannot rotate",
                "c": "it works: normalised coordinates are made for that",
            },
            answer="a",
            why=(
                "A rotation is a rotation in pixels; in normalised coordinates it becomes D R D^-1 with D = diag(2 "
                "/ W, 2 / H)."
            ),
            wrong={
                "b": "it resamples any map you give it.",
                "c": "only for square images: your check's wrong-scale message shows the difference.",
            },
        ),
        "q8": Question(
            (
                "Elastic warps helped most on handwritten digits (Simard et al. 2003). Why them, more than photos "
                "of rigid objects?"
            ),
            options={
                "a": (
                    "handwriting really varies by small local deformations; a rigid object seen by a camera "
                    "does not bend"
                ),
                "b": "digits are small images",
                "c": "warps work only on grayscale images",
            },
            answer="a",
            why=(
                "An augmentation should produce images that could really occur with the same label: bent strokes "
                "do, bent peppers rarely."
            ),
            wrong={
                "b": "the size of the image is not the reason.",
                "c": "warps apply to any channels.",
            },
        ),
        "q9": Question(
            (
                "A random-resized crop (Inception's) picks a window of random area and aspect ratio and resizes it "
                "to a fixed size. What does it add over a plain random crop?"
            ),
            options={
                "a": "changes of scale and aspect ratio: the object appears at different sizes",
                "b": "changes of colour",
                "c": "nothing",
            },
            answer="a",
            why=("A plain crop only translates; a resized crop also zooms, which is why it is the ImageNet default."),
            wrong={
                "b": "it changes geometry only.",
                "c": "it zooms and stretches, which a plain crop does not.",
            },
        ),
    },
    research=[
        (
            'Switch your rotate_shear to `padding_mode="reflection"`: do the black corners\' effect on the '
            "study's rotation row change?"
        ),
        (
            "Which augmentations does Keller Jordan's airbench use for CIFAR-10, and why flips and translations "
            "but no rotations?"
        ),
    ],
)
