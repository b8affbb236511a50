"""Exercises and quiz of notebook 07 (parallel data loading).

- :data:`SEEDED_LOADER` (main exercise): build a plain ``torch.utils.data.DataLoader`` whose workers draw
  *different* augmentations, reproducibly from a seed. The check runs the learner's loader with 2 worker processes
  over real food photos whose augmentation holds its own numpy RNG (the classic bug) and compares the draws.
- :data:`TIME_STEPS`: time a training loop's wait for data against its compute (the heart of a loader profiler). The
  check runs the learner's timer over real food photos with a clock that advances by known amounts while a photo
  loads and while a step runs, so the right answer is known exactly on any machine; the notebook then times its
  loaders (workers, prefetch) with the learner's timer.
- :data:`QUIZ`.

Importing this module is cheap: photos are read on the first check (and memoised).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from convlab.exercises.core import Exercise, Question, Quiz, expect
from convlab.profiler import profile_loader

__all__ = [
    "SEEDED_LOADER",
    "TIME_STEPS",
    "QUIZ",
    "PhotoDraws",
    "reference_seeded_loader",
    "reference_time_steps",
    "TimedPhotos",
    "loader_draws",
]

_PHOTOS = 8  # real photos the check loads (2 workers x 2 batches of 2)
_SIZE = 32  # side they are shrunk to: the check is about draws, not pixels


@functools.lru_cache(maxsize=1)
def _photo_paths() -> tuple:
    from convlab.assets import fetch
    from convlab.data import load_food

    food = load_food()
    root = fetch("food_photos")
    return tuple(str(root / i) for i in food.train.ids[:_PHOTOS])


class PhotoDraws(Dataset):
    """Real photos read from disk, brightened by a random offset drawn from ``self.augment.rng``.

    ``augment`` is a :class:`convlab.loading.NumpyBrightness` holding ``np.random.RandomState(0)`` made in *this*
    process: every worker gets a copy of it, which is the bug the exercise fixes. Items are
    ``(image uint8 (3, size, size), draw, worker id)`` (worker id -1 in the main process).
    """

    def __init__(self, paths, size: int = _SIZE, seed: int = 0):
        from convlab.loading import naive_numpy_augment

        self.paths, self.size = list(paths), size
        self.augment = naive_numpy_augment(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from convlab.data import decode_image_file
        from convlab.preprocess import fit_size

        image = fit_size(decode_image_file(self.paths[index]), (self.size, self.size))
        draw = self.augment.draw()
        image = (image.to(torch.int16) + draw).clamp(0, 255).to(torch.uint8)
        info = torch.utils.data.get_worker_info()
        return image, draw, -1 if info is None else info.id


def reference_seeded_loader(dataset: Dataset, seed: int, num_workers: int = 2, batch_size: int = 2) -> DataLoader:
    """A plain DataLoader (no shuffle) whose workers re-seed their copy of ``dataset.augment.rng``.

    In a worker, ``get_worker_info().seed`` is the loader's base seed (drawn from ``generator``) plus the worker's
    id: different per worker, and the same on a rerun when ``generator`` is seeded with the same ``seed``.
    """

    def worker_init_fn(worker_id: int) -> None:
        info = torch.utils.data.get_worker_info()
        info.dataset.augment.rng = np.random.RandomState(info.seed % 2**32)

    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        worker_init_fn=worker_init_fn,
        generator=generator,
    )


def loader_draws(loader) -> list[dict]:
    """One epoch of a loader over :class:`PhotoDraws`: rows ``{index, worker, draw}`` in loading order."""
    rows, index = [], 0
    for _, draws, workers in loader:
        for d, w in zip(draws.tolist(), workers.tolist()):
            rows.append({"index": index, "worker": int(w), "draw": int(d)})
            index += 1
    return rows


def _test_seeded_loader(make_loader) -> None:
    paths = _photo_paths()
    loader = make_loader(PhotoDraws(paths), 0, 2, 2)
    expect(isinstance(loader, DataLoader), f"return a torch.utils.data.DataLoader, got {type(loader).__name__}")
    expect(loader.num_workers == 2, f"use the num_workers you are given (2 here), got {loader.num_workers}")
    first = loader_draws(loader)
    expect(len(first) == len(paths), f"one epoch should give all {len(paths)} photos, got {len(first)} (shuffle=False)")
    expect({r["worker"] for r in first} == {0, 1}, "the photos should be loaded by both worker processes (0 and 1)")
    by_worker = {w: [r["draw"] for r in first if r["worker"] == w] for w in (0, 1)}
    expect(
        by_worker[0] != by_worker[1],
        f"both workers drew the same brightness offsets {by_worker[0]}: each still uses the copy of the parent's "
        "RandomState; give each worker's copy of dataset.augment.rng its own seed in a worker_init_fn",
    )
    again = loader_draws(make_loader(PhotoDraws(paths), 0, 2, 2))
    expect(
        [r["draw"] for r in again] == [r["draw"] for r in first],
        "a rerun with the same seed gave other draws: derive the workers' seeds from `seed` "
        "(e.g. a torch.Generator seeded with it, passed as generator=...)",
    )
    other = loader_draws(make_loader(PhotoDraws(paths), 1, 2, 2))
    expect(
        [r["draw"] for r in other] != [r["draw"] for r in first],
        "seed=1 gave the same draws as seed=0: the seed you are given must change the workers' seeds",
    )


SEEDED_LOADER = Exercise(
    name="make_seeded_loader",
    test=_test_seeded_loader,
    reference=reference_seeded_loader,
    hints=[
        "Each worker process starts with a *copy* of the dataset, RNG object included. Give every worker's copy a "
        "new RNG whose seed differs per worker and comes from `seed`, so a rerun repeats it.",
        "Pass `worker_init_fn=...` and `generator=torch.Generator().manual_seed(seed)` to DataLoader. Inside "
        "worker_init_fn, `torch.utils.data.get_worker_info()` gives `.seed` (base seed + worker id) and `.dataset` "
        "(the worker's copy): give that copy's augmentation a fresh NumPy RandomState seeded from `.seed` "
        "(NumPy seeds must fit in 32 bits).",
    ],
    skill="workers draw different augmentations, and the same seed reproduces them",
    handle="nb07.SEEDED_LOADER",
)


def reference_time_steps(
    loader: Iterable, step_fn: Callable[[Any], Any], max_steps: int, warmup_steps: int = 0, clock=time.perf_counter
) -> tuple[list[float], list[float]]:
    """Run ``step_fn(batch)`` on ``max_steps`` batches of ``loader`` (a new pass, ``iter(loader)``, whenever one runs
    out) and return ``(wait_s, compute_s)``: for each step after the first ``warmup_steps``, the seconds it waited for
    its batch and the seconds ``step_fn`` took, read from ``clock()`` only."""
    waits: list[float] = []
    computes: list[float] = []
    iterator = iter(loader)
    last = clock()
    while len(waits) < max_steps:
        try:
            batch = next(iterator)
        except StopIteration:  # the end of a pass: the next epoch starts (its start-up counts as waiting)
            iterator = iter(loader)
            batch = next(iterator)
        got = clock()
        step_fn(batch)
        done = clock()
        waits.append(got - last)
        computes.append(done - got)
        last = done
    return waits[warmup_steps:], computes[warmup_steps:]


_LOAD_S = 0.125  # what the check's clock advances while one photo loads (exact in binary: sums compare exactly)
_STEP_S = 0.5  # ... while step k runs: _STEP_S + k / 16


class _CheckClock:
    """The check's clock: it moves only when a photo loads or a step runs, by known amounts, so the right waits and
    computes are known exactly whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TimedPhotos(Dataset):
    """Real food photos decoded from disk (``size`` x ``size``); each load advances ``clock`` by ``load_s``.

    Items are ``(image uint8 (3, size, size), index)``; load them with ``num_workers=0`` (the clock lives in this
    process)."""

    def __init__(self, paths, clock, load_s: float = _LOAD_S, size: int = _SIZE):
        self.paths, self.clock, self.load_s, self.size = list(paths), clock, load_s, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from convlab.data import decode_image_file
        from convlab.preprocess import fit_size

        image = fit_size(decode_image_file(self.paths[index]), (self.size, self.size))
        self.clock.now += self.load_s
        return image, index


