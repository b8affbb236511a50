"""Exercises and quizzes of notebooks 02-04, the size-axis verdicts and the stage probe: fast unit tests."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from convlab.exercises import nb02, nb03, nb04
from convlab.similarity import StageProbe, fit_linear_probe
from convlab.sizeaxis import Budget, SizeAxis, SizeAxisRow

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "exercise", [nb02.TRAIN_HEAD, nb03.FREEZE_FIRST_K, nb04.PARAM_GROUPS, nb04.CHOOSE_REGIME], ids=lambda e: e.name
)
def test_reference_passes_and_stub_and_none_fail(exercise):
    assert exercise.run(exercise.reference) is None

    def stub(*args, **kwargs):
        raise NotImplementedError

    assert "not written yet" in exercise.run(stub)
    assert exercise.run(lambda *args, **kwargs: None) is not None
    assert len(exercise.hints) >= 2


def test_train_head_rejects_an_untrained_head():
    reason = nb02.TRAIN_HEAD.run(lambda x, y, c: nn.Linear(x.shape[1], c))
    assert reason is not None and ("chance" in reason or "reference" in reason)


def _calls_the_reference(features, labels, num_classes):
    return nb02.train_head_reference(features, labels, num_classes)


class _ReplayTestLabels(nn.Module):
    """A "head" that ignores its input and returns one-hot of the cached test labels."""

    def forward(self, x):
        labels = nb02.little_features()[3]
        return nn.functional.one_hot(labels[: len(x)], 10).float()


def _own_loop(features, labels, num_classes):
    head = nn.Linear(features.shape[1], num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    for _ in range(100):
        loss = nn.functional.cross_entropy(head(features), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def _zeroes_the_labels(features, labels, num_classes):
    head = _own_loop(features, labels, num_classes)
    labels.zero_()
    return head


def _zeroes_the_labels_by_hand(features, labels, num_classes):
    labels.zero_()
    head = nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        head.weight.zero_()
    return head


def _endless(features, labels, num_classes):
    while True:
        features = features + 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "cheat, reason",
    [
        (_calls_the_reference, "calls the reference solution `train_head_reference`"),
        (lambda x, y, c: _ReplayTestLabels(), "near chance"),
        (_zeroes_the_labels, "changed its argument 2 in place (restored now)"),
        (_zeroes_the_labels_by_hand, "changed its argument 2 in place (restored now)"),
        (_endless, "computed for more than 2 s, this check's time limit"),
    ],
    ids=["calls-reference", "replays-test-labels", "zeroes-labels", "zeroes-labels-by-hand", "endless"],
)
def test_train_head_cannot_be_fooled_or_poisoned_and_the_right_answer_passes_after(cheat, reason):
    """The cases a learner found: each is refused with its sentence, and the shared data is intact afterwards, so
    the reference and a learner's own correct loop still pass."""
    exercise = dataclasses.replace(nb02.TRAIN_HEAD, time_limit_s=2.0)
    got = exercise.run(cheat)
    assert got is not None and reason in got, got
    _, train_y, _, test_y = nb02.little_features()
    assert train_y.bincount().tolist() == [10] * 10 and test_y.bincount().tolist() == [50] * 10
    assert exercise.run(exercise.reference) is None
    assert exercise.run(_own_loop) is None


def test_freeze_check_catches_requires_grad_without_batchnorm():
    def weights_only(model, k):
        for i, stage in enumerate(model.stages):
            for p in stage.parameters():
                p.requires_grad_(i >= k)
        return [p for p in model.parameters() if p.requires_grad]

    assert "running statistics of frozen stages" in nb03.FREEZE_FIRST_K.run(weights_only)

    def everything_eval(model, k):
        params = weights_only(model, k)
        model.eval()
        return params

    assert "did not update" in nb03.FREEZE_FIRST_K.run(everything_eval)


def test_param_groups_check_catches_one_rate_for_all():
    assert "head" in nb04.PARAM_GROUPS.run(
        lambda m, lr, s: [{"params": [p for p in m.parameters() if p.requires_grad], "lr": lr}]
    )


