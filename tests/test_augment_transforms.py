"""Transform classes: v2 compatibility, per-sample draws, determinism, replay, p, repr, constructor errors."""

import pytest
import skimage.data
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from convlab.augment import (
    PCAColor,
    RandomColorShift,
    RandomCrop,
    RandomElasticWarp,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomShear,
)
from convlab.augment import functional as K

# float kernels: CI runs these files again in one process with a thread per core (README)
pytestmark = pytest.mark.numeric


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def batch():
    """(8, 3, 64, 64) uint8: crops of a real photo."""
    cat = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)
    cat = TF.resize(cat, [96, 144], antialias=True)
    return torch.stack([cat[:, 4 * i : 4 * i + 64, 8 * i : 8 * i + 64] for i in range(8)])


FACTORIES = {
    "flip": lambda g: RandomHorizontalFlip(generator=g),
    "crop": lambda g: RandomCrop(48, generator=g),
    "rrc": lambda g: RandomResizedCrop(32, generator=g),
    "rotation": lambda g: RandomRotation(30, generator=g),
    "shear": lambda g: RandomShear(20, 5, generator=g),
    "elastic": lambda g: RandomElasticWarp(6, 16, generator=g),
    "color": lambda g: RandomColorShift(0.2, generator=g),
    "pca": lambda g: PCAColor.imagenet(0.5, generator=g),
}


@pytest.mark.parametrize("name", FACTORIES)
def test_same_seed_same_output_and_shapes(batch, name):
    a = FACTORIES[name](gen(1))(batch)
    b = FACTORIES[name](gen(1))(batch)
    assert torch.equal(a, b) and a.dtype == batch.dtype and a.shape[:2] == batch.shape[:2]


@pytest.mark.parametrize("name", FACTORIES)
def test_samples_get_different_parameters(batch, name):
    t = FACTORIES[name](gen(2))
    same = batch[:1].expand(8, -1, -1, -1).contiguous()
    out = t(same)
    distinct = {o.numpy().tobytes() for o in out}
    assert len(distinct) >= (2 if name == "flip" else 8), f"{name}: samples share parameters"


@pytest.mark.parametrize("name", FACTORIES)
def test_single_image_tv_image_and_compose(batch, name):
    t = FACTORIES[name](gen(3))
    single = t(batch[0])
    assert single.ndim == 3
    img = tv_tensors.Image(batch)
    out = v2.Compose([t, v2.ToDtype(torch.float32, scale=True)])(img)
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.float32


@pytest.mark.parametrize("name", FACTORIES)
def test_params_replay_the_last_draw(batch, name):
    t = FACTORIES[name](gen(4))
    first = t(batch)
    drawn = t.last_params
    assert drawn is not None
    assert torch.equal(t(batch, params=drawn), first) and t.last_params is drawn
    assert torch.equal(t.replay(batch), first)
    assert not torch.equal(t(batch), first) or name == "flip"
    assert torch.equal(t(tv_tensors.Image(batch), params=drawn), first)  # given parameters draw nothing
    single = t(batch[:1])
    assert torch.equal(t(batch[0], params=t.last_params), single[0])


@pytest.mark.parametrize("name", FACTORIES)
def test_declared_defaults_are_the_constructors(name):
    """Each declared setting is a constructor argument, with the constructor's default (the sliders start there)."""
    import inspect

    t = FACTORIES[name](gen())
    signature = inspect.signature(type(t))
    for param in t.PARAMS:
        assert signature.parameters[param.name].default == param.default, param.name
        if param.slider is not None:  # every slider position is a setting the constructor accepts
            param.check(param.slider[0]), param.check(param.slider[1])


def test_batched_equals_one_by_one(batch):
    t = RandomRotation(30, generator=gen(5))
    out = t(batch)
    angles = t.last_params["angle"]
    for i in range(len(batch)):
        assert torch.equal(out[i], K.rotate(batch[i], angles[i : i + 1]))


def test_matches_kernels_with_drawn_params(batch):
    t = RandomResizedCrop(32, generator=gen(6))
    out = t(batch)
    assert torch.equal(out, K.resized_crop(batch, t.last_params["boxes"], 32))
    c = RandomColorShift(0.2, generator=gen(6))
    assert torch.equal(c(batch), K.color_shift(batch, c.last_params["shift"]))


@pytest.mark.parametrize("name", ["flip", "rotation", "shear", "elastic", "color", "pca"])
def test_p_zero_is_identity_and_p_selects(batch, name):
    t = FACTORIES[name](gen(7))
    t.p = 0.0
    assert torch.equal(t(batch), batch)
    t.p = 0.5
    out = t(batch)
    applied = t.last_params["apply"]
    assert torch.equal(out[~applied], batch[~applied])


def test_rrc_boxes_inside_and_scale_respected():
    from convlab.augment import sample_resized_crop_boxes

    b = sample_resized_crop_boxes(2000, 100, 150, (0.25, 0.5), (3 / 4, 4 / 3), gen(8))
    top, left, h, w = b.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 100).all() and (left + w <= 150).all()
    frac = (h * w).float() / (100 * 150)
    assert frac.min() > 0.22 and frac.max() < 0.53


