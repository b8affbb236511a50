"""Parallel data loading from image files: seeded per sample, clear errors on bad files, augmentation on device.

- :class:`FileImageDataset`: reads photos from disk by path (decode, optional per-image augmentation, fit to a
  fixed size so batches stack). ``FileImageDataset.from_image_set(splits.train, fetch("food_photos"))`` gives
  the on-disk twin of an in-memory :class:`~convlab.data.ImageSet`.
- :func:`make_loader`: a ``torch.utils.data.DataLoader`` that (1) seeds every *sample* from
  ``(seed, epoch, index)``, so a fixed seed reproduces the whole epoch whatever ``num_workers`` is, (2) turns a
  bad file into a clean error in the main process naming the file (or drops it with a warning), and (3) pins
  memory only when CUDA is there.
- :class:`DeviceAugmentedLoader` (via :func:`augment_on_device`): the alternative design. Workers only decode
  and resize to uint8; the whole batch is augmented at once on the training device.
- :func:`naive_numpy_augment`, :func:`augmentation_draws`: show the classic seeding bug next to the fix.

The seeding bug, as it is today. Since PyTorch 1.9 each DataLoader worker re-seeds the *global* ``random``,
``numpy.random`` and ``torch`` generators (``base_seed + worker_id``), so ``np.random.rand()`` in a transform no
longer repeats across workers. The bug survives in two forms: (a) an RNG *object* (``np.random.RandomState``,
``np.random.default_rng``, ``random.Random``, a ``torch.Generator``) built in the parent process is copied into
every worker, so all workers draw the same numbers, and with non-persistent workers every epoch starts from the
same copy and repeats the last one; (b) even with per-worker seeds, which draw a sample gets depends on which
worker ran it and what it ran before, so results change with ``num_workers``. Seeding each sample from
``(seed, epoch, index)`` removes both.
"""

from __future__ import annotations

import contextlib
import random
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from convlab._checks import check_size
from convlab.data import IMAGE_SUFFIXES, class_folders, decode_image_file, image_files
from convlab.device import resolve_device
from convlab.preprocess import fit_size

if TYPE_CHECKING:  # annotations only: no import cost or cycle at run time
    from collections.abc import Iterable

    from convlab.data import ImageSet

__all__ = [
    "FileImageDataset",
    "UnreadableImageError",
    "SampleLoadError",
    "make_loader",
    "SeededLoader",
    "EpochSampler",
    "sample_seed",
    "seeded_rngs",
    "seed_worker",
    "DeviceAugmentedLoader",
    "augment_on_device",
    "NumpyBrightness",
    "naive_numpy_augment",
    "augmentation_draws",
]

Transform = Callable[[torch.Tensor], torch.Tensor]


class UnreadableImageError(ValueError):
    """A file that is not a readable image (corrupt, truncated, another format). The message names the file."""


class SampleLoadError(RuntimeError):
    """Loading one sample failed for another reason (e.g. a bug in the transform); names the sample and file."""