def test_every_scenario_explains_and_a_wrong_choice_names_it():
    assert all(a.why and a.accept for a in nb04.SCENARIOS)
    reason = nb04.CHOOSE_REGIME.run(lambda s: ("full", 0))
    assert "10 per class" in reason and "fourth case" in reason


def test_budget_scales_steps_with_size_and_has_floors():
    b = Budget(min_epochs=2, min_steps=40, batch_size=32)
    assert b.epochs(100) == 10 and b.steps(100) == 40
    assert b.epochs(1000) == 2 and b.steps(1000) == 64
    assert b.steps(10000) == 2 * 313
    with pytest.raises(ValueError, match="min_steps"):
        Budget(min_steps=0)


def _axis(acc: dict) -> SizeAxis:
    rows = [
        SizeAxisRow(size, regime, k, seed, a + 0.001 * seed, 1.0, 1, 1, 0.0)
        for (size, regime, k), a in acc.items()
        for seed in range(3)
    ]
    return SizeAxis(rows, {"head only": 7, "fine-tune all": 0})


def test_verdict_holds_fails_and_ties():
    good = _axis(
        {
            (10, "head only", 7): 0.7,
            (10, "fine-tune all", 0): 0.5,
            (1000, "head only", 7): 0.8,
            (1000, "fine-tune all", 0): 0.9,
        }
    )
    v = good.verdict()
    assert v.best == {10: "head only", 1000: "fine-tune all"}
    assert [c[1].split(" ")[0] for c in v.claims] == ["held", "held", "held"]
    bad = _axis(
        {
            (10, "head only", 7): 0.5,
            (10, "fine-tune all", 0): 0.7,
            (1000, "head only", 7): 0.9,
            (1000, "fine-tune all", 0): 0.8,
        }
    )
    assert [c[1].split(" ")[0] for c in bad.verdict().claims] == ["failed", "failed", "failed"]
    summary = good.summary()
    assert len(summary) == 4 and summary[0]["seeds"] == 3 and math.isclose(summary[0]["sd"], 0.001, abs_tol=1e-4)


def test_size_axis_json_round_trip(tmp_path):
    axis = _axis({(10, "head only", 7): 0.7, (10, "fine-tune all", 0): 0.5})
    assert SizeAxis.from_json(axis.to_json(tmp_path / "a.json")).rows == axis.rows


def test_linear_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=g)
    y = (x[:, 0] > 0).long()
    probe = fit_linear_probe(x, y, 2)
    assert float((probe(x).argmax(1) == y).double().mean()) > 0.95


def test_stage_probe_late_gain_is_paired_and_signed():
    p = StageProbe(
        "d", 10, 32, ("a", "b", "c"), {"a": (0.5, 0.6, 0.55), "b": (0.7, 0.72, 0.71), "c": (0.6, 0.61, 0.6)}, 100
    )
    gain, se = p.late_gain
    assert p.best_stage == "b" and gain < 0 and se > 0
    assert "fourth case" in p.verdict()


def test_merged_joins_sizes_and_refuses_duplicates():
    a = _axis({(10, "head only", 7): 0.7, (10, "fine-tune all", 0): 0.5})
    b = _axis({(100, "head only", 7): 0.8, (100, "fine-tune all", 0): 0.7})
    assert a.merged(b).sizes == [10, 100]
    with pytest.raises(ValueError, match="both"):
        a.merged(a)


def test_stored_small_rows_match_the_default_regimes():
    from pathlib import Path

    from convlab.sizeaxis import default_regimes

    stored = SizeAxis.from_json(Path(__file__).resolve().parents[1] / "notebooks/results/size_axis_small_10_100.json")
    assert stored.sizes == [10, 100] and stored.ks == {n: r.frozen for n, r in default_regimes().items()}
    assert {"date", "device", "command"} <= set(stored.meta) and stored.meta["seeds"] == [0, 1, 2]
    assert all(len(stored._acc(n, g)) == 3 for n in stored.sizes for g in stored.ks)
