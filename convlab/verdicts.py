"""Turn a notebook's measurements into verdicts with their uncertainty: small dataclasses, not f-string cells.

**The one rule.** Two configurations trained on the same seeds (the same training images, initial weights and batch
order for both) give one paired difference per seed. :func:`paired_ci` is the mean of those differences with its 95%
Student-t confidence interval; the effect is *shown* ("better" or "worse") only when the interval excludes zero, and
otherwise it is a **tie**. Every study, verdict and quiz of the course uses this rule.

- :func:`cost_ratio`: the time of one configuration over another's, from back-to-back repeats.
- :func:`learning_table`, :func:`crossover`: learning curves over seeds (each point with its 95% interval), and
  the sizes at which one method is shown better, shown worse or tied with another, with the crossover size and its
  interval (notebook 08).
- :func:`worker_lessons`: what a DataLoader worker comparison says (notebook 07).

A tie says the measurement cannot tell the two apart: on ~100 test photos one photo is a whole point of accuracy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from convlab.display import Table

__all__ = [
    "PairedCI",
    "paired_ci",
    "format_interval",
    "mean_sd",
    "CostRatio",
    "cost_ratio",
    "learning_table",
    "Crossover",
    "crossover",
    "worker_lessons",
]


def mean_sd(values: Sequence[float], fmt: str = ".3f") -> str:
    """``"m ± sd"`` over ``values`` (sample standard deviation; ``± 0`` for one value)."""
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):{fmt}} ± {sd:{fmt}}"


def format_interval(low: float, high: float, digits: int = 2, scale: float = 100.0, signed: bool = True) -> str:
    """``"[low, high]"`` times ``scale`` with ``digits`` decimals, each with its sign unless ``signed=False``: the one
    way an interval is printed (:meth:`PairedCI.interval` and results that keep only the bounds)."""
    sign = "+" if signed else ""
    return f"[{low * scale:{sign}.{digits}f}, {high * scale:{sign}.{digits}f}]"


@dataclass(frozen=True)
class PairedCI:
    """The mean of paired differences ``new - base`` (one per seed) and its confidence interval.

    ``verdict`` is ``"better"`` or ``"worse"`` when the interval excludes zero, else ``"tie"``.
    """

    label: str
    diffs: tuple[float, ...]
    mean: float
    low: float
    high: float
    confidence: float = 0.95

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "tie"

    @property
    def shown(self) -> bool:
        """Whether the interval excludes zero."""
        return self.verdict != "tie"

    def interval(self, digits: int = 2, scale: float = 100.0, signed: bool = True) -> str:
        """The interval as text, ``"[+0.31, +0.62]"`` (accuracy points by default; ``signed=False``: no ``+``)."""
        return format_interval(self.low, self.high, digits, scale, signed)

    def estimate(self, digits: int = 2, scale: float = 100.0, signed: bool = True) -> str:
        """The mean and its interval as text, ``"+0.47 [+0.31, +0.62]"`` (accuracy points by default)."""
        sign = "+" if signed else ""
        return f"{self.mean * scale:{sign}.{digits}f} {self.interval(digits, scale, signed)}"

    def summary(self, digits: int = 2) -> str:
        """The effect and its interval in accuracy points, ``"+0.47 points, 95% CI [+0.31, +0.62]"``."""
        return f"{self.mean * 100:+.{digits}f} points, {self.confidence:.0%} CI {self.interval(digits)}"

    def columns(self, effect: str = "effect", scale: float = 100.0, unit: str = "points") -> dict:
        """Table columns: the effect (named ``effect``) and its interval in ``unit``, and the verdict."""
        return {
            f"{effect} ({unit})": f"{self.mean * scale:+.2f}",
            f"{self.confidence:.0%} CI": self.interval(2, scale),
            "verdict": self.verdict,
        }

    def row(self, scale: float = 100.0, unit: str = "points") -> dict:
        """A table row: the comparison, the effect and its interval in ``unit`` (accuracy points by default), the
        number of seeds and the verdict."""
        *measured, verdict = self.columns("effect", scale, unit).items()
        return {"comparison": self.label, **dict(measured), "seeds": self.n, **dict([verdict])}

    def __str__(self) -> str:
        what = {"better": "shown: better", "worse": "shown: worse", "tie": "a tie (the interval includes 0)"}
        return f"{self.label}: {self.summary()} over {self.n} paired seeds -> {what[self.verdict]}"


def paired_ci(
    new: Sequence[float], base: Sequence[float], label: str = "new vs base", confidence: float = 0.95
) -> PairedCI:
    """Mean of ``new[i] - base[i]`` over paired seeds with its Student-t ``confidence`` interval.

    Args:
        new, base: one value per seed (e.g. test accuracies), in the same seed order; at least 2 pairs.
    """
    from scipy import stats

    a = np.asarray(new, dtype=float)
    b = np.asarray(base, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"new, base: expected two 1-D sequences of equal length, got shapes {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"new, base: expected at least 2 paired seeds for an interval, got {len(a)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence!r}")
    d = a - b
    mean = float(d.mean())
    half = float(stats.t.ppf((1 + confidence) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return PairedCI(label, tuple(float(x) for x in d), mean, mean - half, mean + half, confidence)


@dataclass(frozen=True)
class CostRatio:
    """Time of ``num`` over ``den``: the median of per-repeat ratios (each repeat ran both back to back)."""

    num: str
    den: str
    ratio: float
    low: float
    high: float
    repeats: int

    def __str__(self) -> str:
        return (
            f"{self.num} costs {self.ratio:.2f}x {self.den} (median of {self.repeats} back-to-back repeats; "
            f"range {self.low:.2f}-{self.high:.2f})"
        )


def cost_ratio(rows: Sequence[Mapping], num: str, den: str) -> CostRatio:
    """:class:`CostRatio` from :func:`convlab.cropstudy.time_configurations` rows (``config``, ``ms_each``)."""
    by = {r["config"]: r for r in rows}
    for arg, name in (("num", num), ("den", den)):
        if name not in by:
            raise KeyError(f"{arg}: expected a timing row of {sorted(by)}, got {name!r}")
    ratios = [x / y for x, y in zip(by[num]["ms_each"], by[den]["ms_each"])]
    return CostRatio(num, den, statistics.median(ratios), min(ratios), max(ratios), len(ratios))


# ----------------------------------------------------------------------------- learning curves (notebook 08)
def _curve(rows, method) -> dict[int, dict[int, float]]:
    """size -> seed -> accuracy."""
    out: dict[int, dict[int, float]] = {}
    for r in rows:
        if r["method"] == method:
            out.setdefault(r["n_per_class"], {})[r["seed"]] = r["accuracy"]
    return dict(sorted(out.items()))


def _mean_interval(values: Sequence[float]) -> str:
    """``"m [lo, hi]"``: the mean with its 95% t interval (``paired_ci`` against zero); the mean alone for one value."""
    values = [float(v) for v in values]
    if len(values) < 2:
        return f"{values[0]:.3f}"
    return paired_ci(values, [0.0] * len(values), "accuracy").estimate(3, 1.0, signed=False)


def learning_table(rows: Sequence[Mapping], title: str = "") -> Table:
    """Each method's mean accuracy at each size with its 95% interval over seeds, and its training accuracy and fit
    time at the largest size (rows from :func:`convlab.learningcurves.learning_curve` or a stored study)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for m in methods:
        curve = _curve(rows, m)
        row = {"method": m, **{f"n={n}": _mean_interval(list(by.values())) for n, by in curve.items()}}
        last = [r for r in rows if r["method"] == m and r["n_per_class"] == max(curve)]
        if all("train_acc" in r for r in last):
            row["train acc (largest n)"] = round(statistics.fmean(r["train_acc"] for r in last), 3)
        row["fit s (largest n)"] = round(statistics.fmean(r["fit_s"] for r in last), 2)
        out.append(row)
    seeds = sorted({r["seed"] for r in rows})
    return Table(out, title=title or f"test accuracy, mean [95% interval] over seeds {seeds}")


