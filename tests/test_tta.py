"""Multi-crop views vs torchvision (oracle), averaging on hand-made logits, chunking, bad arguments."""

import math

import pytest
import skimage.data
import torch
from torch import nn
from torchvision import transforms as T1
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from convlab.tta import View, ViewSet, average_views, crop_views, dense_predict, predict_views, prepare_images

# float kernels: CI runs these files again in one process with a thread per core (README)
pytestmark = pytest.mark.numeric

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def photos():
    """(2, 3, 61, 83) uint8 real photos: odd margins so torchvision's centre rounding matters."""
    imgs = [torch.from_numpy(f()).permute(2, 0, 1) for f in (skimage.data.chelsea, skimage.data.coffee)]
    return torch.stack([TF.resize(i, [61, 83], antialias=True) for i in imgs])


class TinyNet(nn.Module):
    """A small conv net with BatchNorm (random running statistics) whose outputs depend on position."""

    def __init__(self, k: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(1))
        self.fc = nn.LazyLinear(k)
        self.body[1].running_mean.uniform_(-0.5, 0.5)
        self.body[1].running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.mark.parametrize("vertical_flip", [False, True])
@pytest.mark.parametrize("size", [32, (30, 41)])
def test_ten_crop_equals_torchvision_exactly(photos, vertical_flip, size):
    ours = crop_views(photos, ViewSet.ten_crop(size, vertical_flip=vertical_flip))
    ref_v2 = torch.stack(v2.TenCrop(size, vertical_flip=vertical_flip)(photos), dim=1)
    assert ours.shape == (2, 10, 3, *((size, size) if isinstance(size, int) else size))
    assert ours.dtype == torch.uint8 and torch.equal(ours, ref_v2)
    for b in range(2):  # the classic (v1) transform on single images gives the same crops in the same order
        assert torch.equal(ours[b], torch.stack(T1.TenCrop(size, vertical_flip=vertical_flip)(photos[b])))


def test_five_crop_center_and_flips_equal_torchvision(photos):
    assert torch.equal(crop_views(photos, ViewSet.five_crop(33)), torch.stack(v2.FiveCrop(33)(photos), dim=1))
    ref = TF.center_crop(photos, [33, 33])
    assert torch.equal(crop_views(photos, ViewSet.center(33))[:, 0], ref)
    flips = crop_views(photos, ViewSet.flips(33))
    assert torch.equal(flips[:, 0], ref)
    assert torch.equal(flips[:, 1], TF.center_crop(TF.horizontal_flip(photos), [33, 33]))


def test_multi_scale_views_resize_then_crop(photos):
    views = ViewSet.multi_scale(24, scales=(28, 40), positions=("center", "tl"))
    out = crop_views(photos, views)
    assert out.shape[1] == len(views) == 8
    for v, view in enumerate(views.views):
        img = TF.resize(photos, [view.resize], antialias=True)
        img = TF.horizontal_flip(img) if view.flip == "h" else img
        ref = TF.center_crop(img, [24, 24]) if view.position == "center" else img[..., :24, :24]
        assert torch.equal(out[:, v], ref), view


def test_list_of_different_sizes_equals_per_image(photos):
    images = [photos[0], photos[1, :, :55, :70]]
    views = ViewSet.ten_crop(32)
    out = crop_views(images, views)
    for b, im in enumerate(images):
        assert torch.equal(out[b], crop_views(im, views)[0])
    buf = torch.empty(2, 10, 3, 32, 32)  # a reused float buffer: the copy converts
    assert crop_views(images, views, out=buf) is buf and torch.equal(buf, out.float())
    with pytest.raises(ValueError, match="out"):
        crop_views(images, views, out=torch.empty(2, 9, 3, 32, 32))


