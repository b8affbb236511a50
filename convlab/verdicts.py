"""Turn a notebook's measurements into verdicts with their uncertainty: small dataclasses, not f-string cells.

**The one rule.** Two configurations trained on the same seeds (the same training images, initial weights and batch
order for both) give one paired difference per seed. :func:`paired_ci` is the mean of those differences with its 95%
Student-t confidence interval; the effect is *shown* ("better" or "worse") only when the interval excludes zero, and
otherwise it is a **tie**. Every study, verdict and quiz of the course uses this rule.

- :func:`format_interval` and :class:`PairedCI`'s ``interval``, ``estimate``, ``summary``, ``columns`` and ``row``:
  the one way an interval is printed, in sentences and in tables.
- :func:`cost_ratio`: the time of one configuration over another's, from back-to-back repeats.

Learning curves read by this rule (the crossover of notebook 08) live in :mod:`convlab.learningcurves`.

A tie says the measurement cannot tell the two apart: on ~100 test photos one photo is a whole point of accuracy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PairedCI",
    "paired_ci",
    "paired_by_seed",
    "format_interval",
    "mean_sd",
    "CostRatio",
    "cost_ratio",
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


def paired_by_seed(new: Mapping[int, float], base: Mapping[int, float], label: str = "new vs base") -> PairedCI:
    """:func:`paired_ci` over the seeds ``new`` and ``base`` (``{seed: value}``) both have, in seed order: a study
    still running, or extended by several processes, pairs each seed with itself."""
    seeds = sorted(set(new) & set(base))
    return paired_ci([new[s] for s in seeds], [base[s] for s in seeds], label)


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