def _test_time_steps(time_steps) -> None:
    paths = _photo_paths()[:5]  # batches of 2: a pass is 2 + 2 + 1 photos, so 5 steps need a second pass
    clock = _CheckClock()
    loader = DataLoader(TimedPhotos(paths, clock), batch_size=2, shuffle=False, num_workers=0)
    seen: list[list[int]] = []

    def step_fn(batch) -> None:
        seen.append(batch[1].tolist())
        clock.now += _STEP_S + (len(seen) - 1) / 16

    got = time_steps(loader, step_fn, 5, 1, clock=clock)
    expect(
        isinstance(got, (tuple, list)) and len(got) == 2,
        f"return two lists, (wait_s, compute_s), got {type(got).__name__}",
    )
    waits, computes = ([float(x) for x in part] for part in got)
    want_batches = [[0, 1], [2, 3], [4], [0, 1], [2, 3]]
    expect(
        not (len(seen) < 5 and seen == want_batches[: len(seen)]),
        f"step_fn ran {len(seen)} times for max_steps=5, then your loop stopped with the loader's pass: when the "
        "loader runs out (StopIteration), start a new pass with iter(loader) and go on",
    )
    expect(
        seen == want_batches,
        f"step_fn got the batches {seen}; expected {want_batches}: run it once per batch, max_steps times in all "
        "(warm-up included), starting a new pass with iter(loader) when the loader runs out",
    )
    expect(
        len(waits) == len(computes) == 4,
        f"got {len(waits)} waits and {len(computes)} computes for max_steps=5, warmup_steps=1: return one of each "
        "per step after the warm-up (4 here)",
    )
    want_computes = [_STEP_S + k / 16 for k in range(1, 5)]
    want_waits = [2 * _LOAD_S, _LOAD_S, 2 * _LOAD_S, 2 * _LOAD_S]
    if computes == want_waits or waits == want_computes:
        expect(False, "your waits and computes are swapped: the wait ends when next() returns the batch")
    expect(
        max(abs(a - b) for a, b in zip(computes, want_computes)) < 1e-9,
        f"compute_s {computes} should be {want_computes} (this check's clock): read the time only through clock(), "
        "just before and just after step_fn, and leave out the first warmup_steps steps",
    )
    expect(
        max(abs(a - b) for a, b in zip(waits, want_waits)) < 1e-9,
        f"wait_s {waits} should be {want_waits} (this check's clock): a step's wait runs from the end of the previous "
        "step to the moment next() returns its batch",
    )


