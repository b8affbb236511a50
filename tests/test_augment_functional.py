"""Kernels vs torchvision's functional ops (oracle), batched vs one-by-one, identities, input errors."""

import pytest
import skimage.data
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from convlab.augment import functional as K

# float kernels: CI runs these files again in one process with a thread per core (README)
pytestmark = pytest.mark.numeric

BIL = InterpolationMode.BILINEAR


@pytest.fixture(scope="module")
def photos():
    """(2, 3, 120, 160) uint8 real photos (chelsea and coffee, downscaled)."""
    imgs = [torch.from_numpy(f()).permute(2, 0, 1) for f in (skimage.data.chelsea, skimage.data.coffee)]
    return torch.stack([TF.resize(i, [120, 160], antialias=True) for i in imgs])


def test_hflip_matches_torchvision_per_sample(photos):
    mask = torch.tensor([True, False])
    out = K.hflip(photos, mask)
    assert torch.equal(out[0], TF.horizontal_flip(photos[0]))
    assert torch.equal(out[1], photos[1])
    assert torch.equal(K.hflip(photos), TF.horizontal_flip(photos))


def test_crop_matches_torchvision_and_batches(photos):
    out = K.crop(photos, torch.tensor([5, 30]), torch.tensor([40, 0]), 64, 80)
    assert torch.equal(out[0], TF.crop(photos[0], 5, 40, 64, 80))
    assert torch.equal(out[1], TF.crop(photos[1], 30, 0, 64, 80))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("antialias", [False, True])
def test_resized_crop_equals_torchvision(photos, dtype, antialias):
    x = photos if dtype == torch.uint8 else photos.float() / 255
    boxes = torch.tensor([[10, 20, 90, 100], [0, 0, 120, 160]])
    out = K.resized_crop(x, boxes, (48, 64), flip=torch.tensor([False, True]), antialias=antialias)
    ref0 = TF.resized_crop(x[0], 10, 20, 90, 100, [48, 64], antialias=antialias)
    ref1 = TF.horizontal_flip(TF.resized_crop(x[1], 0, 0, 120, 160, [48, 64], antialias=antialias))
    assert torch.equal(out[0], ref0) and torch.equal(out[1], ref1)


def test_rotation_and_shear_close_to_torchvision(photos):
    x = photos.float() / 255
    out = K.rotate(x, torch.tensor([15.0, -30.0]))
    for i, a in enumerate([15.0, -30.0]):
        torch.testing.assert_close(out[i], TF.rotate(x[i], a, interpolation=BIL), atol=1e-4, rtol=0)
    out = K.shear(x, torch.tensor([10.0, -5.0]), torch.tensor([0.0, 12.0]))
    for i, s in enumerate([[10.0, 0.0], [-5.0, 12.0]]):
        ref = TF.affine(x[i], angle=0.0, translate=[0, 0], scale=1.0, shear=s, interpolation=BIL)
        torch.testing.assert_close(out[i], ref, atol=1e-4, rtol=0)
    full = K.affine(x[0], 20.0, (5.0, -3.0), 0.9, (7.0, 3.0))
    ref = TF.affine(x[0], angle=20.0, translate=[5, -3], scale=0.9, shear=[7.0, 3.0], interpolation=BIL)
    torch.testing.assert_close(full, ref, atol=1e-4, rtol=0)
    u8 = K.rotate(photos, 15.0)  # uint8 in, uint8 out, rounding may differ by one level
    assert u8.dtype == torch.uint8
    assert (u8.int() - TF.rotate(photos, 15.0, interpolation=BIL).int()).abs().max() <= 1


def test_fill_value_outside(photos):
    x = photos.float() / 255
    out = K.rotate(x, 45.0, fill=0.5)
    assert torch.allclose(out[..., 0, 0], torch.tensor(0.5))  # the corner comes from outside


def test_batched_equals_one_by_one_and_leading_dims(photos):
    x = photos.float() / 255
    ang, sh = torch.tensor([12.0, -7.0]), torch.tensor([[5.0, 1.0], [-9.0, 0.0]])
    batched = K.affine(x, angle=ang, shear=sh)
    for i in range(2):
        one = K.affine(x[i : i + 1], angle=ang[i : i + 1], shear=sh[i : i + 1])[0]
        torch.testing.assert_close(batched[i], one)
    nested = K.color_shift(x.reshape(1, 2, 3, 120, 160), torch.tensor([[0.1, 0, 0], [0, 0, -0.1]]))
    assert nested.shape == (1, 2, 3, 120, 160)
    torch.testing.assert_close(nested[0, 1, 2], x[1, 2] - 0.1)


