"""The sharded, locked store: :class:`FeatureCache` keeps entries on disk, resumes interrupted extractions from
their shards, verifies what it serves, and lets any number of processes share the folder (see the package
docstring for the safety rules)."""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from convlab.assets import convlab_home, sha256_file
from convlab.atomicio import atomic_write, file_lock
from convlab.featcache.extraction import Extraction
from convlab.featcache.keys import FORMAT, CacheKey, cache_key
from convlab.featcache.views import CachedFeatures, ExtractionReport, ImageUnion, with_classes
from convlab.preprocess import Preprocess

if TYPE_CHECKING:  # annotations only
    from collections.abc import Callable

    from torch.utils.data import Dataset

    from convlab.data import Splits

__all__ = ["CacheEntry", "FeatureCache"]


class _Corrupt(Exception):
    pass


def _shard_ok(shard: Path, rec) -> bool:
    """Whether ``shard`` holds what its progress record says (size, then sha256; any damaged record: no)."""
    try:
        return (
            shard.is_file()
            and shard.stat().st_size == rec["size"]
            and sha256_file(shard) == rec["sha256"]
            and isinstance(rec["labels"], list)
            and isinstance(rec["shape"], list)
        )
    except (KeyError, TypeError):
        return False


# Shards skip ``fsync``: a process that dies cannot leave a torn renamed file, and after a power cut their recorded
# size and sha256 no longer match, so they are recomputed.
def _write_json(path: Path, obj: Any, fsync: bool = True) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, sort_keys=True).encode()), fsync)


def _write_npy(path: Path, array: np.ndarray, fsync: bool = True) -> None:
    atomic_write(path, lambda f: np.save(f, array, allow_pickle=False), fsync)


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    backbone: str
    stage_name: str
    num_samples: int
    shape: tuple
    size_mb: float
    complete: bool


