"""Transfer learning: backbone preprocessing, freezing with an explicit BatchNorm policy, and three regimes.

A :class:`~convlab.backbones.Backbone` is ``stages`` (``spec.num_stages`` named stages, from its weights record) ->
``pool`` -> ``head``. Here:

- :class:`Preprocess` is the deterministic view the backbone sees (resize, centre crop, normalise); it is what a
  feature cache stores, so it is a frozen dataclass whose fields are part of the cache key.
- :func:`freeze` freezes the first ``k`` stages (``k = "all"``: only the head trains) and applies a BatchNorm
  policy.
  ``requires_grad=False`` alone does **not** freeze BatchNorm: in ``train()`` mode its running mean and variance
  still move with every batch. The default policy ``"frozen"`` keeps frozen stages in ``eval()`` even when the
  model is put in ``train()`` (running statistics fixed, drop-connect off: the frozen part is a fixed function,
  which is what makes caching its output valid). The policy ``"train"`` lets frozen stages follow the model's mode,
  so their statistics adapt to the new data while their weights stay fixed (never cached).
- :func:`param_summary` counts trainable and frozen parameters per stage; :func:`param_groups` gives lower learning
  rates to pretrained stages.
- :class:`Regime` names the classic choices (head only, freeze the first k stages, fine-tune all, train from
  scratch); :func:`compare` trains each on the same splits and returns a table. Regimes with frozen stages train on
  cached activations of the freeze boundary (:mod:`convlab.featcache`), so the frozen part runs once, not per epoch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from convlab.backbones import BACKBONES, as_backbone, load_backbone, stages_of
from convlab.device import resolve_device
from convlab.display import markdown_table
from convlab.engine import EarlyStopping, Evaluation, History, evaluate, fit
from convlab.featcache import FeatureCache
from convlab.memory import PeakMemory
from convlab.preprocess import Preprocess

if TYPE_CHECKING:  # annotations only: no import cost or cycle at run time
    from convlab.data import Splits

__all__ = [
    "stages_of",
    "BN_POLICIES",
    "Preprocess",
    "freeze",
    "unfreeze",
    "frozen_stages",
    "bn_policy",
    "split_at",
    "ParamRow",
    "ParamSummary",
    "param_summary",
    "param_groups",
    "Regime",
    "RegimeResult",
    "ComparisonRow",
    "Comparison",
    "run_regime",
    "compare",
    "freeze_by_hand",
]

BN_POLICIES = ("frozen", "train")


# --------------------------------------------------------------------------------------------- preprocessing
# --------------------------------------------------------------------------------------------- freezing
class _StayInEval:
    """Stands in for ``train`` on one frozen stage *instance*: the stage stays in eval mode whatever is asked.

    ``model.train()`` calls ``child.train(True)`` on every child; a frozen stage answers by going to eval instead,
    so its BatchNorm running statistics and its drop-connect stay fixed. Only the instance is changed (no class is
    patched); :func:`unfreeze` removes it.
    """

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        return nn.Module.train(self.module, False)


def freeze(model: nn.Module, k: int | str = "all", bn: str = "frozen") -> nn.Module:
    """Freeze the first ``k`` stages of ``model`` (all later stages and the head become trainable); returns it.

    Args:
        k: how many stages to freeze (0 .. ``spec.num_stages``), or the name of the last frozen stage (``"stage3"``
            freezes ``stem`` to ``stage3``), or ``"all"`` (every stage: only the head trains).
        bn: BatchNorm policy of the frozen stages. ``"frozen"`` (default): they stay in eval mode even in
            ``model.train()``, so running statistics (and drop-connect) never change. ``"train"``: they follow the
            model's mode, so their running statistics adapt to your data while weights stay fixed.

    The state is exactly "first k frozen": calling ``freeze`` again replaces the previous setting.
    """
    if bn not in BN_POLICIES:
        raise ValueError(f"bn: expected one of {BN_POLICIES}, got {bn!r}")
    k = as_backbone(model).resolve_k(k)
    for i, stage in enumerate(model.stages):
        frozen = i < k
        for p in stage.parameters():
            p.requires_grad_(not frozen)
        if "train" in stage.__dict__:  # undo an earlier freeze of this stage
            del stage.__dict__["train"]
        if frozen and bn == "frozen":
            stage.train = _StayInEval(stage)
            stage.eval()
        else:
            stage.train(model.training)
    for p in model.head.parameters():
        p.requires_grad_(True)
    return model


def unfreeze(model: nn.Module) -> nn.Module:
    """Make every stage trainable again and let all of them follow the model's train/eval mode."""
    return freeze(model, 0)


