"""Loader profiler: wait + compute is the measured wall time by construction; per-step arrays; plots and rows."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch.utils.data import TensorDataset

from convlab.display import Table
from convlab.profiler import LoaderProfile, compare_workers, plot_throughput, plot_timeline, profile_loader


class _Clocked:
    """A re-iterable list of ``n`` batches of ``batch`` small images."""

    def __init__(self, n: int, batch: int = 4):
        self.batches = [torch.zeros(batch, 3, 8, 8) for _ in range(n)]

    def __iter__(self):
        yield from self.batches


def _work(batch):
    # deterministic, non-trivial compute (no sleeping, no timing assertions)
    return (batch @ batch.transpose(-1, -2)).sum()


def test_wait_plus_compute_is_the_wall_time():
    p = profile_loader(_Clocked(7), _work, epochs=2)
    assert p.steps == 14 and p.images.sum() == 56 and p.epoch.tolist() == [0] * 7 + [1] * 7
    assert abs(p.total_wait_s + p.total_compute_s - p.wall_s) < 1e-9
    # contiguous intervals: each step starts where the previous one ended (plus end-of-epoch waits)
    ends = p.start_s + p.wait_s + p.compute_s
    assert all(abs(ends[i] - p.start_s[i + 1]) < 1e-9 for i in range(6))
    assert (p.wait_s >= 0).all() and (p.compute_s >= 0).all() and 0 <= p.idle_fraction <= 1
    assert p.images_per_s == pytest.approx(56 / p.wall_s)


def test_max_steps_stops_early_and_counts_only_timed_steps():
    p = profile_loader(_Clocked(10), _work, epochs=3, max_steps=12)
    assert p.steps == 12 and p.epoch.tolist() == [0] * 10 + [1] * 2
    assert abs(p.total_wait_s + p.total_compute_s - p.wall_s) < 1e-9


def test_compare_workers_rows_and_plots():
    ds = TensorDataset(torch.zeros(24, 3, 8, 8, dtype=torch.uint8), torch.zeros(24, dtype=torch.long))
    rows, profiles = compare_workers(ds, lambda b: _work(b[0].float()), workers=(0, 2), batch_size=8, max_steps=None,
                                     return_profiles=True)
    assert [r["workers"] for r in rows] == [0, 2] and all(r["images"] == 24 for r in rows)
    for r, p in zip(rows, profiles):
        assert isinstance(p, LoaderProfile) and abs(r["wait_s"] + r["compute_s"] - r["wall_s"]) < 1e-9
    table = Table(rows)
    assert table.column("workers") == [0, 2]
    assert plot_timeline(profiles).axes and plot_throughput(profiles).axes and plot_throughput(rows).axes


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="epochs"):
        profile_loader([], _work, epochs=0)
    with pytest.raises(TypeError, match="count_fn"):
        profile_loader([["not a tensor"]], lambda batch: None)
