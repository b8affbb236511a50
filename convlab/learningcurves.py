"""Learning curves: test accuracy against training-set size, method by method, over seeds; and the stored study.

- :func:`learning_curve`: fit each method on ``n`` images per class for each size and seed (every method of a seed
  and size gets the same images), and score it on the test set and on its own training images: one row per fit.
- :class:`FunctionMethod`: a function ``f(train_images, train_labels, test_images) -> predicted classes`` as a
  method, so a baseline written as one function (notebook 08's exercise) runs in a curve beside the classifiers of
  :mod:`convlab.handfeatures`.
- :func:`plot_learning_curves`: mean accuracy with its 95% interval over seeds.
- :func:`learning_table`, :func:`crossover`: each method's accuracy at each size with its 95% interval over seeds,
  and the sizes at which one method is shown better, shown worse or tied with another, with the crossover size and
  its interval.
- The study behind notebook 08 (``python -m convlab study learning-curves --scale small|full``): hand-engineered
  features against a small CNN from scratch on Fashion-MNIST (all 10,000 test images at full scale), and the food
  photos' methods (colour, colour + HOG, small CNN, frozen and fine-tuned MobileNetV2). :class:`LearningCurves`
  turns its rows (live or stored) into tables, figures and crossovers.

Every verdict is :func:`crossover`'s, which is :func:`convlab.verdicts.paired_ci` at each size: the gap between two
methods paired over seeds, with its 95% interval.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from convlab.display import Table
from convlab.studyrun import StudyResult, run_jobs, scale_settings, stored_lines
from convlab.verdicts import PairedCI, paired_ci

if TYPE_CHECKING:  # annotations only: no import cost at run time
    from matplotlib.figure import Figure

    from convlab.data import ImageSet, Splits

__all__ = [
    "learning_curve",
    "fit_and_score",
    "FunctionMethod",
    "plot_learning_curves",
    "learning_table",
    "Crossover",
    "crossover",
    "KEY",
    "SCALES",
    "COMPARISONS",
    "study_methods",
    "config",
    "run",
    "LearningCurves",
]


def _named(methods: Mapping[str, object] | Sequence[object]) -> dict[str, object]:
    named = (
        dict(methods) if isinstance(methods, Mapping) else {getattr(m, "name", type(m).__name__): m for m in methods}
    )
    for name, m in named.items():
        if not (callable(getattr(m, "fit", None)) and callable(getattr(m, "score", None))):
            raise TypeError(f"methods[{name!r}]: expected an object with fit(images, seed) and score(images)")
    return named


def fit_and_score(method, splits: Splits, n: int, seed: int, evaluate_on: str = "test") -> dict[str, Any]:
    """Fit ``method`` on ``splits.train.per_class(n, seed)`` and score it: ``{n_train, accuracy, train_acc,
    test_images, fit_s}``, plus ``steps`` and ``epochs`` when the method records a ``budget_``."""
    train = splits.train.per_class(n, seed=seed)
    evaluation = getattr(splits, evaluate_on)
    t = time.perf_counter()
    method.fit(train, seed=seed)
    fit_s = time.perf_counter() - t
    row = {
        "n_train": len(train),
        "accuracy": float(method.score(evaluation)),
        "train_acc": float(method.score(train)),
        "test_images": len(evaluation),
        "fit_s": round(fit_s, 3),
    }
    return {**row, **dict(getattr(method, "budget_", {}))}


def learning_curve(
    methods: Mapping[str, object] | Sequence[object],
    splits: Splits,
    sizes_per_class: Sequence[int] = (5, 10, 20, 40),
    seeds: Sequence[int] = (0,),
    evaluate_on: str = "test",
    progress: bool = False,
) -> list[dict]:
    """Test accuracy of each method trained on ``n`` images per class, for each ``n`` and seed.

    Args:
        methods: objects with ``fit(images, seed) -> self`` and ``score(images) -> float`` (e.g.
            :class:`convlab.handfeatures.HandFeatureClassifier`, :class:`FunctionMethod`), as a ``{name: method}``
            mapping or a sequence (names from ``method.name``).
        splits: a :class:`convlab.data.Splits`; training subsets are ``splits.train.per_class(n, seed)``.
        sizes_per_class: training images per class (classes with fewer images give all they have).
        seeds: each seed draws a different subset and initialisation.
        evaluate_on: ``"test"`` or ``"val"``.
        progress: show a progress bar over the (seed, size, method) fits.

    Returns:
        rows ``{method, n_per_class, seed, n_train, accuracy, train_acc, test_images, fit_s}`` (and ``steps``,
        ``epochs`` for methods that train by steps); :func:`learning_table` shows them.
    """
    if evaluate_on not in ("test", "val"):
        raise ValueError(f"evaluate_on: expected 'test' or 'val', got {evaluate_on!r}")
    named = _named(methods)
    if not sizes_per_class or any(not isinstance(n, int) or n < 1 for n in sizes_per_class):
        raise ValueError(f"sizes_per_class: expected ints >= 1, got {tuple(sizes_per_class)}")
    from tqdm.auto import tqdm

    bar = tqdm(total=len(seeds) * len(sizes_per_class) * len(named), desc="fits", leave=False, disable=not progress)
    rows = []
    for seed in seeds:
        for n in sizes_per_class:
            for name, method in named.items():
                bar.set_postfix_str(f"seed {seed}, n={n}, {name}")
                rows.append(
                    {
                        "method": name,
                        "n_per_class": n,
                        "seed": seed,
                        **fit_and_score(method, splits, n, seed, evaluate_on),
                    }
                )
                bar.update()
    bar.close()
    return rows


class FunctionMethod:
    """A function ``predict(train_images, train_labels, test_images) -> predicted classes`` as a learning-curve method.

    ``fit`` keeps the training photos (a list of uint8 ``(3, H, W)`` tensors) and labels; ``score`` calls the function
    with copies of them and the photos to score, and compares its predictions with the labels (which the function
    never sees).
    """

    def __init__(self, predict: Callable, name: str = "your function"):
        if not callable(predict):
            raise TypeError(f"predict: expected a function (train_images, train_labels, test_images), got {predict!r}")
        self.predict_fn, self.name = predict, name

    def fit(self, images: ImageSet, seed: int = 0) -> FunctionMethod:
        """Keep the training photos and labels of an ImageSet; returns ``self``."""
        self.train_ = (list(images.images), images.labels.clone())
        return self

    def predict(self, images: ImageSet) -> torch.Tensor:
        """The function's predicted class of every image of an ImageSet, ``(N,)`` int64."""
        from convlab._checks import check_is_fitted

        check_is_fitted(self, "train_", "call fit(train_images) before predict/score")
        x, y = self.train_
        pred = torch.as_tensor(np.asarray(self.predict_fn(list(x), y.clone(), list(images.images)))).long().flatten()
        if len(pred) != len(images):
            raise ValueError(f"predict: expected one class per image ({len(images)}), got {len(pred)}")
        return pred

    def score(self, images: ImageSet) -> float:
        """Accuracy on an ImageSet."""
        return float((self.predict(images) == images.labels).float().mean())


