"""Slide metadata for the notebooks, so each one presents as slides (jupyterlab-rise, or ``nbconvert --to slides``).

The rule, applied by :func:`mark_slides` and kept in sync by a test:

- the title cell and every markdown cell that starts a section (``## ...``) begin a new slide;
- a markdown cell that starts a subsection (``### ...``, e.g. an exercise) begins a sub-slide (down in reveal.js);
- every other cell continues the current slide (``-``): code runs where its explanation is.

The notebook's ``rise`` metadata picks reveal.js's ``white`` theme, whose fonts ship with the extension: the default
theme ("simple") loads its fonts from a web font service, which a seminar room without network cannot reach.

Run ``python -m convlab.slides notebooks/*.ipynb`` after editing a notebook's headings; it rewrites only the
``slideshow`` metadata and leaves everything else byte-for-byte as it was parsed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["slide_type", "mark_slides", "main", "RISE"]

#: notebook-level settings for jupyterlab-rise: an offline theme, and long slides scroll instead of being cut off
RISE = {"theme": "white", "scroll": True}


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def slide_type(cell: dict, index: int) -> str:
    """The reveal.js slide type of a notebook cell at position ``index``: ``slide``, ``subslide`` or ``-``."""
    if index == 0:
        return "slide"
    if cell.get("cell_type") == "markdown":
        first = _source(cell).lstrip().split("\n", 1)[0]
        if first.startswith("## "):
            return "slide"
        if first.startswith("### "):
            return "subslide"
    return "-"


def mark_slides(nb: dict) -> dict:
    """A copy of the notebook (parsed JSON) with every cell's ``metadata.slideshow.slide_type`` set by the rule."""
    out = json.loads(json.dumps(nb))
    out.setdefault("metadata", {})["rise"] = dict(RISE)
    for i, cell in enumerate(out["cells"]):
        cell.setdefault("metadata", {})["slideshow"] = {"slide_type": slide_type(cell, i)}
    return out


def main(argv: list[str] | None = None) -> int:
    """Mark the given notebooks in place; exit status 2 with one line for a path that is not a notebook."""
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m convlab.slides NOTEBOOK.ipynb [...]", file=sys.stderr)
        return 2
    for path in paths:
        try:
            nb = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            print(f"{path}: expected a readable notebook (.ipynb JSON), got {type(err).__name__}: {err}",
                  file=sys.stderr)
            return 2
        marked = mark_slides(nb)
        if marked != nb:
            path.write_text(json.dumps(marked, indent=1, ensure_ascii=False) + "\n")
            print(f"marked {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
