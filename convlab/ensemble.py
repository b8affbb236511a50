"""Ensembles of trained models, and what their accuracy costs (GoogLeNet's "models x crops" table).

:class:`Ensemble` averages the members' *probabilities* (optionally weighted). Its ``forward`` returns the log of
that average, so ``softmax(ensemble(x))`` is the averaged probability and an ensemble drops into anything that
expects logits, including :func:`convlab.tta.predict_views` (ensemble x 10-crop = mean over members and views)::

    ens = Ensemble([mobilenet, efficientnet])           # refuses members whose class orders differ
    probs = predict_views(ens, photos, ViewSet.ten_crop(224))
    table = compare_configurations(standard_configurations([m1, m2, m3]), photos, labels)
    plot_accuracy_vs_cost(table)

Members of one architecture can run batched through ``torch.func`` (``stack_module_state`` + ``functional_call``
+ ``vmap``). On 2 CPU cores that was 1.7-3.3x *slower* than a plain loop over members, so ``strategy="auto"``
measures both once per device and keeps the faster (``strategy_`` records the decision and the timings).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from convlab._checks import check_uint8_images
from convlab.device import model_device, synchronize
from convlab.display import Table
from convlab.memory import PeakMemory
from convlab.tta import ViewSet, predict_views

if TYPE_CHECKING:  # annotations only: no import cost or cycle at run time
    from matplotlib.figure import Figure

__all__ = [
    "Ensemble",
    "EnsembleSpec",
    "measure_inference",
    "compare_configurations",
    "standard_configurations",
    "plot_accuracy_vs_cost",
]

_STRATEGIES = ("loop", "vmap", "auto")


@dataclass(frozen=True)
class EnsembleSpec:
    """What :func:`~convlab.tta.predict_views` needs: crop size and the input normalisation of the ensemble.

    When members normalise differently (MobileNetV2: ImageNet mean/std; EfficientNet-Lite: (x - 127) / 128),
    the ensemble takes ``[0, 1]`` pixels (``mean`` 0, ``std`` 1) and each member re-normalises its own copy.
    """

    name: str
    input_size: int
    resize_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _name_of(model: nn.Module, index: int) -> str:
    spec = getattr(model, "spec", None)
    return f"{index}:{getattr(spec, 'name', type(model).__name__)}"


def _signature(model: nn.Module) -> tuple:
    """Members with equal signatures compute the same function of (parameters, buffers, input): vmap-able together."""
    return (
        type(model),
        repr(model),
        tuple((k, tuple(v.shape), v.dtype) for k, v in model.named_parameters()),
        tuple((k, tuple(v.shape), v.dtype) for k, v in model.named_buffers()),
    )


class Ensemble(nn.Module):
    """M models with the same class order; the output is the log of their (weighted) mean probability.

    Args:
        members: the models (``nn.Module``, each with ``.categories``: its class names in output order).
        weights: one non-negative weight per member (normalised to sum 1); default equal weights.
        strategy: ``"loop"`` (one forward per member), ``"vmap"`` (members of one architecture batched with
            ``torch.func``; others still looped), or ``"auto"`` (measure both on the first batch seen on each
            device and keep the faster; see ``strategy_``).

    Raises:
        ValueError: no members, bad weights or strategy, or class orders that differ (the message names the two
            members and the first differing class). TypeError: a member is not an ``nn.Module`` or has no
            ``.categories``.
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float] | None = None, strategy: str = "auto"):
        super().__init__()
        if isinstance(members, nn.Module) or not isinstance(members, Sequence):
            raise TypeError(f"members: expected a sequence of nn.Module, got {type(members).__name__}")
        if len(members) == 0:
            raise ValueError("members: expected at least one model, got an empty sequence")
        for i, m in enumerate(members):
            if not isinstance(m, nn.Module):
                raise TypeError(f"members[{i}]: expected an nn.Module, got {type(m).__name__}")
            if getattr(m, "categories", None) is None:
                raise TypeError(
                    f"members[{i}]: has no .categories (its class names in output order); set it so "
                    "the ensemble can check that all members agree"
                )
        self.members = nn.ModuleList(members)
        self.names = tuple(_name_of(m, i) for i, m in enumerate(members))
        self.categories = self._check_categories()
        self.weights = self._check_weights(weights)
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy: expected one of {_STRATEGIES}, got {strategy!r}")
        self.strategy = strategy
        self.strategy_: dict[str, dict] = {}  # device -> {"strategy": ..., "seconds": {...}} once measured
        self.spec, self._affine = self._make_spec()
        self._stacked: dict = {}

    # ------------------------------------------------------------------ checks
    def _check_categories(self) -> tuple[str, ...]:
        ref = tuple(self.members[0].categories)
        for i, m in enumerate(self.members):
            cats = tuple(m.categories)
            if cats == ref:
                continue
            first = next((j for j, (a, b) in enumerate(zip(ref, cats)) if a != b), min(len(ref), len(cats)))
            a = repr(ref[first]) if first < len(ref) else "<end>"
            b = repr(cats[first]) if first < len(cats) else "<end>"
            counts = "" if len(cats) == len(ref) else f" ({len(cats)} classes vs {len(ref)})"
            raise ValueError(
                f"members: class orders differ between {self.names[i]} and {self.names[0]}{counts}; the first "
                f"difference is at index {first}: {b} vs {a}. Averaging probabilities needs the same class at the "
                "same output index in every member."
            )
        return ref

    def _check_weights(self, weights: Sequence[float] | None) -> Tensor:
        M = len(self.members)
        if weights is None:
            return torch.full((M,), 1.0 / M)
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()
        if len(w) != M or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"weights: expected {M} finite non-negative numbers with a positive sum, got {list(weights)!r}"
            )
        return (w / w.sum()).float()

    def _make_spec(self) -> tuple[EnsembleSpec | None, list]:
        """The ensemble's input spec, and per member ``None`` or the ``(a, b)`` of ``x_m = x * a + b``."""
        specs = [getattr(m, "spec", None) for m in self.members]
        if any(s is None for s in specs):
            return None, [None] * len(specs)  # predict_views then needs mean/std and views passed explicitly
        same = all((s.mean, s.std) == (specs[0].mean, specs[0].std) for s in specs)
        mean, std = (specs[0].mean, specs[0].std) if same else ((0.0,) * len(specs[0].mean), (1.0,) * len(specs[0].std))
        # Each member maps the ensemble's normalised input to its own: x_m = x * a_m + b_m.
        affine = []
        for s in specs:
            a = torch.tensor(std) / torch.tensor(s.std)
            b = (torch.tensor(mean) - torch.tensor(s.mean)) / torch.tensor(s.std)
            ident = bool(torch.allclose(a, torch.ones_like(a)) and torch.allclose(b, torch.zeros_like(b)))
            affine.append(None if ident else (a.view(-1, 1, 1), b.view(-1, 1, 1)))
        name = "+".join(s.name for s in specs)
        return EnsembleSpec(name, specs[0].input_size, specs[0].resize_size, tuple(mean), tuple(std)), affine

    # ------------------------------------------------------------------ forward
    def _member_input(self, i: int, x: Tensor) -> Tensor:
        aff = self._affine[i]
        return x if aff is None else x * aff[0].to(x.device) + aff[1].to(x.device)

    def _groups(self) -> list[list[int]]:
        """Members grouped by architecture (equal :func:`_signature` and input normalisation)."""
        groups: dict = {}
        for i, m in enumerate(self.members):
            aff = self._affine[i]
            key = (
                _signature(m),
                None if aff is None else tuple(torch.cat([aff[0].flatten(), aff[1].flatten()]).tolist()),
            )
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    def _loop(self, x: Tensor) -> Tensor:
        return torch.stack([m(self._member_input(i, x)) for i, m in enumerate(self.members)])

    def _stack(self, idx: list[int]):
        """Stacked parameters of members ``idx``, cached until any of them changes (tensor version counters)."""
        tensors = [t for i in idx for t in (*self.members[i].parameters(), *self.members[i].buffers())]
        # Inference-mode copies cannot be used where autograd records, so the mode is part of the key.
        key = (
            tuple(idx),
            torch.is_inference_mode_enabled(),
            tuple((t.data_ptr(), t._version, t.device) for t in tensors),
        )
        hit = self._stacked.get(tuple(idx))
        if hit is None or hit[0] != key:
            from torch.func import stack_module_state

            with torch.no_grad():
                params, buffers = stack_module_state([self.members[i] for i in idx])
            base = copy.deepcopy(self.members[idx[0]]).to("meta")
            hit = (key, base, params, buffers)
            self._stacked[tuple(idx)] = hit
        return hit[1:]

    def _vmap(self, x: Tensor) -> Tensor:
        from torch.func import functional_call

        out: list[Tensor | None] = [None] * len(self.members)
        for idx in self._groups():
            xi = self._member_input(idx[0], x)
            if len(idx) == 1:
                out[idx[0]] = self.members[idx[0]](xi)
                continue
            base, params, buffers = self._stack(idx)

            def call(p, b, inp, base=base):
                return functional_call(base, (p, b), (inp,))

            logits = torch.vmap(call, in_dims=(0, 0, None))(params, buffers, xi)
            for k, i in enumerate(idx):
                out[i] = logits[k]
        return torch.stack(out)

    def _decide(self, x: Tensor) -> str:
        """Time loop and vmap once on (up to 16 of) these inputs, after a warm-up each; keep the faster."""
        key = str(x.device)
        if key not in self.strategy_:
            if all(len(g) == 1 for g in self._groups()):
                self.strategy_[key] = {"strategy": "loop", "reason": "no two members share an architecture"}
            else:
                probe, seconds = x[:16], {}
                try:
                    for name, fn in (("loop", self._loop), ("vmap", self._vmap)):
                        fn(probe)
                        synchronize(x.device)
                        t = time.perf_counter()
                        fn(probe)
                        synchronize(x.device)
                        seconds[name] = time.perf_counter() - t
                    best = min(seconds, key=seconds.get)
                    self.strategy_[key] = {"strategy": best, "seconds": seconds, "probe_batch": len(probe)}
                except RuntimeError as exc:  # an architecture vmap cannot batch
                    warnings.warn(f"Ensemble: vmap failed ({exc}); using the loop", stacklevel=3)
                    self.strategy_[key] = {"strategy": "loop", "reason": f"vmap failed: {exc}"}
        return self.strategy_[key]["strategy"]

    def member_logits(self, x: Tensor) -> Tensor:
        """``(n, C, h, w)`` -> ``(M, n, K)`` logits of every member, by the chosen strategy."""
        strategy = self._decide(x) if self.strategy == "auto" else self.strategy
        return self._vmap(x) if strategy == "vmap" else self._loop(x)

    def forward(self, x: Tensor) -> Tensor:
        """``(n, C, h, w)`` -> ``(n, K)`` log of the weighted mean of the members' softmax probabilities."""
        logp = self.member_logits(x).log_softmax(dim=-1)
        w = self.weights.to(device=logp.device, dtype=logp.dtype).log().view(-1, 1, 1)
        return torch.logsumexp(logp + w, dim=0)

    def predict_proba(self, x: Tensor) -> Tensor:
        """``(n, C, h, w)`` -> ``(n, K)`` weighted mean probabilities."""
        return self(x).exp()

    def combine(self, member_probs: Tensor) -> Tensor:
        """``(M, n, K)`` probabilities the members already gave (e.g. averaged over views) -> ``(n, K)``, their
        weighted mean: what :meth:`predict_proba` computes, without running the members again."""
        if member_probs.ndim != 3 or member_probs.shape[0] != len(self.members):
            raise ValueError(
                f"member_probs: expected shape ({len(self.members)}, n, K), got {tuple(member_probs.shape)}"
            )
        w = self.weights.to(device=member_probs.device, dtype=member_probs.dtype).view(-1, 1, 1)
        return (member_probs * w).sum(0)

    def extra_repr(self) -> str:
        return f"names={self.names}, weights={[round(w, 4) for w in self.weights.tolist()]}, strategy={self.strategy!r}"


