"""A small training engine: :func:`fit` and :func:`evaluate` for classification, results as objects.

- Reproducible: shuffling draws from an explicit ``torch.Generator`` seeded with ``seed``, and dropout draws from
  the global RNG re-seeded inside :func:`torch.random.fork_rng` (your own RNG state is left as it was). The same
  seed on the same machine gives the same :class:`History`, bit for bit (timings aside).
- Any dataset of ``(x, label)`` pairs works. A dataset with ``get_batch(indices) -> (x, labels)`` (such as
  :class:`convlab.featcache.CachedFeatures`), or a ``TensorDataset(inputs, labels)``, is read a batch at a time
  instead of item by item. ``transform`` is applied to each collated batch (a list of images when their sizes
  differ), e.g. :class:`convlab.preprocess.Preprocess`. A :class:`Feed` holds these choices for both loops.
- ``device="auto"`` uses CUDA when present. On the CPU, 4-D inputs and the model use ``channels_last`` (faster
  convolutions with oneDNN; see ``benchmarks/bench_transfer.py``).
- ``scheduler`` makes a learning-rate schedule stepped after every optimiser step (one-cycle, cosine, ...);
  ``order`` replaces the per-epoch permutation (e.g. batches drawn with replacement for a fixed number of steps).
- :class:`EarlyStopping` stops after ``patience`` epochs without improvement and restores the best weights.
- ``checkpoint=path`` saves the best epoch so far atomically (:func:`convlab.atomicio.atomic_write`: a temporary
  file renamed over the old one, so a crash never leaves half a checkpoint); :func:`load_checkpoint` reads it back
  with ``weights_only=True``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset
from tqdm.auto import tqdm

from convlab.atomicio import atomic_write
from convlab.device import eval_mode, resolve_device, use_channels_last
from convlab.display import markdown_table

__all__ = [
    "History",
    "EpochRow",
    "EarlyStopping",
    "Evaluation",
    "fit",
    "Sharding",
    "EpochEnd",
    "Resume",
    "Callbacks",
    "evaluate_indices",
    "Feed",
    "train_epoch",
    "eval_epoch",
    "make_optimizer",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
]

_MONITORS = ("val_loss", "val_acc", "train_loss", "train_acc")


@dataclass(frozen=True)
class EpochRow:
    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    seconds: float


@dataclass
class History:
    """Per-epoch metrics of :func:`fit` (``val_*`` are ``nan`` without a validation set).

    ``best_epoch`` indexes the best epoch by ``monitor``; ``stopped_early`` says whether early stopping ended the run;
    ``restored_best`` whether the model now holds that epoch's weights.
    """

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    monitor: str = "val_loss"
    best_epoch: int | None = None
    stopped_early: bool = False
    restored_best: bool = False

    def __len__(self) -> int:
        return len(self.train_loss)

    def rows(self) -> list[EpochRow]:
        return [
            EpochRow(i, *vals)
            for i, vals in enumerate(zip(self.train_loss, self.train_acc, self.val_loss, self.val_acc, self.epoch_time))
        ]

    def to_markdown(self) -> str:
        return markdown_table(self.rows(), floatfmt=".4g")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(**d)


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``monitor``: ``"val_loss"`` (lower is better), ``"val_acc"`` (higher is better), ``"train_loss"`` or
    ``"train_acc"`` (train until the training set is fitted as well as it will be).
    ``restore_best``: put the best epoch's weights back into the model at the end.
    """

    patience: int = 3
    monitor: str = "val_loss"
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self):
        if not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(f"patience: expected an int >= 1, got {self.patience!r}")
        if self.monitor not in _MONITORS:
            raise ValueError(f"monitor: expected one of {_MONITORS}, got {self.monitor!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta: expected a number >= 0, got {self.min_delta!r}")


@dataclass(frozen=True)
class Evaluation:
    """Mean cross-entropy ``loss``, ``accuracy``, and the per-sample ``predictions`` and ``labels`` (CPU tensors)."""

    loss: float
    accuracy: float
    num_samples: int
    predictions: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)