TIME_STEPS = Exercise(
    name="time_steps",
    test=_test_time_steps,
    reference=reference_time_steps,
    hints=[
        "Read the clock three times per step: before asking for the batch (or just reuse the end of the previous "
        "step), when the batch arrives, when step_fn returns. Wait and compute are the differences. When the loader "
        "runs out, the pass (epoch) is over: start a new one and keep going until max_steps steps have run.",
        "The API: it = iter(loader); next(it) raises StopIteration at the end of a pass; t = clock() (the check "
        "passes its own clock: never call time.perf_counter() yourself); list slicing drops the warm-up steps.",
    ],
    skill="timing a training loop's wait for data against its compute, as a loader profiler does",
    handle="nb07.TIME_STEPS",
    forbidden=(profile_loader,),
)


QUIZ = Quiz(
    "Quiz: parallel data loading",
    {
        "q1": Question(
            "An augmentation holds `np.random.RandomState(0)`, made before the DataLoader starts 2 workers "
            "(no worker_init_fn, batch size 1, 8 samples, no shuffle). At most how many *distinct* offsets can "
            "the 8 samples of the first epoch get?",
            answer=4,
            tolerance=0,
            why="Each worker draws from its own copy of the same state, so worker 1's 4 draws repeat worker 0's 4.",
            wrong={
                "low": "Each worker draws a fresh number per sample from its copy.",
                "high": "The two copies start from the same state: the second worker repeats the first.",
            },
        ),
        "q2": Question(
            "Why must workers draw different random numbers?",
            answer="b",
            options={
                "a": "so each worker's process runs faster",
                "b": "otherwise samples loaded by different workers get the same 'random' augmentation, so "
                "the data are less varied than you think (and an epoch can repeat the last one)",
                "c": "PyTorch refuses to start workers with equal seeds",
            },
            why="Identical streams mean correlated augmentations: less effective data, silently.",
            wrong={
                "a": "Seeds do not change speed.",
                "c": "PyTorch starts them happily: that is why the bug is silent.",
            },
        ),
        "q3": Question(
            "A 2-core CPU machine trains a small CNN that keeps both cores busy; loading takes 10% of the loop. "
            "What do 4 DataLoader workers most likely do?",
            answer="c",
            options={
                "a": "cut the step time by up to 4x",
                "b": "remove the 10% wait and nothing else",
                "c": "little or nothing, or slow it down: the workers compete with the trainer for the same 2 cores",
            },
            why="Workers only help when a core would otherwise sit idle; measure the idle fraction first.",
            wrong={
                "a": "Workers overlap loading, they do not speed up the trainer's compute.",
                "b": "Only if there were idle cores to run them on; here they take cores from the trainer.",
            },
        ),
        "q4": Question(
            "With non-persistent workers and the RandomState bug, what does epoch 2 look like?",
            answer="a",
            options={
                "a": "the same draws as epoch 1: every epoch's workers start from the same copied state",
                "b": "new draws, because the parent's RNG advanced",
                "c": "no augmentation at all",
            },
            why="The parent never drew from its RandomState; fresh workers copy the same untouched state each epoch.",
            wrong={
                "b": "The draws happened in the workers' copies; the parent's state never moved.",
                "c": "The augmentation still runs, with repeated offsets.",
            },
        ),
        "q5": Question(
            (
                "From your run: how many distinct brightness offsets did the plain DataLoader give the 8 photos "
                "(the table above)?"
            ),
            answer=None,
            measured="plain_distinct",
            why=(
                "The two workers start from copies of one RandomState, so they draw the same sequence: half the "
                "draws repeat the other half."
            ),
            wrong={
                "low": "count the different values in the plain DataLoader's column.",
                "high": "count each repeated value once.",
            },
        ),
        "q6": Question(
            ("With `persistent_workers=True` and the RandomState bug (no worker_init_fn), what happens in epoch 2?"),
            options={
                "a": (
                    "each worker continues its copied stream, so epoch 2 differs from epoch 1, but the workers "
                    "still repeat each other"
                ),
                "b": "the bug disappears",
                "c": "no augmentation at all",
            },
            answer="a",
            why=(
                "Persistent workers keep their state between epochs, which hides the repetition across epochs but "
                "not the duplicates between workers."
            ),
            wrong={
                "b": "the workers still start from the same copied state.",
                "c": "they draw offsets as before; only the repetition pattern changes.",
            },
        ),
        "q7": Question(
            (
                "PyTorch re-seeds `random`, `torch` and NumPy's global generator in every worker. Why does the "
                "augmentation above still repeat?"
            ),
            options={
                "a": "the photos are the same",
                "b": ("it holds its own np.random.RandomState object, copied into each worker with the same state"),
                "c": "PyTorch's seeding is broken",
            },
            answer="b",
            why=(
                "Global seeding cannot reach a generator object stored in the dataset: re-seed it in "
                "worker_init_fn (your make_seeded_loader) or draw from torch's generator."
            ),
            wrong={
                "a": "the photos differ; their offsets repeat.",
                "c": "the global generators are seeded per worker; the dataset's own object is not.",
            },
        ),
        "q8": Question(
            (
                "With 2 workers the profiler's wait per step is near zero and the compute time is unchanged. What "
                "do more workers buy?"
            ),
            options={
                "a": "nothing: the loop is now limited by compute",
                "b": "a proportionally faster loop",
                "c": "a more accurate model",
            },
            answer="a",
            why="Workers hide loading behind compute; once the wait is gone, only a faster model or device helps.",
            wrong={
                "b": "the wait they remove is already about zero.",
                "c": "loading speed does not change what is learned.",
            },
        ),
        "q9": Question(
            "When does `pin_memory=True` help?",
            options={
                "a": "on a CPU-only machine",
                "b": "always, equally",
                "c": ("when batches go to a CUDA GPU: page-locked memory makes the copy faster and lets it overlap"),
            },
            answer="c",
            why="Pinning speeds host-to-device copies; on a CPU there is no such copy.",
            wrong={
                "a": "there is no host-to-device copy on a CPU.",
                "b": "it only matters for copies to a GPU.",
            },
        ),
        "q10": Question(
            (
                "From your run: with 0 workers, what share of the fast consumer's loop did your `time_steps` measure "
                "as waiting for data (`timed_idle`, the first row of the table timed by your function)?"
            ),
            answer=None,
            measured="timed_idle",
            tolerance=0.005,
            why=(
                "With 0 workers the trainer's own process decodes and augments every photo, and the fast "
                "consumer's step takes milliseconds: most of the loop is loading, which is what workers can hide."
            ),
            wrong={
                "low": "read the idle fraction of the 0-worker row (wait / (wait + compute)).",
                "high": "read the idle fraction of the 0-worker row (wait / (wait + compute)).",
            },
        ),
    },
    research=[
        (
            "Raise `prefetch_factor` from 2 to 8 with 2 workers and time it with your `time_steps`: when can batches "
            "loaded ahead help, and why can they not help a loop whose loading is slower than its compute on "
            "average?"
        ),
        (
            "Time an epoch with num_workers 0 to 4 on your own machine: where does it stop helping, and what does "
            "the profiler show there?"
        ),
        (
            "Read PyTorch's notes on randomness in multi-process data loading: what does `get_worker_info()` "
            "return inside a worker, and how would you seed a NumPy Generator from it?"
        ),
    ],
)
