"""Turn a notebook's measurements into verdicts with their uncertainty: small dataclasses, not f-string cells.

**The one rule.** Two configurations trained on the same seeds (the same training images, initial weights and batch
order for both) give one paired difference per seed. :func:`paired_ci` is the mean of those differences with its 95%
Student-t confidence interval; the effect is *shown* ("better" or "worse") only when the interval excludes zero, and
otherwise it is a **tie**. Every study, verdict and quiz of the course uses this rule.

- :func:`cost_ratio`: the time of one configuration over another's, from back-to-back repeats.
- :func:`learning_table`, :func:`crossover`: learning curves over seeds, and the training-set size at which
  one method overtakes another (notebook 08).
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

    def row(self, scale: float = 100.0, unit: str = "points") -> dict:
        """A table row: the effect and its interval in ``unit`` (accuracy points by default)."""
        return {
            "comparison": self.label,
            f"effect ({unit})": f"{self.mean * scale:+.2f}",
            f"{self.confidence:.0%} CI": f"[{self.low * scale:+.2f}, {self.high * scale:+.2f}]",
            "seeds": self.n,
            "verdict": self.verdict,
        }

    def __str__(self) -> str:
        what = {"better": "shown: better", "worse": "shown: worse", "tie": "a tie (the interval includes 0)"}
        return (
            f"{self.label}: {self.mean * 100:+.2f} points, {self.confidence:.0%} CI [{self.low * 100:+.2f}, "
            f"{self.high * 100:+.2f}] over {self.n} paired seeds -> {what[self.verdict]}"
        )


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


def learning_table(rows: Sequence[Mapping], title: str = "") -> Table:
    """Mean ± sd over seeds of each method's accuracy at each size (rows from ``handfeatures.learning_curve``)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for m in methods:
        curve = _curve(rows, m)
        row = {"method": m, **{f"n={n}": mean_sd(list(by.values())) for n, by in curve.items()}}
        fit = [r["fit_s"] for r in rows if r["method"] == m and r["n_per_class"] == max(curve)]
        row["fit s (largest n)"] = round(statistics.fmean(fit), 2)
        out.append(row)
    seeds = sorted({r["seed"] for r in rows})
    return Table(out, title=title or f"test accuracy, mean ± sd over seeds {seeds}")


def _cross(sizes, gap) -> float:
    """The size from which ``gap`` (learner - baseline) stays >= 0, log-linearly interpolated at the last sign
    change from behind to ahead; the smallest size if it is never behind; nan if behind at the largest size."""
    if gap[-1] < 0:
        return float("nan")
    last_behind = max((i for i, g in enumerate(gap) if g < 0), default=None)
    if last_behind is None:
        return float(sizes[0])
    (n0, g0), (n1, g1) = (sizes[last_behind], gap[last_behind]), (sizes[last_behind + 1], gap[last_behind + 1])
    t = -g0 / (g1 - g0)
    return float(math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))))


@dataclass(frozen=True)
class Crossover:
    """Where ``learner``'s curve overtakes ``baseline``'s (training images per class)."""

    learner: str
    baseline: str
    sizes: tuple[int, ...]
    gap_mean: tuple[float, ...]  # learner - baseline at each size, mean over seeds
    gap_sd: tuple[float, ...]
    at_mean: float  # size from which the mean learner curve stays ahead (nan: behind at the end)
    per_seed: tuple[float, ...]  # crossover of each seed's curves

    def __str__(self) -> str:
        gaps = ", ".join(f"n={n}: {g:+.3f} ± {s:.3f}" for n, g, s in zip(self.sizes, self.gap_mean, self.gap_sd))
        head = f"{self.learner} minus {self.baseline}: {gaps}."
        crossed = [c for c in self.per_seed if not math.isnan(c)]
        seeds = f"{len(crossed)} of {len(self.per_seed)} seeds ahead from some size on"
        if math.isnan(self.at_mean):
            trend = "closing" if self.gap_mean[-1] > self.gap_mean[0] else "not closing"
            return (
                head + f" No crossover within {self.sizes[0]}-{self.sizes[-1]} per class: {self.learner} is "
                f"behind at the largest size (gap {trend} from the smallest size; {seeds})."
            )
        if all(g >= 0 for g in self.gap_mean):
            return head + (
                f" {self.learner} is ahead at every size: any crossover lies below {self.sizes[0]} per class ({seeds})."
            )
        spread = f"; per seed {min(crossed):.0f}-{max(crossed):.0f}" if crossed else ""
        return (
            head + f" {self.learner} stays ahead from about {self.at_mean:.0f} images per class on (mean curves"
            f"{spread}; {seeds})."
        )


def crossover(rows: Sequence[Mapping], learner: str, baseline: str) -> Crossover:
    """The size at which ``learner`` overtakes ``baseline`` (rows from ``handfeatures.learning_curve``)."""
    a, b = _curve(rows, learner), _curve(rows, baseline)
    if not a or not b:
        raise KeyError(f"learner, baseline: expected methods with rows, got {learner!r} and {baseline!r}")
    sizes = [n for n in a if n in b]
    seeds = sorted(set.intersection(*(set(a[n]) & set(b[n]) for n in sizes)))
    gaps = np.array([[a[n][s] - b[n][s] for n in sizes] for s in seeds])  # (seeds, sizes)
    mean = gaps.mean(0)
    sd = gaps.std(0, ddof=1) if len(seeds) > 1 else np.zeros(len(sizes))
    return Crossover(
        learner,
        baseline,
        tuple(sizes),
        tuple(float(g) for g in mean),
        tuple(float(s) for s in sd),
        _cross(sizes, list(mean)),
        tuple(_cross(sizes, list(g)) for g in gaps),
    )


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