# --------------------------------------------------------------------------------------------- batches
def _collate(items: Sequence[tuple[Any, Any]]) -> tuple[Any, torch.Tensor]:
    xs = [x for x, _ in items]
    y = torch.as_tensor([int(label) for _, label in items], dtype=torch.long)
    if all(isinstance(x, torch.Tensor) for x in xs) and len({tuple(x.shape) for x in xs}) == 1:
        return torch.stack(xs), y
    return xs, y


def _batches(data, batch_size: int, order: torch.Tensor) -> Iterator[tuple[Any, torch.Tensor]]:
    get_batch = getattr(data, "get_batch", None)
    if get_batch is None and isinstance(data, TensorDataset) and len(data.tensors) == 2:
        inputs, targets = data.tensors  # one indexing per batch instead of one per item

        def get_batch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return inputs[idx], targets[idx].long()

    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        if get_batch is not None:
            yield get_batch(idx)
        else:
            yield _collate([data[i] for i in idx.tolist()])


def _prepare(x, transform, device: torch.device, channels_last: bool) -> torch.Tensor:
    if transform is not None:
        x = transform(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            "inputs: got a list of differently sized images; pass transform= (e.g. convlab.preprocess.Preprocess) "
            "to turn them into one batch tensor"
        )
    if x.dtype == torch.uint8:
        raise TypeError(
            "inputs: expected float tensors, got uint8 images; pass transform= "
            "(e.g. Preprocess.from_spec(model.spec)) to normalise them"
        )
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _check_data(data, name: str) -> None:
    if data is None or not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(f"{name}: expected a dataset of (x, label) pairs, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"{name}: expected a non-empty dataset, got one of length 0")


@dataclass(frozen=True)
class Feed:
    """How a data set reaches the model: ``data[order]`` in batches of ``batch_size``; each collated batch goes
    through ``transform`` (on the CPU), then to ``device``, in ``channels_last`` memory format for 4-D inputs if
    asked. The training and evaluation loops take one, so both feed the model the same way."""

    data: Dataset
    batch_size: int
    device: torch.device
    transform: Callable | None = None
    channels_last: bool = False

    def batches(self, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(inputs, labels)`` on the device, batch by batch, for the items ``data[order]``."""
        for x, y in _batches(self.data, self.batch_size, order):
            yield _prepare(x, self.transform, self.device, self.channels_last), y.to(self.device, non_blocking=True)


# --------------------------------------------------------------------------------------------- evaluate
@torch.inference_mode()
def eval_epoch(
    model: nn.Module,
    feed: Feed,
    order: torch.Tensor,
    *,
    loss_fn: nn.Module,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The evaluation loop: ``feed.data[order]`` through ``model`` in batches; the model's mode is the caller's.

    Returns ``(loss_sum, predictions, labels)``: the summed per-sample loss and the CPU tensors of predicted and
    true classes, in ``order``. ``on_batch(logits, labels)`` runs after every batch (progress bars, or to keep
    the outputs, e.g. class probabilities).
    """
    loss_sum, preds, labels = 0.0, [], []
    for x, y in feed.batches(order):
        logits = model(x)
        loss_sum += float(loss_fn(logits.float(), y)) * len(y)
        preds.append(logits.argmax(1).cpu())
        labels.append(y.cpu())
        if on_batch is not None:
            on_batch(logits, y)
    if not labels:
        empty = torch.zeros(0, dtype=torch.long)
        return loss_sum, empty, empty
    return loss_sum, torch.cat(preds), torch.cat(labels)


def _ticker(bar) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """An ``on_batch`` that advances a progress bar by one batch."""
    return lambda logits, labels: bar.update(1)


def evaluate_indices(
    model: nn.Module,
    feed: Feed,
    indices: torch.Tensor,
    *,
    loss_fn: nn.Module,
    reduce: Callable[[list[float]], list[float]] | None = None,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[float, float, int]:
    """Mean loss, accuracy and count on ``feed.data[indices]`` (:func:`eval_epoch`); the model's mode is the caller's.

    ``reduce`` adds the sums of every process (each evaluating its own ``indices``), so the result is that of the
    whole set. ``(nan, nan, 0)`` for no items at all.
    """
    loss_sum, preds, labels = eval_epoch(model, feed, indices, loss_fn=loss_fn, on_batch=on_batch)
    sums = [loss_sum, int((preds == labels).sum()), len(labels)]
    return _means(reduce(sums) if reduce is not None else sums)


def _means(sums: Sequence[float]) -> tuple[float, float, int]:
    """``(loss_sum, correct, seen)`` -> ``(mean loss, accuracy, seen)``; ``(nan, nan, 0)`` when nothing was seen."""
    loss_sum, correct, seen = sums
    if seen == 0:
        return float("nan"), float("nan"), 0
    return loss_sum / seen, correct / seen, int(seen)


def evaluate(
    model: nn.Module,
    data: Dataset,
    *,
    transform: Callable | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    loss_fn: nn.Module | None = None,
    channels_last: bool | None = None,
) -> Evaluation:
    """Loss and accuracy of ``model`` on ``data`` in eval mode (the model's mode is restored afterwards)."""
    _check_data(data, "data")
    dev = resolve_device(device)
    cl = use_channels_last(channels_last, dev)
    model.to(dev)
    if cl:
        model.to(memory_format=torch.channels_last)
    feed = Feed(data, batch_size, dev, transform, cl)
    with eval_mode(model):
        loss_sum, preds, labels = eval_epoch(
            model, feed, torch.arange(len(data)), loss_fn=loss_fn or nn.CrossEntropyLoss()
        )
    loss, accuracy, n = _means([loss_sum, int((preds == labels).sum()), len(labels)])
    return Evaluation(loss, accuracy, n, preds, labels)


# --------------------------------------------------------------------------------------------- fit
def make_optimizer(
    name: str, groups, lr: float, weight_decay: float | None = None, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """``"adamw"`` (weight decay 0.01 unless given) or ``"sgd"`` (with ``momentum``) over parameter ``groups``."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=0.01 if weight_decay is None else weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=lr, momentum=momentum, weight_decay=0.0 if weight_decay is None else weight_decay
        )
    raise ValueError(f"optimizer: expected 'adamw' or 'sgd', got {name!r}")


def _check_order(indices: torch.Tensor, n: int) -> torch.Tensor:
    """The indices an ``order`` callable returned, checked: a 1-D integer tensor of values in ``[0, n)``."""
    if (
        not isinstance(indices, torch.Tensor)
        or indices.ndim != 1
        or indices.is_floating_point()
        or indices.is_complex()
        or indices.dtype == torch.bool
    ):
        got = (
            f"{indices.dtype} tensor of shape {tuple(indices.shape)}"
            if isinstance(indices, torch.Tensor)
            else type(indices).__name__
        )
        raise TypeError(f"order: expected order(epoch) to return a 1-D integer tensor of indices, got {got}")
    if len(indices) == 0:
        raise ValueError("order: expected order(epoch) to return at least one index, got none")
    low, high = int(indices.min()), int(indices.max())
    if low < 0 or high >= n:
        raise ValueError(
            f"order: expected indices in [0, {n}) (the training set's size), got values in [{low}, {high}]"
        )
    return indices.long()


def _step_both(bar, schedule) -> None:
    """``on_step`` with a schedule: step the learning rate, advance the bar."""
    schedule.step()
    bar.update(1)


def _improved(value: float, best: float | None, monitor: str, min_delta: float) -> bool:
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value > best + min_delta if monitor.endswith("_acc") else value < best - min_delta


def train_epoch(
    model: nn.Module,
    feed: Feed,
    order: torch.Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    on_step: Callable[[], None] | None = None,
) -> tuple[float, int, int]:
    """One pass of optimiser steps over ``feed.data[order]`` in batches; the model's mode is the caller's.

    ``on_step`` runs after every optimiser step (progress bars, schedules, test hooks). Returns
    ``(loss_sum, correct, seen)``: the summed per-sample loss, the correct predictions and the samples seen. The sums
    stay on the device until the end, so a GPU is not made to wait after every step.
    """
    loss_sum = torch.zeros((), dtype=torch.float64, device=feed.device)
    correct = torch.zeros((), dtype=torch.long, device=feed.device)
    seen = 0
    for x, y in feed.batches(order):
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if on_step is not None:
            on_step()
    return float(loss_sum), int(correct), seen


@dataclass(frozen=True)
class Sharding:
    """How :func:`fit` shares an epoch between processes (made by :func:`convlab.distributed.sharding`).

    ``order(epoch)``: this process's training indices for ``epoch``. ``eval_indices(n)``: its share of an
    evaluation set of ``n`` items. ``reduce(values)``: element-wise sums over all processes. ``train_module``: the
    wrapper that runs the training steps (``DistributedDataParallel``, which averages gradients over processes);
    evaluation runs the unwrapped model, as processes may run different numbers of evaluation batches.
    """

    order: Callable[[int], torch.Tensor]
    eval_indices: Callable[[int], torch.Tensor]
    reduce: Callable[[list[float]], list[float]]
    train_module: nn.Module | None = None


@dataclass(frozen=True)
class EpochEnd:
    """What :func:`fit` passes to ``on_epoch_end`` after each epoch (the history already holds the epoch).

    ``model`` is in eval mode after a validation pass (as it was evaluated), in train mode without ``val``.
    """

    epoch: int
    history: History
    improved: bool
    model: nn.Module
    optimizer: torch.optim.Optimizer


@dataclass(frozen=True)
class Resume:
    """Continue a run in :func:`fit`: epochs ``start_epoch`` .. ``epochs - 1`` are trained and appended to ``history``.

    ``history`` holds the earlier epochs' records (the best value so far is taken from them). With ``seed`` the
    shuffles continue as in the uninterrupted run; dropout continues it only with ``seed=None`` and the global random
    state restored (as ``python -m convlab train --resume`` does).
    """

    start_epoch: int = 0
    history: History | None = None


@dataclass(frozen=True)
class Callbacks:
    """What :func:`fit` calls: ``on_epoch_end(EpochEnd)`` after every epoch (checkpoints, logs, metrics files), and
    ``after_train_mode()`` after ``model.train()`` in every epoch (e.g. to keep BatchNorm statistics fixed)."""

    on_epoch_end: Callable[[EpochEnd], None] | None = None
    after_train_mode: Callable[[], None] | None = None


def _start_history(history: History | None, start_epoch: int, monitor: str) -> History:
    """A new :class:`History`, or the one of a continued run once it checks out against ``start_epoch``."""
    if history is None:
        return History(monitor=monitor)
    if len(history) != start_epoch or history.monitor != monitor:
        raise ValueError(
            f"history: expected the {start_epoch} epochs before start_epoch, monitoring {monitor!r}; "
            f"got {len(history)} epochs monitoring {history.monitor!r}"
        )
    return history


def _optimizer_for(model: nn.Module, optimizer, param_groups, lr, weight_decay, momentum) -> torch.optim.Optimizer:
    """``optimizer`` itself if it is one, else :func:`make_optimizer` over ``param_groups`` (default: what trains)."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    groups = param_groups if param_groups is not None else [p for p in model.parameters() if p.requires_grad]
    if not groups:
        raise ValueError("model: expected trainable parameters, got none (everything is frozen)")
    return make_optimizer(optimizer, groups, lr, weight_decay, momentum)


class _Best:
    """The best epoch so far by the history's monitor: early stopping's count, the weights to restore, checkpoints."""

    def __init__(self, history: History, early_stopping: EarlyStopping | None, checkpoint) -> None:
        self.history, self.early_stopping, self.checkpoint = history, early_stopping, checkpoint
        self.min_delta = early_stopping.min_delta if early_stopping else 0.0
        self.best, self.state, self.bad_epochs = None, None, 0
        for value in getattr(history, history.monitor):  # the best value so far of a continued run
            if _improved(value, self.best, history.monitor, self.min_delta):
                self.best, self.bad_epochs = value, 0
            else:
                self.bad_epochs += 1

    def update(self, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, seconds: float) -> bool:
        """Note the epoch just recorded; keep its weights and checkpoint it if it is the best. Returns whether."""
        value = getattr(self.history, self.history.monitor)[-1]
        if not _improved(value, self.best, self.history.monitor, self.min_delta):
            self.bad_epochs += 1
            return False
        self.best, self.bad_epochs, self.history.best_epoch = value, 0, epoch
        if self.early_stopping and self.early_stopping.restore_best:
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if self.checkpoint is not None:
            self.history.epoch_time.append(seconds)  # so the saved history is complete
            save_checkpoint(self.checkpoint, model, opt, epoch=epoch, history=self.history.to_dict())
            self.history.epoch_time.pop()
        return True

    def should_stop(self) -> bool:
        return bool(self.early_stopping) and self.bad_epochs >= self.early_stopping.patience

    def restore(self, model: nn.Module) -> None:
        """Load the best epoch's weights when they were kept and a later epoch ended the run."""
        if self.state is not None and self.history.best_epoch != len(self.history) - 1:
            model.load_state_dict(self.state)
            self.history.restored_best = True


class _EpochIndices:
    """The training indices of each epoch: the sharding's, ``order``'s (checked), or a seeded permutation."""

    def __init__(self, n: int, seed: int | None, order, sharding: Sharding | None, start_epoch: int) -> None:
        if order is not None and sharding is not None:
            raise ValueError("order: expected None with sharding= (the sharding gives each process its indices)")
        self.n, self.first = n, None
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        if sharding is not None:
            self.order = sharding.order
        elif order is not None:
            self.order = lambda epoch: _check_order(order(epoch), n)
        else:
            self.order = None
            if self.generator is not None:
                for _ in range(start_epoch):  # a continued run shuffles each epoch as the uninterrupted run did
                    torch.randperm(n, generator=self.generator)

    def draw_first(self, start_epoch: int, epochs: int) -> int:
        """Draw the first epoch's indices once (their number sizes the bars and the schedule); returns that number."""
        if self.order is not None and start_epoch < epochs:
            self.first = self.order(start_epoch)
        return len(self.first) if self.first is not None else self.n

    def __call__(self, epoch: int, start_epoch: int, scheduled: bool) -> torch.Tensor:
        if self.order is None:
            return torch.randperm(self.n, generator=self.generator)
        indices = self.first if epoch == start_epoch else self.order(epoch)
        if scheduled and len(indices) != len(self.first):
            raise ValueError(
                f"order: expected {len(self.first)} indices in every epoch with scheduler= (its steps are counted "
                f"from the first epoch), got {len(indices)} in epoch {epoch}"
            )
        return indices


class _Bars:
    """Progress bars: one over the epochs and one per epoch, or (``"transient"``) one over all batches, then removed."""

    def __init__(self, progress: bool | str, start_epoch: int, epochs: int, per_epoch: int) -> None:
        self.progress, self.per_epoch = progress, per_epoch
        self.transient = progress == "transient"
        self.epochs = tqdm(
            range(start_epoch, epochs),
            desc="epochs",
            disable=not progress or self.transient,
            leave=True,
            initial=start_epoch,
            total=epochs,
        )
        self.run = tqdm(
            total=(epochs - start_epoch) * per_epoch, desc="training", disable=not self.transient, leave=False
        )

    def epoch(self, epoch: int):
        if self.transient:
            return self.run
        return tqdm(total=self.per_epoch, desc=f"epoch {epoch}", disable=not self.progress, leave=False)

    def end_epoch(self, bar) -> None:
        if not self.transient:
            bar.close()

    def close(self) -> None:
        self.epochs.close()
        self.run.close()


def _record_epoch(history, train_sums, model, val_feed, loss_fn, sharding, bar) -> None:
    """Append one epoch's training means and validation results (each process its share under ``sharding``)."""
    if sharding is not None:
        train_sums = sharding.reduce([float(v) for v in train_sums])
    train_loss, train_acc, _ = _means(list(train_sums))
    history.train_loss.append(train_loss)
    history.train_acc.append(train_acc)
    if val_feed is None:
        val_loss = val_acc = float("nan")
    else:
        n = len(val_feed.data)
        model.eval()  # until the next epoch's train(): on_epoch_end sees the model as it was evaluated
        val_loss, val_acc, _ = evaluate_indices(
            model,
            val_feed,
            sharding.eval_indices(n) if sharding is not None else torch.arange(n),
            loss_fn=loss_fn,
            reduce=sharding.reduce if sharding is not None else None,
            on_batch=_ticker(bar) if sharding is None else None,
        )
    history.val_loss.append(val_loss)
    history.val_acc.append(val_acc)


def fit(
    model: nn.Module,
    train: Dataset,
    val: Dataset | None = None,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 32,
    optimizer: str | torch.optim.Optimizer = "adamw",
    weight_decay: float | None = None,
    momentum: float = 0.9,
    param_groups: list[dict] | None = None,
    scheduler: Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler] | None = None,
    transform: Callable | None = None,
    val_transform: Callable | None = None,
    loss_fn: nn.Module | None = None,
    early_stopping: EarlyStopping | None = None,
    checkpoint: str | os.PathLike | None = None,
    seed: int | None = 0,
    device: str | torch.device = "auto",
    channels_last: bool | None = None,
    progress: bool | str = True,
    resume: Resume | None = None,
    callbacks: Callbacks | None = None,
    sharding: Sharding | None = None,
    order: Callable[[int], torch.Tensor] | None = None,
) -> History:
    """Train ``model`` on ``train`` up to epoch ``epochs``; evaluate on ``val`` after each. Returns a :class:`History`.

    Args:
        train, val: datasets of ``(x, label)``; ``x`` a tensor, or a uint8 image to be turned into one by ``transform``.
        lr: learning rate (for groups without their own ``"lr"``).
        optimizer: ``"adamw"`` (weight decay 0.01 by default) or ``"sgd"`` (with ``momentum``); or an optimizer
            already made (e.g. with its state restored), which ``lr``, ``param_groups`` and the rest then leave alone.
        param_groups: optimizer groups, e.g. :func:`convlab.transfer.param_groups` for a lower learning rate on
            pretrained stages; default: every parameter with ``requires_grad``.
        scheduler: ``scheduler(optimizer, total_steps)`` makes a learning-rate schedule that is stepped after every
            optimiser step; ``total_steps`` is the number of steps from the first epoch run to ``epochs``, e.g.
            ``lambda opt, n: torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=n)``. Not saved in
            checkpoints: a continued run (``resume=``) starts a fresh schedule over the epochs left.
        transform: applied to each input batch before the model (on the CPU), e.g. a ``Preprocess``.
        val_transform: the same for ``val`` (default: ``transform``); e.g. the eval view when ``transform`` augments.
        early_stopping: an :class:`EarlyStopping`; needs ``val`` unless it monitors ``"train_loss"`` or ``"train_acc"``.
        checkpoint: file to save the best epoch to (model, optimizer, epoch, history), atomically.
        seed: seeds shuffling and dropout; the same seed gives the same history. ``None``: the caller owns the random
            state (the global RNG is used as it is, e.g. restored from a checkpoint).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``; the model is moved there (without ``sharding``).
        channels_last: ``None`` = on the CPU only.
        progress: show ``tqdm`` bars; ``"transient"``: one bar over all batches of all epochs, removed at the end (for
            a caller that runs many fits under a bar of its own).
        resume: a :class:`Resume` to continue a run from its ``start_epoch`` and ``history``.
        callbacks: :class:`Callbacks` (``on_epoch_end``, ``after_train_mode``).
        sharding: share each epoch between processes (:func:`convlab.distributed.sharding`); the caller has put
            the model on its device and wrapped it.
        order: ``order(epoch)`` gives the indices of ``train`` to step through in ``epoch``, in batches of
            ``batch_size`` (1-D integers; repeats allowed, e.g. ``torch.randint`` for sampling with replacement);
            default: a permutation of ``train`` per epoch, drawn from the generator seeded with ``seed``. It is called
            once per epoch, in order; with ``scheduler=`` every epoch must give as many indices as the first. For a
            run that may be continued, draw from ``torch.Generator().manual_seed(seed + epoch)``.
    """
    resume, callbacks = resume or Resume(), callbacks or Callbacks()
    start = resume.start_epoch
    _check_data(train, "train")
    if val is not None:
        _check_data(val, "val")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    if not isinstance(start, int) or not 0 <= start <= epochs:
        raise ValueError(f"start_epoch: expected an int in [0, epochs={epochs}], got {start!r}")
    monitor = early_stopping.monitor if early_stopping else ("val_loss" if val is not None else "train_loss")
    if not monitor.startswith("train_") and val is None:
        raise ValueError(f"early_stopping: monitor {monitor!r} needs a validation set (val=...)")
    indices = _EpochIndices(len(train), seed, order, sharding, start)
    history = _start_history(resume.history, start, monitor)
    dev = resolve_device(device)
    cl = use_channels_last(channels_last, dev)
    if sharding is None:
        model.to(dev)
        if cl:
            model.to(memory_format=torch.channels_last)
    opt = _optimizer_for(model, optimizer, param_groups, lr, weight_decay, momentum)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    train_feed = Feed(train, batch_size, dev, transform, cl)
    val_transform = transform if val_transform is None else val_transform
    val_feed = Feed(val, batch_size, dev, val_transform, cl) if val is not None else None
    best = _Best(history, early_stopping, checkpoint)
    train_net = sharding.train_module if sharding is not None and sharding.train_module is not None else model
    n_val_batches = math.ceil(len(val) / batch_size) if val is not None and sharding is None else 0

    with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else [], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        n_train_batches = math.ceil(indices.draw_first(start, epochs) / batch_size)
        steps = (epochs - start) * n_train_batches
        schedule = scheduler(opt, steps) if scheduler is not None and steps > 0 else None
        bars = _Bars(progress, start, epochs, n_train_batches + n_val_batches)
        for epoch in bars.epochs:
            t0 = time.perf_counter()
            train_net.train()
            if callbacks.after_train_mode is not None:
                callbacks.after_train_mode()
            bar = bars.epoch(epoch)
            order_now = indices(epoch, start, schedule is not None)
            on_step = partial(bar.update, 1) if schedule is None else partial(_step_both, bar, schedule)
            sums = train_epoch(train_net, train_feed, order_now, optimizer=opt, loss_fn=loss_fn, on_step=on_step)
            _record_epoch(history, sums, model, val_feed, loss_fn, sharding, bar)
            bars.end_epoch(bar)
            improved = best.update(model, opt, epoch, time.perf_counter() - t0)
            history.epoch_time.append(time.perf_counter() - t0)
            bars.epochs.set_postfix(train_loss=f"{history.train_loss[-1]:.3f}", val_acc=f"{history.val_acc[-1]:.3f}")
            if callbacks.on_epoch_end is not None:
                callbacks.on_epoch_end(EpochEnd(epoch, history, improved, model, opt))
            if best.should_stop():
                history.stopped_early = True
                break
        bars.close()
    best.restore(model)
    model.eval()
    return history


# --------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None, **extra
) -> Path:
    """Write ``{"model": state_dict, "optimizer": ..., **extra}`` to ``path`` atomically.

    The data go to a temporary file in the same folder, are flushed to disk, then ``os.replace`` renames it over
    ``path`` in one step: readers see the old checkpoint or the new one, never a partial file. ``extra`` values
    should be plain data (numbers, strings, lists, dicts, tensors) so that ``weights_only`` loading accepts them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), **extra}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    atomic_write(path, lambda f: torch.save(state, f))
    return path


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    map_location: str | torch.device = "cpu",
) -> dict:
    """Read a checkpoint (``weights_only=True``: no code runs); load it into ``model`` / ``optimizer`` if given."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if model is not None:
        model.load_state_dict(state["model"])
    if optimizer is not None:
        if "optimizer" not in state:
            raise ValueError(f"optimizer: expected a checkpoint with optimizer state, got {path} without one")
        optimizer.load_state_dict(state["optimizer"])
    return state