def _summary(rows: Sequence[Mapping], method: str) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    """sizes, and the mean accuracy with its 95% t interval over seeds at each size."""
    from scipy import stats

    sizes = sorted({r["n_per_class"] for r in rows if r["method"] == method})
    mean, low, high = [], [], []
    for n in sizes:
        acc = np.array([r["accuracy"] for r in rows if r["method"] == method and r["n_per_class"] == n])
        half = stats.t.ppf(0.975, len(acc) - 1) * acc.std(ddof=1) / np.sqrt(len(acc)) if len(acc) > 1 else 0.0
        mean.append(acc.mean())
        low.append(acc.mean() - half)
        high.append(acc.mean() + half)
    return sizes, np.array(mean), np.array(low), np.array(high)


def plot_learning_curves(rows: Sequence[Mapping], title: str = "") -> Figure:
    """Mean test accuracy against training images per class, one line per method, with its 95% interval over seeds
    as a band."""
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in methods:
        sizes, mean, low, high = _summary(rows, m)
        ax.plot(sizes, mean, marker="o", label=m)
        ax.fill_between(sizes, low, high, alpha=0.15)
    ticks = sorted({r["n_per_class"] for r in rows})
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training images per class")
    ax.set_ylabel("test accuracy (band: 95% interval over seeds)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the table and the crossover
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
    time at the largest size (rows from :func:`learning_curve` or a stored study)."""
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
    """Where ``learner`` overtakes ``baseline`` (rows from :func:`learning_curve` or a stored study: ``method``,
    ``n_per_class``, ``seed``, ``accuracy``), over the seeds both have at every size (>= 2)."""
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


# ----------------------------------------------------------------------------- the study
#: The fields that name one fit in a stored study.
KEY = ("data", "method", "n_per_class", "seed")

HOG, CNN = "HOG + linear", "small CNN from scratch"
COLOUR, COLOUR_HOG = "colour histogram + linear", "colour + HOG + linear"
FROZEN, FINETUNED = "frozen MobileNetV2 + linear", "MobileNetV2 fine-tuned (stages 4-7)"

#: data set -> (learner, baseline) pairs whose crossover the study reports.
COMPARISONS: dict[str, tuple[tuple[str, str], ...]] = {
    "fashion": ((CNN, HOG),),
    "food": ((CNN, COLOUR_HOG), (FROZEN, COLOUR_HOG), (FINETUNED, FROZEN)),
}

#: ``small``: about what notebook 08 runs live; ``full``: the stored study
#: (``notebooks/results/learning_curves_full_cpu.json``).
SCALES: dict[str, dict[str, Any]] = {
    "small": {
        "seeds": (0, 1, 2),
        "fashion_sizes": (10, 50, 300),
        "fashion_test_per_class": 100,
        "fashion_cnn": {"steps": 150, "min_epochs": 3.0, "batch_size": 32},
        "food_sizes": (5, 10, 20, 40),
        "food_cnn": {"steps": 60},
        "finetune": None,
    },
    "full": {
        "seeds": (0, 1, 2, 3, 4),
        "fashion_sizes": (10, 30, 100, 300, 1000, 3000),
        "fashion_test_per_class": 1000,
        # at least 800 steps of 64 (51,200 images: 512 passes over the smallest set) and 15 passes over larger sets
        # (at 5 passes the CNN's training accuracy at 300-3,000 per class was no higher than its test accuracy: it
        # had not fitted yet); every fit's training accuracy is stored beside its test accuracy
        "fashion_cnn": {"steps": 800, "min_epochs": 15.0, "batch_size": 64},
        "food_sizes": (5, 10, 20, 40),
        "food_cnn": {"steps": 150},
        "finetune": {"steps": 30, "size": 96},
    },
}


def study_methods(data: str, scale: str) -> dict[str, object]:
    """The methods the study compares on ``data`` (``"fashion"`` or ``"food"``) at ``scale``, fresh objects."""
    from convlab.cnnclassifiers import FineTuneClassifier, SmallCNNClassifier
    from convlab.handfeatures import FrozenBackboneClassifier, HandFeatureClassifier

    s = scale_settings(SCALES, scale)
    if data == "fashion":
        return {
            HOG: HandFeatureClassifier(kinds=("hog",), size=32),
            CNN: SmallCNNClassifier(size=28, pad=4, **s["fashion_cnn"]),
        }
    if data == "food":
        methods = {
            COLOUR: HandFeatureClassifier(kinds=("color",)),
            COLOUR_HOG: HandFeatureClassifier(kinds=("color", "hog")),
            CNN: SmallCNNClassifier(size=48, **s["food_cnn"]),
            FROZEN: FrozenBackboneClassifier("mobilenet_v2"),
        }
        if s["finetune"]:
            methods[FINETUNED] = FineTuneClassifier("mobilenet_v2", frozen=3, device="cpu", **s["finetune"])
        return methods
    raise ValueError(f"data: expected 'fashion' or 'food', got {data!r}")


def _fashion_pool(s: Mapping[str, Any]) -> int:
    """Training images per class to draw from: 3x the largest size (every seed draws other images), at most all."""
    return min(3 * max(s["fashion_sizes"]), 5500)


def config(scale: str) -> dict[str, Any]:
    """What determines a scale's results."""
    s = scale_settings(SCALES, scale)
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()}
    out["fashion_pool_per_class"] = _fashion_pool(s)
    out["methods"] = {
        data: {name: _describe(m) for name, m in study_methods(data, scale).items()} for data in ("fashion", "food")
    }
    return out