def test_prepare_images_resizes_shorter_side_as_uint8(photos):
    out = prepare_images(list(photos), resize_size=40)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.shape == (2, 3, 40, 54)
    assert torch.equal(out[1], v2.Resize(40, antialias=True)(photos[1]))
    mixed = prepare_images([photos[0], photos[1, :, :, :61]], resize_size=40)
    assert isinstance(mixed, list) and [tuple(m.shape) for m in mixed] == [(3, 40, 54), (3, 40, 40)]


def test_average_views_on_hand_made_logits():
    # view 1: p = (1/2, 1/2); view 2: p = (3/4, 1/4)
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
    torch.testing.assert_close(average_views(logits, "softmax"), torch.tensor([[0.625, 0.375]]))
    mean_logits = average_views(logits, "logits")
    torch.testing.assert_close(mean_logits, torch.tensor([[math.log(3.0) / 2, 0.0]]))
    r3 = math.sqrt(3.0)  # softmax of the mean logits is the normalised geometric mean: sqrt(3) : 1
    torch.testing.assert_close(mean_logits.softmax(-1), torch.tensor([[r3 / (1 + r3), 1 / (1 + r3)]]))
    assert average_views(logits, "none") is logits


def _reference(model, photos, size):
    """torchvision TenCrop + Normalize + one forward per crop set, softmax mean."""
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    crops = v2.TenCrop(size)(photos)
    with torch.no_grad():
        return torch.stack([model(norm(c)) for c in crops], dim=1)


def test_predict_views_matches_torchvision_pipeline_and_chunking(photos):
    model = TinyNet().eval()
    views = ViewSet.ten_crop(32)
    ref = _reference(model, photos, 32)
    kw = {"mean": MEAN, "std": STD}
    per_view = predict_views(model, photos, views, average="none", chunk_size=20, **kw)
    torch.testing.assert_close(per_view, ref, atol=1e-5, rtol=1e-5)
    one_batch = predict_views(model, photos, views, chunk_size=20, **kw)
    torch.testing.assert_close(one_batch, ref.softmax(-1).mean(1), atol=1e-6, rtol=1e-5)
    for chunk in (1, 3, 7, 1000):  # chunks that split images and views
        torch.testing.assert_close(
            predict_views(model, photos, views, chunk_size=chunk, **kw), one_batch, atol=1e-6, rtol=1e-5
        )
    torch.testing.assert_close(
        predict_views(model, photos, views, average="logits", chunk_size=7, **kw), ref.mean(1), atol=1e-5, rtol=1e-5
    )
    assert predict_views(model, photos, ViewSet.flips(32), **kw).shape == (2, 5)


def test_predict_views_follows_channels_last_and_restores_training_mode(photos):
    model = TinyNet().eval()
    views = ViewSet.five_crop(32)
    expected = predict_views(model, photos, views, mean=MEAN, std=STD)
    model.to(memory_format=torch.channels_last).train()
    out = predict_views(model, list(photos), views, mean=MEAN, std=STD, chunk_size=4)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert model.training  # eval inside, the caller's mode afterwards


def test_predict_views_runs_channels_last_on_the_cpu_and_gives_the_weights_back_as_they_were(photos):
    model = TinyNet().eval()
    views = ViewSet.ten_crop(32)
    plain = predict_views(model, photos, views, mean=MEAN, std=STD, channels_last=False)  # also builds LazyLinear
    seen = []
    model.body[0].register_forward_hook(
        lambda m, inp, out: seen.append(
            (
                inp[0].is_contiguous(memory_format=torch.channels_last),
                m.weight.is_contiguous(memory_format=torch.channels_last),
            )
        )
    )
    fast = predict_views(model, photos, views, mean=MEAN, std=STD)  # default on the CPU: channels_last
    assert seen and all(x and w for x, w in seen)  # crops and weights in channels_last during the call
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    assert model.body[0].weight.is_contiguous()  # converted for the call, then back


