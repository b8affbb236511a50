"""The fused training pipeline equals the composition of the separate kernels."""

import pytest
import skimage.data
import torch
from torchvision.transforms.v2 import functional as TF

from convlab.augment import FusedTrainPipeline, PCAColor
from convlab.augment import functional as K

# float kernels: CI runs these files again in one process with a thread per core (README)
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
    with pytest.raises(ValueError, match="method: expected one of"):
        FusedTrainPipeline(32, method="fast")
    with pytest.raises(ValueError, match=r"out: expected a float32 tensor of shape \(6, 3, 32, 32\)"):
        FusedTrainPipeline(32)(photos, out=torch.empty(6, 3, 31, 32))
    with pytest.raises(ValueError, match=r"images: expected a batch \(B, 3, H, W\)"):
        FusedTrainPipeline(32)(photos[0])
    with pytest.raises(RuntimeError, match="not fitted"):
        FusedTrainPipeline(32, pca=PCAColor())
    with pytest.raises(ValueError, match=r"flip_p: expected a probability in \[0, 1\], got 1.5"):
        FusedTrainPipeline(32, flip_p=1.5)
    with pytest.raises(RuntimeError, match="previous call"):
        FusedTrainPipeline(32).replay(photos)
    with pytest.raises(TypeError, match=r"params: expected a dict of drawn parameters"):
        FusedTrainPipeline(32)(photos, params=[1])


def test_params_replay_the_last_draw_and_defaults_are_declared(photos):
    import inspect

    pipe = FusedTrainPipeline(32, pca=PCAColor.imagenet(), generator=torch.Generator().manual_seed(4))
    first = pipe(photos)
    drawn = pipe.last_params
    assert torch.equal(pipe(photos, params=drawn), first) and pipe.last_params is drawn
    assert torch.equal(pipe.replay(photos), first)
    assert not torch.equal(pipe(photos), first)
    signature = inspect.signature(FusedTrainPipeline)
    assert all(signature.parameters[p.name].default == p.default for p in pipe.PARAMS)


@pytest.mark.parametrize("size", [40, 224])
def test_memory_layouts_change_no_value(photos, size):
    """CHW or HWC (channels_last) source, CHW or channels_last output: the same numbers, all equal to the reference."""
    pipe = FusedTrainPipeline(size, pca=PCAColor.imagenet(), method="loop", generator=torch.Generator().manual_seed(2))
    params = pipe.draw(6, 96, 96)
    ref = pipe.reference(photos, params)
    hwc = photos.contiguous(memory_format=torch.channels_last)
    for src in (photos, hwc):
        for cl in (False, True):
            out = torch.empty(6, 3, size, size)
            out = out.contiguous(memory_format=torch.channels_last) if cl else out
            y = pipe(src, out=out, params=params)
            assert y.data_ptr() == out.data_ptr()
            torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-5)
    assert torch.equal(hwc, photos)  # the source is read, never written


def test_matmul_path_layouts_and_float_source(photos):
    """The small-image path folds the colour scale into its matmul: same values for every layout, float input too."""
    pipe = FusedTrainPipeline(24, pca=PCAColor.imagenet(), method="matmul", generator=torch.Generator().manual_seed(4))
    params = pipe.draw(6, 96, 96)
    ref = pipe.reference(photos, params)
    for src in (photos, photos.contiguous(memory_format=torch.channels_last)):
        out = torch.empty(6, 3, 24, 24).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(pipe(src, out=out, params=params), ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(pipe(photos.float() / 255, params=params), ref, atol=1e-4, rtol=1e-5)


def test_samples_split_among_threads_change_no_value(photos):
    """On several cores the samples are shared among Python threads, in bands of rows (threads=): same output."""
    import convlab.augment.pipeline as P

    pipe = FusedTrainPipeline(224, pca=PCAColor.imagenet(), method="loop", generator=torch.Generator().manual_seed(5))
    params = pipe.draw(6, 96, 96)
    a = torch.rand(1, 3, 1, 1) + 0.5
    b = torch.randn(6, 3, 1, 1)
    hwc = photos.contiguous(memory_format=torch.channels_last)
    args = (hwc, params["boxes"], params["flip"], (224, 224), False, a, b)
    one = P._resized_crop_affine(*args, torch.empty(6, 3, 224, 224).contiguous(memory_format=torch.channels_last))
    for threads in (2, 4):
        out = torch.full((6, 3, 224, 224), float("nan")).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(P._resized_crop_affine(*args, out, threads), one, atol=1e-6, rtol=1e-6)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # the pipeline takes the threaded path by itself
        torch.testing.assert_close(pipe(photos, params=params), pipe.reference(photos, params), atol=1e-4, rtol=1e-5)
    finally:
        torch.set_num_threads(before)