def frozen_stages(model: nn.Module) -> int:
    """How many leading stages have no trainable parameter (the freeze boundary ``k``)."""
    k = 0
    for stage in stages_of(model):
        if any(p.requires_grad for p in stage.parameters()):
            break
        k += 1
    return k


def bn_policy(model: nn.Module) -> str | None:
    """``"frozen"`` or ``"train"`` for the frozen stages (see :func:`freeze`); ``None`` when nothing is frozen."""
    k = frozen_stages(model)
    if k == 0:
        return None
    return (
        "frozen"
        if all(isinstance(s.__dict__.get("train"), _StayInEval) for s in list(stages_of(model))[:k])
        else "train"
    )


def split_at(model: nn.Module, k: int | str) -> tuple[nn.Sequential, nn.Sequential]:
    """``(frozen_part, rest)`` with ``rest(frozen_part(x)) == model(x)``: :meth:`Backbone.split_at` of ``model``.

    For ``k = "all"`` the frozen part includes the global pooling (it returns ``spec.feature_dim`` features) and
    ``rest`` is just the head. Training ``rest`` trains ``model``.
    """
    return as_backbone(model).split_at(k)


def freeze_by_hand(model: nn.Module, regime: Regime, freeze_first_k: Callable[[nn.Module, int], list]) -> nn.Module:
    """Freeze ``model`` for ``regime`` with a hand-written ``freeze_first_k(model, k)`` (called on the model in train
    mode, as notebook 03's exercise specifies); returns the model.

    The hand-written function decides which parameters train; the result is checked (the first ``k`` stages frozen,
    the later ones and the head trainable, the frozen stages' BatchNorm in eval mode). A hand freeze does not survive
    the ``model.train()`` at the start of every epoch, so when the frozen stages run during training (no feature
    cache) :func:`freeze` then marks them to stay in eval mode; with the cache they run only in its extraction.

    Raises:
        ValueError: ``regime`` keeps no BatchNorm statistics fixed (``bn="train"``), or ``freeze_first_k`` left another
            state than "first k frozen" (the message says which).
    """
    if regime.bn != "frozen":
        raise ValueError(f"regime: expected a regime with bn='frozen' for a hand-written freeze, got bn={regime.bn!r}")
    k = regime.frozen
    model.train()
    freeze_first_k(model, k)
    wrong = [
        name
        for i, (name, stage) in enumerate(stages_of(model).named_children())
        if any(p.requires_grad == (i < k) for p in stage.parameters())
        or (i < k and any(m.training for m in stage.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)))
    ]
    if not all(p.requires_grad for p in model.head.parameters()):
        wrong.append("head")
    if wrong:
        raise ValueError(
            f"freeze_first_k: expected the first {k} stages frozen (BatchNorm in eval mode) and the rest trainable, "
            f"got other states in {wrong}"
        )
    if k > 0 and not regime.uses_cache:
        freeze(model, k, bn="frozen")  # the frozen stages run in training: keep them in eval through model.train()
    return model


# --------------------------------------------------------------------------------------------- summaries
@dataclass(frozen=True)
class ParamRow:
    """One stage: parameter count, how many train, and what its BatchNorm layers do in ``model.train()``.

    ``bn``: ``"frozen"`` (kept in eval, statistics fixed), ``"train"`` (statistics update), ``"-"`` (no BatchNorm).
    """

    stage: str
    params: int
    trainable: int
    frozen: int
    bn: str


