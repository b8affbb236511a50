"""Is the trainer waiting for data? Time a loop over a loader, split into waiting for the batch vs computing.

:func:`profile_loader` runs ``step_fn(batch)`` for each batch and measures contiguous intervals on one clock:

    t0 ──wait₀──▶ batch 0 ──compute₀──▶ ... ──wait_k──▶ batch k ──compute_k──▶ ... ──end wait──▶ StopIteration

so ``total_wait_s + total_compute_s == wall_s`` by construction. "wait" includes creating the iterator (worker
start-up) in step 0 and discovering the end of each epoch (``end_wait_s``). On CUDA, the clock is read after
``torch.cuda.synchronize()``, or asynchronous kernels would be booked as the next step's waiting time.

:func:`compare_workers` profiles the same dataset and step under several ``num_workers``; :func:`plot_timeline`
and :func:`plot_throughput` draw the results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

__all__ = ["LoaderProfile", "profile_loader", "compare_workers", "plot_timeline", "plot_throughput"]


@dataclass
class LoaderProfile:
    """Per-step timings of one profiled loop (seconds, from ``time.perf_counter``).

    Attributes:
        label: a name for plots and tables.
        start_s: ``(steps,)`` when each step began waiting, relative to the start of the loop.
        wait_s: ``(steps,)`` time from the end of the previous step to having the batch.
        compute_s: ``(steps,)`` time in ``step_fn`` (after synchronising CUDA, when used).
        images: ``(steps,)`` images per batch.
        epoch: ``(steps,)`` which epoch each step belongs to.
        end_wait_s: waiting for the loaders to report the end of each epoch (joins non-persistent workers).
        wall_s: the loop's wall time; equals ``total_wait_s + total_compute_s`` up to rounding.
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

    @property
    def steps(self) -> int:
        return len(self.wait_s)

    @property
    def total_wait_s(self) -> float:
        return float(self.wait_s.sum()) + self.end_wait_s

    @property
    def total_compute_s(self) -> float:
        return float(self.compute_s.sum())

    @property
    def idle_fraction(self) -> float:
        """Share of the wall time the trainer spent waiting for data (0: never starved)."""
        return self.total_wait_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def images_per_s(self) -> float:
        """End-to-end throughput: images through ``step_fn`` per second of wall time."""
        return float(self.images.sum()) / self.wall_s if self.wall_s > 0 else 0.0

    def row(self) -> dict:
        """A summary row for :class:`convlab.display.Table`."""
        return {
            "label": self.label,
            **self.info,
            "steps": self.steps,
            "images": int(self.images.sum()),
            "wall_s": self.wall_s,
            "wait_s": self.total_wait_s,
            "compute_s": self.total_compute_s,
            "idle_fraction": self.idle_fraction,
            "images_per_s": self.images_per_s,
        }

    def __repr__(self) -> str:
        return (f"LoaderProfile({self.label!r}: {self.steps} steps, {self.images_per_s:.1f} img/s, "
                f"idle {self.idle_fraction:.0%} of {self.wall_s:.2f} s)")


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    if isinstance(first, torch.Tensor) and first.ndim > 0:
        return int(first.shape[0])
    raise TypeError(f"batch: cannot count its images (got {type(first).__name__}); pass count_fn=")


