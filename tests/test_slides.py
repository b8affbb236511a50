"""Every notebook presents as slides: its slide metadata follows convlab.slides' rule (re-run the marker after
editing headings: ``python -m convlab.slides notebooks/*.ipynb``)."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest

from convlab.slides import (
    RISE,
    SLIDE_CSS,
    SLIDES_EXTENSIONS,
    SLIDES_SERVER_SETTINGS,
    main,
    mark_slides,
    slide_type,
    slides_server_options,
    write_styles,
)

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


def test_the_slides_page_loads_convlabs_fix_up_only():
    """jupyterlab-rise's server, given the course's settings on the command line, lists exactly one lab extension for
    the slides page (the fix-up), whose script exists."""
    rise = pytest.importorskip("jupyterlab_rise")
    from jupyterlab_server.config import get_federated_extensions

    app = rise.RiseApp()
    app.parse_command_line(slides_server_options())
    assert app.labextensions_path == SLIDES_SERVER_SETTINGS["labextensions_path"] == [str(SLIDES_EXTENSIONS)]
    assert app.labextensions_url == SLIDES_SERVER_SETTINGS["labextensions_url"]
    assert not app.labextensions_url.startswith("/rise/"), "/rise/... is the slides page itself"
    found = get_federated_extensions(app.labextensions_path)
    assert list(found) == ["convlab-slides"]
    script = Path(found["convlab-slides"]["ext_path"]) / found["convlab-slides"]["jupyterlab"]["_build"]["load"]
    assert script.is_file() and "window._JUPYTERLAB['convlab-slides']" in script.read_text()


def test_the_fix_up_ships_with_the_package():
    """Its files are package data, so a non-editable install has them too."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["convlab"]
    package = ROOT / "convlab"
    for path in (p for p in SLIDES_EXTENSIONS.rglob("*") if p.is_file()):
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), f"{relative}: not in package-data"
