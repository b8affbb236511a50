"""Loader profiler on a fake clock: exact waits, computes, wall and steady-state figures; epochs to reach max_steps;
warm-up left out of the rates but plotted; rows, plots and argument errors. No assertion depends on real time."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from torch.utils.data import TensorDataset

from convlab.display import Table
from convlab.profiler import (
    LoaderProfile,
    compare_workers,
    plot_throughput,
    plot_timeline,
    profile_loader,
    worker_readings,
)


class FakeClock:
    """A clock that only moves when told to (all amounts are binary fractions, so sums are exact)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeLoader:
    """``n`` batches of ``batch`` images per pass; fetching advances ``clock`` by known amounts.

    The first batch of each pass costs ``startup + wait`` (like starting workers), the others ``wait``, and
    discovering the end of a pass costs ``end``.
    """

    def __init__(
        self, clock: FakeClock, n: int = 3, batch: int = 4, startup: float = 2.0, wait: float = 0.25, end: float = 0.5
    ):
        self.clock, self.n, self.batch, self.startup, self.wait, self.end = clock, n, batch, startup, wait, end
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        for i in range(self.n):
            self.clock.advance(self.wait + (self.startup if i == 0 else 0.0))
            yield torch.zeros(self.batch, 3, 2, 2)
        self.clock.advance(self.end)


def _stepper(clock: FakeClock, seconds: float = 1.0):
    seen = []

    def step(batch):
        seen.append(batch.shape[0])
        clock.advance(seconds)

    return step, seen


def test_fake_clock_gives_exact_waits_computes_and_wall():
    clock = FakeClock()
    step, seen = _stepper(clock, 1.0)
    p = profile_loader(FakeLoader(clock), step, epochs=2, clock=clock, sync_cuda=False)
    assert seen == [4] * 6 and p.steps == 6 and p.epoch.tolist() == [0, 0, 0, 1, 1, 1]
    assert p.wait_s.tolist() == [2.25, 0.25, 0.25, 2.25, 0.25, 0.25]
    assert p.compute_s.tolist() == [1.0] * 6
    assert p.start_s.tolist() == [0.0, 3.25, 4.5, 6.25, 9.5, 10.75]
    assert p.end_wait_s == 1.0 and p.wall_s == 12.5 == clock.now
    assert p.total_wait_s == 6.5 and p.total_compute_s == 6.0
    # no warm-up: the steady state is the whole loop
    assert p.warmup_s == 0.0 and p.steady_wall_s == 12.5
    assert p.idle_fraction == 6.5 / 12.5 and p.images_per_s == 24 / 12.5


def test_warmup_steps_are_left_out_of_the_steady_state_figures():
    clock = FakeClock()
    step, _ = _stepper(clock, 1.0)
    p = profile_loader(FakeLoader(clock), step, epochs=2, warmup_steps=1, clock=clock, sync_cuda=False)
    assert p.steps == 6 and p.warmup_steps == 1  # the warm-up step is still timed
    assert p.warmup_s == 3.25 and p.steady_wall_s == 9.25
    assert p.steady_compute_s == 5.0
    assert p.steady_wait_s == 4.25  # 4 waits of 0.25, the second start-up (2.0) and both end-of-epoch waits
    assert p.steady_images == 20
    assert p.images_per_s == 20 / 9.25 and p.idle_fraction == 4.25 / 9.25
    row = p.row()
    assert (row["steps"], row["warmup_steps"], row["warmup_s"], row["images"]) == (6, 1, 3.25, 20)
    assert (row["wall_s"], row["wait_s"], row["compute_s"]) == (9.25, 4.25, 5.0)


def test_epochs_none_runs_as_many_epochs_as_max_steps_needs():
    clock = FakeClock()
    step, _ = _stepper(clock, 0.5)
    loader = FakeLoader(clock, n=3, startup=1.0, wait=0.25, end=0.125)
    p = profile_loader(loader, step, epochs=None, max_steps=7, clock=clock, sync_cuda=False)
    assert p.steps == 7 and p.epoch.tolist() == [0, 0, 0, 1, 1, 1, 2] and loader.passes == 3
    assert p.wait_s.tolist() == [1.25, 0.25, 0.25] * 2 + [1.25]
    assert p.end_wait_s == 0.25  # two finished epochs; the third stopped at max_steps
    assert p.wall_s == 4.75 + 7 * 0.5 + 0.25 == clock.now


def test_epochs_none_without_max_steps_is_one_epoch_and_empty_passes_stop():
    clock = FakeClock()
    step, _ = _stepper(clock)
    assert profile_loader(FakeLoader(clock), step, epochs=None, clock=clock, sync_cuda=False).steps == 3
    empty = FakeLoader(clock, n=0)
    assert profile_loader(empty, step, epochs=None, max_steps=5, clock=clock, sync_cuda=False).steps == 0
    assert empty.passes == 1
    with pytest.raises(ValueError, match="warmup_steps=2 batches, got 0"):
        profile_loader(FakeLoader(clock, n=0), step, epochs=None, max_steps=5, warmup_steps=2, clock=clock)