# ----------------------------------------------------------------------------- measuring
def _members_of(model: nn.Module) -> int:
    return len(model.members) if isinstance(model, Ensemble) else 1


def measure_inference(
    model: nn.Module,
    images: Tensor | Sequence[Tensor],
    labels: Sequence[int] | Tensor,
    views: ViewSet | None = None,
    *,
    name: str | None = None,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict:
    """Top-1 accuracy, wall time per image and peak memory of one :func:`~convlab.tta.predict_views` run.

    Returns a row: ``config``, ``models``, ``crops``, ``forwards_per_image`` (models x crops, the cost unit of
    GoogLeNet's table), ``top1`` (fraction), ``ms_per_image`` (wall clock, including building the crops),
    ``peak_mem_mb`` and ``memory_measure`` (what ``peak_mem_mb`` means on this device; see
    :class:`~convlab.memory.PeakMemory`).
    The first call on a device also pays one-off costs (an ``"auto"`` ensemble's strategy probe, allocator
    warm-up): call once before measuring when comparing times.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    source = check_uint8_images(images)
    if labels.ndim != 1 or len(labels) != len(source):
        raise ValueError(f"labels: expected shape ({len(source)},), got {tuple(labels.shape)}")
    views = views if views is not None else ViewSet.center(model.spec.input_size)
    dev = model_device(model) if device is None else torch.device(device)
    with PeakMemory(dev) as mem:
        synchronize(dev)
        t = time.perf_counter()
        probs = predict_views(model, source, views, chunk_size=chunk_size, device=dev)
        synchronize(dev)
        seconds = time.perf_counter() - t
    top1 = int((probs.argmax(dim=1).cpu() == labels).sum()) / len(labels)  # correct / n, as convlab.engine
    models = _members_of(model)
    return {
        "config": name or f"{models} model{'s' * (models > 1)} x {len(views)} crop{'s' * (len(views) > 1)}",
        "models": models,
        "crops": len(views),
        "forwards_per_image": models * len(views),
        "top1": top1,
        "ms_per_image": 1000 * seconds / len(source),
        "peak_mem_mb": mem.mb,
        "memory_measure": mem.method,
    }


def standard_configurations(
    models: Sequence[nn.Module], crops: Sequence[ViewSet] | None = None, strategy: str = "auto"
) -> dict[str, tuple[nn.Module, ViewSet]]:
    """GoogLeNet's grid: the first model alone, then ensembles of the first 2, 3, .., M, each with every view set.

    ``crops`` defaults to ``(ViewSet.center(S), ViewSet.ten_crop(S))`` with ``S`` the first model's input size.
    """
    if len(models) == 0:
        raise ValueError("models: expected at least one model, got none")
    size = models[0].spec.input_size
    crops = crops or (ViewSet.center(size), ViewSet.ten_crop(size))
    configs = {}
    for m in range(1, len(models) + 1):
        model = models[0] if m == 1 else Ensemble(list(models[:m]), strategy=strategy)
        for vs in crops:
            configs[f"{m} model{'s' * (m > 1)} x {len(vs)} crop{'s' * (len(vs) > 1)}"] = (model, vs)
    return configs


def compare_configurations(
    configs: Mapping[str, tuple[nn.Module, ViewSet]],
    images: Tensor | Sequence[Tensor],
    labels: Sequence[int] | Tensor,
    *,
    chunk_size: int | None = None,
    warmup: bool = True,
    title: str = "accuracy vs cost",
) -> Table:
    """:func:`measure_inference` for each ``name -> (model, views)``, as a :class:`~convlab.display.Table`.

    ``warmup`` first runs each configuration on two images so one-off costs stay out of the times.
    """
    if not configs:
        raise ValueError("configs: expected at least one (model, views) configuration, got none")
    rows = []
    source = check_uint8_images(images)
    for name, (model, views) in configs.items():
        if warmup:
            predict_views(model, source[:2], views, chunk_size=chunk_size)
        rows.append(measure_inference(model, source, labels, views, name=name, chunk_size=chunk_size))
    return Table(rows, title=title)


def plot_accuracy_vs_cost(rows: Table | Sequence[Mapping], cost: str = "ms_per_image") -> Figure:
    """Top-1 against ``cost`` (``"ms_per_image"``, ``"forwards_per_image"`` or ``"peak_mem_mb"``), one line per
    number of crops and one point per ensemble size, labelled like GoogLeNet's table. Returns the Figure."""
    import matplotlib.pyplot as plt

    rows = list(rows.rows if isinstance(rows, Table) else rows)
    if not rows:
        raise ValueError("rows: expected at least one measurement row, got none")
    if cost not in rows[0]:
        raise ValueError(f"cost: expected a column of the rows such as 'ms_per_image', got {cost!r}")
    fig, ax = plt.subplots(figsize=(6, 4))
    for crops in sorted({r["crops"] for r in rows}):
        sel = sorted((r for r in rows if r["crops"] == crops), key=lambda r: r[cost])
        ax.plot([r[cost] for r in sel], [100 * r["top1"] for r in sel], "o-", label=f"{crops} crop{'s' * (crops > 1)}")
        for r in sel:
            ax.annotate(
                f"{r['models']}m", (r[cost], 100 * r["top1"]), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
    ax.set_xscale("log" if max(r[cost] for r in rows) > 10 * max(min(r[cost] for r in rows), 1e-9) else "linear")
    ax.set_xlabel(
        {
            "ms_per_image": "time per image (ms)",
            "forwards_per_image": "forward passes per image",
            "peak_mem_mb": "peak memory (MB)",
        }.get(cost, cost)
    )
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Ensembles and multi-crop: accuracy vs cost")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
