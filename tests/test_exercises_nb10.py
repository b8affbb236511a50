"""Notebook 10 (the capstone): each exercise's reference passes its check on the held-out photos, wrong, fooling
and poisoning answers fail with a sentence (and the reference still passes afterwards), and the pipeline runner
refuses a plan it cannot run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from convlab.exercises import nb10
from convlab.exercises.core import Exercise

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_exercises_have_handles_and_hints_in_levels():
    exercises = [v for v in vars(nb10).values() if isinstance(v, Exercise)]
    assert {e.name for e in exercises} == {"plan_transfer", "augment", "fit_head", "predict"}
    for ex in exercises:
        assert len(ex.hints) >= 2 and ex.handle.startswith("nb10.") and callable(ex.reference)


def test_plan_reference_passes_and_wrong_plans_fail_with_the_reason():
    assert nb10.PLAN.run(nb10.plan_transfer_reference) is None

    def by_mean(labels, probe, compute):  # the mean class size hides the rare class
        per_class = len(labels) / len(torch.unique(labels))
        stages = list(probe)
        close = probe[stages[-1]] >= max(probe.values())
        if per_class <= 30:
            return ("head", 7) if close else ("head", 5)
        return ("full", 0) if compute == "gpu" and per_class >= 1000 else ("head", 7)

    said = nb10.PLAN.run(by_mean)
    assert said is not None and "the smallest class decides" in said
    said = nb10.PLAN.run(lambda labels, probe, compute: ("full", 0))
    assert said is not None and "planned differently" in said
    said = nb10.PLAN.run(lambda labels, probe, compute: "head")
    assert said is not None and "return a (regime, k) tuple" in said


def _flip_crop(photos, size, n_views, generator, mirror=True, shift=0.1):
    """The reference's recipe with parts left out (``mirror=False``, ``shift=0``)."""
    from torchvision.transforms.v2 import functional as TF

    n, _, h, w = photos.shape
    out = torch.empty(n, n_views, 3, size, size, dtype=torch.uint8)
    for b in range(n):
        for r in range(n_views):
            side = int(torch.randint(size, min(h, w) + 1, (1,), generator=generator))
            top = int(torch.randint(h - side + 1, (1,), generator=generator))
            left = int(torch.randint(w - side + 1, (1,), generator=generator))
            x = TF.resize(photos[b, :, top : top + side, left : left + side], [size, size], antialias=True)
            if mirror and bool(torch.rand((), generator=generator) < 0.5):
                x = x.flip(-1)
            offset = torch.empty(3, 1, 1).uniform_(-shift, shift, generator=generator) * 255
            out[b, r] = (x.float() + offset).round().clamp(0, 255).to(torch.uint8)
    return out


def test_augment_reference_passes_and_each_missing_part_fails_with_its_reason():
    assert nb10.AUGMENT.run(nb10.augment_reference) is None
    assert nb10.AUGMENT.run(_flip_crop) is None  # an independent write-up of the recipe passes too
    said = nb10.AUGMENT.run(lambda p, s, n, g: _flip_crop(p, s, n, g, mirror=False))
    assert said is not None and "mirrored" in said
    said = nb10.AUGMENT.run(lambda p, s, n, g: _flip_crop(p, s, n, g, shift=0.0))
    assert said is not None and "shift each view's channels" in said
    said = nb10.AUGMENT.run(lambda p, s, n, g: _flip_crop(p, s, n, g).flip(-2))
    assert said is not None and "upside down" in said
    said = nb10.AUGMENT.run(
        lambda p, s, n, g: _flip_crop(p, s, n, torch.Generator().manual_seed(int(torch.rand(1) * 1e6)))
    )
    assert said is not None and "generators seeded alike" in said


def test_augment_that_changes_the_photos_in_place_fails_and_the_data_is_restored():
    before = nb10.capstone_data().train_photos[:6].clone()

    def poisoning(photos, size, n_views, generator):
        out = _flip_crop(photos, size, n_views, generator)
        photos.zero_()
        return out

    said = nb10.AUGMENT.run(poisoning)
    assert said is not None and "in place" in said
    assert torch.equal(nb10.capstone_data().train_photos[:6], before)
    assert nb10.AUGMENT.run(nb10.augment_reference) is None