_JSON_SCALARS = (int, float, str, tuple, type(None))


def _describe(method: object) -> dict[str, Any]:
    """A method's settings as JSON values (what its results depend on)."""
    return {
        k: v
        for k, v in vars(method).items()
        if k != "name" and not k.startswith("_") and not k.endswith("_") and isinstance(v, _JSON_SCALARS)
    }


def _load(data: str, scale: str) -> Splits:
    from convlab.data import load_fashion_mnist, load_food
    from convlab.handfeatures import as_rgb

    s = scale_settings(SCALES, scale)
    if data == "fashion":
        return as_rgb(load_fashion_mnist(train_per_class=_fashion_pool(s), test_per_class=s["fashion_test_per_class"]))
    return load_food()


def run(scale: str = "small", record=None, *, progress: bool = True) -> LearningCurves:
    """Every fit of ``scale``; with a :class:`convlab.studyrun.StudyRecord` each fit is stored as it ends and fits
    already there are skipped (a second process started with the same command shares the rest)."""

    s = scale_settings(SCALES, scale)
    sizes = {"fashion": s["fashion_sizes"], "food": s["food_sizes"]}
    names = {data: list(study_methods(data, scale)) for data in sizes}
    jobs = [
        {"data": data, "method": m, "n_per_class": n, "seed": seed}
        for data in ("fashion", "food")
        for seed in s["seeds"]
        for n in sizes[data]
        for m in names[data]
    ]
    state: dict[str, tuple[Splits, dict[str, object]]] = {}  # data -> (splits, methods): feature caches live here

    def one(job: Mapping[str, Any]) -> dict[str, Any]:
        data = job["data"]
        if data not in state:
            state.clear()
            state[data] = (_load(data, scale), study_methods(data, scale))
        splits, methods = state[data]
        return fit_and_score(methods[job["method"]], splits, job["n_per_class"], job["seed"])

    rows = run_jobs(record, jobs, one, progress=progress, desc="fits")
    return LearningCurves.from_run(rows, config(scale), record)


