"""The CUDA paths give what the CPU paths give. Skipped where there is no GPU (this course's CPU machines);
run on a GPU machine with ``python -m pytest tests/test_cuda.py``."""

from __future__ import annotations

import pytest
import torch

from convlab.augment import FusedTrainPipeline
from convlab.augment import functional as K
from convlab.data import ImageSet
from convlab.engine import fit
from convlab.tta import ViewSet, predict_views

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def _photos(n: int = 4, h: int = 72, w: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=g)


def test_rotate_and_color_shift_match_the_cpu():
    x = _photos().float() / 255
    angle = torch.tensor([0.0, 10.0, -30.0, 90.0])
    torch.testing.assert_close(K.rotate(x.to(CUDA), angle.to(CUDA)).cpu(), K.rotate(x, angle), atol=1e-4, rtol=0)
    shift = torch.rand(4, 3, generator=torch.Generator().manual_seed(1)) * 0.2 - 0.1
    torch.testing.assert_close(K.color_shift(x.to(CUDA), shift.to(CUDA)).cpu(), K.color_shift(x, shift))


@pytest.mark.parametrize("method", ["matmul", "loop"])
def test_fused_pipeline_on_cuda_matches_the_cpu_draw_for_draw(method):
    x = _photos()
    cpu = FusedTrainPipeline(size=48, method=method, generator=torch.Generator().manual_seed(0))
    gpu = FusedTrainPipeline(size=48, method=method, generator=torch.Generator().manual_seed(0))
    expected = cpu(x)
    got = gpu(x.to(CUDA), params=cpu.last_params)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), expected, atol=2e-2, rtol=0)  # uint8 rounding steps may differ by one


def test_ten_crop_on_cuda_matches_the_cpu():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5)
    ).eval()
    photos = _photos(3, 64, 80)
    views = ViewSet.ten_crop(48)
    kw = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    expected = predict_views(model, photos, views, **kw)
    got = predict_views(model.to(CUDA), photos, views, **kw)
    torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=1e-4)


def test_one_epoch_of_fit_on_cuda_runs_and_learns():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8, generator=g)
    y = (x.float().mean((1, 2, 3)) > 127.5).long()
    data = ImageSet(x, y, ("dark", "bright"), [str(i) for i in range(64)])
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 2),
    )
    history = fit(
        model,
        data,
        data,
        epochs=3,
        lr=1e-2,
        batch_size=16,
        device="cuda",
        progress=False,
        transform=lambda b: b.float() / 255,
    )
    assert next(model.parameters()).device.type == "cuda"
    assert len(history) == 3 and history.train_loss[-1] < history.train_loss[0]