@dataclass(frozen=True)
class ParamSummary:
    """Per-stage rows plus totals; ``to_markdown()`` renders the table."""

    rows: tuple[ParamRow, ...]

    @property
    def total(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def trainable(self) -> int:
        return sum(r.trainable for r in self.rows)

    @property
    def frozen(self) -> int:
        return sum(r.frozen for r in self.rows)

    def __getitem__(self, stage: str) -> ParamRow:
        for r in self.rows:
            if r.stage == stage:
                return r
        raise KeyError(f"stage: expected one of {[r.stage for r in self.rows]}, got {stage!r}")

    def to_markdown(self) -> str:
        total = ParamRow("total", self.total, self.trainable, self.frozen, "")
        return markdown_table(list(self.rows) + [total])


def param_summary(model: nn.Module) -> ParamSummary:
    """Trainable vs frozen parameters for each stage and the head (rows, not printed text)."""
    rows = []
    named = list(stages_of(model).named_children()) + [("head", model.head)]
    for name, module in named:
        n = sum(p.numel() for p in module.parameters())
        t = sum(p.numel() for p in module.parameters() if p.requires_grad)
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
        if not has_bn:
            bn = "-"
        elif isinstance(module.__dict__.get("train"), _StayInEval):
            bn = "frozen"
        else:
            bn = "train"
        rows.append(ParamRow(name, n, t, n - t, bn))
    return ParamSummary(tuple(rows))


def param_groups(model: nn.Module, lr: float, backbone_lr_scale: float = 1.0) -> list[dict]:
    """Optimizer parameter groups: the head at ``lr``, each trainable stage at ``lr * backbone_lr_scale``.

    A scale below 1 (e.g. 0.1) changes pretrained features more slowly than the fresh head ("discriminative
    learning rates"). Frozen parameters are left out. Each group carries a ``"name"`` (the stage).
    """
    if not lr > 0 or not backbone_lr_scale > 0:
        raise ValueError(f"lr, backbone_lr_scale: expected positive numbers, got {lr!r}, {backbone_lr_scale!r}")
    groups = []
    for name, stage in stages_of(model).named_children():
        params = [p for p in stage.parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "lr": lr * backbone_lr_scale, "name": name})
    groups.append({"params": [p for p in model.head.parameters() if p.requires_grad], "lr": lr, "name": "head"})
    return groups


# --------------------------------------------------------------------------------------------- regimes
def _every_stage() -> int:
    """The stage count that every registered backbone has (each weights record holds its own, ``spec.num_stages``):
    a :class:`Regime` is a recipe for any backbone, so "head only" freezes this many and ``frozen`` stays within it.
    Another count would need a regime that names its backbone; refused here rather than mixed up."""
    counts = {spec.num_stages for spec in BACKBONES.values()}
    if len(counts) != 1:
        raise ValueError(f"BACKBONES: expected every backbone to have the same number of stages, got {sorted(counts)}")
    return counts.pop()


_EVERY_STAGE = _every_stage()


