"""Static matplotlib figures for the notebooks (they render on GitHub and in exported notebooks).

Every function returns the ``Figure`` and closes nothing; the notebook shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # annotations only: no import cost or cycle at run time
    from collections.abc import Mapping

    import numpy as np
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from convlab.engine import History

__all__ = [
    "image_grid",
    "show_predictions",
    "stage_bars",
    "to_hwc",
    "heatmap",
    "confusion_matrix",
    "history_curves",
    "metrics_vs",
    "effect_bars",
]


def to_hwc(image: torch.Tensor) -> np.ndarray:
    """uint8 or float ``(C, H, W)`` -> ``(H, W, C)`` numpy array for ``imshow`` (gray images squeezed)."""
    if image.ndim != 3:
        raise ValueError(f"image: expected (C, H, W), got shape {tuple(image.shape)}")
    array = image.detach().cpu()
    if array.is_floating_point():
        array = array.clamp(0, 1)
    array = array.permute(1, 2, 0).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


def image_grid(
    images: Sequence[torch.Tensor], titles: Sequence[str] | None = None, ncols: int = 5, size: float = 2.4
) -> Figure:
    """A grid of images with optional titles."""
    import matplotlib.pyplot as plt

    n = len(images)
    if n == 0:
        raise ValueError("images: expected at least one image, got none")
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 0.8), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(to_hwc(images[i]), cmap="gray" if images[i].shape[0] == 1 else None)
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def show_predictions(
    images: Sequence[torch.Tensor], predictions: Sequence, truths: Sequence[str] | None = None
) -> Figure:
    """Each image beside a bar chart of its top-k classes (``predictions`` from ``Backbone.predict``)."""
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(8, 2.0 * n), gridspec_kw={"width_ratios": [1, 1.4]}, squeeze=False)
    for i, (image, pred) in enumerate(zip(images, predictions)):
        axes[i, 0].imshow(to_hwc(image))
        axes[i, 0].axis("off")
        if truths is not None:
            axes[i, 0].set_title(f"true: {truths[i]}", fontsize=8)
        ax = axes[i, 1]
        colors = ["tab:green" if truths is not None and lab == truths[i] else "tab:blue" for lab in pred.labels]
        ax.barh(range(len(pred.labels))[::-1], pred.probs, color=colors)
        ax.set_yticks(range(len(pred.labels))[::-1], [lab[:28] for lab in pred.labels], fontsize=8)
        ax.set_xlim(0, 1)
        ax.tick_params(axis="x", labelsize=7)
    axes[-1, 1].set_xlabel("probability")
    fig.tight_layout()
    return fig


def stage_bars(rows: Sequence[dict], value: str = "params", title: str = "", log: bool = True) -> Figure:
    """A bar per stage (rows from ``Backbone.stage_summary()`` or similar) of one numeric column."""
    import matplotlib.pyplot as plt

    names = [r["stage"] for r in rows]
    values = [r[value] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.bar(names, values, color="tab:blue")
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(value)
    ax.set_title(title)
    for x, v in enumerate(values):
        ax.text(x, v, f"{v:,}", ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    return fig


def heatmap(
    values: torch.Tensor | Sequence[Sequence[float]],
    row_labels: Sequence,
    col_labels: Sequence,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    fmt: str = "{:.2f}",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    highlight: Sequence[tuple[int, int]] = (),
    texts: Sequence[Sequence[str]] | None = None,
) -> Figure:
    """A ``(rows, cols)`` array as coloured cells with each value written in it; ``highlight`` boxes chosen cells.

    ``values`` is anything ``torch.as_tensor`` accepts (a tensor, nested lists); ``nan`` cells are left blank.
    ``texts`` replaces the written values (same shape as ``values``).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    array = np.asarray(torch.as_tensor(values, dtype=torch.float64))
    if array.ndim != 2 or array.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"values: expected shape ({len(row_labels)}, {len(col_labels)}) to match the labels, got {array.shape}"
        )
    fig, ax = plt.subplots(figsize=(1.1 * len(col_labels) + 2.2, 0.55 * len(row_labels) + 1.6))
    image = ax.imshow(array, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(col_labels)), [str(c) for c in col_labels], fontsize=8)
    ax.set_yticks(range(len(row_labels)), [str(r) for r in row_labels], fontsize=8)
    lo = np.nanmin(array) if vmin is None else vmin
    hi = np.nanmax(array) if vmax is None else vmax
    dark_low = cmap in ("viridis", "magma", "inferno", "cividis")  # dark at the low end; "Blues" etc. at the high end
    for (i, j), v in np.ndenumerate(array):
        if not np.isnan(v):
            t = (v - lo) / (hi - lo + 1e-12)
            dark = t < 0.5 if dark_low else t > 0.6
            text = fmt.format(v) if texts is None else texts[i][j]
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    for i, j in highlight:
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def confusion_matrix(
    counts: torch.Tensor | Sequence[Sequence[int]], classes: Sequence[str], title: str = "confusion matrix"
) -> Figure:
    """``counts[i, j]`` = samples of true class ``i`` predicted as ``j``; cells show the count and the row share."""
    import numpy as np

    counts = np.asarray(torch.as_tensor(counts, dtype=torch.float64))
    if counts.shape != (len(classes), len(classes)):
        raise ValueError(f"counts: expected shape ({len(classes)}, {len(classes)}), got {counts.shape}")
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    texts = [[f"{int(n)}\n{s:.0%}" for n, s in zip(row_n, row_s)] for row_n, row_s in zip(counts, share)]
    return heatmap(
        share,
        classes,
        classes,
        title=title,
        xlabel="predicted",
        ylabel="true (row shares sum to 100%)",
        cmap="Blues",
        vmin=0,
        vmax=1,
        texts=texts,
    )


