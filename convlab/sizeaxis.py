"""One data set, many sizes: which transfer regime wins at which training-set size? Measured, with error bars.

The seminar's rule (CS231n "Transfer learning" notes; Yosinski et al. 2014) for data *far* from or *close* to
ImageNet: with little data train only a new head on frozen features; with more data unfreeze the last stages;
with lots of data fine-tune everything. To test "more data -> fewer frozen stages" the regimes must differ ONLY in
the training-set size, so :func:`run_size_axis` draws every size from ONE data set (Fashion-MNIST by default: 6,000
training images per class), with the same test images, input size, backbone and learning rates.

**Training budget.** An equal number of optimizer steps for every size either starves the large sets or grossly
over-trains the small ones; equal *epochs* gives a 10-images-per-class set only a handful of steps. :class:`Budget`
does both: a regime at a size sees each training image ``min_epochs`` times and takes at least ``min_steps``
optimizer steps, so steps grow with the set size. Head-only regimes train on cached features, where an epoch costs
milliseconds, so they get :data:`HEAD_BUDGET` (30 epochs, at least 300 steps). The notebooks' live runs give the
fine-tuned regimes ``budget`` (2 epochs, at least 40 steps: what a notebook affords on a CPU), which handicaps
fine-tuning; the stored full study (:func:`run`, ``python -m convlab study size-axis --scale full``) trains every
regime until its training accuracy stops improving and stores the epochs, steps and training accuracy of each run.

The verdict (:meth:`SizeAxis.verdict`) is computed from the rows with the course's one rule: for each size, the
paired differences between regimes over seeds (each seed a different draw of the training images and initialisation,
the same for every regime) with a 95% interval; a regime is best only where its interval against the others excludes
zero, and a tie is reported as a tie.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from convlab.backbones import BACKBONES
from convlab.data import Splits
from convlab.studyrun import read_study, run_jobs, same_but, scale_settings
from convlab.transfer import Preprocess, Regime, run_regime
from convlab.verdicts import PairedCI, paired_ci

__all__ = [
    "Budget",
    "HEAD_BUDGET",
    "SizeAxisRow",
    "SizeAxisVerdict",
    "SizeAxis",
    "default_regimes",
    "run_size_axis",
    "run_one",
    "SCALES",
    "KEY",
    "STUDY_SCALES",
    "study_regimes",
    "config",
    "compatible",
    "run",
]

#: Configurations of the notebooks' live runs: ``small`` runs on a 2-core CPU within a notebook's budget; ``full``
#: is the stored study's axis (:data:`STUDY_SCALES`; about an hour per seed on a 2-core CPU).
SCALES = {
    "small": {"input_size": 32, "test_per_class": 50, "seeds": (0, 1, 2), "min_epochs": 2},
    "full": {
        "input_size": 32,
        "test_per_class": 200,
        "seeds": (0, 1, 2),
        "sizes": (10, 100, 300, 1000),
        "min_epochs": 10,
    },
}


@dataclass(frozen=True)
class Budget:
    """Epochs for a training set of ``n`` images: ``max(min_epochs, ceil(min_steps / batches per epoch))``."""

    min_epochs: int = 2
    min_steps: int = 40
    batch_size: int = 32

    def __post_init__(self):
        for name in ("min_epochs", "min_steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")

    def epochs(self, n_train: int) -> int:
        batches = math.ceil(n_train / self.batch_size)
        return max(self.min_epochs, math.ceil(self.min_steps / batches))

    def steps(self, n_train: int) -> int:
        return self.epochs(n_train) * math.ceil(n_train / self.batch_size)


#: The budget of head-only regimes (cached features: an epoch costs milliseconds, so train to convergence).
HEAD_BUDGET = Budget(min_epochs=30, min_steps=300)


def _nz(x: float) -> float:
    return 0.0 if x != x else x  # a nan standard error (one seed) counts as zero


def default_regimes(lr: float = 1e-3, backbone_lr_scale: float = 0.3, head_lr: float = 3e-3) -> dict[str, Regime]:
    """Head only (k = 7, at ``head_lr``), freeze the first 5 stages (stage5, conv_head and the head train) and
    fine-tune all (k = 0): the head at ``lr``, the trainable stages at ``lr * backbone_lr_scale``."""
    return {
        "head only": Regime.head_only(lr=head_lr),
        "freeze first 5": Regime.freeze_first(5, lr=lr, backbone_lr_scale=backbone_lr_scale),
        "fine-tune all": Regime.finetune(lr=lr, backbone_lr_scale=backbone_lr_scale),
    }


@dataclass(frozen=True)
class SizeAxisRow:
    """One training run: ``size`` training images per class, one regime (``k`` stages frozen), one seed."""

    size: int
    regime: str
    k: int
    seed: int
    test_acc: float
    train_acc: float  # the last epoch's training accuracy: near 1.0 means the budget sufficed to fit the data
    epochs: int
    steps: int
    seconds: float


@dataclass(frozen=True)
class SizeAxisVerdict:
    """What the table says. ``best[size]``: the best regime; ``tied[size]``: regimes whose paired 95% interval against
    the best includes zero (a tie)."""

    best: dict[int, str]
    tied: dict[int, list[str]]
    claims: list[tuple[str, str]]  # (claim, "held" / "failed" / "within noise", with the numbers)

    @property
    def lines(self) -> list[str]:
        out = [
            f"{size:>5}/class: best {self.best[size]}; tied with it (95% interval includes 0): "
            f"{', '.join(g for g in self.tied[size] if g != self.best[size]) or 'none'}"
            for size in self.best
        ]
        return out + [f"{claim}: {result}" for claim, result in self.claims]

    def __str__(self) -> str:
        return "\n".join(self.lines)

    def _repr_pretty_(self, p, cycle) -> None:  # IPython shows the lines, not a dataclass repr
        p.text(str(self))


@dataclass
class SizeAxis:
    """All runs of :func:`run_size_axis` (``rows``) and what they mean (:meth:`summary`, :meth:`verdict`)."""

    rows: list[SizeAxisRow]
    ks: dict[str, int]
    meta: dict = field(default_factory=dict)

    @property
    def sizes(self) -> list[int]:
        return sorted({r.size for r in self.rows})

    def _acc(self, size: int, regime: str) -> list[float]:
        return [r.test_acc for r in self.rows if r.size == size and r.regime == regime]

    def mean_sem(self, size: int, regime: str) -> tuple[float, float]:
        values = self._acc(size, regime)
        sem = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
        return statistics.fmean(values), sem

    def summary(self) -> list[dict]:
        """One row per (size, regime): mean and sd of the test accuracy over seeds, its standard error, the budget."""
        out = []
        for size in self.sizes:
            for regime in self.ks:
                runs = [r for r in self.rows if r.size == size and r.regime == regime]
                if not runs:
                    continue
                acc = [r.test_acc for r in runs]
                sd = statistics.stdev(acc) if len(acc) > 1 else float("nan")
                out.append(
                    {
                        "per_class": size,
                        "regime": regime,
                        "k": self.ks[regime],
                        "test_acc": round(statistics.fmean(acc), 4),
                        "sd": round(sd, 4),
                        "sem": round(sd / len(acc) ** 0.5, 4),
                        "seeds": len(acc),
                        "train_acc": round(statistics.fmean(r.train_acc for r in runs), 3),
                        "epochs": runs[0].epochs,
                        "steps": runs[0].steps,
                        "s_per_run": round(statistics.fmean(r.seconds for r in runs), 1),
                    }
                )
        return out

    def paired(self, size: int, new: str, base: str) -> PairedCI:
        """``new`` minus ``base`` at ``size``, paired by seed (the same training images and test images), with its 95%
        interval (:func:`convlab.verdicts.paired_ci`)."""
        a = {r.seed: r.test_acc for r in self.rows if r.size == size and r.regime == new}
        b = {r.seed: r.test_acc for r in self.rows if r.size == size and r.regime == base}
        seeds = sorted(set(a) & set(b))
        return paired_ci([a[s] for s in seeds], [b[s] for s in seeds], f"{new} vs {base} at {size}/class")

    def verdict(self, expect: dict[int, str] | None = None) -> SizeAxisVerdict:
        """Best regime per size, and the seminar's claims, each "held", "failed" or "a tie", by the course's one rule:
        paired differences over seeds with a 95% interval (:meth:`paired`); a difference whose interval includes
        zero is a tie.

        ``expect`` maps a size to the regime the seminar recommends there; default: the most frozen regime at the
        smallest size and, with more than one size, the least frozen at the largest. With more than one size the
        claim "more data -> fewer frozen stages" is tested too.
        """
        best, tied = {}, {}
        for size in self.sizes:
            present = [g for g in self.ks if self._acc(size, g)]
            top = max(present, key=lambda g: (self.mean_sem(size, g)[0], self.ks[g]))
            best[size] = top
            tied[size] = [g for g in present if g == top or not self._separated(size, top, g)]
        if expect is None:
            expect = {self.sizes[0]: max(self.ks, key=self.ks.get)}
            if len(self.sizes) > 1:
                expect[self.sizes[-1]] = min(self.ks, key=self.ks.get)

        def claim(regime: str, size: int) -> str:
            top = best[size]
            if regime == top:
                others = [g for g in self.ks if g != regime and self._acc(size, g)]
                if not others:
                    return "held (the only regime)"
                second = max(others, key=lambda g: self.mean_sem(size, g)[0])
                d = self._diff(size, regime, second)
                if second in tied[size]:
                    return f"a tie with {second} ({d})"
                return f"held ({d})"
            d = self._diff(size, top, regime)
            if regime in tied[size]:
                return f"a tie ({d}): {regime} is as good as the best within the interval"
            return f"failed ({d})"

        claims = [(f"{size}/class: {regime} is best", claim(regime, size)) for size, regime in sorted(expect.items())]
        if len(self.sizes) > 1:
            ks = [self.ks[best[s]] for s in self.sizes]
            clear = [len(tied[s]) == 1 for s in self.sizes]
            if any(a < b for a, b in zip(ks, ks[1:])):
                trend = "failed (the best k rises somewhere)"
            elif len(set(ks)) == 1:
                trend = "not shown (the same k was best at every size)"
            elif clear[0] or clear[-1]:
                trend = (
                    "held ("
                    + ", ".join(f"{s}/class: {best[s]}" + ("" if c else " (tied)") for s, c in zip(self.sizes, clear))
                    + ")"
                )
            else:
                trend = (
                    "a tie (the best regimes at the smallest and largest sizes are within their intervals of others)"
                )
            claims.append((f"more data -> fewer frozen stages (best k per size {ks})", trend))
        return SizeAxisVerdict(best, tied, claims)

    def _separated(self, size: int, top: str, other: str) -> bool:
        """Whether ``top`` beats ``other`` beyond the 95% interval (needs 2 paired seeds)."""
        try:
            return self.paired(size, top, other).verdict == "better"
        except ValueError:
            return False

    def _diff(self, size: int, a: str, b: str) -> str:
        ma, mb = self.mean_sem(size, a)[0], self.mean_sem(size, b)[0]
        try:
            ci = self.paired(size, a, b)
            return f"{a} {ma:.3f} vs {b} {mb:.3f}: {ci.summary(1)}"
        except ValueError:
            return f"{a} {ma:.3f} vs {b} {mb:.3f}, one seed: no interval"

    def plot(self, title: str = ""):
        """Test accuracy against training images per class (log scale), one line per regime, error bars = the 95%
        Student-t interval of the mean over seeds."""
        import matplotlib.pyplot as plt
        from scipy import stats

        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for regime, k in self.ks.items():
            pts = [(s, *self.mean_sem(s, regime)) for s in self.sizes if self._acc(s, regime)]
            xs, ms, ss = zip(*pts)
            ax.errorbar(
                xs,
                ms,
                yerr=[_nz(s) * stats.t.ppf(0.975, max(1, len(self._acc(x, regime)) - 1)) for x, s in zip(xs, ss)],
                marker="o",
                capsize=3,
                label=f"{regime} (k={k})",
            )
        ax.set_xscale("log")
        ax.set_xlabel("training images per class")
        ax.set_ylabel("test accuracy (mean, 95% interval)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def merged(self, other: SizeAxis) -> SizeAxis:
        """The rows of both (e.g. stored rows for some sizes and live rows for others); the regimes must agree."""
        if self.ks != other.ks:
            raise ValueError(f"other: expected the same regimes {self.ks}, got {other.ks}")
        clash = {(r.size, r.regime, r.seed) for r in self.rows} & {(r.size, r.regime, r.seed) for r in other.rows}
        if clash:
            raise ValueError(f"other: runs present in both, e.g. {sorted(clash)[0]}")
        return SizeAxis(self.rows + other.rows, dict(self.ks), {"parts": [self.meta, other.meta]})

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(
            json.dumps({"meta": self.meta, "ks": self.ks, "rows": [asdict(r) for r in self.rows]}, indent=1)
        )
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> SizeAxis:
        d = read_study(path)
        fields = SizeAxisRow.__dataclass_fields__
        rows = [SizeAxisRow(**{k: v for k, v in r.items() if k in fields}) for r in d["rows"]]
        ks = d.get("ks") or {r.regime: r.k for r in rows}  # a study record (python -m convlab study) has no "ks"
        return cls(rows, ks, d["meta"])


def run_one(
    size: int,
    name: str,
    regime: Regime,
    seed: int,
    splits: Splits,
    *,
    prep: Preprocess,
    budget: Budget,
    head_budget: Budget,
    backbone: str = "mobilenet_v2",
    until_fitted: bool = False,
    cache_dir: str | None = None,
    device: str = "auto",
    progress: bool = True,
    make_param_groups: Callable | None = None,
    freeze_first_k: Callable | None = None,
) -> SizeAxisRow:
    """Train ``regime`` on ``splits`` (``size`` training images per class) once; its :class:`SizeAxisRow`.

    The budget's epochs are a cap; with ``until_fitted`` the run stops earlier once its training accuracy has not
    improved by 0.2 points for 3 epochs (:class:`convlab.engine.EarlyStopping` on ``"train_acc"``).
    ``make_param_groups``, ``freeze_first_k``: see :func:`convlab.transfer.run_regime`.
    """
    from convlab.engine import EarlyStopping

    b = head_budget if regime.frozen == BACKBONES[backbone].num_stages else budget  # head only: every stage frozen
    epochs = b.epochs(len(splits.train))
    stop = EarlyStopping(patience=3, monitor="train_acc", min_delta=0.002, restore_best=False) if until_fitted else None
    t = time.perf_counter()
    r = run_regime(
        regime,
        splits,
        backbone,
        epochs=epochs,
        batch_size=b.batch_size,
        preprocess=prep,
        early_stopping=stop,
        seed=seed,
        cache_dir=cache_dir,
        device=device,
        progress="transient" if progress else False,
        make_param_groups=make_param_groups,
        freeze_first_k=freeze_first_k,
    )  # a bar per run, gone when it ends
    ran = len(r.history)
    return SizeAxisRow(
        size,
        name,
        regime.frozen,
        seed,
        r.row.test_acc,
        r.history.train_acc[-1],
        ran,
        ran * math.ceil(len(splits.train) / b.batch_size),
        time.perf_counter() - t,
    )


def _fashion(val_per_class: int, test_per_class: int) -> Callable[[int, int], Splits]:
    from convlab.data import load_fashion_mnist

    def load(seed: int, n: int) -> Splits:
        # load_fashion_mnist keeps the first `n` images of one seeded permutation per class: the sizes are nested,
        # the validation and test images the same, and a size's draw does not depend on the other sizes in the
        # table (so notebook 02's 10-per-class row is the same runs as notebook 04's).
        return load_fashion_mnist(
            train_per_class=n, val_per_class=val_per_class, test_per_class=test_per_class, seed=seed
        )

    return load


def run_size_axis(
    sizes: Sequence[int],
    regimes: dict[str, Regime] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    load: Callable[[int, int], Splits] | None = None,
    input_size: int = 32,
    test_per_class: int = 50,
    val_per_class: int = 2,
    budget: Budget = Budget(),
    head_budget: Budget = HEAD_BUDGET,
    backbone: str = "mobilenet_v2",
    cache_dir: str | None = None,
    device: str = "auto",
    progress: bool = True,
    make_param_groups: Callable | None = None,
    freeze_first_k: Callable | None = None,
) -> SizeAxis:
    """Train every regime at every size (images per class) for every seed; returns a :class:`SizeAxis`.

    ``load(seed, size)`` returns the splits for one size (default: Fashion-MNIST with ``size`` training,
    ``val_per_class`` validation and ``test_per_class`` test images per class, drawn with ``seed``; for one seed the
    training sets of the sizes are nested and share the validation and test images).
    Validation is a token set (nothing is chosen on it: fixed budget, last epoch), to keep its cost out of the bill.
    ``make_param_groups(model, lr, backbone_lr_scale)`` builds the optimizer groups of every run (default
    :func:`convlab.transfer.param_groups`); ``freeze_first_k(model, k)`` freezes every run's first ``k`` stages
    (default :func:`convlab.transfer.freeze`; see :func:`convlab.transfer.freeze_by_hand`).
    """
    from tqdm.auto import tqdm

    regimes = regimes or default_regimes()
    sizes = sorted(sizes)
    load = load or _fashion(val_per_class, test_per_class)
    prep = Preprocess.from_spec(BACKBONES[backbone], size=input_size, crop=False)  # small centred images: no crop
    rows = []
    bar = tqdm(total=len(seeds) * len(sizes) * len(regimes), desc="size axis runs", disable=not progress)
    for seed in seeds:
        for size in sizes:
            sub = load(seed, size)
            for name, regime in regimes.items():
                row = run_one(
                    size,
                    name,
                    regime,
                    seed,
                    sub,
                    prep=prep,
                    budget=budget,
                    head_budget=head_budget,
                    backbone=backbone,
                    cache_dir=cache_dir,
                    device=device,
                    progress=progress,
                    make_param_groups=make_param_groups,
                    freeze_first_k=freeze_first_k,
                )
                rows.append(row)
                bar.set_postfix(size=size, regime=name, acc=f"{row.test_acc:.3f}")
                bar.update(1)
    bar.close()
    meta = {
        "backbone": backbone,
        "input_size": input_size,
        "test_per_class": test_per_class,
        "budget": asdict(budget),
        "head_budget": asdict(head_budget),
        "seeds": list(seeds),
    }
    return SizeAxis(rows, {n: r.frozen for n, r in regimes.items()}, meta)


# ----------------------------------------------------------------------------- the stored full-scale study
#: The fields that name one run in a stored study (``python -m convlab study size-axis``).
KEY = ("size", "regime", "seed")

#: ``python -m convlab study size-axis --scale NAME``: ``full`` is the stored study of notebook 04.
STUDY_SCALES = {
    "small": {
        "sizes": (10, 100),
        "seeds": (0, 1),
        "test_per_class": 50,
        "input_size": 32,
        "budget": {"min_epochs": 2, "min_steps": 40},
        "head_budget": {"min_epochs": 30, "min_steps": 300},
    },
    "full": {
        "sizes": (10, 100, 300, 1000),
        "seeds": (0, 1, 2),
        "test_per_class": 200,
        "input_size": 32,
        "budget": {"min_epochs": 10, "min_steps": 400},
        "head_budget": {"min_epochs": 60, "min_steps": 600},
        # more seeds where 3 left the head-vs-fine-tune interval at the largest size too wide to resolve
        "extra_seeds": {"1000": (3, 4)},
    },
}


def study_regimes() -> dict[str, Regime]:
    """The regimes of the stored study: :func:`default_regimes`."""
    return default_regimes()


def config(scale: str) -> dict:
    """What determines a stored study's results."""
    cfg = scale_settings(STUDY_SCALES, scale)
    return {
        **json.loads(json.dumps(cfg)),
        "backbone": "mobilenet_v2",
        "val_per_class": 2,
        "regimes": {n: asdict(r) for n, r in study_regimes().items()},
        "until_fitted": "training accuracy not improved by 0.2 points for 3 epochs (the budget's epochs are a cap)",
    }