def test_fit_head_reference_passes_and_wrong_loops_fail_with_the_reason():
    assert nb10.FIT_HEAD.run(nb10.fit_head_reference) is None

    said = nb10.FIT_HEAD.run(lambda *args: nb10.fit_head_reference(*args))
    assert said is not None and "calls the reference solution" in said

    def unseeded(train_x, train_y, val_x, val_y, k, epochs, seed):
        head = nn.Linear(train_x.shape[1], k)
        opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
        history, best = [], None
        for _ in range(epochs):
            for idx in torch.randperm(len(train_y)).split(32):
                loss = nn.functional.cross_entropy(head(train_x[idx]), train_y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                history.append(float((head(val_x).argmax(1) == val_y).double().mean()))
            if best is None or history[-1] > max(history[:-1]):
                best = {n: v.clone() for n, v in head.state_dict().items()}
        head.load_state_dict(best)
        return head, history

    said = nb10.FIT_HEAD.run(unseeded)
    assert said is not None and "the same seed gave another val_history" in said

    def claims(train_x, train_y, val_x, val_y, k, epochs, seed):  # a perfect history, an untrained head
        torch.manual_seed(seed)
        return nn.Linear(train_x.shape[1], k), [1.0] * epochs

    said = nb10.FIT_HEAD.run(claims)
    assert said is not None and "keep a copy of the best epoch's weights" in said


def test_predict_reference_passes_and_costly_or_wrong_averages_fail():
    from torchvision.transforms.v2 import functional as TF

    assert nb10.PREDICT.run(nb10.predict_reference) is None

    def per_head(embed, heads, photos, size):  # runs the backbone once per head: twice the cost
        crops = torch.stack(TF.ten_crop(photos, [size, size]), 1).flatten(0, 1)
        probs = [h(embed(crops)).softmax(-1).view(len(photos), 10, -1).mean(1) for h in heads]
        return torch.stack(probs).mean(0)

    said = nb10.PREDICT.run(per_head)
    assert said is not None and "10 per photo suffice" in said

    def logit_mean(embed, heads, photos, size):
        crops = torch.stack(TF.ten_crop(photos, [size, size]), 1).flatten(0, 1)
        feats = embed(crops)
        logits = torch.stack([h(feats) for h in heads]).mean(0)
        return logits.view(len(photos), 10, -1).mean(1).softmax(-1)

    said = nb10.PREDICT.run(logit_mean)
    assert said is not None and "average the softmax" in said
    said = nb10.PREDICT.run(lambda e, h, p, s: nb10.predict_reference(e, h, p, s))
    assert said is not None and "calls the reference solution" in said


def test_a_passing_function_changes_the_provenance_line():
    ex = Exercise("plan_transfer", nb10.PLAN.test, nb10.plan_transfer_reference, nb10.PLAN.hints, handle="nb10.PLAN")

    def stub(labels, probe, compute):
        raise NotImplementedError

    used = ex.use(stub)
    assert used is nb10.plan_transfer_reference and "convlab's reference" in ex.provenance(used)
    ex.check(_copy_of_reference_plan)
    used = ex.use(_copy_of_reference_plan)
    assert used is _copy_of_reference_plan and ex.provenance(used) == "computed with your `plan_transfer`"


def _copy_of_reference_plan(train_labels, probe, compute):
    per_class = int(torch.bincount(train_labels).min())
    stages = list(probe)
    close = probe[stages[-1]] >= max(probe.values())
    best_k = stages.index(max(stages, key=probe.get)) + 1
    if per_class <= 30:
        return ("head", 7) if close else ("head", best_k)
    if compute == "cpu" or per_class < 1000:
        return ("head", 7) if close else ("partial", 5)
    return ("full", 0)


def test_run_pipeline_scores_the_held_out_photos_and_refuses_a_fine_tuning_plan():
    data = nb10.capstone_data()
    with pytest.raises(ValueError, match="plan: this notebook trains heads on frozen features"):
        nb10.run_pipeline(
            "x",
            data,
            ("full", 0),
            nb10.centre_augment,
            nb10.fit_head_reference,
            nb10.centre_predict,
            seeds=(0,),
            train_views=1,
            epochs=1,
        )
    plain = nb10.run_pipeline(
        "plain",
        data,
        ("head", 7),
        nb10.centre_augment,
        nb10.fit_head_reference,
        nb10.centre_predict,
        seeds=(0, 1),
        train_views=1,
        epochs=10,
        progress=False,
    )
    assert plain.train_forwards == 1 and plain.test_forwards == 1 and len(plain.test_acc) == 2
    assert all(a > 1 / len(data.classes) + 0.2 for a in plain.test_acc), plain.test_acc
    assert plain.row()["passes / test photo"] == 1
