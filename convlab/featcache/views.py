"""Dataset views of cached activations: :class:`CachedFeatures` (memory-mapped rows, subsets without copies) and
:class:`ImageUnion` (the images of several splits as one data set, so every split of one pool shares an entry)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from convlab.featcache.keys import CacheKey, describe_transform

__all__ = ["ExtractionReport", "CachedFeatures", "ImageUnion", "with_classes"]


@dataclass(frozen=True)
class ExtractionReport:
    """How a :class:`CachedFeatures` came about: served from disk (``hit``) or computed, and what was reused."""

    hit: bool
    computed_shards: int = 0
    reused_shards: int = 0
    seconds: float = 0.0
    rebuilt_because: str | None = None


class CachedFeatures(torch.utils.data.Dataset):
    """Activations ``features`` ``(N, ...)`` and ``labels`` ``(N,)``; items come back as float32.

    ``features`` is memory-mapped when it came from disk (pages are read on demand and shared between processes).
    ``get_batch`` gathers a whole batch at once (the engine uses it).
    """

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str] = (),
        key: CacheKey | None = None,
        path: Path | None = None,
        report: ExtractionReport | None = None,
        index: torch.Tensor | None = None,
    ):
        self._features = features
        self._labels = labels
        self._index = index
        self.classes = tuple(classes)
        self.key = key
        self.path = path
        self.report = report or ExtractionReport(hit=False)
        self.memory_mapped = path is not None

    def __len__(self) -> int:
        return len(self._index) if self._index is not None else len(self._labels)

    def _rows(self, idx: torch.Tensor) -> torch.Tensor:
        return self._index[idx] if self._index is not None else idx

    @property
    def features(self) -> torch.Tensor:
        return self._features if self._index is None else self._features[self._index]

    @property
    def labels(self) -> torch.Tensor:
        return self._labels if self._index is None else self._labels[self._index]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = int(self._index[i]) if self._index is not None else i
        return self._features[row].float(), int(self._labels[row])

    def get_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self._rows(torch.as_tensor(idx, dtype=torch.long))
        return self._features[rows].float(), self._labels[rows]

    def subset(self, indices: Sequence[int] | torch.Tensor) -> CachedFeatures:
        """The chosen rows (no copy of the features)."""
        idx = self._rows(torch.as_tensor(indices, dtype=torch.long))
        return CachedFeatures(self._features, self._labels, self.classes, self.key, self.path, self.report, idx)

    def __repr__(self) -> str:
        shape = (len(self),) + tuple(self._features.shape[1:])
        return f"CachedFeatures({shape}, {self._features.dtype}, hit={self.report.hit}, path={self.path})"


def with_classes(feats: CachedFeatures, dataset) -> CachedFeatures:
    """``feats`` with the class names of ``dataset``."""
    feats.classes = tuple(getattr(dataset, "classes", ()))
    return feats


class ImageUnion(torch.utils.data.Dataset):
    """The images of several ImageSets, sorted by content hash, so any split of the same pool maps to one key."""

    def __init__(self, images, labels, classes, transform, positions, fingerprint):
        self.images, self.labels, self.classes, self.transform = images, labels, classes, transform
        self.positions = positions
        self._fingerprint = fingerprint

    @classmethod
    def of(cls, sets) -> ImageUnion | None:
        if not all(hasattr(s, "images") and hasattr(s, "labels") for s in sets):
            return None
        transforms = {
            json.dumps(describe_transform(s.transform, "dataset.transform"), sort_keys=True)
            if getattr(s, "transform", None) is not None
            else ""
            for s in sets
        }
        classes = {tuple(getattr(s, "classes", ())) for s in sets}
        if len(transforms) != 1 or len(classes) != 1:
            return None
        items = []  # (digest, set index, position)
        for si, s in enumerate(sets):
            for pos in range(len(s)):
                im = s.images[pos].contiguous()
                h = hashlib.sha256(f"{tuple(im.shape)}|{int(s.labels[pos])}|".encode())
                h.update(im.numpy().tobytes())
                items.append((h.hexdigest(), si, pos))
        items.sort()
        positions = [torch.empty(len(s), dtype=torch.long) for s in sets]
        for row, (_, si, pos) in enumerate(items):
            positions[si][pos] = row
        fp = hashlib.sha256(repr(next(iter(classes))).encode())
        for d, _, _ in items:
            fp.update(d.encode())
        images = [sets[si].images[pos] for _, si, pos in items]
        labels = torch.tensor([int(sets[si].labels[pos]) for _, si, pos in items], dtype=torch.long)
        return cls(images, labels, next(iter(classes)), getattr(sets[0], "transform", None), positions, fp.hexdigest())

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])

    def fingerprint(self) -> str:
        return self._fingerprint
