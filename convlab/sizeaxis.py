"""One data set, many sizes: which transfer regime wins at which training-set size? Measured, with error bars.

The seminar's rule (CS231n "Transfer learning" notes; Yosinski et al. 2014) for data *far* from or *close* to
ImageNet: with little data train only a new head on frozen features; with more data unfreeze the last stages;
with lots of data fine-tune everything. To test "more data -> fewer frozen stages" the regimes must differ ONLY in
the training-set size, so :func:`run_size_axis` draws every size from ONE data set (Fashion-MNIST by default: 6,000
training images per class), with the same test images, input size, backbone and learning rates.

**Training budget.** An equal number of optimizer steps for every size (what an earlier version of this course did)
either starves the large sets or grossly over-trains the small ones; equal *epochs* gives a 10-images-per-class set
only a handful of steps. :class:`Budget` does both: a regime at a size sees each training image ``min_epochs``
times and takes at least ``min_steps`` optimizer steps, so steps grow with the set size (``min_epochs x
ceil(n / batch_size)`` once that exceeds ``min_steps``). Head-only regimes train on cached features, where an epoch
costs milliseconds, so they get :data:`HEAD_BUDGET` (30 epochs, at least 300 steps: trained to convergence; with
2 epochs a head on 1,000 Fashion-MNIST features reached 0.71 test accuracy instead of 0.76). The fine-tuned regimes
get ``budget`` (default 2 epochs, at least 40 steps: what a 2-core CPU affords). That handicap works *against*
fine-tuning, so where fine-tuning still wins the verdict is conservative; ``SCALE = "full"`` gives them 5 epochs.

The verdict (:meth:`SizeAxis.verdict`) is computed from the rows: the best regime per size, which regimes are
within two standard errors of it (the sd over seeds, each seed a different draw of train and test images and a
different initialisation), and whether the rule held, failed or could not be told apart from noise.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from convlab.data import Splits
from convlab.transfer import Preprocess, Regime, run_regime

__all__ = [
    "Budget",
    "HEAD_BUDGET",
    "SizeAxisRow",
    "SizeAxisVerdict",
    "SizeAxis",
    "default_regimes",
    "run_size_axis",
    "SCALES",
]

#: Configurations: ``small`` runs on a 2-core CPU within a notebook's budget; ``full`` is the real curve (a GPU, or
#: a patient CPU: about an hour per seed for the 5,000-per-class fine-tunes).
SCALES = {
    "small": {"input_size": 32, "test_per_class": 50, "seeds": (0, 1, 2), "min_epochs": 2},
    "full": {
        "input_size": 64,
        "test_per_class": 500,
        "seeds": (0, 1, 2, 3, 4),
        "sizes": (10, 30, 100, 300, 1000, 3000, 5000),
        "min_epochs": 5,
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
    """What the table says. ``best[size]``: the best regime; ``tied[size]``: regimes within two standard errors."""

    best: dict[int, str]
    tied: dict[int, list[str]]
    claims: list[tuple[str, str]]  # (claim, "held" / "failed" / "within noise", with the numbers)

    @property
    def lines(self) -> list[str]:
        out = [
            f"{size:>5}/class: best {self.best[size]}; within noise of it: {', '.join(self.tied[size])}"
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

    def verdict(self, z: float = 2.0, expect: dict[int, str] | None = None) -> SizeAxisVerdict:
        """Best regime per size, and the seminar's claims, each "held", "failed" or "within noise" (``z`` standard
        errors).

        ``expect`` maps a size to the regime the seminar recommends there; default: the most frozen regime at the
        smallest size and, with more than one size, the least frozen at the largest. With more than one size the
        claim "more data -> fewer frozen stages" is tested too (the best k never goes up as the size grows).
        """
        best, tied = {}, {}
        for size in self.sizes:
            stats = {g: self.mean_sem(size, g) for g in self.ks if self._acc(size, g)}
            top = max(stats, key=lambda g: (stats[g][0], self.ks[g]))
            best[size] = top
            tied[size] = [
                g for g, (m, s) in stats.items() if stats[top][0] - m <= z * math.hypot(_nz(s), _nz(stats[top][1]))
            ]
        if expect is None:
            expect = {self.sizes[0]: max(self.ks, key=self.ks.get)}
            if len(self.sizes) > 1:
                expect[self.sizes[-1]] = min(self.ks, key=self.ks.get)

        def claim(regime: str, size: int) -> str:
            m, _ = self.mean_sem(size, regime)
            top, (tm, _) = best[size], self.mean_sem(size, best[size])
            if regime == top:
                others = [g for g in self.ks if g != regime and self._acc(size, g)]
                second = max(others, key=lambda g: self.mean_sem(size, g)[0]) if others else None
                margin = f" ({m:.3f} vs {second} {self.mean_sem(size, second)[0]:.3f})" if second else ""
                clear = second is None or second not in tied[size]
                return ("held" if clear else "within noise (best, but not by two standard errors)") + margin
            if regime in tied[size]:
                return f"within noise ({regime} {m:.3f}, best {top} {tm:.3f})"
            return f"failed ({regime} {m:.3f} vs best {top} {tm:.3f})"

        claims = [(f"{size}/class: {regime} is best", claim(regime, size)) for size, regime in sorted(expect.items())]
        if len(self.sizes) > 1:
            ks = [self.ks[best[s]] for s in self.sizes]
            trend = "held" if all(a >= b for a, b in zip(ks, ks[1:])) else "failed"
            if trend == "held" and len(set(ks)) == 1:
                trend = "not shown (the same k was best at every size)"
            claims.append((f"more data -> fewer frozen stages (best k per size {ks})", trend))
        return SizeAxisVerdict(best, tied, claims)

    def plot(self, title: str = ""):
        """Test accuracy against training images per class (log scale), one line per regime, error bars = 2 sem."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for regime, k in self.ks.items():
            pts = [(s, *self.mean_sem(s, regime)) for s in self.sizes if self._acc(s, regime)]
            xs, ms, ss = zip(*pts)
            ax.errorbar(
                xs, ms, yerr=[2 * (s if s == s else 0.0) for s in ss], marker="o", capsize=3, label=f"{regime} (k={k})"
            )
        ax.set_xscale("log")
        ax.set_xlabel("training images per class")
        ax.set_ylabel("test accuracy (mean ± 2 sem over seeds)")
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
        d = json.loads(Path(path).read_text())
        return cls([SizeAxisRow(**r) for r in d["rows"]], d["ks"], d.get("meta", {}))


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
) -> SizeAxis:
    """Train every regime at every size (images per class) for every seed; returns a :class:`SizeAxis`.

    ``load(seed, size)`` returns the splits for one size (default: Fashion-MNIST with ``size`` training,
    ``val_per_class`` validation and ``test_per_class`` test images per class, drawn with ``seed``; for one seed the
    training sets of the sizes are nested and share the validation and test images).
    Validation is a token set (nothing is chosen on it: fixed budget, last epoch), to keep its cost out of the bill.
    """
    from tqdm.auto import tqdm

    from convlab.backbones import BACKBONES
    from convlab.data import load_fashion_mnist

    regimes = regimes or default_regimes()
    sizes = sorted(sizes)
    if load is None:

        def load(seed, n):
            return load_fashion_mnist(
                train_per_class=n, val_per_class=val_per_class, test_per_class=test_per_class, seed=seed
            )

    prep = Preprocess.from_spec(BACKBONES[backbone], size=input_size, crop=False)  # small centred images: no crop
    rows = []
    bar = tqdm(total=len(seeds) * len(sizes) * len(regimes), desc="size axis runs", disable=not progress)
    for seed in seeds:
        for size in sizes:
            # load_fashion_mnist keeps the first `size` images of one seeded permutation per class: the sizes are
            # nested, the validation and test images the same, and a size's draw does not depend on the other sizes
            # in the table (so notebook 02's 10-per-class row is the same runs as notebook 04's).
            sub = load(seed, size)
            for name, regime in regimes.items():
                b = head_budget if regime.frozen == 7 else budget
                epochs = b.epochs(len(sub.train))
                t = time.perf_counter()
                r = run_regime(
                    regime,
                    sub,
                    backbone,
                    epochs=epochs,
                    batch_size=b.batch_size,
                    preprocess=prep,
                    seed=seed,
                    cache_dir=cache_dir,
                    device=device,
                    progress="transient" if progress else False,
                )  # a bar per run, gone when it ends
                rows.append(
                    SizeAxisRow(
                        size,
                        name,
                        regime.frozen,
                        seed,
                        r.row.test_acc,
                        r.history.train_acc[-1],
                        epochs,
                        b.steps(len(sub.train)),
                        time.perf_counter() - t,
                    )
                )
                bar.set_postfix(size=size, regime=name, acc=f"{r.row.test_acc:.3f}")
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
