"""Every notebook presents as slides: its slide metadata follows convlab.slides' rule (re-run the marker after
editing headings: ``python -m convlab.slides notebooks/*.ipynb``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convlab.slides import RISE, SLIDE_CSS, main, mark_slides, slide_type, write_styles

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text}


def test_rule():
    assert slide_type(_md("# Title"), 0) == "slide"
    assert slide_type(_md("## 2. A section\ntext"), 5) == "slide"
    assert slide_type(_md("### Exercise: a freeze"), 5) == "subslide"
    assert slide_type(_md("plain text"), 5) == "-"
    assert slide_type({"cell_type": "code", "metadata": {}, "source": "## not markdown"}, 5) == "-"
    assert slide_type({"cell_type": "code", "metadata": {}, "source": "import torch"}, 2, preamble=True) == "skip"
    assert slide_type(_md("## 1. A section"), 3, preamble=True) == "slide"


def test_title_slide_holds_the_title_and_the_idea_only():
    """The code cells between the title and the first section (configuration, imports) are skipped on slides; code
    after it is shown, and so is a markdown cell before it."""
    code = {"cell_type": "code", "metadata": {}, "source": "X = 1"}
    nb = {"cells": [_md("# Title"), _md("the idea"), code, code, _md("## 1. First"), code], "metadata": {}}
    kinds = [c["metadata"]["slideshow"]["slide_type"] for c in mark_slides(nb)["cells"]]
    assert kinds == ["slide", "-", "skip", "skip", "slide", "-"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_their_slide_metadata(path):
    nb = json.loads(path.read_text())
    assert nb == mark_slides(nb), f"run: python -m convlab.slides {path.relative_to(ROOT)}"
    assert nb["metadata"]["rise"] == RISE
    assert sum(c["metadata"]["slideshow"]["slide_type"] == "slide" for c in nb["cells"]) >= 3
    first_section = next(
        i for i, c in enumerate(nb["cells"]) if i and c["metadata"]["slideshow"]["slide_type"] == "slide"
    )
    assert all(
        c["metadata"]["slideshow"]["slide_type"] == "skip"
        for c in nb["cells"][1:first_section]
        if c["cell_type"] == "code"
    )
    # jupyterlab-rise loads both style files beside the notebook: a missing one is a failed request on the page
    assert (path.parent / "rise.css").read_text() == SLIDE_CSS and (path.with_suffix(".css")).is_file()


def test_styles_are_written_where_they_differ_only(tmp_path):
    nb = tmp_path / "05_x.ipynb"
    assert {p.name for p in write_styles(tmp_path, [nb])} == {"rise.css", "05_x.css"}
    assert write_styles(tmp_path, [nb]) == []
    assert "pre-wrap" in SLIDE_CSS and "font-size: 20px" in SLIDE_CSS


def test_command_refuses_a_non_notebook(tmp_path, capsys):
    bad = tmp_path / "x.ipynb"
    bad.write_text("not json")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "x.ipynb: expected a readable notebook" in err and "Traceback" not in err