def history_curves(histories: Mapping[str, History], metric: str = "val_acc", title: str = "") -> Figure:
    """One line per run: ``metric`` (a :class:`convlab.engine.History` field) against the epoch.

    ``histories`` maps a label to a ``History``.
    """
    import matplotlib.pyplot as plt

    if not histories:
        raise ValueError("histories: expected a non-empty {label: History} mapping")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label, history in histories.items():
        values = getattr(history, metric)
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metrics_vs(
    rows: Sequence[dict],
    x: str,
    ys: Sequence[str],
    title: str = "",
    labels: Sequence[str] | None = None,
    log: Sequence[str] = (),
) -> Figure:
    """One panel per column in ``ys`` against column ``x`` of ``rows`` (dicts, e.g. ``Table.rows``).

    ``labels`` names the y axes (default: the column names); columns listed in ``log`` get a logarithmic y axis.
    """
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("rows: expected at least one row")
    xs = [r[x] for r in rows]
    fig, axes = plt.subplots(1, len(ys), figsize=(4.2 * len(ys), 3.2), squeeze=False)
    for ax, y, label in zip(axes[0], ys, labels or ys):
        ax.plot(xs, [r[y] for r in rows], marker="o")
        if y in log:
            ax.set_yscale("log")
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


#: the colour of an effect by its verdict (:class:`convlab.verdicts.PairedCI`)
VERDICT_COLOURS = {"better": "C2", "worse": "C3", "tie": "0.5"}


def effect_bars(ax: Axes, effects: Sequence, labels: Sequence[str], fontsize: float | None = None) -> None:
    """Draw paired effects on ``ax``, top to bottom: each one's mean as a dot with its interval, in accuracy points,
    coloured by its verdict (green shown better, red shown worse, grey a tie), beside a line at zero.

    ``effects``: objects with ``mean``, ``low``, ``high`` and ``verdict`` (:class:`convlab.verdicts.PairedCI`);
    ``labels``: one per effect, for the y axis.
    """
    if len(labels) != len(effects):
        raise ValueError(f"labels: expected one per effect ({len(effects)}), got {len(labels)}")
    ys = list(range(len(effects)))[::-1]
    for y, ci in zip(ys, effects):
        ax.errorbar(
            ci.mean * 100,
            y,
            xerr=[[(ci.mean - ci.low) * 100], [(ci.high - ci.mean) * 100]],
            fmt="o",
            color=VERDICT_COLOURS[ci.verdict],
            capsize=3,
        )
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(ys, list(labels), **({} if fontsize is None else {"fontsize": fontsize}))