def test_max_steps_stops_early_and_counts_only_timed_steps():
    clock = FakeClock()
    step, seen = _stepper(clock, 1.0)
    p = profile_loader(FakeLoader(clock, n=10), step, epochs=3, max_steps=12, clock=clock, sync_cuda=False)
    assert p.steps == 12 == len(seen) and p.epoch.tolist() == [0] * 10 + [1] * 2
    assert p.wall_s == (2.0 + 10 * 0.25 + 0.5) + (2.0 + 2 * 0.25) + 12 * 1.0


def test_a_profile_without_steady_steps_has_no_rates():
    import numpy as np

    empty = np.zeros(1)
    p = LoaderProfile(
        "x", empty, empty, empty, np.ones(1, dtype=np.int64), np.zeros(1, dtype=np.int64), 0.0, 1.0, warmup_steps=1
    )
    assert p.steady_steps == 0 and math.isnan(p.images_per_s) and math.isnan(p.idle_fraction)


def test_timeline_marks_the_warmup():
    clock = FakeClock()
    step, _ = _stepper(clock)
    warm = profile_loader(FakeLoader(clock), step, epochs=2, warmup_steps=1, label="warm", clock=clock, sync_cuda=False)
    ax = plot_timeline([warm]).axes[0]
    assert any("warm-up" in t.get_text() for t in ax.get_legend().get_texts())
    assert [tuple(line.get_xdata()) for line in ax.lines] == [(3.25, 3.25)]
    plain = profile_loader(FakeLoader(clock), step, clock=clock, sync_cuda=False)
    ax = plot_timeline(plain).axes[0]
    assert not ax.lines and all("warm-up" not in t.get_text() for t in ax.get_legend().get_texts())


def test_compare_workers_rows_and_plots():
    ds = TensorDataset(torch.zeros(24, 3, 8, 8, dtype=torch.uint8), torch.zeros(24, dtype=torch.long))
    rows, profiles = compare_workers(
        ds, lambda b: b[0].float().sum(), workers=(0, 2), batch_size=8, max_steps=5, return_profiles=True
    )
    assert [r["workers"] for r in rows] == [0, 2]
    for r, p in zip(rows, profiles):
        # 3 batches per epoch: 5 steps need a second epoch; the first step is warm-up
        assert isinstance(p, LoaderProfile) and p.epoch.tolist() == [0, 0, 0, 1, 1] and p.warmup_steps == 1
        assert r["steps"] == 5 and r["images"] == 32 and r["warmup_s"] == p.warmup_s
    table = Table(rows)
    assert table.column("workers") == [0, 2]
    assert plot_timeline(profiles).axes and plot_throughput(profiles).axes and plot_throughput(rows).axes


def test_bad_arguments_name_themselves():
    work = lambda batch: None  # noqa: E731
    with pytest.raises(ValueError, match="epochs: expected None or an int >= 1, got 0"):
        profile_loader([], work, epochs=0)
    with pytest.raises(TypeError, match="epochs: expected None or an int >= 1, got float"):
        profile_loader([], work, epochs=1.5)
    with pytest.raises(ValueError, match="max_steps"):
        profile_loader([], work, max_steps=0)
    with pytest.raises(ValueError, match="warmup_steps: expected an int >= 0, got -1"):
        profile_loader([], work, warmup_steps=-1)
    with pytest.raises(ValueError, match="warmup_steps: expected fewer than max_steps=2, got 2"):
        profile_loader([], work, max_steps=2, warmup_steps=2)
    with pytest.raises(TypeError, match="clock"):
        profile_loader([], work, clock=0.0)
    with pytest.raises(TypeError, match="count_fn"):
        profile_loader([["not a tensor"]], work)
    with pytest.raises(TypeError, match="warmup_steps"):
        compare_workers(TensorDataset(torch.zeros(2, 1)), work, warmup_steps=None)


def test_throughput_plot_groups_consumers_and_says_worker_in_the_singular():
    import matplotlib

    matplotlib.use("Agg")
    rows = lambda k: [{"workers": w, "images_per_s": k * (w + 1), "idle_fraction": 0.1} for w in (0, 1, 2)]  # noqa: E731
    fig = plot_throughput({"slow": rows(10.0), "fast": rows(100.0)}, title="t")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0 workers", "1 worker", "2 workers"]
    assert len(ax.patches) == 6 and ax.get_legend() is not None and ax.get_title() == "t"
    assert ax.get_ylim()[1] > 300, "labels above the tallest bar stay inside the axes"
    assert plot_throughput(rows(1.0)).axes[0].get_title(), "a default title"


def test_worker_readings_name_the_fastest_setting_and_read_the_speed_up_by_its_thresholds():
    def rows(*rates):
        return [{"workers": w, "images_per_s": r, "idle_fraction": 0.4 / (w + 1)} for w, r in enumerate(rates)]

    table = worker_readings({"paid": rows(100, 150, 190), "flat": rows(50, 52, 51), "slower": rows(300, 200, 150)})
    paid, flat, slower = table.rows
    assert paid["fastest"] == "2 workers (190 img/s)" and paid["2 workers vs 0"] == "1.90x"
    assert paid["idle with 0 workers"] == "40%" and paid["reading"] == "workers paid off"
    assert flat["fastest"] == "1 worker (52 img/s)" and flat["reading"] == "no real difference"
    assert slower["fastest"] == "0 workers (300 img/s)" and slower["reading"] == "workers slowed it down"
