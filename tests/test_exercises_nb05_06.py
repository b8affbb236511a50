"""Notebooks 05 and 06: the exercises' references pass their own checks on the real photos, wrong answers fail
with a message, and the quizzes' answers are consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convlab import augment as aug
from convlab.exercises import nb05, nb06

from conftest import copy_of

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mirror_crop_reference_passes_and_equals_convlab_draw_for_draw():
    assert nb05.MIRROR_CROP.run(nb05.mirror_crop_reference) is None
    x = nb05.real_batch()[:5]
    g = torch.Generator().manual_seed(3)
    oracle = aug.RandomCrop((40, 60), generator=g)(aug.RandomHorizontalFlip(0.5, generator=g)(x))
    assert torch.equal(nb05.mirror_crop_reference(x, (40, 60), 0.5, torch.Generator().manual_seed(3)), oracle)


def _swapped_draws(images, size, p, generator):
    b, _, hh, ww = images.shape
    h, w = size
    left = torch.randint(0, ww - w + 1, (b,), generator=generator)  # lefts before flips: another draw order
    flip = torch.rand(b, generator=generator) < p
    top = torch.randint(0, hh - h + 1, (b,), generator=generator)
    x = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
    return torch.stack([x[i, :, t : t + h, lf : lf + w] for i, (t, lf) in enumerate(zip(top.tolist(), left.tolist()))])


@pytest.mark.parametrize(
    "wrong, message",
    [
        (lambda images, size, p, g: images[..., : size[0], : size[1]], "different generator seeds"),
        (
            lambda images, size, p, g: images.flip(-1)[..., : size[0], : size[1]].contiguous(),
            "different generator seeds",
        ),
        (lambda images, size, p, g: images.float()[..., : size[0], : size[1]], "dtype"),
        (_swapped_draws, "draw order"),
    ],
)
def test_mirror_crop_check_fails_on_wrong_answers(wrong, message):
    reason = nb05.MIRROR_CROP.run(wrong)
    assert reason is not None and message in reason


def test_rgb_pca_reference_matches_numpy_and_convlab():
    photos = list(nb06.train_photos()[:10])
    vals, vecs = nb06.rgb_pca_reference(photos)
    px = np.concatenate([p.reshape(3, -1).numpy() for p in photos], axis=1) / 255
    ref = np.linalg.eigvalsh(np.cov(px))[::-1]
    np.testing.assert_allclose(vals.numpy(), ref, rtol=1e-4)
    cv_vals, cv_vecs = aug.fit_rgb_pca(photos)
    torch.testing.assert_close(vals, cv_vals, rtol=1e-4, atol=1e-8)
    assert bool(((vecs * cv_vecs).sum(0).abs() > 0.9999).all())
    assert nb06.FIT_PCA.run(nb06.rgb_pca_reference) is None


def test_rgb_pca_check_explains_common_mistakes():
    ref = copy_of(nb06.rgb_pca_reference)

    def unscaled(ims):
        return ref(ims)[0] * 255**2, ref(ims)[1]

    def ascending(ims):
        return ref(ims)[0].flip(0), ref(ims)[1].flip(1)

    def rows(ims):
        return ref(ims)[0], ref(ims)[1].T

    def per_image(ims):
        return tuple(torch.stack([ref([im])[k] for im in ims]).mean(0) for k in (0, 1))

    assert "255^2" in nb06.FIT_PCA.run(unscaled)
    assert "largest first" in nb06.FIT_PCA.run(ascending)
    assert "COLUMN" in nb06.FIT_PCA.run(rows)
    assert nb06.FIT_PCA.run(per_image) is not None


def test_pca_color_reference_passes_and_transposed_basis_or_per_pixel_draws_fail():
    assert nb06.PCA_COLOR.run(nb06.pca_color_reference) is None

    def rows(images, vals, vecs, sigma, g):  # eigenvectors taken as rows
        off = (torch.randn(len(images), 3, generator=g) * sigma * vals) @ vecs
        return (images.float() + 255 * off.view(-1, 3, 1, 1)).round().clamp(0, 255).to(torch.uint8)

    def per_pixel(images, vals, vecs, sigma, g):
        alpha = torch.randn(len(images), images.shape[2], images.shape[3], 3, generator=g) * sigma
        off = ((alpha * vals) @ vecs.T).permute(0, 3, 1, 2)
        return (images.float() + 255 * off).round().clamp(0, 255).to(torch.uint8)

    assert "COLUMN" in nb06.PCA_COLOR.run(rows)
    assert "one alpha per photo" in nb06.PCA_COLOR.run(per_pixel)


def test_color_shift_reference_passes_and_wrapping_or_noise_fails():
    assert nb06.COLOR_SHIFT.run(nb06.color_shift_reference) is None

    def wraps(images, m, g):
        off = torch.empty(len(images), 3).uniform_(-m, m, generator=g)
        return images + (255 * off).round().to(torch.uint8).view(-1, 3, 1, 1)

    def noise(images, m, g):
        off = torch.empty(images.shape).uniform_(-m, m, generator=g)
        return (images.float() + 255 * off).round().clamp(0, 255).to(torch.uint8)

    assert "larger than magnitude 0.1 allows" in nb06.COLOR_SHIFT.run(wraps)
    assert "global colour cast" in nb06.COLOR_SHIFT.run(noise)


def test_rotate_shear_reference_passes_and_the_usual_mistakes_fail():
    assert nb05.ROTATE_SHEAR.run(nb05.rotate_shear_reference) is None

    def turned_back(x, a, s):  # the same maths with the angle's sign flipped, written out (not the reference)
        b, c, h, w = x.shape
        t = torch.deg2rad(-a.double())
        rot = torch.stack([torch.stack([t.cos(), t.sin()], -1), torch.stack([-t.sin(), t.cos()], -1)], -2)
        inv = torch.linalg.inv(rot)
        d = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)
        theta = torch.cat([inv * d[:, None] / d[None, :], torch.zeros(b, 2, 1, dtype=torch.float64)], 2)
        grid = torch.nn.functional.affine_grid(theta.float(), [b, c, h, w], align_corners=False)
        return torch.nn.functional.grid_sample(x, grid, align_corners=False)

    def unscaled(x, a, s):  # rotation in normalised coordinates: wrong for non-square photos
        t = torch.deg2rad(a)
        theta = torch.zeros(len(a), 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = t.cos(), -t.sin(), t.sin(), t.cos()
        return torch.nn.functional.grid_sample(
            x, torch.nn.functional.affine_grid(theta, x.shape, align_corners=False), align_corners=False
        )

    assert "wrong way" in nb05.ROTATE_SHEAR.run(turned_back)
    assert "scale x by 2 / W" in nb05.ROTATE_SHEAR.run(unscaled)


def test_local_warp_reference_passes_and_the_usual_mistakes_fail():
    import torch.nn.functional as F

    assert nb05.LOCAL_WARP.run(nb05.local_warp_reference) is None

    def warp(images, noise, sign=1.0, align=True, scale=True):
        b, c, h, w = images.shape
        field = sign * F.interpolate(noise.float(), size=(h, w), mode="bicubic", align_corners=align)
        ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
        xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
        sx, sy = (2 / w, 2 / h) if scale else (2 / w, 2 / w)
        grid = torch.stack([xs.view(1, 1, w) + field[:, 0] * sx, ys.view(1, h, 1) + field[:, 1] * sy], dim=-1)
        return F.grid_sample(images, grid, align_corners=False)

    assert nb05.LOCAL_WARP.run(warp) is None  # written apart from the reference: it passes
    assert "wrong way" in nb05.LOCAL_WARP.run(lambda x, n: warp(x, n, sign=-1.0))
    assert "align_corners=True" in nb05.LOCAL_WARP.run(lambda x, n: warp(x, n, align=False))
    assert "differ from convlab's warp" in nb05.LOCAL_WARP.run(lambda x, n: warp(x, n, scale=False))


def test_quiz_q2_of_notebook_06_is_what_pca_colour_computes():
    offset = aug.PCAColor.imagenet().offsets(torch.tensor([[0.1, 0.0, 0.0]]))[0, 0] * 255
    assert float(offset) == pytest.approx(nb06.QUIZ.questions["q2"].answer, abs=0.01)


def test_importing_the_modules_loads_no_data():
    import importlib

    for m in (nb05, nb06):
        importlib.reload(m)
    assert nb05._real_batch.cache_info().currsize == 0 and nb06._train_photos.cache_info().currsize == 0
