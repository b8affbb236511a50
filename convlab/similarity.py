"""How far is a data set from ImageNet? Measured with linear probes on every stage of a frozen backbone.

A *linear probe* is a logistic-regression classifier trained on the frozen, globally average-pooled output of one
stage. Its test accuracy says how linearly separable the new classes are in that stage's features. Early stages
hold generic features (edges, colours, textures), late stages features specific to ImageNet's classes
(Yosinski et al. 2014, "How transferable are features in deep neural networks?", NeurIPS). So:

- on data *close* to ImageNet the probe accuracy rises to the last stage;
- on data *far* from ImageNet it peaks earlier, and with little data a probe on an earlier stage can beat the last
  stage: CS231n's fourth case ("small data set, very different: train a linear classifier on activations from
  somewhere earlier in the network").

The number this module reports for "distance from ImageNet" is :attr:`StageProbe.late_gain`: the probe accuracy of
the last stage minus the best accuracy of any earlier stage (mean over draws of the training images, with its
standard error). Positive: the ImageNet-specific late features help (close); near zero or negative: they do not
(far). It depends on the data, the backbone *and* the input size, so compare data sets at the same settings.

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

__all__ = ["stage_features", "fit_linear_probe", "StageProbe", "stage_probe"]


@torch.no_grad()
def stage_features(model: nn.Module, images: ImageSet | torch.Tensor, preprocess: Preprocess,
                   batch_size: int = 256) -> dict[str, torch.Tensor]:
    """``{stage name: (N, C_stage) float32}``: the global-average-pooled output of every stage, in one pass.

    ``model`` is a convlab Backbone; it is run in eval mode (BatchNorm with ImageNet's statistics).
    """
    stages = stages_of(model)
    data = images.images if isinstance(images, ImageSet) else images
    out: dict[str, list[torch.Tensor]] = {name: [] for name, _ in stages.named_children()}
    dev = next(model.parameters()).device
    with eval_mode(model):
        for start in range(0, len(data), batch_size):
            chunk = data[start:start + batch_size]
            x = preprocess(chunk).to(dev)
            for name, stage in stages.named_children():
                x = stage(x)
                out[name].append(x.mean((2, 3)).float().cpu())
    return {name: torch.cat(parts) for name, parts in out.items()}


def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, weight_decay: float = 1e-2,
                     max_iter: int = 100) -> nn.Module:
    """Multinomial logistic regression on standardised features (L-BFGS, full batch, L2 ``weight_decay``).

    Returns a module mapping raw ``(N, D)`` features to ``(N, num_classes)`` logits (the standardisation, learned
    on the training features only, is part of it).
    """
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False).clamp_min(1e-6)
    linear = nn.Linear(train_x.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    z = (train_x - mean) / std
    opt = torch.optim.LBFGS(linear.parameters(), lr=1, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

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
    """Linear-probe test accuracy per stage: ``acc[stage]`` lists one value per draw of the training images."""

    name: str
    per_class: int
    input_size: int
    stages: tuple[str, ...]
    acc: dict[str, tuple[float, ...]]
    n_test: int

    def mean(self, stage: str) -> float:
        return statistics.fmean(self.acc[stage])

    def sem(self, stage: str) -> float:
        """Standard error of the mean over draws (0 with one draw)."""
        values = self.acc[stage]
        return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0

    @property
    def best_stage(self) -> str:
        return max(self.stages, key=self.mean)

    @property
    def late_gain(self) -> tuple[float, float]:
        """``(gain, standard error)``: last stage minus the best earlier stage, paired over the same draws."""
        last = self.stages[-1]
        earlier = max(self.stages[:-1], key=self.mean)
        diffs = [a - b for a, b in zip(self.acc[last], self.acc[earlier])]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
        return statistics.fmean(diffs), se

    @property
    def rows(self) -> list[dict]:
        return [{"data": self.name, "stage": s, "probe_acc": round(self.mean(s), 4), "sem": round(self.sem(s), 4),
                 "draws": len(self.acc[s])} for s in self.stages]

    def verdict(self) -> str:
        """One sentence computed from the numbers, with the noise taken into account (two standard errors)."""
        gain, se = self.late_gain
        last, best = self.stages[-1], self.best_stage
        where = (f"the last stage ({last}) is best" if best == last
                 else f"the best stage is {best} ({self.mean(best):.3f}), not the last ({self.mean(last):.3f})")
        if gain > 2 * se:
            kind = "the late, ImageNet-specific features help: close to ImageNet"
        elif gain < -2 * se:
            kind = "an earlier stage beats the last one beyond noise: far from ImageNet (CS231n's fourth case)"
        else:
            kind = "the last stage is no better than an earlier one (within two standard errors): far-ish from ImageNet"
        return (f"{self.name}, {self.per_class}/class, {self.input_size} px: {where}; late gain "
                f"{gain:+.3f} ± {se:.3f} -> {kind}")


def stage_probe(model: nn.Module, train: ImageSet, test: ImageSet, preprocess: Preprocess, *, per_class: int,
                draws: Sequence[int] = (0, 1, 2), stages: Sequence[str] | None = None, name: str = "",
                weight_decay: float = 1e-2) -> StageProbe:
    """Fit a linear probe on each stage's pooled features, for several draws of ``per_class`` training images.

    Features of ``train`` (the pool the draws come from) and ``test`` are extracted once; each draw (a seed in
    ``draws``) picks ``per_class`` images per class from ``train`` with :meth:`ImageSet.per_class`.
    """
    names = tuple(stages or [n for n, _ in stages_of(model).named_children()])
    ftrain = stage_features(model, train, preprocess)
    ftest = stage_features(model, test, preprocess)
    num_classes = len(train.classes)
    ids = {image_id: i for i, image_id in enumerate(train.ids)}
    acc: dict[str, list[float]] = {s: [] for s in names}
    for seed in draws:
        pick = torch.tensor([ids[i] for i in train.per_class(per_class, seed=seed).ids])
        for s in names:
            probe = fit_linear_probe(ftrain[s][pick], train.labels[pick], num_classes, weight_decay)
            with torch.no_grad():
                acc[s].append(float((probe(ftest[s]).argmax(1) == test.labels).double().mean()))
    size = preprocess.size
    return StageProbe(name, per_class, size, names, {s: tuple(v) for s, v in acc.items()}, len(test))