@dataclass(frozen=True)
class Regime:
    """A transfer-learning recipe: :meth:`head_only`, :meth:`freeze_first`, :meth:`finetune` or :meth:`scratch`.

    Attributes:
        name: label in tables.
        frozen: stages frozen (0 .. the backbones' ``spec.num_stages``, which is head only).
        weights: ``"imagenet"`` or ``None`` (random initialisation).
        bn: BatchNorm policy of frozen stages (see :func:`freeze`); only ``"frozen"`` can use the feature cache.
        lr: learning rate of the head (``None``: the one given to :func:`compare`).
        backbone_lr_scale: learning-rate factor for trainable stages (see :func:`param_groups`).
        cache: train on cached activations of the freeze boundary when possible.
    """

    name: str
    frozen: int = _EVERY_STAGE
    weights: str | None = "imagenet"
    bn: str = "frozen"
    lr: float | None = None
    backbone_lr_scale: float = 1.0
    cache: bool = True

    def __post_init__(self):
        if isinstance(self.frozen, bool) or not isinstance(self.frozen, int) or not 0 <= self.frozen <= _EVERY_STAGE:
            raise ValueError(f"frozen: expected an int in [0, {_EVERY_STAGE}], got {self.frozen!r}")
        if self.weights not in ("imagenet", None):
            raise ValueError(f"weights: expected 'imagenet' or None, got {self.weights!r}")
        if self.bn not in BN_POLICIES:
            raise ValueError(f"bn: expected one of {BN_POLICIES}, got {self.bn!r}")

    @classmethod
    def head_only(cls, lr: float | None = 3e-3) -> Regime:
        """Pretrained backbone frozen entirely; a new linear head on its ``spec.feature_dim`` pooled features."""
        return cls("head only", frozen=_EVERY_STAGE, lr=lr)

    @classmethod
    def freeze_first(
        cls, k: int, lr: float | None = 1e-3, backbone_lr_scale: float = 0.3, bn: str = "frozen"
    ) -> Regime:
        """Pretrained; the first ``k`` stages frozen, the rest fine-tuned at ``lr * backbone_lr_scale``."""
        return cls(f"freeze first {k}", frozen=k, lr=lr, backbone_lr_scale=backbone_lr_scale, bn=bn)

    @classmethod
    def finetune(cls, lr: float | None = 1e-3, backbone_lr_scale: float = 0.1) -> Regime:
        """Pretrained; everything trains, stages at a lower learning rate than the head."""
        return cls("fine-tune all", frozen=0, lr=lr, backbone_lr_scale=backbone_lr_scale)

    @classmethod
    def scratch(cls, lr: float | None = 1e-3) -> Regime:
        """Random initialisation, everything trains (the no-transfer baseline)."""
        return cls("from scratch", frozen=0, weights=None, lr=lr, cache=False)

    @property
    def uses_cache(self) -> bool:
        return self.cache and self.frozen > 0 and self.bn == "frozen"


@dataclass(frozen=True)
class ComparisonRow:
    """One regime's outcome; times are wall-clock seconds.

    ``train_s`` covers the whole run (model loading, cache extraction or lookup, training, test evaluation);
    ``extract_s`` is the cache part alone. ``peak_mem_mb`` is what ``memory_measure`` says: on CUDA the peak of
    ``torch.cuda.max_memory_allocated`` above the start; on a CPU the peak resident set size of the process during
    the run (Linux VmHWM, reset at the start) minus the resident size at the start. Memory-mapped cache pages that
    were read count as resident.
    """

    regime: str
    frozen: int
    trainable_params: int
    test_acc: float
    best_val_acc: float
    epochs: int
    train_s: float
    extract_s: float
    cached: bool
    peak_mem_mb: float
    memory_measure: str


@dataclass
class RegimeResult:
    """Everything one regime produced: the row, the trained model, its history and the test evaluation."""

    row: ComparisonRow
    model: nn.Module
    history: History
    test: Evaluation