class FeatureCache:
    """Activations of frozen stages on disk, keyed by everything that changes them (see the module docstring).

    Args:
        root: folder of the cache (default ``convlab_home() / "features"``).
        verify: ``"sha256"`` (default) checks every file's hash on open; ``"size"`` only its size (faster for
            large spatial caches, still catches truncation).
    """

    def __init__(self, root: str | os.PathLike | None = None, verify: str = "sha256"):
        if verify not in ("sha256", "size"):
            raise ValueError(f"verify: expected 'sha256' or 'size', got {verify!r}")
        self.root = Path(root) if root is not None else convlab_home() / "features"
        self.verify = verify

    def __repr__(self) -> str:
        return f"FeatureCache(root={str(self.root)!r}, verify={self.verify!r})"

    def path_for(self, key: CacheKey) -> Path:
        return self.root / key.folder_name

    # ----------------------------------------------------------------------------------------- reading
    def load(self, key: CacheKey, classes: Sequence[str] = ()) -> CachedFeatures | None:
        """The complete, verified entry for ``key``, or ``None`` (missing, partial, or corrupt: then deleted)."""
        folder = self.path_for(key)
        if not (folder / "manifest.json").is_file():
            return None
        try:
            return self._open(folder, key, classes, ExtractionReport(hit=True))
        except _Corrupt:
            pass
        with file_lock(folder / ".lock"):
            found, _ = self._open_or_discard(folder, key, classes, stacklevel=3)
        return found

    def _open_or_discard(
        self, folder: Path, key: CacheKey, classes, stacklevel: int
    ) -> tuple[CachedFeatures | None, str | None]:
        """Under the entry's lock: the complete entry, or ``(None, why)`` after deleting a damaged one.

        Looking again under the lock matters: what looked damaged may have been an entry that another process was
        rebuilding a moment ago, and is complete now.
        """
        if not (folder / "manifest.json").is_file():
            return None, None
        try:
            return self._open(folder, key, classes, ExtractionReport(hit=True)), None
        except _Corrupt as exc:
            warnings.warn(
                f"feature cache {folder}: {exc}; deleting it and recomputing", RuntimeWarning, stacklevel=stacklevel
            )
            self._discard_complete(folder)
            return None, str(exc)

    def _open(
        self, folder: Path, key: CacheKey, classes, report: ExtractionReport, verify: bool = True
    ) -> CachedFeatures:
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise _Corrupt(f"unreadable manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("digest") != key.digest or manifest.get("format") != FORMAT:
            raise _Corrupt("the manifest belongs to another key or format")
        try:
            wanted = {
                name: (int(manifest["files"][name]["size"]), str(manifest["files"][name]["sha256"]))
                for name in ("features.npy", "labels.npy")
            }
            want_shape = list(manifest["shape"])
        except (KeyError, TypeError, ValueError):
            raise _Corrupt("the manifest lacks the files' sizes, hashes or shape") from None
        arrays = {}
        for name, (size, sha) in wanted.items():
            path = folder / name
            try:  # a file deleted meanwhile (another process rebuilding a damaged entry) reads as missing
                found = path.stat().st_size
                if found != size:
                    raise _Corrupt(f"{name} has {found} bytes, the manifest says {size} (truncated?)")
                if verify and self.verify == "sha256" and sha256_file(path) != sha:
                    raise _Corrupt(f"{name}: sha256 differs from the manifest (file changed or damaged)")
                arrays[name] = np.load(path, mmap_mode="c", allow_pickle=False)
            except FileNotFoundError:
                raise _Corrupt(f"{name} is missing") from None
            except (OSError, ValueError) as exc:
                raise _Corrupt(f"{name}: not a readable .npy file ({exc})") from None
        feats, labels = arrays["features.npy"], arrays["labels.npy"]
        if list(feats.shape) != want_shape or len(labels) != feats.shape[0]:
            raise _Corrupt(f"shape {feats.shape} does not match the manifest {want_shape}")
        return CachedFeatures(
            torch.from_numpy(feats), torch.from_numpy(np.asarray(labels, dtype=np.int64)), classes, key, folder, report
        )

    @staticmethod
    def _discard_complete(folder: Path) -> None:
        for name in ("manifest.json", "features.npy", "labels.npy"):
            (folder / name).unlink(missing_ok=True)

    # ----------------------------------------------------------------------------------------- writing
    def get(
        self,
        model: nn.Module,
        dataset: Dataset,
        stage: int | str,
        preprocess=None,
        *,
        batch_size: int | None = None,
        shard_size: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "auto",
        channels_last: bool | None = None,
        fold_batchnorm: bool = False,
        progress: bool = True,
    ) -> CachedFeatures:
        """Activations of the first ``stage`` stages on ``dataset``: from disk if cached, else extracted and stored.

        Args:
            stage: the freeze boundary ``k`` (0 .. ``spec.num_stages``, or a stage name); ``"all"`` gives pooled
                ``(N, spec.feature_dim)`` vectors, smaller ``k`` gives ``(N, C, H, W)`` maps.
            preprocess: a deterministic transform from uint8 images to the network input (default: the backbone's
                eval preprocessing, :meth:`Preprocess.from_spec`). Random ones raise :class:`RandomTransformError`.
            batch_size: images per forward pass (default 8 on a CPU, where small batches are faster, 64 on CUDA).
            shard_size: images per shard file, the unit an interrupted extraction resumes from (default: 64, or
                ``len(dataset) / 64`` for large sets, so there are at most ~64 shards).
            dtype: storage dtype (``torch.float16`` halves the disk size; batches come back as float32).
            fold_batchnorm: fold each BatchNorm into the convolution before it for the extraction (faster on a
                CPU, see ``benchmarks/bench_transfer.py``). The features then differ from the model's own output by
                float rounding (~1e-6 relative), so training on them is no longer bit-identical to training through the
                frozen stages; off by default, and part of the key.
        """
        job = Extraction.resolve(
            model, dataset, stage, preprocess, batch_size, dtype, device, channels_last, fold_batchnorm
        )
        if len(dataset) == 0:
            raise ValueError("dataset: expected at least one item, got an empty data set")
        if shard_size is None:
            shard_size = max(64, -(-len(dataset) // 64))
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size: expected None or an int >= 1, got {shard_size!r}")
        key = cache_key(model, dataset, job.k, job.preprocess, dtype, fold_batchnorm)
        classes = getattr(dataset, "classes", ())
        folder = self.path_for(key)
        if (folder / "manifest.json").is_file():  # the common case, without a lock: complete entries never change
            try:
                return self._open(folder, key, classes, ExtractionReport(hit=True))
            except _Corrupt:
                pass  # damaged, or being rebuilt by another process: decide under the lock
        with file_lock(folder / ".lock"):  # one extractor per entry; the others wait, then find it complete
            found, rebuilt = self._open_or_discard(folder, key, classes, stacklevel=3)
            if found is not None:
                return found
            return self._extract(job, key, classes, rebuilt, shard_size, progress)

    def _extract(
        self, job: Extraction, key: CacheKey, classes, rebuilt: str | None, shard_size: int, progress: bool
    ) -> CachedFeatures:
        """Compute the missing shards (resuming from those that check out) and assemble them (under the lock)."""
        from tqdm.auto import tqdm

        folder = self.path_for(key)
        t0 = time.perf_counter()
        partial = folder / "partial"
        partial.mkdir(parents=True, exist_ok=True)
        progress_file = partial / "progress.json"
        state = {"digest": key.digest, "shard_size": shard_size, "shards": {}}
        if progress_file.is_file():
            try:
                old = json.loads(progress_file.read_text())
                if (
                    isinstance(old, dict)
                    and isinstance(old.get("shards"), dict)
                    and old.get("digest") == key.digest
                    and old.get("shard_size") == shard_size
                ):
                    state = old
            except (OSError, ValueError):
                pass  # unreadable: start over
        n = len(job.dataset)
        starts = list(enumerate(range(0, n, shard_size)))
        todo, reused = [], 0
        for b, start in starts:
            rec = state["shards"].get(str(b))
            shard = partial / f"shard_{b:05d}.npy"
            if _shard_ok(shard, rec):
                reused += 1
            else:
                state["shards"].pop(str(b), None)
                todo.append((b, start, min(start + shard_size, n)))

        with job.outputs(todo) as outputs:
            bar = tqdm(
                total=len(starts), initial=reused, desc=f"features {key.stage_name}", disable=not progress, leave=False
            )
            for b, array, labels in outputs:
                shard = partial / f"shard_{b:05d}.npy"
                _write_npy(shard, array, fsync=False)
                state["shards"][str(b)] = {
                    "size": shard.stat().st_size,
                    "sha256": sha256_file(shard),
                    "labels": labels,
                    "shape": list(array.shape),
                }
                _write_json(progress_file, state, fsync=False)
                bar.update(1)
            bar.close()
        self._assemble(folder, key, state, len(starts), n, time.perf_counter() - t0)
        report = ExtractionReport(False, len(todo), reused, time.perf_counter() - t0, rebuilt)
        return self._open(folder, key, classes, report, verify=False)  # hashed a moment ago by _assemble

    def _assemble(self, folder: Path, key: CacheKey, state: dict, num_shards: int, n: int, seconds: float) -> None:
        """Join the shards into features.npy / labels.npy (atomically), then write the manifest last."""
        partial = folder / "partial"
        recs = [state["shards"][str(b)] for b in range(num_shards)]
        shape = [n] + recs[0]["shape"][1:]
        labels = np.array([y for r in recs for y in r["labels"]], dtype=np.int64)
        np_dtype = np.dtype(key.dtype)

        def write_features(f):
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(np_dtype), "fortran_order": False, "shape": tuple(shape)}
            )
            for b in range(num_shards):
                f.write(np.ascontiguousarray(np.load(partial / f"shard_{b:05d}.npy", allow_pickle=False)).tobytes())

        atomic_write(folder / "features.npy", write_features)
        _write_npy(folder / "labels.npy", labels)
        files = {
            name: {"size": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
            for name in ("features.npy", "labels.npy")
        }
        _write_json(
            folder / "manifest.json",
            {
                "format": FORMAT,
                "digest": key.digest,
                "key": asdict(key),
                "shape": shape,
                "files": files,
                "extract_seconds": seconds,
                "created": time.time(),
            },
        )
        shutil.rmtree(partial, ignore_errors=True)

    def get_splits(
        self,
        model: nn.Module,
        splits: Splits,
        stage: int | str,
        preprocess: Preprocess | Callable | None = None,
        **kwargs: Any,
    ) -> tuple[CachedFeatures, ...]:
        """``(train, val, test)`` activations of ``splits``, extracted as ONE entry for the union of the images.

        The union is ordered by image content, so every split of the same images (``load_food(seed=0..4)``)
        shares one cache entry: the frozen part runs once per image, not once per image per split.
        """
        sets = [splits.train, splits.val, splits.test]
        union = ImageUnion.of(sets)
        if union is None:  # not ImageSets with a common transform: one entry per split
            return tuple(self.get(model, s, stage, preprocess, **kwargs) for s in sets)
        feats = self.get(model, union, stage, preprocess, **kwargs)
        return tuple(with_classes(feats.subset(idx), s) for s, idx in zip(sets, union.positions))

    # ----------------------------------------------------------------------------------------- housekeeping
    def entries(self) -> list[CacheEntry]:
        """What is stored (complete entries and interrupted extractions)."""
        out = []
        for folder in sorted(p for p in self.root.glob("*") if p.is_dir()) if self.root.is_dir() else []:
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
            try:
                m = json.loads((folder / "manifest.json").read_text())
                out.append(
                    CacheEntry(
                        folder,
                        m["key"]["backbone"],
                        m["key"]["stage_name"],
                        m["shape"][0],
                        tuple(m["shape"][1:]),
                        size,
                        True,
                    )
                )
            except (OSError, ValueError, KeyError):
                out.append(CacheEntry(folder, "?", "?", 0, (), size, False))
        return out

    def clear(self) -> None:
        """Delete every entry under ``root`` (not while another process is using the cache: its locks go too)."""
        if self.root.is_dir():
            shutil.rmtree(self.root)
