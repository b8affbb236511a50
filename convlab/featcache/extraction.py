"""Extraction: the first ``k`` stages of a backbone run once over a data set (eval mode, batched), optionally with
each BatchNorm folded into the convolution before it."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from convlab.backbones import as_backbone
from convlab.device import resolve_device, use_channels_last
from convlab.featcache.randomness import check_deterministic
from convlab.featcache.views import CachedFeatures
from convlab.preprocess import Preprocess

if TYPE_CHECKING:  # annotations only
    from collections.abc import Callable

    from torch.utils.data import Dataset

__all__ = ["Extraction", "extract_features"]


def _default_batch(batch_size: int | None, device: torch.device) -> int:
    # On a CPU, small batches are faster per image: the activations of a few images stay in the caches
    # (benchmarks/bench_transfer.py measures it per batch size; its JSON is in benchmarks/results/).
    if batch_size is None:
        return 8 if device.type == "cpu" else 64
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected None or an int >= 1, got {batch_size!r}")
    return batch_size


def _fold_batchnorm(frozen: nn.Module, probe: torch.Tensor) -> nn.Module:
    """A copy of the (eval-mode) frozen part with each BatchNorm that directly follows a convolution folded into it.

    In eval mode ``bn(conv(x))`` is one affine map per channel after the convolution, so it folds into the conv's
    weight and bias: one pass over the activations instead of two (faster extraction on a CPU; see
    ``benchmarks/bench_transfer.py``). Pairs are found by running ``probe`` with hooks (the BatchNorm's input *is*
    the conv's output tensor), which works for any module structure; the folded copy is used only if it reproduces
    the original output on ``probe`` (to float rounding), else the original is kept. The model itself is never
    changed.
    """
    folded = copy.deepcopy(frozen).eval()
    convs, pairs, handles = {}, [], []

    def on_conv(module, args, out):
        convs[id(out)] = (module, out)  # keep ``out`` alive so its id stays unique during the probe

    def on_bn(module, args, out):
        hit = convs.get(id(args[0]))
        if hit is not None and hit[1] is args[0]:
            pairs.append((hit[0], module))

    for m in folded.modules():
        if type(m) is nn.BatchNorm2d and m.track_running_stats:
            handles.append(m.register_forward_hook(on_bn))
        elif isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(on_conv))
    try:
        with torch.inference_mode():
            reference = frozen(probe)
            folded(probe)
    finally:
        for h in handles:
            h.remove()
        convs.clear()
    parents = {id(child): (parent, name) for parent in folded.modules() for name, child in parent.named_children()}
    used = set()
    with torch.no_grad():
        for conv, bn in pairs:
            if id(conv) in used or id(bn) in used:
                continue
            used.update((id(conv), id(bn)))
            scale = torch.rsqrt(bn.running_var + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight
            bias = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0)
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1), requires_grad=False)
            conv.bias = nn.Parameter(bias, requires_grad=False)
            parent, name = parents[id(bn)]
            setattr(parent, name, nn.Identity())
        with torch.inference_mode():
            out = folded(probe)
    tol = 1e-4 * float(reference.abs().max()) + 1e-5
    return folded if pairs and torch.allclose(out, reference, rtol=1e-4, atol=tol) else frozen


@dataclass(frozen=True)
class Extraction:
    """One extraction, its arguments resolved: the first ``k`` stages of ``model`` on ``dataset`` after ``preprocess``.

    What both :func:`extract_features` and :meth:`FeatureCache.get` run; only ``dtype`` and ``fold_batchnorm`` change
    the values (they are part of the cache key), the rest only the speed.
    """

    model: nn.Module
    dataset: Dataset
    k: int
    preprocess: Callable
    batch_size: int
    dtype: torch.dtype
    device: torch.device
    channels_last: bool
    fold_batchnorm: bool

    @classmethod
    def resolve(cls, model, dataset, stage, preprocess, batch_size, dtype, device, channels_last, fold_batchnorm):
        """The defaults filled in (see :meth:`FeatureCache.get`); a random ``preprocess`` is refused."""
        k = as_backbone(model).resolve_k(stage)
        preprocess = preprocess or Preprocess.from_spec(model.spec)
        check_deterministic(dataset, preprocess)
        dev = resolve_device(device)
        cl = use_channels_last(channels_last, dev)
        return cls(model, dataset, k, preprocess, _default_batch(batch_size, dev), dtype, dev, cl, fold_batchnorm)

    @contextlib.contextmanager
    def outputs(self, chunks) -> Iterator[Iterator[tuple[int, np.ndarray, list[int]]]]:
        """Yields an iterator of ``(chunk_index, features (numpy), labels)`` for each ``(index, start, stop)`` chunk,
        in batches; the frozen stages run in eval mode, and get their modes back when the ``with`` block ends."""
        frozen, _ = self.model.split_at(self.k)
        # Each module's own mode, not device.eval_mode's one flag: train(mode) on the frozen part would put a
        # BatchNorm that transfer's policy holds in eval back into train mode.
        modes = {m: m.training for m in frozen.modules()}
        frozen.eval().to(self.device)
        if self.channels_last:
            frozen.to(memory_format=torch.channels_last)
        try:
            yield self._run(frozen, chunks)
        finally:
            for m, mode in modes.items():
                m.training = mode

    def _run(self, frozen: nn.Module, chunks) -> Iterator[tuple[int, np.ndarray, list[int]]]:
        fold, size = self.fold_batchnorm, self.batch_size
        with torch.inference_mode():
            for c, start, stop in chunks:
                parts, labels = [], []
                for b in range(start, stop, size):
                    items = [self.dataset[i] for i in range(b, min(b + size, stop))]
                    x = self.preprocess([im for im, _ in items]).to(self.device)
                    if self.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    if fold:
                        with torch.inference_mode(False):
                            frozen, fold = _fold_batchnorm(frozen, x[:2].clone()), False
                    parts.append(frozen(x).to("cpu", self.dtype).contiguous())
                    labels += [int(y) for _, y in items]
                yield c, torch.cat(parts).numpy(), labels


def extract_features(
    model: nn.Module,
    dataset: Dataset,
    stage: int | str,
    preprocess: Preprocess | Callable | None = None,
    *,
    batch_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "auto",
    channels_last: bool | None = None,
    fold_batchnorm: bool = False,
) -> CachedFeatures:
    """The frozen part's activations in memory (no disk, no key); see :meth:`FeatureCache.get` for the arguments."""
    job = Extraction.resolve(
        model, dataset, stage, preprocess, batch_size, dtype, device, channels_last, fold_batchnorm
    )
    with job.outputs([(0, 0, len(dataset))]) as outputs:
        parts = list(outputs)
    feats = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    labels = torch.tensor([y for p in parts for y in p[2]], dtype=torch.long)
    return CachedFeatures(feats, labels, getattr(dataset, "classes", ()))
