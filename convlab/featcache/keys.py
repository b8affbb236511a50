"""Cache keys: everything that changes a cache entry's content, described stably and hashed.

:class:`CacheKey` holds the backbone, a sha256 of the frozen stages' state, the cut point, the preprocessing and the
data set's own transform (each by :func:`describe_transform`), the data set's fingerprint, the storage dtype and the
torch / torchvision versions; its ``digest`` names the entry's folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from convlab.backbones import as_backbone
from convlab.preprocess import Preprocess

if TYPE_CHECKING:  # annotations only
    from collections.abc import Callable

    from torch.utils.data import Dataset

__all__ = [
    "FORMAT",
    "DTYPES",
    "CacheKey",
    "cache_key",
    "dataset_fingerprint",
    "describe_transform",
    "state_dict_sha256",
]

#: The on-disk format of an entry (part of every key and manifest).
FORMAT = 1
#: The storage dtypes and their names in a key.
DTYPES = {torch.float32: "float32", torch.float16: "float16"}


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict: every name, dtype, shape and value (parameters and buffers)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def dataset_fingerprint(dataset: Dataset) -> str:
    """``dataset.fingerprint()`` when it has one (a convlab ImageSet), else a sha256 over every item."""
    fp = getattr(dataset, "fingerprint", None)
    if callable(fp):
        return str(fp())
    h = hashlib.sha256()
    for i in range(len(dataset)):
        x, y = dataset[i]
        x = torch.as_tensor(x).contiguous()
        h.update(f"{x.dtype}|{tuple(x.shape)}|{int(y)}|".encode())
        h.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _untrusted_parts(transform, seen=None) -> list[str]:
    """Components of a torchvision transform tree whose ``repr`` does not describe what they compute."""
    seen = set() if seen is None else seen
    if id(transform) in seen:
        return []
    seen.add(id(transform))
    name = type(transform).__name__
    if isinstance(transform, Preprocess) or callable(getattr(transform, "cache_key", None)):
        return []
    if not type(transform).__module__.startswith("torchvision.transforms") or name == "Lambda":
        return [f"{type(transform).__module__}.{type(transform).__qualname__}"]
    children = list(getattr(transform, "transforms", []) or [])
    if isinstance(transform, nn.Module):
        children += list(transform.children())
    return [part for child in children for part in _untrusted_parts(child, seen)]


def describe_transform(transform, argument: str = "preprocess") -> dict:
    """A stable description of everything that changes ``transform``'s output (part of a cache key).

    Accepted: a :class:`Preprocess` (its fields); a callable with a ``cache_key()`` method returning a
    JSON-serialisable description (yours to keep complete: include every setting that changes the output, and
    change it when the code changes); torchvision transforms, whose ``repr`` lists their parameters. Anything else
    raises ``ValueError`` naming ``argument``: a plain function or an object without ``cache_key()`` has no
    description that changes when its behaviour does (its ``repr`` is at best a name, at worst a memory address
    that differs between runs), so keying by it would serve stale features.
    """
    kind = f"{type(transform).__module__}.{type(transform).__qualname__}"
    if isinstance(transform, Preprocess):
        return transform.key()
    key_fn = getattr(transform, "cache_key", None)
    if callable(key_fn):
        key = key_fn()
        try:
            json.dumps(key, sort_keys=True)
        except (TypeError, ValueError):
            raise TypeError(
                f"{argument}: expected {kind}.cache_key() to return a JSON-serialisable description "
                f"(str, number, list or dict), got {type(key).__name__}"
            ) from None
        return {"callable": kind, "cache_key": key}
    text = repr(transform)
    untrusted = _untrusted_parts(transform)
    if not untrusted and not _ADDRESS.search(text):
        return {"callable": kind, "repr": text}
    shown = " ".join(text.split())[:120]
    raise ValueError(
        f"{argument}: expected a Preprocess, a torchvision transform, or a callable with a cache_key() method that "
        f"describes everything that changes its output; got {shown} ({', '.join(untrusted) or kind} has no "
        "stable description: its repr does not change when its behaviour does). A feature cache keyed by it could "
        "serve features computed by an older version. Add a method `def cache_key(self): return {...every "
        "setting...}` to it, use Preprocess, or compute the features uncached with extract_features()."
    )


@dataclass(frozen=True)
class CacheKey:
    """Everything that determines a cache entry's content; ``digest`` (sha256 of it) names the entry."""

    backbone: str
    weights_sha256: str
    stage: int
    stage_name: str
    preprocess: str
    dataset: str
    dataset_transform: str
    dtype: str
    fold_batchnorm: bool
    torch: str
    torchvision: str
    format: int = FORMAT

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    @property
    def folder_name(self) -> str:
        return f"{self.backbone}-{self.stage_name}-{self.digest[:20]}"


def cache_key(
    model: nn.Module,
    dataset: Dataset,
    stage: int | str,
    preprocess: Preprocess | Callable | None,
    dtype: torch.dtype = torch.float32,
    fold_batchnorm: bool = False,
) -> CacheKey:
    """The key of the activations of the first ``stage`` stages of ``model`` on ``dataset`` after ``preprocess``."""
    import torchvision

    k = as_backbone(model).resolve_k(stage)
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected torch.float32 or torch.float16, got {dtype!r}")
    frozen, _ = model.split_at(k)
    names = [n for n, _ in model.stages.named_children()]
    transform = getattr(dataset, "transform", None)
    spec = getattr(model, "spec", None)
    return CacheKey(
        backbone=getattr(spec, "name", type(model).__name__),
        weights_sha256=state_dict_sha256(frozen),
        stage=k,
        stage_name=names[k - 1] + ("+pool" if k == len(names) else "") if k else "input",
        preprocess=json.dumps(describe_transform(preprocess, "preprocess"), sort_keys=True),
        dataset=dataset_fingerprint(dataset),
        dataset_transform=""
        if transform is None
        else json.dumps(describe_transform(transform, "dataset.transform"), sort_keys=True),
        dtype=DTYPES[dtype],
        fold_batchnorm=bool(fold_batchnorm),
        torch=torch.__version__,
        torchvision=torchvision.__version__,
    )