def _cross(sizes, gap) -> float:
    """The size from which ``gap`` (learner - baseline) stays >= 0, log-linearly interpolated at the last sign
    change from behind to ahead; ``-inf`` if it is never behind (at or below the smallest size); nan if it is
    behind at the largest size."""
    if gap[-1] < 0:
        return float("nan")
    last_behind = max((i for i, g in enumerate(gap) if g < 0), default=None)
    if last_behind is None:
        return float("-inf")
    (n0, g0), (n1, g1) = (sizes[last_behind], gap[last_behind]), (sizes[last_behind + 1], gap[last_behind + 1])
    t = -g0 / (g1 - g0)
    return float(math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))))


def _sizes(ns: Sequence[int]) -> str:
    return ", ".join(str(n) for n in ns)


@dataclass(frozen=True)
class Crossover:
    """Where ``learner``'s curve overtakes ``baseline``'s (training images per class), by the one rule.

    ``gaps``: at each size, ``learner - baseline`` paired over seeds with its 95% interval (:func:`paired_ci`).
    ``per_seed``: each seed's crossover, the size from which its gap stays >= 0 (interpolated in log size; ``-inf``:
    ahead at every size, nan: behind at the largest). ``at``, ``low``, ``high``: the crossover and its 95% t interval
    in log size over seeds, when no seed is still behind at the largest size and at least one crosses inside the
    sizes measured (nan otherwise); ``censored`` seeds, ahead at every size, enter it at the smallest size (their
    crossover lies at or below it, so the interval leans to the larger side).
    """

    learner: str
    baseline: str
    sizes: tuple[int, ...]
    gaps: tuple[PairedCI, ...]
    per_seed: tuple[float, ...]
    at: float
    low: float
    high: float
    censored: int = 0

    def where(self, verdict: str) -> tuple[int, ...]:
        """The sizes at which the learner is shown ``"better"``, shown ``"worse"``, or ``"tie"``."""
        return tuple(n for n, g in zip(self.sizes, self.gaps) if g.verdict == verdict)

    @property
    def crossed(self) -> bool:
        """Whether every seed crosses inside the sizes measured (so ``at`` has an interval)."""
        return not math.isnan(self.at)

    def lines(self) -> list[str]:
        """The statement, one line each: the gaps, where each verdict holds, and the crossover."""
        seeds = self.gaps[0].n
        gaps = "; ".join(f"n={n}: {g.estimate(1)} {g.verdict}" for n, g in zip(self.sizes, self.gaps))
        out = [f"{self.learner} minus {self.baseline}, points with 95% CI over {seeds} paired seeds: {gaps}."]
        parts = [
            f"{what} at n = {_sizes(ns)}"
            for what, ns in (
                ("shown better", self.where("better")),
                ("shown worse", self.where("worse")),
                ("tied", self.where("tie")),
            )
            if ns
        ]
        out.append(f"{self.learner} is " + "; ".join(parts) + " (images per class).")
        lo, hi = self.sizes[0], self.sizes[-1]
        behind = sum(math.isnan(c) for c in self.per_seed)
        ahead = sum(c == float("-inf") for c in self.per_seed)
        inside = [c for c in self.per_seed if math.isfinite(c)]
        if self.crossed:
            each = ", ".join(f"{c:.0f}" if math.isfinite(c) else f"<={lo}" for c in self.per_seed)
            note = (
                f"; {self.censored} seed{'s' if self.censored > 1 else ''} ahead at every size, counted at {lo}, the "
                "smallest size measured"
                if self.censored
                else ""
            )
            out.append(
                f"Crossover at about {self.at:.0f} images per class (95% CI {self.low:.0f}-{self.high:.0f}, a t "
                f"interval of log size over {seeds} seeds; per seed {each}{note})."
            )
        elif behind == len(self.per_seed):
            out.append(
                f"No crossover within the sizes measured ({lo}-{hi} per class): {self.learner} is behind at the "
                f"largest size on every seed."
            )
        elif ahead == len(self.per_seed):
            out.append(
                f"No crossover within the sizes measured ({lo}-{hi} per class): {self.learner} is ahead at every "
                f"size on every seed, so any crossover lies below {lo} per class."
            )
        else:
            out.append(
                f"No crossover interval: of {seeds} seeds, {len(inside)} cross{'es' if len(inside) == 1 else ''} "
                f"inside {lo}-{hi} per class"
                + (f" (at {', '.join(f'{c:.0f}' for c in inside)})" if inside else "")
                + f", {ahead} {'is' if ahead == 1 else 'are'} ahead at every size and {behind} "
                f"{'is' if behind == 1 else 'are'} still behind at {hi}."
            )
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def crossover(rows: Sequence[Mapping], learner: str, baseline: str, confidence: float = 0.95) -> Crossover:
    """Where ``learner`` overtakes ``baseline`` (rows from :func:`convlab.learningcurves.learning_curve` or a stored
    study: ``method``, ``n_per_class``, ``seed``, ``accuracy``), over the seeds both have at every size (>= 2)."""
    a, b = _curve(rows, learner), _curve(rows, baseline)
    if not a or not b:
        raise KeyError(f"learner, baseline: expected methods with rows, got {learner!r} and {baseline!r}")
    sizes = [n for n in a if n in b]
    if not sizes:
        raise ValueError(f"rows: expected sizes that both {learner!r} and {baseline!r} have, got none")
    seeds = sorted(set.intersection(*(set(a[n]) & set(b[n]) for n in sizes)))
    if len(seeds) < 2:
        raise ValueError(f"rows: expected at least 2 seeds at every size for an interval, got {len(seeds)}")
    gaps = [paired_ci([a[n][s] for s in seeds], [b[n][s] for s in seeds], f"n={n}", confidence) for n in sizes]
    per_seed = tuple(_cross(sizes, [a[n][s] - b[n][s] for n in sizes]) for s in seeds)
    at = low = high = float("nan")
    censored = sum(c == float("-inf") for c in per_seed)
    if not any(math.isnan(c) for c in per_seed) and censored < len(per_seed):
        logs = [math.log(c if math.isfinite(c) else sizes[0]) for c in per_seed]
        if len(set(logs)) > 1:
            ci = paired_ci(logs, [0.0] * len(logs), "log crossover", confidence)
            at, low, high = math.exp(ci.mean), math.exp(ci.low), math.exp(ci.high)
        else:
            at = low = high = math.exp(logs[0])
    return Crossover(learner, baseline, tuple(sizes), tuple(gaps), per_seed, at, low, high, censored)


# ----------------------------------------------------------------------------- data loading (notebook 07)
def worker_lessons(named_rows: Mapping[str, Sequence[Mapping]]) -> Table:
    """For each ``name -> profiler.compare_workers rows``: the fastest setting, the speed-up of the most workers
    over 0, the idle fraction with 0 workers, and the verdict (>1.1x paid off, <0.9x slowed it down)."""
    out = []
    for name, rows in named_rows.items():
        by = {r["workers"]: r for r in rows}
        most, best = max(by), max(rows, key=lambda r: r["images_per_s"])
        s = by[most]["images_per_s"] / by[0]["images_per_s"]
        verdict = "workers paid off" if s > 1.1 else ("no real difference" if s > 0.9 else "workers slowed it down")
        out.append(
            {
                "setting": name,
                "fastest": f"{best['workers']} worker{'' if best['workers'] == 1 else 's'} "
                f"({best['images_per_s']:.0f} img/s)",
                f"{most} workers vs 0": f"{s:.2f}x",
                "idle with 0 workers": f"{by[0]['idle_fraction']:.0%}",
                "verdict": verdict,
            }
        )
    return Table(out, title="what the worker comparison says (steady state, this run)")
