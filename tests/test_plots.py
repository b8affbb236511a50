"""The static figures draw what they are given: the values, labels and highlights can be read back from the axes."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from convlab import plots
from convlab.backbones import Prediction
from convlab.engine import History


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_to_hwc_moves_channels_last_squeezes_gray_and_clamps_floats():
    rgb = torch.arange(2 * 3 * 4, dtype=torch.uint8).view(3, 2, 4)
    out = plots.to_hwc(rgb)
    assert out.shape == (2, 4, 3) and out[1, 2, 0] == rgb[0, 1, 2] and out[1, 2, 2] == rgb[2, 1, 2]
    assert plots.to_hwc(torch.zeros(1, 5, 6, dtype=torch.uint8)).shape == (5, 6)
    assert plots.to_hwc(torch.tensor([[[-0.5, 2.0]]])).tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match=r"image: expected \(C, H, W\), got shape \(4, 4\)"):
        plots.to_hwc(torch.zeros(4, 4))


def test_image_grid_shows_every_image_with_its_title_and_hides_the_spare_cells():
    images = [torch.full((3, 4, 4), 40 * i, dtype=torch.uint8) for i in range(4)]
    fig = plots.image_grid(images, titles=["a", "b", "c", "d"], ncols=3)
    axes = fig.axes
    assert len(axes) == 6 and [ax.get_title() for ax in axes[:4]] == ["a", "b", "c", "d"]
    assert [len(ax.images) for ax in axes] == [1, 1, 1, 1, 0, 0]
    assert np.array_equal(axes[2].images[0].get_array(), plots.to_hwc(images[2]))
    with pytest.raises(ValueError, match="images: expected at least one image"):
        plots.image_grid([])


def test_heatmap_writes_each_value_leaves_nan_blank_and_boxes_the_highlight():
    values = [[0.25, float("nan")], [1.0, 0.5]]
    fig = plots.heatmap(values, ["r0", "r1"], ["c0", "c1"], highlight=[(1, 0)], fmt="{:.2f}")
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0.25", "0.50", "1.00"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["c0", "c1"]
    (box,) = ax.patches
    assert box.get_xy() == (-0.5, 0.5) and box.get_edgecolor()[:3] == (1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"values: expected shape \(2, 3\)"):
        plots.heatmap(values, ["r0", "r1"], ["a", "b", "c"])


def test_confusion_matrix_cells_show_the_count_and_the_row_share():
    fig = plots.confusion_matrix([[3, 1], [0, 4]], ["cat", "dog"])
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert texts == {"3\n75%", "1\n25%", "0\n0%", "4\n100%"}
    with pytest.raises(ValueError, match=r"counts: expected shape \(3, 3\)"):
        plots.confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"])


def test_history_curves_plot_one_line_per_run_against_the_epoch():
    a = History(val_acc=[0.5, 0.6, 0.7])
    b = History(val_acc=[0.4, 0.8])
    fig = plots.history_curves({"a": a, "b": b})
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["a", "b"]
    assert list(lines[0].get_xdata()) == [1, 2, 3] and list(lines[1].get_ydata()) == [0.4, 0.8]
    with pytest.raises(ValueError, match="histories: expected a non-empty"):
        plots.history_curves({})


def test_metrics_vs_draws_one_panel_per_column_with_the_chosen_log_axes():
    rows = [{"n": 10, "acc": 0.5, "seconds": 1.0}, {"n": 100, "acc": 0.7, "seconds": 20.0}]
    fig = plots.metrics_vs(rows, "n", ["acc", "seconds"], labels=["accuracy", "s"], log=["seconds"])
    acc, secs = fig.axes
    assert list(acc.get_lines()[0].get_ydata()) == [0.5, 0.7] and acc.get_ylabel() == "accuracy"
    assert acc.get_yscale() == "linear" and secs.get_yscale() == "log"
    with pytest.raises(ValueError, match="rows: expected at least one row"):
        plots.metrics_vs([], "n", ["acc"])


def test_stage_bars_draws_one_bar_per_stage_with_its_value():
    rows = [{"stage": "stem", "params": 864}, {"stage": "head", "params": 12_810}]
    ax = plots.stage_bars(rows, title="params").axes[0]
    assert [round(p.get_height()) for p in ax.patches] == [864, 12_810]
    assert [t.get_text() for t in ax.texts] == ["864", "12,810"] and ax.get_yscale() == "log"


def test_show_predictions_marks_the_true_class_green():
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    pred = Prediction(("dog", "cat"), (0.7, 0.3), (1, 0))
    fig = plots.show_predictions([image], [pred], truths=["cat"])
    bars = fig.axes[1].patches
    colors = [matplotlib.colors.to_hex(b.get_facecolor()) for b in bars]
    assert colors == [matplotlib.colors.to_hex("tab:blue"), matplotlib.colors.to_hex("tab:green")]
    assert [math.isclose(b.get_width(), p) for b, p in zip(bars, pred.probs)] == [True, True]
    assert fig.axes[0].get_title() == "true: cat"


def test_effect_bars_draw_each_effect_top_down_coloured_by_its_verdict():
    from convlab.verdicts import paired_ci

    better = paired_ci([0.9, 0.92, 0.91], [0.8, 0.81, 0.8], "a vs none")
    tie = paired_ci([0.8, 0.82, 0.79], [0.81, 0.8, 0.8], "b vs none")
    fig, ax = plt.subplots()
    plots.effect_bars(ax, [better, tie], ["a", "b"])
    assert {y: t.get_text() for y, t in zip(ax.get_yticks(), ax.get_yticklabels())} == {1: "a", 0: "b"}  # a on top
    dots = [line for line in ax.lines if line.get_marker() == "o"]
    assert [line.get_ydata()[0] for line in dots] == [1, 0]
    assert dots[0].get_xdata()[0] == pytest.approx(better.mean * 100)
    assert [line.get_color() for line in dots] == ["C2", "0.5"]
    with pytest.raises(ValueError, match=r"labels: expected one per effect \(2\), got 1"):
        plots.effect_bars(ax, [better, tie], ["a"])
