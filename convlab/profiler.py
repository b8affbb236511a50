"""Is the trainer waiting for data? Time a loop over a loader, split into waiting for the batch vs computing.

:func:`profile_loader` runs ``step_fn(batch)`` for each batch and measures contiguous intervals on one clock:

    t0 ──wait₀──▶ batch 0 ──compute₀──▶ ... ──wait_k──▶ batch k ──compute_k──▶ ... ──end wait──▶ StopIteration

so ``total_wait_s + total_compute_s == wall_s`` by construction. "wait" includes creating the iterator (worker
start-up) in the first step of each epoch and discovering the end of each epoch (``end_wait_s``). On CUDA, the
clock is read after ``torch.cuda.synchronize()``, or asynchronous kernels would be booked as the next step's
waiting time.

Warm-up vs steady state. The first step(s) pay one-off costs (starting the worker processes, filling their
prefetch queues, first-call allocations), so a short loop measures mostly start-up. With ``warmup_steps=k`` the
first ``k`` steps are still timed (and drawn, marked, by :func:`plot_timeline`), but ``images_per_s`` and
``idle_fraction`` are computed over the *steady state*: from the moment step ``k`` starts waiting to the end of
the loop (end-of-epoch waits after the warm-up included). ``epochs=None`` repeats the loader as many times as
needed to time ``max_steps`` steps, so ``persistent_workers`` and the start of a new epoch are part of it.

:func:`compare_workers` profiles the same dataset and step under several ``num_workers``; :func:`worker_readings`
reads what those comparisons say, and :func:`plot_timeline` and :func:`plot_throughput` draw the results.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from convlab.display import Table
from convlab.loading import make_loader

if TYPE_CHECKING:  # annotations only: no import cost or cycle at run time
    from matplotlib.figure import Figure
    from torch.utils.data import Dataset

__all__ = ["LoaderProfile", "profile_loader", "compare_workers", "worker_readings", "plot_timeline", "plot_throughput"]


@dataclass
class LoaderProfile:
    """Per-step timings of one profiled loop (seconds, from the profiler's clock; ``time.perf_counter`` by default).

    Attributes:
        label: a name for plots and tables.
        start_s: ``(steps,)`` when each step began waiting, relative to the start of the loop.
        wait_s: ``(steps,)`` time from the end of the previous step (or epoch) to having the batch.
        compute_s: ``(steps,)`` time in ``step_fn`` (after synchronising CUDA, when used).
        images: ``(steps,)`` images per batch.
        epoch: ``(steps,)`` which epoch each step belongs to.
        end_wait_s: waiting for the loaders to report the end of each epoch (joins non-persistent workers).
        wall_s: the loop's wall time; equals ``total_wait_s + total_compute_s`` up to rounding.
        info: extra columns for :meth:`row` (e.g. ``{"workers": 2}``).
        warmup_steps: how many leading steps are warm-up: timed and plotted, but left out of ``images_per_s``,
            ``idle_fraction`` and the ``steady_*`` figures (0: the whole loop is the steady state).
    """

    label: str
    start_s: np.ndarray
    wait_s: np.ndarray
    compute_s: np.ndarray
    images: np.ndarray
    epoch: np.ndarray
    end_wait_s: float
    wall_s: float
    info: dict = field(default_factory=dict)
    warmup_steps: int = 0

    @property
    def steps(self) -> int:
        """All timed steps, warm-up included."""
        return len(self.wait_s)

    @property
    def total_wait_s(self) -> float:
        """Waiting over the whole loop (warm-up included)."""
        return float(self.wait_s.sum()) + self.end_wait_s

    @property
    def total_compute_s(self) -> float:
        """Computing over the whole loop (warm-up included)."""
        return float(self.compute_s.sum())

    # -- the steady state: from the start of step ``warmup_steps`` to the end of the loop
    @property
    def steady_steps(self) -> int:
        return max(self.steps - self.warmup_steps, 0)

    @property
    def warmup_s(self) -> float:
        """Wall time of the warm-up steps (worker start-up included); ``wall_s`` if no step is left after them."""
        return float(self.start_s[self.warmup_steps]) if self.steady_steps else self.wall_s

    @property
    def steady_wall_s(self) -> float:
        return self.wall_s - self.warmup_s

    @property
    def steady_compute_s(self) -> float:
        return float(self.compute_s[self.warmup_steps :].sum())

    @property
    def steady_wait_s(self) -> float:
        """Waiting after the warm-up: the steps' waits plus the end-of-epoch waits after the warm-up."""
        return max(self.steady_wall_s - self.steady_compute_s, 0.0)

    @property
    def steady_images(self) -> int:
        return int(self.images[self.warmup_steps :].sum())

    @property
    def idle_fraction(self) -> float:
        """Share of the steady-state wall time the trainer spent waiting for data (0: never starved).

        NaN when no step is left after the warm-up; 0 when the steady state took no measurable time.
        """
        return self._per_steady_second(self.steady_wait_s)

    @property
    def images_per_s(self) -> float:
        """Steady-state throughput: images through ``step_fn`` per second of wall time after the warm-up.

        NaN when no step is left after the warm-up; 0 when the steady state took no measurable time.
        """
        return self._per_steady_second(self.steady_images)

    def _per_steady_second(self, amount: float) -> float:
        """``amount`` per second of steady-state wall time: NaN without steady steps, 0 without measurable time."""
        if not self.steady_steps:
            return math.nan
        return amount / self.steady_wall_s if self.steady_wall_s > 0 else 0.0

    def row(self) -> dict:
        """A summary row for :class:`convlab.display.Table`.

        ``steps`` counts all timed steps and ``warmup_s`` is the warm-up's wall time; ``images``, ``wall_s``,
        ``wait_s``, ``compute_s``, ``idle_fraction`` and ``images_per_s`` are over the steady state, so
        ``wait_s + compute_s == wall_s`` and ``images / wall_s == images_per_s`` within the row.
        """
        return {
            "label": self.label,
            **self.info,
            "steps": self.steps,
            "warmup_steps": self.warmup_steps,
            "warmup_s": self.warmup_s,
            "images": self.steady_images,
            "wall_s": self.steady_wall_s,
            "wait_s": self.steady_wait_s,
            "compute_s": self.steady_compute_s,
            "idle_fraction": self.idle_fraction,
            "images_per_s": self.images_per_s,
        }

    def __repr__(self) -> str:
        warm = f", after {self.warmup_steps} warm-up steps ({self.warmup_s:.2f} s)" if self.warmup_steps else ""
        return (
            f"LoaderProfile({self.label!r}: {self.steps} steps, {self.images_per_s:.1f} img/s, "
            f"idle {self.idle_fraction:.0%} of {self.steady_wall_s:.2f} s{warm})"
        )


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    if isinstance(first, torch.Tensor) and first.ndim > 0:
        return int(first.shape[0])
    raise TypeError(f"batch: cannot count its images (got {type(first).__name__}); pass count_fn=")


def _check_int(value: Any, name: str, lowest: int, allow_none: bool = False) -> None:
    expected = f"{'None or ' if allow_none else ''}an int >= {lowest}"
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected {expected}, got {type(value).__name__} {value!r}")
    if value < lowest:
        raise ValueError(f"{name}: expected {expected}, got {value!r}")


def profile_loader(
    loader: Iterable,
    step_fn: Callable[[Any], Any],
    epochs: int | None = 1,
    max_steps: int | None = None,
    label: str = "",
    sync_cuda: bool | None = None,
    count_fn: Callable[[Any], int] = _batch_size,
    warmup_steps: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> LoaderProfile:
    """Run ``step_fn(batch)`` over passes of ``loader`` and time waiting vs computing, step by step.

    Args:
        loader: any re-iterable of batches (a DataLoader, a :class:`~convlab.loading.DeviceAugmentedLoader`, a list).
        step_fn: the trainer's work on one batch (e.g. forward, backward, optimiser step).
        epochs: passes over ``loader``; each pass creates a new iterator, and its cost counts as waiting.
            ``None``: as many passes as needed to time ``max_steps`` steps (one pass when ``max_steps`` is None;
            it also stops at a pass that yields no batch).
        max_steps: stop after this many steps in total (the rest of the epoch is not timed).
        label: a name for plots and tables.
        sync_cuda: call ``torch.cuda.synchronize()`` before each clock read (default: when CUDA is available).
        count_fn: images in a batch (default: the length of the first tensor).
        warmup_steps: leading steps left out of the steady-state figures (``images_per_s``, ``idle_fraction``);
            they are still timed and plotted. Must be smaller than ``max_steps``.
        clock: a zero-argument function returning seconds (default ``time.perf_counter``); inject a fake one
            to test code that uses the profiler.

    Returns:
        a :class:`LoaderProfile` with ``(steps,)`` arrays.

    Raises:
        TypeError / ValueError: a bad argument (named in the message), or a batch whose images cannot be counted.
        ValueError: the loader gave no step after the warm-up (nothing to measure).
    """
    _check_int(epochs, "epochs", 1, allow_none=True)
    _check_int(max_steps, "max_steps", 1, allow_none=True)
    _check_int(warmup_steps, "warmup_steps", 0)
    if max_steps is not None and warmup_steps >= max_steps:
        raise ValueError(f"warmup_steps: expected fewer than max_steps={max_steps}, got {warmup_steps}")
    if not callable(clock):
        raise TypeError(f"clock: expected a callable returning seconds, got {type(clock).__name__}")
    if sync_cuda is None:
        sync_cuda = torch.cuda.is_available()
    if epochs is None:
        epochs = 1 if max_steps is None else None

    def read() -> float:
        if sync_cuda:
            torch.cuda.synchronize()
        return float(clock())

    starts, waits, computes, images, epoch_of = [], [], [], [], []
    end_wait = 0.0
    t0 = last = read()
    epoch = 0
    while epochs is None or epoch < epochs:
        iterator = iter(loader)
        steps_before = len(waits)
        while max_steps is None or len(waits) < max_steps:
            try:
                batch = next(iterator)
            except StopIteration:
                now = read()
                end_wait += now - last
                last = now
                break
            got = read()
            count = count_fn(batch)  # before the step, which may consume the batch
            step_fn(batch)
            done = read()
            starts.append(last - t0)
            waits.append(got - last)
            computes.append(done - got)
            images.append(count)
            epoch_of.append(epoch)
            last = done
        del iterator
        epoch += 1
        if max_steps is not None and len(waits) >= max_steps:
            break
        if len(waits) == steps_before:  # an empty pass: repeating it would never reach max_steps
            break
    if warmup_steps and len(waits) <= warmup_steps:
        raise ValueError(
            f"loader: expected more than warmup_steps={warmup_steps} batches, got {len(waits)} "
            f"in {epoch} epoch(s); use more epochs or fewer warm-up steps"
        )
    return LoaderProfile(
        label=label,
        start_s=np.asarray(starts, dtype=np.float64),
        wait_s=np.asarray(waits, dtype=np.float64),
        compute_s=np.asarray(computes, dtype=np.float64),
        images=np.asarray(images, dtype=np.int64),
        epoch=np.asarray(epoch_of, dtype=np.int64),
        end_wait_s=end_wait,
        wall_s=last - t0,
        warmup_steps=warmup_steps,
    )


def compare_workers(
    dataset: Dataset,
    step_fn: Callable[[Any], Any],
    workers: Sequence[int] = (0, 1, 2),
    batch_size: int = 32,
    epochs: int | None = None,
    max_steps: int | None = 12,
    persistent_workers: bool = True,
    prefetch_factor: int = 2,
    seed: int = 0,
    return_profiles: bool = False,
    warmup_steps: int = 1,
):
    """Profile ``step_fn`` on batches of ``dataset`` loaded with each ``num_workers`` in ``workers``.

    Each setting times ``max_steps`` batches, over as many epochs as that takes (``epochs=None``; pass an int to
    fix the number of passes instead). The first ``warmup_steps`` steps (worker start-up, first prefetch) are
    timed and plotted but left out of ``images_per_s``, ``idle_fraction`` and the row's ``wall_s``, ``wait_s``,
    ``compute_s`` and ``images``; their wall time is the row's ``warmup_s``. The default (12 batches of 32 per
    setting) keeps the whole comparison to tens of seconds on 2 CPU cores for a small-CNN step.

    Returns:
        a list of rows ``{workers, images_per_s, idle_fraction, wait_s, compute_s, wall_s, warmup_s, steps,
        images}`` for :class:`convlab.display.Table`; with ``return_profiles=True``, ``(rows, profiles)`` for
        the plots.
    """
    _check_int(warmup_steps, "warmup_steps", 0)
    rows, profiles = [], []
    for w in workers:
        loader = make_loader(
            dataset,
            batch_size=batch_size,
            num_workers=w,
            persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor,
            seed=seed,
        )
        profile = profile_loader(
            loader, step_fn, epochs=epochs, max_steps=max_steps, label=_workers_label(w), warmup_steps=warmup_steps
        )
        profile.info = {"workers": w}
        del loader  # shut persistent workers down before the next setting competes for the cores
        profiles.append(profile)
        r = profile.row()
        rows.append(
            {
                k: r[k]
                for k in (
                    "workers",
                    "images_per_s",
                    "idle_fraction",
                    "wait_s",
                    "compute_s",
                    "wall_s",
                    "warmup_s",
                    "steps",
                    "images",
                )
            }
        )
    return (rows, profiles) if return_profiles else rows


def worker_readings(named_rows: Mapping[str, Sequence[Mapping]]) -> Table:
    """What each worker comparison reads, for ``name -> rows of`` :func:`compare_workers`: the fastest setting, the
    speed-up of the most workers over 0, the idle fraction with 0 workers, and a reading by fixed thresholds on that
    speed-up (above 1.1x "workers paid off", below 0.9x "workers slowed it down", else "no real difference"). One
    run, no seeds and no interval: a reading of this machine, not a verdict by :func:`convlab.verdicts.paired_ci`."""

    out = []
    for name, rows in named_rows.items():
        by = {r["workers"]: r for r in rows}
        most, best = max(by), max(rows, key=lambda r: r["images_per_s"])
        s = by[most]["images_per_s"] / by[0]["images_per_s"]
        reading = "workers paid off" if s > 1.1 else ("no real difference" if s > 0.9 else "workers slowed it down")
        out.append(
            {
                "setting": name,
                "fastest": f"{best['workers']} worker{'' if best['workers'] == 1 else 's'} "
                f"({best['images_per_s']:.0f} img/s)",
                f"{most} workers vs 0": f"{s:.2f}x",
                "idle with 0 workers": f"{by[0]['idle_fraction']:.0%}",
                "reading": reading,
            }
        )
    return Table(out, title="what the worker comparison says (steady state, this run)")


def plot_timeline(
    profiles: LoaderProfile | Sequence[LoaderProfile], max_steps: int | None = None, title: str = ""
) -> Figure:
    """One lane per profile: loader wait (orange) and trainer compute (blue) for each step, on a time axis.

    Warm-up steps are drawn hatched and pale, with a dashed mark where the steady state starts; the lane's label
    gives the steady-state throughput and idle fraction. Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    profiles = [profiles] if isinstance(profiles, LoaderProfile) else list(profiles)
    if not profiles:
        raise ValueError("profiles: expected at least one LoaderProfile, got none")
    fig, ax = plt.subplots(figsize=(9, 0.7 + 0.6 * len(profiles)))
    for lane, p in enumerate(profiles):
        n = p.steps if max_steps is None else min(max_steps, p.steps)
        y = (len(profiles) - 1 - lane, 0.8)
        for part in (slice(0, min(p.warmup_steps, n)), slice(min(p.warmup_steps, n), n)):
            warm = part.start == 0 and p.warmup_steps > 0
            style = {"alpha": 0.45, "hatch": "///"} if warm else {}
            start, wait, compute = p.start_s[part], p.wait_s[part], p.compute_s[part]
            ax.broken_barh(list(zip(start, wait)), y, facecolors="tab:orange", **style)
            ax.broken_barh(
                list(zip(start + wait, compute)), y, facecolors="tab:blue", edgecolor="white", linewidth=0.3, **style
            )
        if p.warmup_steps and p.steady_steps and p.warmup_steps < n:
            ax.plot([p.warmup_s] * 2, [y[0] - 0.1, y[0] + y[1] + 0.1], color="black", linestyle="--", linewidth=1)
    ax.set_yticks(
        [len(profiles) - 1 - i + 0.4 for i in range(len(profiles))],
        [f"{p.label}\n{p.images_per_s:.0f} img/s, idle {p.idle_fraction:.0%}" for p in profiles],
        fontsize=8,
    )
    ax.set_xlabel("time (s)")
    handles = [Patch(color="tab:orange", label="waiting for data"), Patch(color="tab:blue", label="computing")]
    if any(p.warmup_steps for p in profiles):
        handles.append(Patch(facecolor="lightgrey", hatch="///", label="warm-up (left out of img/s and idle)"))
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 if len(profiles) < 3 else -0.2),
        ncol=len(handles),
        fontsize=8,
        frameon=False,
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _workers_label(w: int) -> str:
    return f"{w} worker{'' if w == 1 else 's'}"


def plot_throughput(
    profiles: Sequence[LoaderProfile] | Sequence[dict] | Mapping[str, Sequence[LoaderProfile]],
    title: str = "steady-state throughput by number of loader workers",
) -> Figure:
    """Bars of steady-state images/s per configuration, labelled with the idle share of the time; returns the figure.

    ``profiles``: one sequence (one bar each), or ``{consumer name: profiles}`` to compare several consumers side by
    side (grouped bars with a legend, one group per configuration).
    """
    import matplotlib.pyplot as plt

    groups = dict(profiles) if isinstance(profiles, Mapping) else {"": profiles}
    tables = {name: [p.row() if isinstance(p, LoaderProfile) else dict(p) for p in ps] for name, ps in groups.items()}
    if not any(tables.values()):
        raise ValueError("profiles: expected at least one profile or row, got none")
    labels: list[str] = []
    for rows in tables.values():
        for r in rows:
            label = r.get("label") or _workers_label(int(r["workers"]))
            if label not in labels:
                labels.append(label)
    width = 0.8 / len(tables)
    fig, ax = plt.subplots(figsize=(2.0 + 1.4 * len(labels) * max(1, len(tables) * 0.8), 3.2))
    top = 0.0
    for g, (name, rows) in enumerate(tables.items()):
        xs = [
            labels.index(r.get("label") or _workers_label(int(r["workers"]))) + (g - (len(tables) - 1) / 2) * width
            for r in rows
        ]
        speed = [r["images_per_s"] for r in rows]
        ax.bar(xs, speed, width=width * 0.95, label=name or None)
        for x, row in zip(xs, rows):
            ax.text(
                x,
                row["images_per_s"],
                f"{row['images_per_s']:.0f}/s\nidle {row['idle_fraction']:.0%}",
                ha="center",
                va="bottom",
                fontsize=7,
            )
        top = max([top, *speed])
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("images / s (steady state)")
    ax.set_ylim(0, top * 1.35 if top > 0 else 1)  # room for the labels above the bars
    if len(tables) > 1:
        ax.legend(fontsize=8, frameon=False, loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    return fig