@dataclass
class Comparison:
    """Rows of :func:`compare` (one per regime) and the full results; ``to_markdown()`` renders the table."""

    rows: list[ComparisonRow]
    results: list[RegimeResult] = field(repr=False, default_factory=list)

    def to_markdown(self) -> str:
        return markdown_table(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def run_regime(
    regime: Regime,
    splits: Splits,
    backbone: str = "mobilenet_v2",
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 32,
    preprocess: Preprocess | None = None,
    input_size: int | None = None,
    early_stopping: EarlyStopping | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    cache_dir: str | os.PathLike | None = None,
    progress: bool | str = True,
    make_param_groups: Callable[[nn.Module, float, float], list[dict]] | None = None,
    freeze_first_k: Callable[[nn.Module, int], list] | None = None,
) -> RegimeResult:
    """Train one regime on ``splits`` (train / val / test ImageSets) and evaluate it on the test set.

    The backbone gets a fresh ``len(splits.classes)``-way head (seeded with ``seed``). With frozen stages and the
    ``"frozen"`` BatchNorm policy the activations at the freeze boundary are cached once (train, val and test), and
    only the stages after it and the head run during training. ``preprocess`` defaults to the backbone's eval
    preprocessing at ``input_size`` (224 when ``None``). ``make_param_groups(model, lr, backbone_lr_scale)`` builds
    the optimizer's groups (default :func:`param_groups`; notebook 04's exercise writes one).
    ``freeze_first_k(model, k)`` freezes the first ``k`` stages in place of :func:`freeze` (notebook 03's exercise
    writes one; see :func:`freeze_by_hand`).
    """
    if not isinstance(regime, Regime):
        raise TypeError(f"regime: expected a Regime (e.g. Regime.head_only()), got {type(regime).__name__}")
    dev = resolve_device(device)
    with PeakMemory(dev) as mem:
        start = time.perf_counter()
        model = load_backbone(backbone, weights=regime.weights, device=dev)
        model.reset_classifier(len(splits.classes), splits.classes, seed=seed)
        model.to(dev)
        if freeze_first_k is None:
            freeze(model, regime.frozen, bn=regime.bn)
        else:
            freeze_by_hand(model, regime, freeze_first_k)
        prep = preprocess or Preprocess.from_spec(model.spec, size=input_size)
        head_lr = regime.lr if regime.lr is not None else lr
        groups = (make_param_groups or param_groups)(model, head_lr, regime.backbone_lr_scale)
        extract_s = 0.0
        if regime.uses_cache:
            t = time.perf_counter()
            train, val, test = FeatureCache(cache_dir).get_splits(
                model, splits, regime.frozen, prep, device=dev, progress=progress
            )
            extract_s = time.perf_counter() - t
            _, net = split_at(model, regime.frozen)
            transform = None
        else:
            train, val, test, net, transform = splits.train, splits.val, splits.test, model, prep
        history = fit(
            net,
            train,
            val,
            epochs=epochs,
            lr=head_lr,
            param_groups=groups,
            batch_size=batch_size,
            transform=transform,
            early_stopping=early_stopping,
            seed=seed,
            device=dev,
            progress=progress,
        )
        test_eval = evaluate(net, test, transform=transform, device=dev)
        train_s = time.perf_counter() - start
    summary = param_summary(model)
    row = ComparisonRow(
        regime=regime.name,
        frozen=regime.frozen,
        trainable_params=summary.trainable,
        test_acc=test_eval.accuracy,
        best_val_acc=max(history.val_acc) if history.val_acc else float("nan"),
        epochs=len(history),
        train_s=train_s,
        extract_s=extract_s,
        cached=regime.uses_cache,
        peak_mem_mb=mem.mb,
        memory_measure=mem.method,
    )
    return RegimeResult(row, model, history, test_eval)


def compare(
    regimes: Sequence[Regime],
    splits: Splits,
    backbone: str = "mobilenet_v2",
    *,
    epochs: int = 10,
    **kwargs,
) -> Comparison:
    """Run each regime on the same ``splits`` (see :func:`run_regime` for the keyword arguments).

    Returns a :class:`Comparison`: ``rows`` (test accuracy, time, trainable parameters, peak memory per regime),
    ``results`` (models, histories) and ``to_markdown()``.
    """
    if isinstance(regimes, Regime) or not regimes:
        raise ValueError(
            "regimes: expected a non-empty list of Regime objects, e.g. [Regime.head_only(), Regime.finetune()]"
        )
    results = [run_regime(r, splits, backbone, epochs=epochs, **kwargs) for r in regimes]
    return Comparison([r.row for r in results], results)
