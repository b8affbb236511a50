"""How far is a data set from ImageNet? Measured with linear probes on every stage of a frozen backbone.

A *linear probe* is a logistic-regression classifier trained on the frozen, globally average-pooled output of one
stage. Its test accuracy says how linearly separable the new classes are in that stage's features. Early stages
hold generic features (edges, colours, textures), late stages features specific to ImageNet's classes
(Yosinski et al. 2014, "How transferable are features in deep neural networks?", NeurIPS). So:

- on data *close* to ImageNet the probe accuracy rises to the last stage;
- on data *far* from ImageNet it peaks earlier, and with little data a probe on an earlier stage can beat the last
  stage: CS231n's fourth case ("small data set, very different: train a linear classifier on activations from
  somewhere earlier in the network").

The number this module reports for "distance from ImageNet" is :meth:`StageProbe.late`: the probe test accuracy of
the last stage minus that of the best earlier stage, the earlier stage chosen on *validation* accuracy (never on
the test set), paired over draws of the training images with its 95% interval (the course's one rule). Better: the
ImageNet-specific late features help (close); a tie or worse: they do not (far). It depends on the data, the
backbone *and* the input size, so compare data sets at the same resolution and per-class counts.

All stages are extracted in ONE pass per image (the pooled output of each stage is kept as the image flows
through), and the probes are fitted full-batch with L-BFGS, so a probe costs well under a second.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convlab.backbones import stages_of
from convlab.data import ImageSet
from convlab.device import eval_mode
from convlab.preprocess import Preprocess
from convlab.verdicts import PairedCI, paired_ci

__all__ = ["stage_features", "fit_linear_probe", "StageProbe", "stage_probe"]


@torch.no_grad()
def stage_features(
    model: nn.Module, images: ImageSet | torch.Tensor, preprocess: Preprocess, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """``{stage name: (N, C_stage) float32}``: the global-average-pooled output of every stage, in one pass.

    ``model`` is a convlab Backbone; it is run in eval mode (BatchNorm with ImageNet's statistics).
    """
    stages = stages_of(model)
    data = images.images if isinstance(images, ImageSet) else images
    out: dict[str, list[torch.Tensor]] = {name: [] for name, _ in stages.named_children()}
    dev = next(model.parameters()).device
    with eval_mode(model):
        for start in range(0, len(data), batch_size):
            chunk = data[start : start + batch_size]
            x = preprocess(chunk).to(dev)
            for name, stage in stages.named_children():
                x = stage(x)
                out[name].append(x.mean((2, 3)).float().cpu())
    return {name: torch.cat(parts) for name, parts in out.items()}


def fit_linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, weight_decay: float = 1e-2, max_iter: int = 100
) -> nn.Module:
    """Multinomial logistic regression on standardised features (L-BFGS, full batch, L2 ``weight_decay``).

    Returns a module mapping raw ``(N, D)`` features to ``(N, num_classes)`` logits (the standardisation, learned
    on the training features only, is part of it).
    """
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False).clamp_min(1e-6)
    linear = nn.Linear(train_x.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    z = (train_x - mean) / std
    opt = torch.optim.LBFGS(
        linear.parameters(), lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(linear(z), train_y) + weight_decay / 2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)

    class _Probe(nn.Module):
        def forward(self, x):
            return linear((x - mean) / std)

    return _Probe().eval()


@dataclass(frozen=True)
class StageProbe:
    """Linear-probe accuracy per stage: ``acc[stage]`` lists the test accuracy of each draw of the training images,
    ``val_acc[stage]`` the validation accuracy of the same probes (the stage to read out is chosen on it)."""

    name: str
    per_class: int
    input_size: int
    stages: tuple[str, ...]
    acc: dict[str, tuple[float, ...]]
    n_test: int
    val_acc: dict[str, tuple[float, ...]] | None = None

    def mean(self, stage: str) -> float:
        return statistics.fmean(self.acc[stage])

    def sem(self, stage: str) -> float:
        """Standard error of the mean over draws (0 with one draw)."""
        values = self.acc[stage]
        return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0

    @property
    def best_stage(self) -> str:
        """The stage with the best mean *validation* accuracy (test accuracy when no validation set was given)."""
        scores = self.val_acc or self.acc
        return max(self.stages, key=lambda s: statistics.fmean(scores[s]))

    @property
    def earlier_stage(self) -> str:
        """The best stage before the last, chosen on validation accuracy like :attr:`best_stage`."""
        scores = self.val_acc or self.acc
        return max(self.stages[:-1], key=lambda s: statistics.fmean(scores[s]))

    def late(self) -> PairedCI:
        """The last stage's test accuracy minus that of :attr:`earlier_stage`, paired over the draws, with its 95%
        interval (:func:`convlab.verdicts.paired_ci`)."""
        last, earlier = self.stages[-1], self.earlier_stage
        return paired_ci(self.acc[last], self.acc[earlier], f"{self.name}: {last} vs {earlier}")

    @property
    def late_gain(self) -> tuple[float, float]:
        """``(gain, standard error)`` of :meth:`late`."""
        last, earlier = self.stages[-1], self.earlier_stage
        diffs = [a - b for a, b in zip(self.acc[last], self.acc[earlier])]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
        return statistics.fmean(diffs), se

    @property
    def rows(self) -> list[dict]:
        return [
            {
                "data": self.name,
                "stage": s,
                "val_acc": round(statistics.fmean(self.val_acc[s]), 4) if self.val_acc else None,
                "probe_acc": round(self.mean(s), 4),
                "sem": round(self.sem(s), 4),
                "draws": len(self.acc[s]),
            }
            for s in self.stages
        ]

    def verdict(self) -> str:
        """One sentence computed from the numbers by the course's one rule (a paired 95% interval over draws)."""
        last, best = self.stages[-1], self.best_stage
        where = (
            f"the last stage ({last}) is best on validation"
            if best == last
            else f"the best stage on validation is {best} (test {self.mean(best):.3f}), "
            f"not the last ({self.mean(last):.3f})"
        )
        ci = self.late()
        kind = {
            "better": "the late, ImageNet-specific features help: close to ImageNet",
            "worse": "an earlier stage beats the last one beyond its interval: far from ImageNet "
            "(CS231n's fourth case)",
            "tie": "the last stage is no better than an earlier one (a tie): far-ish from ImageNet",
        }[ci.verdict]
        return (
            f"{self.name}, {self.per_class}/class, {self.input_size} px: {where}; late gain {ci.mean:+.3f}, 95% CI "
            f"{ci.interval(3, 1.0)} over {ci.n} draws -> {kind}"
        )


def stage_probe(
    model: nn.Module,
    train: ImageSet,
    test: ImageSet,
    preprocess: Preprocess,
    *,
    per_class: int,
    draws: Sequence[int] = (0, 1, 2),
    stages: Sequence[str] | None = None,
    name: str = "",
    weight_decay: float = 1e-2,
    val: ImageSet | None = None,
) -> StageProbe:
    """Fit a linear probe on each stage's pooled features, for several draws of ``per_class`` training images.

    Features of ``train`` (the pool the draws come from), ``test`` and ``val`` are extracted once; each draw (a seed
    in ``draws``) picks ``per_class`` images per class from ``train`` with :meth:`ImageSet.per_class`. With ``val``
    the stage to read out is chosen on validation accuracy, never on the test set.
    """
    names = tuple(stages or [n for n, _ in stages_of(model).named_children()])
    ftrain = stage_features(model, train, preprocess)
    ftest = stage_features(model, test, preprocess)
    fval = stage_features(model, val, preprocess) if val is not None else None
    num_classes = len(train.classes)
    ids = {image_id: i for i, image_id in enumerate(train.ids)}
    acc: dict[str, list[float]] = {s: [] for s in names}
    vacc: dict[str, list[float]] = {s: [] for s in names}
    for seed in draws:
        pick = torch.tensor([ids[i] for i in train.per_class(per_class, seed=seed).ids])
        for s in names:
            probe = fit_linear_probe(ftrain[s][pick], train.labels[pick], num_classes, weight_decay)
            with torch.no_grad():
                acc[s].append(float((probe(ftest[s]).argmax(1) == test.labels).double().mean()))
                if fval is not None:
                    vacc[s].append(float((probe(fval[s]).argmax(1) == val.labels).double().mean()))
    size = preprocess.size
    val_acc = {s: tuple(v) for s, v in vacc.items()} if fval is not None else None
    return StageProbe(name, per_class, size, names, {s: tuple(v) for s, v in acc.items()}, len(test), val_acc)