def test_identities(photos):
    x = photos.float() / 255
    torch.testing.assert_close(K.rotate(x, 0.0), x, atol=1e-5, rtol=0)
    assert torch.equal(K.rotate(photos, 0.0), photos)
    assert torch.equal(K.hflip(photos, torch.zeros(2, dtype=torch.bool)), photos)
    zero = torch.zeros(2, 2, 4, 5)
    torch.testing.assert_close(K.warp(x, K.elastic_field(zero, (120, 160))), x, atol=1e-5, rtol=0)
    assert torch.equal(K.color_shift(photos, torch.zeros(2, 3)), photos)
    vals, vecs = torch.tensor([0.2, 0.02, 0.004]), torch.eye(3)
    assert torch.equal(K.pca_color(x, torch.zeros(2, 3), vals, vecs), x)


def test_color_shift_uint8_saturates():
    x = torch.full((1, 3, 2, 2), 250, dtype=torch.uint8)
    out = K.color_shift(x, torch.tensor([[0.1, -0.1, 0.0]]))
    assert out[0, :, 0, 0].tolist() == [255, 224, 250]


def test_pca_offset_formula():
    vals = torch.tensor([0.2175, 0.0188, 0.0045])
    vecs = torch.randn(3, 3)
    alpha = torch.randn(4, 3)
    expected = torch.stack([vecs @ (a * vals) for a in alpha])
    torch.testing.assert_close(K.pca_offset(alpha, vals, vecs), expected)


def test_elastic_field_is_smooth_and_scaled():
    noise = torch.zeros(1, 2, 3, 3)
    noise[0, 0, 1, 1] = 5.0
    field = K.elastic_field(noise, (64, 64))
    assert field.shape == (1, 2, 64, 64)
    assert field[0, 0].abs().max() <= 5.5 and field[0, 0, 32, 32] > 4.5
    assert (field[0, 0, :, 1:] - field[0, 0, :, :-1]).abs().max() < 0.5  # no jumps between neighbours


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: K.hflip([1, 2, 3]), "image: expected a torch.Tensor"),
        (lambda: K.hflip(torch.zeros(4, 4)), r"\(\.\.\., C, H, W\)"),
        (lambda: K.rotate(torch.zeros(1, 3, 4, 4, dtype=torch.int32), 1.0), "uint8 or floating point"),
        (lambda: K.rotate(torch.zeros(2, 3, 4, 4), torch.zeros(3)), r"angle: expected .* shape \(2,\)"),
        (lambda: K.crop(torch.zeros(1, 3, 8, 8), 4, 4, 6, 6), "inside the 8x8 image"),
        (lambda: K.resized_crop(torch.zeros(2, 3, 8, 8), torch.zeros(1, 4), 4), r"boxes: expected shape \(2, 4\)"),
        (lambda: K.color_shift(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3)), "3 channels"),
        (lambda: K.affine(torch.zeros(1, 3, 4, 4), scale=0.0), "scale: expected values > 0, got"),
        (lambda: K.rotate(torch.zeros(1, 3, 4, 4), 1.0, interpolation="bicubic"), "interpolation: expected"),
        (lambda: K.warp(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 3, 3)), r"displacement: expected shape"),
    ],
)
def test_errors_name_the_argument(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_uint8_rgb_offset_is_the_float_formula_bit_for_bit():
    """The CPU integer fast path of color_shift / pca_color on uint8 equals round-half-even(float(x) + 255 * off)."""
    g = torch.Generator().manual_seed(0)
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(600, 3, 2, 256).contiguous()
    halves = (torch.randint(-300, 300, (200, 3), generator=g).float() + 0.5) / 255  # exact and near .5 offsets
    offs = torch.cat([halves, halves + torch.randn(200, 3, generator=g) * 4e-8, torch.randn(200, 3, generator=g)])
    offs[:3] = torch.tensor([float("inf"), -float("inf"), 1e30])
    want = (levels.float() + offs.view(-1, 3, 1, 1) * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    # the adder saturates even infinite offsets; the public kernels refuse them as parameters (see below)
    assert torch.equal(K._add_rgb(levels, offs, clamp=False), want)
    assert torch.equal(K.color_shift(levels[3:], offs[3:]), want[3:])
    cl = levels.contiguous(memory_format=torch.channels_last)
    assert torch.equal(K._add_rgb(cl, offs, clamp=False), want)
    assert torch.equal(K.color_shift(cl[3:], offs[3:]), want[3:])
    with pytest.raises(ValueError, match="shift: expected finite values, got inf"):
        K.color_shift(levels[:1], offs[:1])
    vals, vecs = torch.tensor([0.2, 0.02, 0.004]), torch.eye(3)
    alpha = offs[400:] / vals
    want = (levels[400:].float() + K.pca_offset(alpha, vals, vecs).view(-1, 3, 1, 1) * 255.0).round_()
    assert torch.equal(K.pca_color(levels[400:], alpha, vals, vecs), want.clamp_(0, 255).to(torch.uint8))