@dataclass
class LearningCurves(StudyResult):
    """Rows of :func:`run` (or a stored JSON): one per fit, with ``data``, ``method``, ``n_per_class``, ``seed``,
    ``accuracy`` (test), ``train_acc``, and ``steps`` / ``epochs`` for the methods trained by steps."""

    def data(self, name: str) -> list[dict]:
        """The rows of one data set (``"fashion"`` or ``"food"``)."""
        rows = [r for r in self.rows if r["data"] == name]
        if not rows:
            raise KeyError(f"name: expected one of {sorted({r['data'] for r in self.rows})}, got {name!r}")
        return rows

    def crossover(self, data: str, learner: str, baseline: str) -> Crossover:
        """Where ``learner`` overtakes ``baseline`` on ``data``: :func:`crossover`."""
        return crossover(self.data(data), learner, baseline)

    def crossovers(self) -> list[Crossover]:
        """The study's comparisons (:data:`COMPARISONS`) that its rows hold."""
        out = []
        for data, pairs in COMPARISONS.items():
            methods = {r["method"] for r in self.rows if r["data"] == data}
            out += [self.crossover(data, a, b) for a, b in pairs if a in methods and b in methods]
        return out

    def table(self, data: str) -> Table:
        """Mean test accuracy with its 95% interval per method and size: :func:`learning_table`."""
        rows = self.data(data)
        seeds = sorted({r["seed"] for r in rows})
        test = rows[0]["test_images"]
        return learning_table(rows, title=f"{data}: test accuracy on {test} images, mean [95% CI] over seeds {seeds}")

    def plot(self, data: str) -> Figure:
        rows = self.data(data)
        seeds = sorted({r["seed"] for r in rows})
        return plot_learning_curves(rows, title=f"{data}: {rows[0]['test_images']} test images, seeds {seeds}")

    def budgets(self, data: str, method: str = CNN) -> Table:
        """How far each fit of ``method`` trained: steps, passes over the data and training accuracy at each size."""
        out = []
        for n in sorted({r["n_per_class"] for r in self.data(data) if r["method"] == method}):
            rs = [r for r in self.data(data) if r["method"] == method and r["n_per_class"] == n]
            out.append(
                {
                    "n per class": n,
                    "steps": rs[0].get("steps", "-"),
                    "epochs": rs[0].get("epochs", "-"),
                    "train acc (min over seeds)": round(min(r["train_acc"] for r in rs), 3),
                    "test acc (mean)": round(float(np.mean([r["accuracy"] for r in rs])), 3),
                }
            )
        return Table(out, title=f"{data}, {method}: training budget and how well it fitted its training set")

    def claims(self) -> list[str]:
        """Sentences computed from the rows: where and how it ran (for a stored study), the set-up, and every
        comparison's gaps, verdicts and crossover."""
        lines = stored_lines(self.meta)
        for data in dict.fromkeys(r["data"] for r in self.rows):
            rows = self.data(data)
            sizes = sorted({r["n_per_class"] for r in rows})
            seeds = sorted({r["seed"] for r in rows})
            lines.append(
                f"{data}: {rows[0]['test_images']} test images (one image = {100 / rows[0]['test_images']:.2f} "
                f"points), {len(seeds)} seeds, sizes {', '.join(map(str, sizes))} per class."
            )
        for c in self.crossovers():
            lines += c.lines()
        return lines
