"""Notebooks 05 and 06: the exercises' references pass their own checks on the real photos, wrong answers fail
with a message, and the quizzes' answers are consistent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convlab import augment as aug
from convlab.exercises import nb05, nb06

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
    ref = nb06.rgb_pca_reference

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


def test_offsets_reference_passes_and_transposed_basis_fails():
    assert nb06.OFFSETS.run(nb06.alexnet_offsets_reference) is None
    reason = nb06.OFFSETS.run(lambda a, lam, vecs: (a * lam) @ vecs)
    assert reason is not None and "COLUMN" in reason


def test_quiz_q2_of_notebook_06_is_what_pca_colour_computes():
    offset = aug.PCAColor.imagenet().offsets(torch.tensor([[0.1, 0.0, 0.0]]))[0, 0] * 255
    assert float(offset) == pytest.approx(nb06.QUIZ.questions["q2"].answer, abs=0.01)


def test_importing_the_modules_loads_no_data():
    import importlib

    for m in (nb05, nb06):
        importlib.reload(m)
    assert nb05._real_batch.cache_info().currsize == 0 and nb06._train_photos.cache_info().currsize == 0