def test_repr_is_readable_and_reproducing():
    assert repr(RandomRotation(15)) == "RandomRotation(degrees=15.0, p=1.0)"
    t = eval(repr(RandomResizedCrop(32)), {"RandomResizedCrop": RandomResizedCrop})
    assert t.ratio == (3 / 4, 4 / 3)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: RandomRotation(15, p=1.5), r"p: expected a probability in \[0, 1\], got 1.5"),
        (lambda: RandomRotation(200), r"degrees: expected a range in \[-180.0, 180.0\]"),
        (lambda: RandomRotation("x"), "degrees: expected a number or a"),
        (lambda: RandomCrop(0), "size: expected a positive int"),
        (lambda: RandomResizedCrop(32, scale=(0.5, 0.1)), "scale: expected a range in"),
        (lambda: RandomElasticWarp(strength=-1), "strength: expected"),
        (lambda: RandomColorShift(2.0), r"magnitude: expected a fraction of the value range in \[0, 1\], got 2.0"),
        (lambda: RandomHorizontalFlip(generator=0), "generator: expected a torch.Generator"),
        (lambda: RandomShear(90), "shear_x: expected a range in"),
    ],
)
def test_constructor_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_input_errors(batch):
    with pytest.raises(TypeError, match="PILToTensor"):
        RandomRotation(10)(TF.to_pil_image(batch[0]))
    with pytest.raises(TypeError, match="uint8 or floating point"):
        RandomRotation(10)(batch.int())
    with pytest.raises(RuntimeError, match="previous call"):
        RandomRotation(10).replay(batch)
    with pytest.raises(TypeError, match=r"params: expected a dict of drawn parameters \(a previous last_params\)"):
        RandomRotation(10)(batch, params={"angle": torch.zeros(8)})
    t = RandomRotation(10)
    t(batch)
    with pytest.raises(ValueError, match="parameters were drawn for 8 samples, but the input has 2"):
        t(batch[:2], params=t.last_params)
    with pytest.raises(TypeError, match="inputs: expected one image or batch"):
        t(batch, batch, params=t.last_params)
    with pytest.raises(ValueError, match="larger than the input"):
        RandomCrop(100)(batch)


# --------------------------------------------------------------------------------------------- odd input
@pytest.mark.parametrize("name", FACTORIES)
def test_channels_last_and_numpy_input_are_refused_naming_the_layout(batch, name):
    t = FACTORIES[name](gen())
    with pytest.raises(ValueError, match=r"channels-first \(\.\.\., C, H, W\), got shape \(8, 64, 64, 3\)"):
        t(batch.permute(0, 2, 3, 1))  # read as C = 64 channels of width 3, it would give garbage
    with pytest.raises(
        TypeError,
        match=r"expected a torch.Tensor of shape \(\.\.\., C, H, W\), got ndarray; "
        r"convert an \(H, W, C\) array",
    ):
        t(batch[0].permute(1, 2, 0).numpy())  # without the check: a bare StopIteration


@pytest.mark.parametrize("name", FACTORIES)
def test_an_empty_batch_gives_an_empty_output(batch, name):
    t = FACTORIES[name](gen())
    full = t(batch)
    empty = t(batch[:0])
    assert empty.shape == (0,) + tuple(full.shape[1:]) and empty.dtype == full.dtype


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: PCAColor.imagenet(float("nan")), "sigma: expected a finite standard deviation >= 0, got nan"),
        (lambda: PCAColor(float("inf")), "sigma: expected a finite standard deviation >= 0, got inf"),
        (
            lambda: RandomRotation(float("nan")),
            "degrees: expected a number >= 0 when given as a single number, got nan",
        ),
        (lambda: RandomShear((float("nan"), 3.0)), "shear_x: expected a range in"),
        (lambda: RandomElasticWarp(strength=float("nan")), "strength: expected"),
        (lambda: RandomElasticWarp(smoothness=float("inf")), "smoothness: expected"),
        (lambda: RandomRotation(10, fill=float("nan")), "fill: expected a finite number"),
        (lambda: RandomColorShift(float("nan")), r"magnitude: expected a fraction of the value range in \[0, 1\]"),
    ],
)
def test_non_finite_settings_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x: K.rotate(x, float("nan")), "angle: expected finite values, got nan"),
        (lambda x: K.affine(x, scale=torch.tensor([1.0, float("inf")])), "scale: expected finite values, got inf"),
        (lambda x: K.shear(x, 0.0, float("-inf")), "shear_y: expected finite values, got -inf"),
        (lambda x: K.color_shift(x, (0.0, float("nan"), 0.0)), "shift: expected finite values, got nan"),
        (
            lambda x: K.pca_color(x, torch.full((2, 3), float("nan")), torch.ones(3), torch.eye(3)),
            "alpha: expected finite values, got nan",
        ),
        (lambda x: K.warp(x, torch.full((2, 2, 8, 8), float("nan"))), "displacement: expected finite values, got nan"),
    ],
)
def test_kernels_refuse_non_finite_parameters(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.rand(2, 3, 8, 8))  # unchecked, NaN parameters give an all-NaN image without a word


def test_random_crop_batch_is_seeded_and_draws_mirrored_squares_of_each_photo():
    from convlab.augment import random_crop_batch

    photos = torch.randint(0, 256, (2, 3, 20, 26), dtype=torch.uint8)
    a = random_crop_batch(photos, 16, 3, torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 3, 16, 16) and a.dtype == torch.uint8
    assert torch.equal(a, random_crop_batch(photos, 16, 3, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, random_crop_batch(photos, 16, 3, torch.Generator().manual_seed(1)))
    square = photos[:, :, :16, :16].contiguous()  # crop == side: each view is the photo or its mirror
    views = random_crop_batch(square, 16, 8, torch.Generator().manual_seed(0))
    mirrored = [[torch.equal(v, square[b].flip(-1)) for v in views[b]] for b in range(2)]
    plain = [[torch.equal(v, square[b]) for v in views[b]] for b in range(2)]
    assert all(m != p for mb, pb in zip(mirrored, plain) for m, p in zip(mb, pb))
    assert any(any(mb) for mb in mirrored) and any(any(pb) for pb in plain)
