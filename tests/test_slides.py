"""Every notebook presents as slides: its slide metadata follows convlab.slides' rule (re-run the marker after
editing headings: ``python -m convlab.slides notebooks/*.ipynb``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convlab.slides import RISE, main, mark_slides, slide_type

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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_their_slide_metadata(path):
    nb = json.loads(path.read_text())
    assert nb == mark_slides(nb), f"run: python -m convlab.slides {path.relative_to(ROOT)}"
    assert nb["metadata"]["rise"] == RISE
    assert sum(c["metadata"]["slideshow"]["slide_type"] == "slide" for c in nb["cells"]) >= 3


def test_command_refuses_a_non_notebook(tmp_path, capsys):
    bad = tmp_path / "x.ipynb"
    bad.write_text("not json")
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "x.ipynb: expected a readable notebook" in err and "Traceback" not in err