# ----------------------------------------------------------------------------- seeds
def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch (numpy's ``SeedSequence`` over the three numbers)."""
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)], spawn_key=(0,)).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def _order_seed(seed: int, epoch: int) -> int:
    # A separate stream (spawn_key 1) so the shuffle never shares a seed with a sample.
    return int(
        np.random.SeedSequence([int(seed), int(epoch)], spawn_key=(1,)).generate_state(1, np.uint64)[0] >> np.uint64(1)
    )


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed Python's ``random``, ``numpy.random`` and torch's CPU generator; restore all three afterwards.

    Anything drawn from the global generators inside the block (torchvision v2 transforms, ``np.random.rand``)
    is a function of ``seed`` alone. Only the CPU generator is touched: a CUDA generator is never initialised
    here, which matters inside forked workers.
    """
    cpu = torch.random.default_generator
    torch_state, np_state, py_state = cpu.get_state(), np.random.get_state(), random.getstate()
    cpu.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        cpu.set_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random``, ``numpy.random`` and torch from ``torch.initial_seed()``.

    ``torch.initial_seed()`` in a worker is the loader's base seed plus ``worker_id``, and the base seed comes from
    the loader's ``generator``, so this is reproducible given that generator. Recent PyTorch already does this
    for the global generators; we do it explicitly so the guarantee does not depend on the version. It does *not*
    fix RNG objects copied from the parent (see the module docstring); per-sample seeding does.
    """
    seed = torch.initial_seed()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys, in an order shuffled with a seed drawn from ``(seed, epoch)``.

    Each ``iter()`` is one epoch and advances the counter (the sampler lives in the main process, so this works
    with persistent workers too). ``set_epoch(e)`` replays epoch ``e``.
    """

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0):
        if not isinstance(num_samples, int) or num_samples < 0:
            raise ValueError(f"num_samples: expected an int >= 0, got {num_samples!r}")
        self.num_samples, self.shuffle, self.seed, self.epoch = num_samples, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch: expected an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.shuffle:
            g = torch.Generator().manual_seed(_order_seed(self.seed, epoch))
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = range(self.num_samples)
        return iter([(epoch, i) for i in order])

    def __len__(self) -> int:
        return self.num_samples


# ----------------------------------------------------------------------------- the file-backed dataset
class FileImageDataset(Dataset):
    """Photos read from disk on every access: decode to RGB, ``transform``, fit to ``size``.

    Args:
        paths: image files. Grayscale, palette, RGBA and CMYK files are converted to RGB (alpha is dropped).
        labels: an integer label per file.
        classes: class names (default ``class_0`` ...).
        size: output ``(h, w)`` (an int means square). After the transform the image is resized and centre-cropped
            to it if needed, so samples of any shape stack into a batch.
        transform: any callable on a uint8 ``(3, H, W)`` tensor (e.g. a torchvision v2 transform). Under
            :func:`make_loader` it may draw from the global ``torch``/``numpy``/``random`` generators, which are
            seeded per sample; it must not keep its own RNG object (that is the bug, see the module docstring).
        on_error: what :func:`make_loader` does with an unreadable file: ``"raise"`` (a ValueError naming the file,
            in the main process) or ``"skip"`` (drop the sample with a warning; batches get smaller).
            Indexing the dataset directly always raises :class:`UnreadableImageError`.

    Items are ``(image, label)`` with ``image`` uint8 ``(3, h, w)`` (or whatever dtype the transform returns).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int],
        size: int | tuple[int, int],
        classes: Sequence[str] | None = None,
        transform: Transform | None = None,
        on_error: str = "raise",
    ):
        if len(paths) != len(labels):
            raise ValueError(f"labels: expected {len(paths)} labels (one per path), got {len(labels)}")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error: expected 'raise' or 'skip', got {on_error!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform: expected a callable or None, got {type(transform).__name__}")
        self.paths = tuple(Path(p) for p in paths)
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        n_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.classes = tuple(classes) if classes is not None else tuple(f"class_{i}" for i in range(n_classes))
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(
                f"labels: expected values in [0, {len(self.classes)}), got [{self.labels.min()}, {self.labels.max()}]"
            )
        self.size = check_size(size)
        self.transform = transform
        self.on_error = on_error

    @classmethod
    def from_image_set(
        cls, image_set: ImageSet, root: str | Path, size: int | tuple[int, int], **kwargs
    ) -> FileImageDataset:
        """The files behind an in-memory ImageSet whose ``ids`` are paths relative to ``root``.

        ``FileImageDataset.from_image_set(splits.train, fetch("food_photos"), size=128)`` for the food photos;
        ``root`` is the folder given to ``load_image_folder`` for your own images.
        """
        root = Path(root)
        return cls([root / i for i in image_set.ids], image_set.labels.tolist(), size, image_set.classes, **kwargs)

    @classmethod
    def from_folder(cls, root: str | Path, size: int | tuple[int, int], **kwargs) -> FileImageDataset:
        """Every image file under ``root/<class name>/`` (classes sorted by name); nothing is decoded yet."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"root: no such folder: {root}")
        classes = class_folders(root)
        paths, labels = [], []
        for label, name in enumerate(classes):
            # hidden files (macOS's ._photo.jpg resource files) are not images: decoding one in a worker would
            # stop the epoch, as load_image_folder explains
            files = image_files(root / name)
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise ValueError(f"root: no images ({', '.join(IMAGE_SUFFIXES)}) under {root}/<class>/")
        return cls(paths, labels, size, classes, **kwargs)

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        """The file behind sample ``index`` (used in error messages)."""
        return str(self.paths[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            image = decode_image_file(self.paths[index])
        except ValueError as exc:
            raise UnreadableImageError(str(exc)) from exc
        if self.transform is not None:
            image = self.transform(image)
        return fit_size(image, self.size), int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"FileImageDataset({len(self)} files, classes={self.classes}, size={self.size}, "
            f"transform={self.transform!r})"
        )


# ----------------------------------------------------------------------------- the loader
@dataclass(frozen=True)
class _Failed:
    """A sample that raised in a worker, carried to the main process as data (picklable)."""

    index: int
    where: str
    error: str
    message: str
    unreadable: bool
    worker_traceback: str


class _SeededSamples(Dataset):
    """Wraps a map-style dataset: item ``(epoch, index)`` is ``dataset[index]`` under ``sample_seed(...)``."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        try:
            with seeded_rngs(sample_seed(self.seed, epoch, index)):
                return self.dataset[index]
        except Exception as exc:
            describe = getattr(self.dataset, "describe", None)
            where = describe(index) if describe is not None else f"index {index}"
            unreadable = isinstance(exc, UnreadableImageError)
            return _Failed(index, where, type(exc).__name__, str(exc), unreadable, traceback.format_exc())


def _collate(samples: list) -> tuple[object, list[_Failed]]:
    failed = [s for s in samples if isinstance(s, _Failed)]
    good = [s for s in samples if not isinstance(s, _Failed)]
    return (default_collate(good) if good else None), failed


class SeededLoader(DataLoader):
    """A DataLoader whose batches are ``default_collate``d samples, seeded per sample; made by :func:`make_loader`.

    A sample that failed in a worker is re-raised here, in the main process: :class:`UnreadableImageError` naming
    the file, or :class:`SampleLoadError` naming the sample with the worker's traceback attached as a note. With
    ``on_error="skip"`` unreadable files are dropped with a warning (a batch of only bad files is skipped).
    ``loader.sampler.set_epoch(e)`` replays epoch ``e``.
    """

    on_error: str = "raise"

    def __iter__(self):
        for batch, failed in super().__iter__():
            for f in failed:
                if f.unreadable and self.on_error == "skip":
                    warnings.warn(f"skipped unreadable image {f.where}: {f.message}", stacklevel=2)
                    continue
                if f.unreadable:
                    raise UnreadableImageError(f.message)
                err = SampleLoadError(f"loading sample {f.index} ({f.where}) failed: {f.error}: {f.message}")
                err.add_note("Traceback in the loading process:\n" + f.worker_traceback)
                raise err
            if batch is not None:
                yield batch


def make_loader(
    dataset: Dataset,
    batch_size: int = 32,
    shuffle: bool = True,
    num_workers: int = 0,
    prefetch_factor: int | None = 2,
    persistent_workers: bool = False,
    pin_memory: bool | str = "auto",
    seed: int = 0,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    on_error: str | None = None,
) -> SeededLoader:
    """A DataLoader over any map-style ``dataset`` in which each sample is seeded from ``(seed, epoch, index)``.

    Args:
        batch_size, shuffle, drop_last: as for ``DataLoader``; the shuffle order is drawn from ``(seed, epoch)``.
        num_workers: worker processes (0: load in the main process). On a 2-core machine 2 is the most useful.
        prefetch_factor: batches each worker loads ahead (``None`` or an int >= 1; ``None``: PyTorch's default);
            checked always, used only with ``num_workers > 0``.
        persistent_workers: keep the workers between epochs (saves their start-up every epoch);
            ignored with ``num_workers=0``.
        pin_memory: ``"auto"`` pins only when CUDA is available (pinning does nothing for the CPU).
        seed: the seed of the whole run, an int in ``[0, 2**64)``; epoch ``e`` is identical for any
            ``num_workers`` given the same seed.
        generator: the generator that draws the workers' base seed (default: one seeded with ``seed``); it only
            matters for randomness outside ``dataset[i]`` (e.g. in ``collate``).
        on_error: ``"raise"`` or ``"skip"`` for unreadable files (default: ``dataset.on_error`` or ``"raise"``).

    Batches are whatever ``default_collate`` makes of the samples (for :class:`FileImageDataset`, a uint8
    ``(B, 3, h, w)`` tensor and ``(B,)`` labels). Each ``for`` loop over the loader is the next epoch.

    Raises:
        TypeError: ``seed`` is not an int, or ``prefetch_factor`` is neither None nor an int.
        ValueError: ``seed`` is outside ``[0, 2**64)``, ``prefetch_factor < 1``, or another argument is out of range.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int in [0, 2**64), got {type(seed).__name__} {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed!r}")
    seed = int(seed)
    if prefetch_factor is not None:
        if isinstance(prefetch_factor, bool) or not isinstance(prefetch_factor, (int, np.integer)):
            raise TypeError(
                f"prefetch_factor: expected None or an int >= 1, got {type(prefetch_factor).__name__} "
                f"{prefetch_factor!r}"
            )
        if prefetch_factor < 1:
            raise ValueError(f"prefetch_factor: expected None or an int >= 1, got {prefetch_factor!r}")
        prefetch_factor = int(prefetch_factor)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers: expected an int >= 0, got {num_workers!r}")
    if pin_memory == "auto":
        pin_memory = torch.cuda.is_available()
    elif not isinstance(pin_memory, bool):
        raise ValueError(f"pin_memory: expected 'auto', True or False, got {pin_memory!r}")
    on_error = getattr(dataset, "on_error", "raise") if on_error is None else on_error
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error: expected 'raise' or 'skip', got {on_error!r}")
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    extra = {}
    if num_workers > 0:
        extra = {
            "prefetch_factor": prefetch_factor,
            "persistent_workers": persistent_workers,
            "worker_init_fn": seed_worker,
        }
    loader = SeededLoader(
        _SeededSamples(dataset, seed),
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), shuffle=shuffle, seed=seed),
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        drop_last=drop_last,
        generator=generator,
        **extra,
    )
    loader.on_error = on_error
    return loader


# ----------------------------------------------------------------------------- batched augmentation on device
class DeviceAugmentedLoader:
    """Moves each ``(images, labels)`` batch to ``device`` and applies ``augment`` to the whole batch there.

    Workers then only decode and resize (uint8, 4x less to copy than float32); the augmentation runs once per
    batch on the training device. ``augment`` takes and returns a ``(B, C, H, W)`` tensor; it should draw its
    parameters per sample (torchvision v2 transforms draw *one* set for the whole batch). With ``seed`` given,
    batch ``b`` of epoch ``e`` is augmented under a global seed drawn from ``(seed, e, b)`` (the generators of
    ``device`` are restored afterwards).
    """

    def __init__(
        self, loader: Iterable, augment: Transform, device: str | torch.device = "auto", seed: int | None = None
    ):
        if not callable(augment):
            raise TypeError(f"augment: expected a callable on (B, C, H, W) tensors, got {type(augment).__name__}")
        self.loader, self.augment, self.device, self.seed = loader, augment, resolve_device(device), seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        non_blocking = self.device.type == "cuda" and bool(getattr(self.loader, "pin_memory", False))
        for b, (images, labels) in enumerate(self.loader):
            images = images.to(self.device, non_blocking=non_blocking)
            labels = labels.to(self.device, non_blocking=non_blocking)
            if self.seed is None:
                yield self.augment(images), labels
                continue
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices, device_type=self.device.type if devices else "cuda"):
                torch.manual_seed(sample_seed(self.seed, epoch, b))
                out = self.augment(images)
            yield out, labels


def augment_on_device(
    loader: Iterable, augment: Transform, device: str | torch.device = "auto", seed: int | None = None
) -> DeviceAugmentedLoader:
    """``loader`` (uint8 batches, decode + resize only) followed by batched ``augment`` on ``device``."""
    return DeviceAugmentedLoader(loader, augment, device, seed)


# ----------------------------------------------------------------------------- showing the seeding bug
class NumpyBrightness:
    """Adds one random integer in ``[-max_delta, max_delta]`` to every pixel, drawn with numpy.

    With ``rng=None`` it draws from the global ``np.random`` (which :func:`make_loader` seeds per sample): the fix.
    With an RNG object built in the parent process it shows the bug (see :func:`naive_numpy_augment`).
    ``draw()`` makes one draw, so the draws can be shown without images.
    """

    def __init__(self, max_delta: int = 40, rng: np.random.RandomState | np.random.Generator | None = None):
        if not isinstance(max_delta, int) or max_delta < 0:
            raise ValueError(f"max_delta: expected an int >= 0, got {max_delta!r}")
        self.max_delta, self.rng = max_delta, rng

    def draw(self) -> int:
        source = np.random if self.rng is None else self.rng
        if isinstance(source, np.random.Generator):
            return int(source.integers(-self.max_delta, self.max_delta + 1))
        return int(source.randint(-self.max_delta, self.max_delta + 1))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image.to(torch.int16) + self.draw()).clamp(0, 255).to(torch.uint8)

    def __repr__(self) -> str:
        rng = "global np.random" if self.rng is None else type(self.rng).__name__
        return f"NumpyBrightness(max_delta={self.max_delta}, rng={rng})"


def naive_numpy_augment(seed: int = 0, max_delta: int = 40) -> NumpyBrightness:
    """The bug: a brightness augmentation holding ``np.random.RandomState(seed)`` made in the parent process.

    Every worker gets a copy of the same state, so workers draw the same sequence; non-persistent workers start
    each epoch from that copy again, so epochs repeat. Use ``NumpyBrightness()`` (global ``np.random``) with
    :func:`make_loader` instead.
    """
    return NumpyBrightness(max_delta, np.random.RandomState(seed))


class _Draws(Dataset):
    def __init__(self, n: int, augment: NumpyBrightness):
        self.n, self.augment = n, augment

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        info = torch.utils.data.get_worker_info()
        return index, self.augment.draw(), -1 if info is None else info.id


def augmentation_draws(
    augment: NumpyBrightness, num_workers: int = 2, n: int = 8, epochs: int = 2, seeded: bool = True, seed: int = 0
) -> list[dict]:
    """Which draw each sample got, per epoch: rows ``{epoch, index, worker, draw}`` (``worker`` -1: main process).

    ``seeded=False`` uses a plain ``DataLoader`` (no shuffle, batch size 1, non-persistent workers);
    ``seeded=True`` uses :func:`make_loader` (no shuffle) with ``seed``. Compare ``naive_numpy_augment()`` with
    ``NumpyBrightness()`` under both, and with ``num_workers`` 0 vs 2.
    """
    dataset = _Draws(n, augment)
    if seeded:
        loader = make_loader(dataset, batch_size=1, shuffle=False, num_workers=num_workers, seed=seed)
    else:
        loader = DataLoader(dataset, batch_size=1, num_workers=num_workers)
    rows = []
    for epoch in range(epochs):
        for index, draw, worker in loader:
            rows.append({"epoch": epoch, "index": int(index), "worker": int(worker), "draw": int(draw)})
    return rows
