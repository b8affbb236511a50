"""AlexNet PCA colour: fit vs numpy eigh, ImageNet constants, sklearn-style API."""

import numpy as np
import pytest
import skimage.data
import torch

from convlab.augment import IMAGENET_EIGENVALUES, IMAGENET_EIGENVECTORS, PCAColor, fit_rgb_pca

# float kernels: CI runs these files again in one process with a thread per core (README)
pytestmark = pytest.mark.numeric


@pytest.fixture(scope="module")
def photos():
    return [
        torch.from_numpy(f()).permute(2, 0, 1).contiguous()
        for f in (skimage.data.chelsea, skimage.data.coffee, skimage.data.astronaut)
    ]


def test_fit_matches_numpy_eigh(photos):
    pca = PCAColor().fit(photos)
    px = np.concatenate([p.permute(1, 2, 0).reshape(-1, 3).numpy() / 255.0 for p in photos])
    vals, vecs = np.linalg.eigh(np.cov(px, rowvar=False))
    vals, vecs = vals[::-1], vecs[:, ::-1]
    np.testing.assert_allclose(pca.eigenvalues_.numpy(), vals, rtol=1e-4)
    # eigenvectors are defined up to sign
    np.testing.assert_allclose(np.abs(pca.eigenvectors_.numpy()), np.abs(vecs), atol=1e-4)
    assert (pca.eigenvectors_[0] < 0).all()  # sign convention of the ImageNet constants
    assert pca.fit(photos) is pca


def test_fit_accepts_a_batch_and_uint8_equals_float(photos):
    batch = torch.stack([p[:, :200, :200] for p in photos])
    v8, e8 = fit_rgb_pca(batch)
    vf, ef = fit_rgb_pca(batch.float() / 255)
    torch.testing.assert_close(v8, vf)
    torch.testing.assert_close(e8, ef)


def test_imagenet_constants_are_orthonormal():
    pca = PCAColor.imagenet()
    assert torch.equal(pca.eigenvalues_, IMAGENET_EIGENVALUES)
    v = IMAGENET_EIGENVECTORS
    torch.testing.assert_close(v.T @ v, torch.eye(3), atol=2e-3, rtol=0)


def test_offset_is_constant_per_image_and_follows_formula(photos):
    x = torch.stack([p[:, :64, :64] for p in photos]).float() / 255
    pca = PCAColor.imagenet(0.3, generator=torch.Generator().manual_seed(0))
    out = pca(x)
    alpha = pca.last_params["alpha"]
    expected = (alpha * IMAGENET_EIGENVALUES) @ IMAGENET_EIGENVECTORS.T
    delta = out - x
    torch.testing.assert_close(delta, expected[:, :, None, None].expand_as(delta), atol=1e-6, rtol=0)
    assert not torch.allclose(expected[0], expected[1])


def test_sigma_zero_is_identity(photos):
    x = photos[0][None]
    assert torch.equal(PCAColor.imagenet(0.0)(x), x)


def test_unfitted_error_says_what_to_call(photos):
    with pytest.raises(RuntimeError, match=r"call `fit\(.*PCAColor.imagenet\(\)"):
        PCAColor()(photos[0])
    assert "unfitted" in repr(PCAColor())


def test_bad_arguments():
    with pytest.raises(ValueError, match="sigma: expected"):
        PCAColor(-1.0)
    with pytest.raises(ValueError, match="3 channels"):
        fit_rgb_pca(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="empty"):
        fit_rgb_pca([])