def profile_loader(
    loader: Iterable,
    step_fn: Callable[[Any], Any],
    epochs: int = 1,
    max_steps: int | None = None,
    label: str = "",
    sync_cuda: bool | None = None,
    count_fn: Callable[[Any], int] = _batch_size,
) -> LoaderProfile:
    """Run ``step_fn(batch)`` over ``epochs`` passes of ``loader`` and time waiting vs computing, step by step.

    Args:
        loader: any iterable of batches (a DataLoader, a :class:`~convlab.loading.DeviceAugmentedLoader`, a list).
        step_fn: the trainer's work on one batch (e.g. forward, backward, optimiser step).
        epochs: passes over ``loader``; each pass creates a new iterator, and its cost counts as waiting.
        max_steps: stop after this many steps in total (the rest of the epoch is not timed).
        sync_cuda: call ``torch.cuda.synchronize()`` before each clock read (default: when CUDA is available).
        count_fn: images in a batch (default: the length of the first tensor).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"max_steps: expected None or an int >= 1, got {max_steps!r}")
    if sync_cuda is None:
        sync_cuda = torch.cuda.is_available()

    def clock() -> float:
        if sync_cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    starts, waits, computes, images, epoch_of = [], [], [], [], []
    end_wait = 0.0
    t0 = last = clock()
    for epoch in range(epochs):
        iterator = iter(loader)
        while max_steps is None or len(waits) < max_steps:
            try:
                batch = next(iterator)
            except StopIteration:
                now = clock()
                end_wait += now - last
                last = now
                break
            got = clock()
            count = count_fn(batch)  # before the step, which may consume the batch
            step_fn(batch)
            done = clock()
            starts.append(last - t0)
            waits.append(got - last)
            computes.append(done - got)
            images.append(count)
            epoch_of.append(epoch)
            last = done
        if max_steps is not None and len(waits) >= max_steps:
            break
    wall = last - t0
    return LoaderProfile(
        label=label,
        start_s=np.asarray(starts, dtype=np.float64),
        wait_s=np.asarray(waits, dtype=np.float64),
        compute_s=np.asarray(computes, dtype=np.float64),
        images=np.asarray(images, dtype=np.int64),
        epoch=np.asarray(epoch_of, dtype=np.int64),
        end_wait_s=end_wait,
        wall_s=wall,
    )


def compare_workers(
    dataset,
    step_fn: Callable[[Any], Any],
    workers: Sequence[int] = (0, 1, 2),
    batch_size: int = 32,
    epochs: int = 1,
    max_steps: int | None = 12,
    persistent_workers: bool = True,
    prefetch_factor: int = 2,
    seed: int = 0,
    return_profiles: bool = False,
):
    """Profile ``step_fn`` on batches of ``dataset`` loaded with each ``num_workers`` in ``workers``.

    The default (12 batches of 32 per setting) keeps the whole comparison to tens of seconds on 2 CPU cores for
    a small-CNN step. Worker start-up is inside the measurement (step 0's wait), as in a real first epoch.

    Returns:
        a list of rows ``{workers, images_per_s, idle_fraction, wait_s, compute_s, wall_s, steps, images}`` for
        :class:`convlab.display.Table`; with ``return_profiles=True``, ``(rows, profiles)`` for the plots.
    """
    from convlab.loading import make_loader

    rows, profiles = [], []
    for w in workers:
        loader = make_loader(dataset, batch_size=batch_size, num_workers=w, persistent_workers=persistent_workers,
                             prefetch_factor=prefetch_factor, seed=seed)
        profile = profile_loader(loader, step_fn, epochs=epochs, max_steps=max_steps, label=f"{w} workers")
        profile.info = {"workers": w}
        del loader  # shut persistent workers down before the next setting competes for the cores
        profiles.append(profile)
        r = profile.row()
        rows.append({k: r[k] for k in ("workers", "images_per_s", "idle_fraction", "wait_s", "compute_s", "wall_s", "steps", "images")})
    return (rows, profiles) if return_profiles else rows


def plot_timeline(profiles: LoaderProfile | Sequence[LoaderProfile], max_steps: int | None = None, title: str = ""):
    """One lane per profile: loader wait (orange) and trainer compute (blue) for each step, on a time axis."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    profiles = [profiles] if isinstance(profiles, LoaderProfile) else list(profiles)
    if not profiles:
        raise ValueError("profiles: expected at least one LoaderProfile, got none")
    fig, ax = plt.subplots(figsize=(9, 0.7 + 0.6 * len(profiles)))
    for lane, p in enumerate(profiles):
        n = p.steps if max_steps is None else min(max_steps, p.steps)
        y = (len(profiles) - 1 - lane, 0.8)
        waits = list(zip(p.start_s[:n], p.wait_s[:n]))
        computes = list(zip(p.start_s[:n] + p.wait_s[:n], p.compute_s[:n]))
        ax.broken_barh(waits, y, facecolors="tab:orange")
        ax.broken_barh(computes, y, facecolors="tab:blue", edgecolor="white", linewidth=0.3)
    ax.set_yticks([len(profiles) - 1 - i + 0.4 for i in range(len(profiles))],
                  [f"{p.label}\n{p.images_per_s:.0f} img/s, idle {p.idle_fraction:.0%}" for p in profiles], fontsize=8)
    ax.set_xlabel("time (s)")
    ax.legend(handles=[Patch(color="tab:orange", label="waiting for data"), Patch(color="tab:blue", label="computing")],
              loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(profiles) < 3 else -0.2), ncol=2, fontsize=8, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_throughput(profiles: Sequence[LoaderProfile] | Sequence[dict], title: str = ""):
    """Bars of images/s per configuration, split into the busy and the idle share of the time."""
    import matplotlib.pyplot as plt

    rows = [p.row() if isinstance(p, LoaderProfile) else dict(p) for p in profiles]
    if not rows:
        raise ValueError("profiles: expected at least one profile or row, got none")
    labels = [r.get("label") or f"{r['workers']} workers" for r in rows]
    speed = np.array([r["images_per_s"] for r in rows])
    idle = np.array([r["idle_fraction"] for r in rows])
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 3))
    ax.bar(labels, speed, color="tab:blue")
    for x, (s, i) in enumerate(zip(speed, idle)):
        ax.text(x, s, f"{s:.0f} img/s\nidle {i:.0%}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("images / s (end to end)")
    ax.set_ylim(0, speed.max() * 1.25 if speed.max() > 0 else 1)
    ax.set_title(title)
    fig.tight_layout()
    return fig
