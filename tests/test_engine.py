"""The training engine: reproducibility, early stopping, checkpoints, per-group learning rates, evaluation."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from convlab.engine import (
    Callbacks,
    EarlyStopping,
    History,
    Resume,
    Sharding,
    evaluate,
    fit,
    load_checkpoint,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=48, d=8, classes=3, seed=0, shift_labels=False):
    w = torch.randn(d, classes, generator=torch.Generator().manual_seed(100))  # one labelling rule for all sets
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    y = (x @ w).argmax(1)
    if shift_labels:
        y = (y + 1) % classes
    return TensorDataset(x, y)


def _model(seed=0, dropout=0.2):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))


def _numbers(h: History):
    return h.train_loss, h.train_acc, h.val_loss, h.val_acc


def test_same_seed_same_history_different_seed_differs():
    train, val = _data(), _data(seed=1)
    a = fit(_model(), train, val, epochs=3, batch_size=8, seed=5, progress=False)
    b = fit(_model(), train, val, epochs=3, batch_size=8, seed=5, progress=False)
    c = fit(_model(), train, val, epochs=3, batch_size=8, seed=6, progress=False)
    assert _numbers(a) == _numbers(b)
    assert _numbers(a) != _numbers(c)
    assert len(a) == 3 and len(a.epoch_time) == 3 and all(t > 0 for t in a.epoch_time)


def test_fit_leaves_the_callers_rng_alone():
    model, data = _model(), _data()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(model, data, epochs=1, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_fit_learns_and_history_rows():
    h = fit(_model(dropout=0.0), _data(), _data(seed=1), epochs=15, lr=1e-2, batch_size=8, progress=False)
    assert h.train_loss[-1] < h.train_loss[0] and h.val_acc[-1] > 0.6
    rows = h.rows()
    assert rows[2].epoch == 2 and rows[2].val_acc == h.val_acc[2]
    assert "| epoch |" in h.to_markdown()
    assert History.from_dict(h.to_dict()) == h


def test_early_stopping_stops_and_restores_the_best_weights(tmp_path):
    # Validation labels are shifted: the better the fit on train, the worse val loss gets, so epoch 0 is best.
    train, val = _data(), _data(shift_labels=True)
    model = _model(dropout=0.0)
    ckpt = tmp_path / "best.pt"
    h = fit(
        model,
        train,
        val,
        epochs=20,
        lr=3e-2,
        batch_size=8,
        progress=False,
        checkpoint=ckpt,
        early_stopping=EarlyStopping(patience=2, monitor="val_loss"),
    )
    assert h.stopped_early and h.best_epoch == 0 and len(h) == 3 and h.restored_best
    saved = load_checkpoint(ckpt)
    assert saved["epoch"] == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved["model"][k]), f"{k}: the model does not hold the best epoch's weights"
    assert History.from_dict(saved["history"]).best_epoch == 0


def test_early_stopping_patience_on_a_flat_metric():
    h = fit(
        _model(),
        _data(),
        epochs=10,
        lr=1e-12,
        progress=False,
        early_stopping=EarlyStopping(patience=3, monitor="train_loss", min_delta=1e-3),
    )
    assert h.stopped_early and len(h) == 4 and h.best_epoch == 0


@pytest.mark.parametrize(
    "kwargs, match", [({"patience": 0}, "patience"), ({"monitor": "acc"}, "monitor"), ({"min_delta": -1}, "min_delta")]
)
def test_early_stopping_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopping(**kwargs)


def test_val_monitor_needs_a_val_set():
    with pytest.raises(ValueError, match="val"):
        fit(_model(), _data(), epochs=1, early_stopping=EarlyStopping(), progress=False)


def test_checkpoint_roundtrip(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "sub" / "c.pt", model, opt, epoch=3, history={"val_acc": [0.5]})
    other = _model(seed=9)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    state = load_checkpoint(path, other, other_opt)
    assert state["epoch"] == 3 and state["history"] == {"val_acc": [0.5]}
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    assert other_opt.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary files left


def test_a_failed_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", _model(seed=1), epoch=1)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _model(seed=2), epoch=2)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


def test_param_groups_learning_rates_are_used():
    model = _model(dropout=0.0)
    first = model[0].weight.detach().clone()
    last = model[3].weight.detach().clone()
    groups = [{"params": model[0].parameters(), "lr": 0.0}, {"params": model[3].parameters(), "lr": 1e-2}]
    fit(model, _data(), epochs=1, param_groups=groups, weight_decay=0.0, progress=False)
    assert torch.equal(model[0].weight, first) and not torch.equal(model[3].weight, last)


def test_evaluate_matches_a_manual_computation():
    model, data = _model(), _data()
    result = evaluate(model, data, batch_size=5)
    x, y = data.tensors
    with torch.no_grad():
        logits = model.eval()(x)
    assert result.num_samples == 48
    assert torch.equal(result.predictions, logits.argmax(1)) and torch.equal(result.labels, y)
    assert result.accuracy == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert result.loss == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)


def test_evaluate_restores_the_training_mode():
    model = _model().train()
    evaluate(model, _data())
    assert model.training


def test_uint8_images_without_transform_get_a_hint():
    images = TensorDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="transform="):
        fit(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)), images, epochs=1, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"optimizer": "adam2"}, "optimizer")],
)
def test_fit_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(_model(), _data(), progress=False, **kwargs)


def test_fit_refuses_a_fully_frozen_model():
    model = _model()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="model: expected trainable parameters, got none"):
        fit(model, _data(), epochs=1, progress=False)


def test_progress_bars_can_be_shown(capsys):
    fit(_model(), _data(), _data(seed=1), epochs=1, progress=True)
    assert "epochs" in capsys.readouterr().err


def test_eval_mode_restores_each_mode_also_after_an_error():
    from convlab.device import eval_mode

    a, b = torch.nn.Linear(2, 2).train(), torch.nn.Linear(2, 2).eval()
    with pytest.raises(RuntimeError, match="inside"), eval_mode(a, b):
        assert not a.training and not b.training
        raise RuntimeError("inside")
    assert a.training and not b.training


def test_a_tensor_dataset_trains_exactly_like_the_same_pairs_item_by_item():
    data = _data()
    pairs = [(x, int(y)) for x, y in data]  # no get_batch: collated item by item
    a = fit(_model(), data, epochs=2, batch_size=8, progress=False)
    b = fit(_model(), pairs, epochs=2, batch_size=8, progress=False)
    assert (a.train_loss, a.train_acc) == (b.train_loss, b.train_acc)


def test_scheduler_is_made_once_for_every_step_and_stepped_after_each():
    made, lrs = [], []

    def one_cycle(optimizer, total_steps):
        made.append(total_steps)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=total_steps)

    def watch(x):
        lrs.append(opt.param_groups[0]["lr"])
        return x

    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, _data(n=20), epochs=3, batch_size=8, optimizer=opt, scheduler=one_cycle, transform=watch, progress=False)
    assert made == [3 * 3]  # 3 epochs of ceil(20 / 8) = 3 steps
    assert len(lrs) == 9 and lrs[0] < max(lrs) and lrs[-1] < max(lrs) / 10  # warms up, then anneals


def test_order_replaces_the_permutation_and_may_repeat_indices():
    data, batches = _data(n=12), []

    def watch(x):
        batches.append(x.clone())
        return x

    picks = [torch.tensor([3, 3, 5, 3, 5]), torch.tensor([7])]
    h = fit(_model(), data, epochs=2, batch_size=2, order=lambda epoch: picks[epoch], transform=watch, progress=False)
    assert len(h) == 2 and [len(b) for b in batches] == [2, 2, 1, 1]
    assert torch.equal(torch.cat(batches), data.tensors[0][torch.tensor([3, 3, 5, 3, 5, 7])])


@pytest.mark.parametrize(
    "order, error, match",
    [
        (lambda e: torch.tensor([0.0, 1.0]), TypeError, "order: expected order\\(epoch\\) to return a 1-D integer"),
        (lambda e: [0, 1], TypeError, "got list"),
        (lambda e: torch.tensor([0, 48]), ValueError, r"order: expected indices in \[0, 48\).*got values in \[0, 48\]"),
        (lambda e: torch.zeros(0, dtype=torch.long), ValueError, "at least one index"),
    ],
)
def test_order_must_give_indices_into_the_training_set(order, error, match):
    with pytest.raises(error, match=match):
        fit(_model(), _data(), epochs=1, order=order, progress=False)


def test_order_and_sharding_exclude_each_other():
    sharding = Sharding(order=lambda e: torch.arange(8), eval_indices=torch.arange, reduce=lambda values: values)
    with pytest.raises(ValueError, match="order: expected None with sharding="):
        fit(_model(), _data(), epochs=1, order=lambda e: torch.arange(8), sharding=sharding, progress=False)


def test_a_continued_run_shuffles_as_the_uninterrupted_one():
    """2 + 2 epochs (the same optimizer carried over, as a checkpoint would) take the steps of 4 straight epochs."""

    def run(*spans):
        model = _model(dropout=0.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        history = None
        for start, stop in spans:
            history = fit(
                model,
                _data(),
                epochs=stop,
                batch_size=8,
                optimizer=opt,
                resume=Resume(start, history),
                progress=False,
            )
        return history

    assert run((0, 2), (2, 4)).train_loss == pytest.approx(run((0, 4)).train_loss, rel=1e-6)


def test_with_a_scheduler_every_epoch_needs_as_many_indices_as_the_first():
    def one_cycle(optimizer, total_steps):
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=total_steps)

    with pytest.raises(ValueError, match="order: expected 8 indices in every epoch with scheduler=.*got 16 in epoch 1"):
        fit(_model(), _data(), epochs=2, order=lambda e: torch.arange(8 * (e + 1)), scheduler=one_cycle, progress=False)


def test_order_refuses_a_boolean_mask():
    with pytest.raises(TypeError, match="got torch.bool tensor"):
        fit(_model(), _data(), epochs=1, order=lambda e: torch.rand(48) < 0.5, progress=False)


def test_fit_and_evaluate_report_the_same_validation_numbers_and_the_callback_sees_eval_mode():
    seen_modes = []
    model, train, val = _model(), _data(), _data(seed=1)
    callbacks = Callbacks(on_epoch_end=lambda end: seen_modes.append(end.model.training))
    h = fit(model, train, val, epochs=1, progress=False, callbacks=callbacks)
    result = evaluate(model, val, batch_size=32)  # fit's batch size: the same forward passes, the same logits
    assert seen_modes == [False]
    assert h.val_acc[-1] == result.accuracy and h.val_loss[-1] == pytest.approx(result.loss, rel=1e-6)
