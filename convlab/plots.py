"""Static matplotlib figures for the notebooks (they render on GitHub and in exported notebooks).

Every function returns the ``Figure`` and closes nothing; the notebook shows it.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["image_grid", "show_predictions", "stage_bars", "to_hwc"]


def to_hwc(image: torch.Tensor) -> "numpy.ndarray":  # noqa: F821
    """uint8 or float ``(C, H, W)`` -> ``(H, W, C)`` numpy array for ``imshow`` (gray images squeezed)."""
    if image.ndim != 3:
        raise ValueError(f"image: expected (C, H, W), got shape {tuple(image.shape)}")
    array = image.detach().cpu()
    if array.is_floating_point():
        array = array.clamp(0, 1)
    array = array.permute(1, 2, 0).numpy()
    return array[:, :, 0] if array.shape[2] == 1 else array


def image_grid(images: Sequence[torch.Tensor], titles: Sequence[str] | None = None, ncols: int = 5, size: float = 2.4):
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


def show_predictions(images: Sequence[torch.Tensor], predictions: Sequence, truths: Sequence[str] | None = None):
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


def stage_bars(rows: Sequence[dict], value: str = "params", title: str = "", log: bool = True):
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
