"""The fused training pipeline equals the composition of the separate kernels."""

import pytest
import skimage.data
import torch
from torchvision.transforms.v2 import functional as TF

from convlab.augment import FusedTrainPipeline, PCAColor
from convlab.augment import functional as K

# float kernels: CI runs these files again with one thread (OMP_NUM_THREADS=1), see README
pytestmark = pytest.mark.numeric


@pytest.fixture(scope="module")
def photos():
    imgs = [torch.from_numpy(f()).permute(2, 0, 1) for f in (skimage.data.chelsea, skimage.data.coffee)]
    small = [TF.resize(i, [96, 96], antialias=True) for i in imgs]
    return torch.stack([small[i % 2] for i in range(6)])


@pytest.mark.parametrize("method", ["loop", "matmul"])
@pytest.mark.parametrize("size", [40, 72, 128])
def test_fused_equals_composition(photos, method, size):
    pipe = FusedTrainPipeline(size, pca=PCAColor.imagenet(), method=method, generator=torch.Generator().manual_seed(0))
    out = pipe(photos)
    p = pipe.last_params
    assert p["flip"].any() and (~p["flip"]).any()
    ref = pipe.reference(photos, p)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-5)
    # and the reference itself is the plain step-by-step recipe
    x = photos.float() if method == "matmul" else photos
    y = K.hflip(K.resized_crop(x, p["boxes"], size), p["flip"]).float() / 255
    y = K.pca_color(K.color_shift(y, p["shift"]), p["alpha"], pipe.pca.eigenvalues_, pipe.pca.eigenvectors_)
    y = TF.normalize(y, list(pipe.mean.tolist()), list(pipe.std.tolist()))
    torch.testing.assert_close(ref, y, atol=1e-4, rtol=1e-5)


def test_loop_and_matmul_agree_and_out_is_reused(photos):
    loop = FusedTrainPipeline(64, method="loop", generator=torch.Generator().manual_seed(1))
    mm = FusedTrainPipeline(64, method="matmul", channels_last=True)
    buf = torch.empty(6, 3, 64, 64)
    a = loop(photos, out=buf)
    assert a.data_ptr() == buf.data_ptr()
    b = mm(photos, params=loop.last_params)
    assert b.is_contiguous(memory_format=torch.channels_last)
    # uint8 vs float resize: at most ~one grey level apart
    assert (a - b).abs().max() < 1.5 / 255 / 0.224


def test_float_input_and_determinism(photos):
    x = photos.float() / 255
    a = FusedTrainPipeline(32, generator=torch.Generator().manual_seed(3))(x)
    b = FusedTrainPipeline(32, generator=torch.Generator().manual_seed(3))(x)
    assert torch.equal(a, b)


def test_errors(photos):
    with pytest.raises(ValueError, match="`method` must be one of"):
        FusedTrainPipeline(32, method="fast")
    with pytest.raises(ValueError, match=r"`out` must be a float32 tensor of shape \(6, 3, 32, 32\)"):
        FusedTrainPipeline(32)(photos, out=torch.empty(6, 3, 31, 32))
    with pytest.raises(ValueError, match="must be a batch"):
        FusedTrainPipeline(32)(photos[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        FusedTrainPipeline(32, pca=PCAColor())


def test_colour_pass_chunks_and_channels_last_change_no_value(photos, monkeypatch):
    import convlab.augment.pipeline as P

    pipe = FusedTrainPipeline(40, pca=PCAColor.imagenet(), method="loop", generator=torch.Generator().manual_seed(2))
    params = pipe.draw(6, 96, 96)
    plain = pipe(photos, params=params).clone()
    monkeypatch.setattr(P, "_CHUNK_BYTES", 2 * 3 * 40 * 40 * 4)  # chunks of 2 images
    for cl in (False, True):
        out = torch.empty(6, 3, 40, 40)
        out = out.contiguous(memory_format=torch.channels_last) if cl else out
        y = pipe(photos, out=out, params=params)
        assert y.data_ptr() == out.data_ptr() and torch.equal(y, plain)
    # and both equal the unchunked formula on the uint8 resize
    u8 = K.hflip(K.resized_crop(photos, params["boxes"], 40), params["flip"]).float()
    a = (1.0 / (255.0 * pipe.std)).view(1, 3, 1, 1)
    b = ((pipe._offsets(params) - pipe.mean) / pipe.std).view(6, 3, 1, 1)
    torch.testing.assert_close(plain, u8.mul_(a).add_(b), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------- odd input (issue 11)
def test_pipeline_odd_input():
    pipe = FusedTrainPipeline(16, generator=torch.Generator().manual_seed(0))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert pipe(images[:0]).shape == (0, 3, 16, 16)
    with pytest.raises(ValueError, match=r"channels-first .* got shape \(4, 32, 32, 3\), which looks channels-last"):
        pipe(images.permute(0, 2, 3, 1))
    with pytest.raises(TypeError, match="got ndarray; convert an"):
        pipe(images.numpy())
    for bad in ({"std": (float("nan"), 0.2, 0.2)}, {"mean": (0.5, float("inf"), 0.5)}):
        with pytest.raises(ValueError, match="`mean` and `std` must be 3 finite numbers"):
            FusedTrainPipeline(16, **bad)
