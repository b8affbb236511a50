"""Slide metadata for the notebooks, so each one presents as slides (jupyterlab-rise, or ``nbconvert --to slides``).

The rule, applied by :func:`mark_slides` and kept in sync by a test:

- the title cell and every markdown cell that starts a section (``## ...``) begin a new slide;
- the code cells between the title and the first section (the configuration and the imports) are skipped: the title
  slide shows the title and the idea, and the cells still run with Run All before the talk;
- a markdown cell that starts a subsection (``### ...``, e.g. an exercise, or the learning goals that follow the
  title cell) begins a sub-slide (down in reveal.js);
- every other cell continues the current slide (``-``): code runs where its explanation is.

For a projector: the notebook's ``rise`` metadata (:data:`RISE`) picks reveal.js's ``white`` theme, whose fonts
ship with the extension (the default, "simple", loads its fonts from a web font service, which a seminar room
without network cannot reach), and long slides scroll instead of being cut off. jupyterlab-rise also loads
``rise.css`` and ``<notebook>.css`` from the notebook's folder, and :func:`write_styles` writes them
(:data:`SLIDE_CSS`): text at 20 px and code at 17 px on the slide (JupyterLab's 14 and 13 px are too small for the
back of a room; a teacher may still zoom the browser), code lines that wrap instead of running off the slide's edge,
and prompts at their usual size. A missing file would be a failed request on the slides page.
(reveal.js's own scaling, RISE's ``width``/``height``, does not apply: JupyterLab's layout keeps the slides as wide
as the window, and scaling them pushes their sides off the screen.)

The slides page (jupyterlab-rise 0.43.1's own app, a JupyterLab 4.3 inside the lab) would load every lab extension
installed for JupyterLab, and three of them cannot load there (ipywidgets' manager needs @jupyterlab/console, which
the page does not share; nbgrader's needs the Notebook shell of @jupyter-notebook/lab-extension, which fails there
too), so live widgets do not show on slides whatever the course does. :data:`SLIDES_SERVER_SETTINGS` gives the page
its own folder of lab extensions instead (:data:`SLIDES_EXTENSIONS`), served at its own URL, which holds one:
ConvLab's fix-up of the page (``convlab-slides``, plain JavaScript, no build step). The page bundles
@jupyter/web-components 0.16.7, whose toolbar derives its fill colour from its parent's and, on the notebook's hidden
toolbar, recurses until "Maximum call stack size exceeded" (many times per page load); 0.17.1 dropped that
derivation, and the fix-up drops it from older copies on the page (its ``static/remoteEntry.js`` says how). JupyterLab
itself is unchanged. ``python -m convlab open``, ``python -m convlab hub`` and the browser tests start the lab with
these settings (:func:`slides_server_options`); a lab started without them still shows the slides, with those
errors in the browser's console.

Run ``python -m convlab.slides notebooks/*.ipynb`` after editing a notebook's headings; it rewrites only the
``slideshow`` and ``rise`` metadata, leaves everything else byte-for-byte as it was parsed, and writes the style
files beside the notebooks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = [
    "slide_type",
    "mark_slides",
    "write_styles",
    "slides_server_options",
    "main",
    "RISE",
    "SLIDE_CSS",
    "SLIDES_EXTENSIONS",
    "SLIDES_SERVER_SETTINGS",
]

#: notebook-level settings for jupyterlab-rise: an offline theme, and long slides scroll instead of being cut off
RISE = {"theme": "white", "scroll": True}

#: the slides' style for a projector (``rise.css``, beside the notebooks)
SLIDE_CSS = """\
/* ConvLab's slides on a projector (written by python -m convlab.slides; jupyterlab-rise loads it). */
/* Readable from the back of a room: text 20 px, code 17 px (JupyterLab: 14 and 13 px). */
.reveal .jp-RenderedMarkdown { --jp-content-font-size1: 20px; font-size: 20px; }
.reveal .jp-RenderedMarkdown p, .reveal .jp-RenderedMarkdown li { font-size: 20px; line-height: 1.35; }
.reveal .jp-InputArea-editor, .reveal .jp-OutputArea-output pre { --jp-code-font-size: 17px; font-size: 17px; }
/* Code wraps at the slide's edge: no line is cut off, whatever the screen. */
.reveal .jp-InputArea-editor .cm-content {
  white-space: pre-wrap; word-break: break-word; overflow-wrap: anywhere; flex-shrink: 1; min-width: 0;
}
.reveal .jp-InputArea-editor .cm-scroller { overflow-x: hidden; }
/* Prompts ("[3]:") at their usual size: RISE's 160% would make them overflow their column. */
.reveal .jp-InputPrompt, .reveal .jp-OutputPrompt { font-size: 14px; }
"""


#: the slides page's own folder of lab extensions: ConvLab's fix-up of the page (``convlab-slides``), and no other
SLIDES_EXTENSIONS = Path(__file__).resolve().parent / "slides_extensions"
#: jupyterlab-rise's server settings (``RiseApp``): the slides page loads the extensions in :data:`SLIDES_EXTENSIONS`
#: only, from a URL of its own (JupyterLab's ``/lab/extensions/`` serves JupyterLab's; ``/rise/...`` is the page)
SLIDES_SERVER_SETTINGS = {
    "labextensions_path": [str(SLIDES_EXTENSIONS)],
    "labextensions_url": "/convlab-slides/extensions/",
}


def slides_server_options() -> list[str]:
    """:data:`SLIDES_SERVER_SETTINGS` as options of the ``jupyter lab`` command line."""
    options = [f"--RiseApp.labextensions_path={path}" for path in SLIDES_SERVER_SETTINGS["labextensions_path"]]
    return options + [f"--RiseApp.labextensions_url={SLIDES_SERVER_SETTINGS['labextensions_url']}"]


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def slide_type(cell: dict, index: int, preamble: bool = False) -> str:
    """The reveal.js slide type of a notebook cell at position ``index``: ``slide``, ``subslide``, ``skip`` (a code
    cell in the ``preamble``: after the title, before the first section) or ``-``."""
    if index == 0:
        return "slide"
    if preamble and cell.get("cell_type") == "code":
        return "skip"
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
    preamble = True
    for i, cell in enumerate(out["cells"]):
        kind = slide_type(cell, i, preamble=preamble and i > 0)
        preamble = preamble and (i == 0 or kind != "slide")
        cell.setdefault("metadata", {})["slideshow"] = {"slide_type": kind}
    return out


def write_styles(folder: str | Path, notebooks: list[Path]) -> list[Path]:
    """Write ``rise.css`` (:data:`SLIDE_CSS`) and, for each notebook, ``<notebook>.css`` (for that notebook's own
    additions; jupyterlab-rise asks for both) into ``folder``, where they differ; returns the files written."""
    folder = Path(folder)
    wanted = {folder / "rise.css": SLIDE_CSS}
    for nb in notebooks:
        wanted[folder / f"{Path(nb).stem}.css"] = (
            f"/* {Path(nb).name} on slides: this notebook's additions to rise.css (jupyterlab-rise loads both). */\n"
        )
    written = []
    for path, text in wanted.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


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
            print(
                f"{path}: expected a readable notebook (.ipynb JSON), got {type(err).__name__}: {err}", file=sys.stderr
            )
            return 2
        marked = mark_slides(nb)
        if marked != nb:
            path.write_text(json.dumps(marked, indent=1, ensure_ascii=False) + "\n")
            print(f"marked {path}")
    for folder in sorted({p.parent for p in paths}):
        for written in write_styles(folder, [p for p in paths if p.parent == folder]):
            print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