def test_bad_arguments_name_the_argument(photos):
    model = TinyNet().eval()
    with pytest.raises(ValueError, match="size"):
        crop_views(photos, ViewSet.ten_crop(64))  # 64 > 61 rows
    with pytest.raises(ValueError, match="size"):
        ViewSet.ten_crop(0)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            predict_views(model, photos, ViewSet.center(32), chunk_size=bad, mean=MEAN, std=STD)
    with pytest.raises(TypeError, match="views"):
        crop_views(photos, [View()])
    with pytest.raises(TypeError, match="images"):
        crop_views(photos.float(), ViewSet.center(32))
    with pytest.raises(TypeError, match=r"images\[1\]"):
        crop_views([photos[0], photos[1].float()], ViewSet.center(32))
    with pytest.raises(ValueError, match="images"):
        crop_views([], ViewSet.center(32))
    with pytest.raises(ValueError, match="position"):
        View("middle")
    with pytest.raises(ValueError, match="flip"):
        View(flip="x")
    with pytest.raises(ValueError, match="average"):
        predict_views(model, photos, ViewSet.center(32), average="median", mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="mean, std"):
        predict_views(model, photos, ViewSet.center(32))  # a bare nn.Module has no spec
    with pytest.raises(ValueError, match="resize_size"):
        prepare_images(photos, resize_size=0)
    with pytest.raises(ValueError, match="scales"):
        ViewSet.multi_scale(24, scales=())


@pytest.mark.parametrize("channels_last", [False, True])
def test_outputs_carry_no_autograd_graph_though_the_model_is_trainable(photos, channels_last):
    """Both entry points run under ``torch.inference_mode``: no graph is recorded even for trainable weights.

    (A helper placed between ``@torch.inference_mode()`` and ``def predict_views`` would take the decorator, and
    notebook 09 would run out of memory keeping every crop's activations for backward.)
    """
    model = TinyNet().eval()
    predict_views(model, photos, ViewSet.center(32), mean=MEAN, std=STD)  # builds the LazyLinear
    model.train()
    assert any(p.requires_grad for p in model.parameters())
    kw = {"mean": MEAN, "std": STD, "channels_last": channels_last}
    outs = [
        predict_views(model, photos, ViewSet.ten_crop(32), **kw),
        predict_views(model, photos, ViewSet.ten_crop(32), average="none", **kw),
        dense_predict(GlobalPoolNet(), photos, **kw),
        dense_predict(GlobalPoolNet(), photos, average="logits", mirror=False, **kw),
    ]
    for out in outs:
        assert out.grad_fn is None and not out.requires_grad
    assert model.training  # and the caller's mode is back


class GlobalPoolNet(nn.Module):
    """Conv, BatchNorm, global average pooling, linear: takes any input size (for dense evaluation)."""

    def __init__(self, k: int = 5):
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, k)
        )

    def forward(self, x):
        return self.body(x)


def test_dense_predict_of_a_crop_sized_image_equals_its_centre_crop_and_mirror(photos):
    """On an image exactly the crop's size, dense evaluation is the 'centre crop + mirror' view set."""
    model = GlobalPoolNet().train()
    x = photos[:, :, :32, :40]
    dense = dense_predict(model, x, mean=MEAN, std=STD, average="none")
    views = predict_views(model, x, ViewSet.flips((32, 40)), mean=MEAN, std=STD, average="none")
    torch.testing.assert_close(dense, views, atol=1e-5, rtol=1e-5)
    assert model.training


def test_the_model_mode_and_weights_come_back_when_the_forward_raises(photos):
    class Boom(GlobalPoolNet):
        def forward(self, x):
            raise RuntimeError("boom")

    model = Boom().train()
    for call in (
        lambda: predict_views(model, photos, ViewSet.center(32), mean=MEAN, std=STD),
        lambda: dense_predict(model, photos, mean=MEAN, std=STD),
    ):
        with pytest.raises(RuntimeError, match="boom"):
            call()
        assert model.training and model.body[0].weight.is_contiguous()