def compatible(old: dict, new: dict, rows: Sequence[dict]) -> bool:
    """Whether rows stored under config ``old`` stay valid under ``new``: the same but for more ``extra_seeds``."""
    if not same_but(old, new, "extra_seeds"):
        return False
    more = new.get("extra_seeds", {})
    return all(set(v) <= set(more.get(k, [])) for k, v in old.get("extra_seeds", {}).items())


def run(scale: str, record, *, progress: bool = True) -> SizeAxis:
    """Run (or finish) a stored study into ``record`` (a :class:`convlab.studyrun.StudyRecord`), size by size."""

    cfg = config(scale)
    regimes = study_regimes()
    prep = Preprocess.from_spec(BACKBONES[cfg["backbone"]], size=cfg["input_size"], crop=False)
    load = _fashion(cfg["val_per_class"], cfg["test_per_class"])
    extra = cfg.get("extra_seeds", {})
    jobs = [
        {"size": n, "regime": g, "seed": s}
        for n in cfg["sizes"]
        for s in [*cfg["seeds"], *extra.get(str(n), [])]
        for g in regimes
    ]
    data: dict[tuple[int, int], Splits] = {}

    def one(job) -> dict:
        key = (job["seed"], job["size"])
        if key not in data:
            data.clear()
            data[key] = load(*key)
        row = run_one(
            job["size"],
            job["regime"],
            regimes[job["regime"]],
            job["seed"],
            data[key],
            prep=prep,
            budget=Budget(**cfg["budget"]),
            head_budget=Budget(**cfg["head_budget"]),
            backbone=cfg["backbone"],
            until_fitted=True,
            device="auto",
            progress=False,
        )
        return asdict(row)

    rows = run_jobs(record, jobs, one, progress=progress, desc="size axis runs")
    fields = SizeAxisRow.__dataclass_fields__
    return SizeAxis(
        [SizeAxisRow(**{k: r[k] for k in fields}) for r in rows],
        {n: r.frozen for n, r in regimes.items()},
        dict(record.meta),
    )
