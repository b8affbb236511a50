"""Freezing, the BatchNorm policy, preprocessing, summaries and the regimes (real backbones, tiny inputs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlab.backbones import load_backbone
from convlab.data import ImageSet, Splits
from convlab.engine import fit
from convlab.featcache import FeatureCache
from convlab.transfer import (
    Preprocess,
    Regime,
    bn_policy,
    compare,
    freeze,
    frozen_stages,
    param_groups,
    param_summary,
    split_at,
    unfreeze,
)

STAGES = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5", "conv_head")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_set() -> ImageSet:
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=g) for _ in range(12)]
    return ImageSet(images, [i % 3 for i in range(12)], ("a", "b", "c"))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return load_backbone("mobilenet_v2", num_classes=3)


PREP = Preprocess(size=32, resize=36)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------------- freezing
@pytest.mark.parametrize("k, expected", [(0, 0), (3, 3), ("stage2", 3), ("all", 7), (7, 7)])
def test_freeze_by_index_or_name(model, k, expected):
    freeze(model, k)
    assert frozen_stages(model) == expected
    summary = param_summary(model)
    for i, name in enumerate(STAGES):
        row = summary[name]
        assert (row.trainable == 0) == (i < expected), f"stage {name} with k={k}"
        assert row.trainable + row.frozen == row.params
    assert summary["head"].trainable == summary["head"].params
    assert summary.total == sum(p.numel() for p in model.parameters())
    assert summary.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert "| total |" in summary.to_markdown()


@pytest.mark.parametrize("k", [-1, 8, "stage9", 2.0, True])
def test_freeze_rejects_bad_k(model, k):
    with pytest.raises(ValueError, match="k: expected"):
        freeze(model, k)


def test_freeze_rejects_bad_policy(model):
    with pytest.raises(ValueError, match="bn: expected"):
        freeze(model, 3, bn="eval")


def test_frozen_stages_stay_in_eval_under_train(model):
    freeze(model, 4)
    model.train()
    assert [s.training for s in model.stages] == [False] * 4 + [True] * 3
    assert all(not m.training for s in list(model.stages)[:4] for m in s.modules())
    assert model.head.training and bn_policy(model) == "frozen"
    freeze(model, 4, bn="train")
    model.train()
    assert all(s.training for s in model.stages) and bn_policy(model) == "train"
    unfreeze(model)
    model.train()
    assert all(s.training for s in model.stages) and frozen_stages(model) == 0 and bn_policy(model) is None


def test_the_policy_survives_copies(model):
    import copy

    freeze(model, 3)
    clone = copy.deepcopy(model).train()
    assert [s.training for s in clone.stages] == [False] * 3 + [True] * 4 and bn_policy(clone) == "frozen"
    assert not any(s.training for s in model.stages)  # the original was not switched by the copy's train()


def test_training_keeps_frozen_weights_and_bn_statistics_bit_identical(model, tiny_set):
    freeze(model, 4)
    before = _state(model)
    fit(model, tiny_set, epochs=2, batch_size=4, lr=1e-2, transform=PREP, progress=False)
    after = model.state_dict()
    frozen_keys = [k for k in before if k.startswith(tuple(f"stages.{n}." for n in STAGES[:4]))]
    assert any("running_mean" in k for k in frozen_keys)
    for k in frozen_keys:
        assert torch.equal(before[k], after[k]), f"{k} changed although its stage is frozen"
    for name in ("stage4", "stage5", "conv_head"):
        keys = [k for k in before if k.startswith(f"stages.{name}.") and k.endswith("weight")]
        assert any(not torch.equal(before[k], after[k]) for k in keys), f"trainable stage {name} did not change"
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])


def test_requires_grad_alone_lets_bn_statistics_drift(model, tiny_set):
    """The pitfall the default policy exists for: weights fixed, but running statistics move in train()."""
    freeze(model, 4, bn="train")
    before = _state(model.stages.stem)
    fit(model, tiny_set, epochs=1, batch_size=4, transform=PREP, progress=False)
    after = model.stages.stem.state_dict()
    assert torch.equal(before["0.weight"], after["0.weight"]) and torch.equal(before["1.weight"], after["1.weight"])
    assert not torch.equal(before["1.running_mean"], after["1.running_mean"])


@pytest.mark.parametrize("k", [0, 2, 4, 7])
def test_split_at_recomposes_the_model(model, k):
    x = torch.randn(2, 3, 32, 32)
    front, rest = split_at(model, k)
    with torch.no_grad():
        torch.testing.assert_close(rest(front(x)), model(x))
    if k in (0, 7):
        assert front(x).shape[1:] == ((1280,) if k == 7 else (3, 32, 32))


def test_param_groups_give_pretrained_stages_a_lower_lr(model):
    freeze(model, 5)
    groups = param_groups(model, 1e-3, backbone_lr_scale=0.1)
    assert [g["name"] for g in groups] == ["stage5", "conv_head", "head"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-4, 1e-4, 1e-3])
    n = sum(p.numel() for g in groups for p in g["params"])
    assert n == param_summary(model).trainable


# --------------------------------------------------------------------------------------------- preprocessing
def test_preprocess_matches_the_spec_eval_transform(model):
    g = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (3, 172, 307), dtype=torch.uint8, generator=g)
    ours = Preprocess.from_spec(model.spec)(image)
    theirs = model.spec.eval_transform()(image).unsqueeze(0)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_preprocess_batches_lists_and_grayscale():
    prep = Preprocess(size=32, resize=None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    g = torch.Generator().manual_seed(2)
    a = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8, generator=g)
    b = torch.randint(0, 256, (1, 30, 20), dtype=torch.uint8, generator=g)
    out = prep([a, b, a])
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], prep(a)[0])
    torch.testing.assert_close(out[1], prep(b)[0])
    torch.testing.assert_close(out[0, 0], out[0, 2])  # gray repeated to three channels
    torch.testing.assert_close(prep(torch.stack([a, a])), torch.cat([prep(a), prep(a)]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 4}, "size"),
        ({"size": 32, "resize": 16}, "resize"),
        ({"std": (1, 0, 1)}, "std"),
        ({"mean": (0.5,)}, "mean"),
    ],
)
def test_preprocess_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Preprocess(**kwargs)


def test_preprocess_from_spec_scales_the_crop(model):
    assert Preprocess.from_spec(model.spec) == Preprocess(224, 256, model.spec.mean, model.spec.std)
    assert Preprocess.from_spec(model.spec, size=112).resize == 128
    assert Preprocess.from_spec(model.spec, size=64, crop=False).resize is None


# --------------------------------------------------------------------------------------------- regimes
def test_regime_constructors():
    assert Regime.head_only().frozen == 7 and Regime.head_only().uses_cache
    assert Regime.freeze_first(3).frozen == 3 and Regime.freeze_first(3).uses_cache
    assert not Regime.freeze_first(3, bn="train").uses_cache
    assert Regime.finetune().frozen == 0 and not Regime.finetune().uses_cache
    assert Regime.scratch().weights is None
    with pytest.raises(ValueError, match="frozen"):
        Regime("x", frozen=9)
    with pytest.raises(ValueError, match="regimes"):
        compare(Regime.head_only(), None)


def _splits(ds: ImageSet) -> Splits:
    return Splits(ds.subset(range(6)), ds.subset(range(6, 9)), ds.subset(range(9, 12)), ds.classes, 0)


def test_compare_returns_rows(tiny_set, tmp_path):
    result = compare(
        [Regime.head_only(), Regime.freeze_first(5), Regime.finetune()],
        _splits(tiny_set),
        epochs=1,
        preprocess=PREP,
        cache_dir=tmp_path,
        progress=False,
    )
    assert [r.regime for r in result] == ["head only", "freeze first 5", "fine-tune all"]
    assert [r.cached for r in result] == [True, True, False]
    assert result.rows[0].trainable_params == 1280 * 3 + 3
    assert result.rows[0].trainable_params < result.rows[1].trainable_params < result.rows[2].trainable_params
    assert all(0 <= r.test_acc <= 1 and r.peak_mem_mb >= 0 and r.memory_measure for r in result)
    assert "| head only |" in result.to_markdown()


@pytest.mark.parametrize("k", [7, 5])
def test_training_on_the_boundary_cache_equals_training_through_the_frozen_stages(tiny_set, tmp_path, k):
    """The cache is an optimisation only: same seed, same history, bit for bit."""
    prep = Preprocess(size=64, resize=72)
    histories = []
    for cached in (True, False):
        torch.manual_seed(0)
        m = load_backbone("mobilenet_v2", num_classes=3)
        m.head[0].p = 0.0  # dropout draws would differ between the two paths' RNG use
        freeze(m, k)
        sp = _splits(tiny_set)
        if cached:
            train, val, _ = FeatureCache(tmp_path).get_splits(m, sp, k, prep, progress=False)
            net, transform = split_at(m, k)[1], None
        else:
            train, val, net, transform = sp.train, sp.val, m, prep
        histories.append(fit(net, train, val, epochs=2, batch_size=4, lr=1e-3, transform=transform, progress=False))
    a, b = histories
    assert (a.train_loss, a.val_loss, a.val_acc) == (b.train_loss, b.val_loss, b.val_acc)


def test_freeze_by_hand_accepts_a_right_freeze_and_names_what_a_wrong_one_left(model):
    from convlab.exercises.nb03 import freeze_first_k_reference
    from convlab.transfer import freeze_by_hand

    freeze_by_hand(model, Regime.freeze_first(3), freeze_first_k_reference)
    assert frozen_stages(model) == 3 and not model.stages[0].training

    def weights_only(m, k):
        for i, stage in enumerate(m.stages):
            for p in stage.parameters():
                p.requires_grad_(i >= k)
        return [p for p in m.parameters() if p.requires_grad]

    with pytest.raises(ValueError, match=r"freeze_first_k: expected the first 3 stages frozen .* in \['stem'"):
        freeze_by_hand(model, Regime.freeze_first(3), weights_only)
    with pytest.raises(ValueError, match="bn='frozen'"):
        freeze_by_hand(model, Regime.freeze_first(3, bn="train"), freeze_first_k_reference)
    uncached = Regime("freeze first 2, no cache", frozen=2, cache=False)
    freeze_by_hand(model, uncached, freeze_first_k_reference)
    model.train()  # a hand freeze alone would put the frozen stages back in train mode; here they stay in eval
    assert not model.stages[1].training and model.stages[2].training
