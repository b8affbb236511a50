"""Ensembles: class-order checks, probability averaging, vmap == loop (BatchNorm in eval), measurement rows."""

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch import nn

from convlab.backbones import load_backbone
from convlab.display import Table
from convlab.ensemble import (
    Ensemble,
    compare_configurations,
    measure_inference,
    plot_accuracy_vs_cost,
    standard_configurations,
)
from convlab.tta import ViewSet, predict_views

# float kernels: CI runs these files again in one process with a thread per core (README)
pytestmark = pytest.mark.numeric

CLASSES = ("fruits", "other_vegetables", "marine_fish")


def linear_member(seed: int, categories=CLASSES) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Flatten(1), nn.Linear(12, len(categories)))
    m.categories = tuple(categories)
    return m.eval()


def random_bn_stats(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial running statistics, so BatchNorm in eval mode really shifts and scales under vmap."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.rand(mod.running_mean.shape, generator=g) - 0.5)
            mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
    return model


@pytest.fixture(scope="module")
def backbones():
    """Two MobileNetV2 and one EfficientNet-Lite0 (random weights, 3 classes): two architectures, two normalisations."""
    torch.manual_seed(0)
    m1, m2 = (random_bn_stats(load_backbone("mobilenet_v2", None, 3, CLASSES), s) for s in (1, 2))
    e = random_bn_stats(load_backbone("efficientnet_lite0", None, 3, CLASSES), 3)
    return m1, m2, e


@pytest.fixture(scope="module")
def photos():
    return torch.randint(0, 256, (3, 3, 40, 46), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_mismatched_class_orders_are_refused_with_names():
    a = linear_member(0)
    b = linear_member(1, ("fruits", "marine_fish", "other_vegetables"))
    with pytest.raises(ValueError, match=r"1:Sequential.*0:Sequential.*index 1: 'marine_fish' vs 'other_vegetables'"):
        Ensemble([a, b])
    with pytest.raises(ValueError, match="2 classes"):
        Ensemble([a, linear_member(2, CLASSES[:2])])


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="members"):
        Ensemble([])
    with pytest.raises(TypeError, match=r"members\[1\]"):
        Ensemble([linear_member(0), "model"])
    with pytest.raises(TypeError, match=r"members\[0\].*categories"):
        Ensemble([nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="weights"):
        Ensemble([linear_member(0), linear_member(1)], weights=[1.0])
    with pytest.raises(ValueError, match="weights"):
        Ensemble([linear_member(0), linear_member(1)], weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="strategy"):
        Ensemble([linear_member(0)], strategy="grouped")


def test_weighted_mean_of_probabilities():
    members = [linear_member(s) for s in range(3)]
    x = torch.randn(5, 3, 2, 2)
    probs = torch.stack([m(x).softmax(-1) for m in members])
    ens = Ensemble(members, weights=[2.0, 1.0, 1.0], strategy="loop")
    torch.testing.assert_close(ens.predict_proba(x), 0.5 * probs[0] + 0.25 * probs[1] + 0.25 * probs[2])
    torch.testing.assert_close(Ensemble(members, strategy="loop")(x).softmax(-1), probs.mean(0))
    assert ens.categories == CLASSES


def test_vmap_equals_loop_with_batchnorm_in_eval(backbones):
    m1, m2, e = backbones
    x = torch.randn(4, 3, 32, 32)
    same = Ensemble([m1, m2], strategy="loop")
    with torch.inference_mode():
        loop = same.member_logits(x)
        same.strategy = "vmap"
        torch.testing.assert_close(same.member_logits(x), loop, atol=1e-5, rtol=1e-4)
        mixed = Ensemble([m1, e, m2], strategy="vmap")  # the two MobileNets batched, EfficientNet alone
        torch.testing.assert_close(mixed.member_logits(x)[[0, 2]], loop, atol=1e-5, rtol=1e-4)
        mixed.strategy = "loop"
        torch.testing.assert_close(mixed.member_logits(x)[[0, 2]], loop, atol=1e-5, rtol=1e-4)


def test_vmap_cache_follows_weight_changes():
    members = [linear_member(s) for s in range(2)]
    ens = Ensemble(members, strategy="vmap")
    x = torch.randn(2, 3, 2, 2)
    with torch.no_grad():
        ens.member_logits(x)
        members[1][1].weight.mul_(2)  # in place: the stacked copy must be rebuilt
        torch.testing.assert_close(ens.member_logits(x)[1], members[1](x))


def test_auto_strategy_is_measured_once_per_device():
    ens = Ensemble([linear_member(s) for s in range(3)], strategy="auto")
    x = torch.randn(4, 3, 2, 2)
    with torch.no_grad():
        ens(x)
        decision = dict(ens.strategy_["cpu"])
        ens(x)
    assert decision["strategy"] in ("loop", "vmap") and set(decision["seconds"]) == {"loop", "vmap"}
    assert ens.strategy_ == {"cpu": decision}
    single = Ensemble([linear_member(0)])
    with torch.no_grad():
        single(x)
    assert single.strategy_["cpu"]["strategy"] == "loop"


def test_mixed_architectures_with_ten_crop_average_members_and_views(backbones, photos):
    m1, m2, e = backbones
    ens = Ensemble([m1, e])  # different mean/std: the ensemble takes [0, 1] pixels and re-normalises per member
    assert ens.spec.mean == (0.0, 0.0, 0.0) and ens.spec.std == (1.0, 1.0, 1.0)
    views = ViewSet.ten_crop(32)
    out = predict_views(ens, photos, views, chunk_size=7)
    expected = (predict_views(m1, photos, views) + predict_views(e, photos, views)) / 2
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    assert Ensemble([m1, m2]).spec.mean == m1.spec.mean  # shared normalisation is applied once


def test_measurement_rows_table_and_plot(backbones, photos):
    m1, m2, _ = backbones
    configs = standard_configurations([m1, m2], crops=(ViewSet.center(32), ViewSet.five_crop(32)), strategy="loop")
    assert list(configs) == ["1 model x 1 crop", "1 model x 5 crops", "2 models x 1 crop", "2 models x 5 crops"]
    labels = [0, 1, 2]
    row = measure_inference(m1, photos, labels, ViewSet.five_crop(32))
    assert row["crops"] == 5 and row["models"] == 1 and row["forwards_per_image"] == 5
    assert 0.0 <= row["top1"] <= 1.0 and row["ms_per_image"] > 0 and row["peak_mem_mb"] >= 0 and row["memory_measure"]
    table = compare_configurations(configs, photos, labels, warmup=False)
    assert isinstance(table, Table) and table.column("forwards_per_image") == [1, 5, 2, 10]
    fig = plot_accuracy_vs_cost(table)
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="labels"):
        measure_inference(m1, photos, [0, 1])
    with pytest.raises(ValueError, match="cost"):
        plot_accuracy_vs_cost(table, cost="flops")
