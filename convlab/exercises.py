"""Self-checking exercises and learner copies of the notebooks.

Conventions in the committed notebooks (which hold the solutions, so the course runs under nbval):

- An *exercise cell* defines a function; its solution sits between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` lines inside the function body.
- The next code cell is its *check cell* (tagged ``check``). It calls :func:`check`, which raises an
  ``AssertionError`` with a hint when the answer is wrong. A check cell only uses what the notebook's
  ``setup``-tagged cells (configuration, imports) define, so it can be run right after the exercise cell.

``python -m convlab learner-copies --out DIR`` writes copies in which every solution is replaced by a stub that
raises ``NotImplementedError``; a test runs each check on the stub (it must fail) and on the solution (it must pass).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["check", "strip_solutions", "learner_notebook", "write_learner_copies", "BEGIN", "END", "STUB"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: replace this line with your solution")'


def check(condition: bool, hint: str) -> None:
    """Raise ``AssertionError`` with ``hint`` unless ``condition`` holds (works under ``python -O`` too)."""
    if not condition:
        raise AssertionError(f"Not yet: {hint}")
    print("Correct!")


def strip_solutions(source: str) -> str:
    """Replace every solution block in a cell's source by a stub line at the block's indentation."""
    out, skipping = [], False
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped == BEGIN:
            if skipping:
                raise ValueError(f"source: nested {BEGIN!r}")
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}{STUB}\n")
            skipping = True
        elif stripped == END:
            if not skipping:
                raise ValueError(f"source: {END!r} without a matching {BEGIN!r}")
            skipping = False
        elif not skipping:
            out.append(line)
    if skipping:
        raise ValueError(f"source: {BEGIN!r} without a matching {END!r}")
    return "".join(out)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def learner_notebook(nb: dict) -> dict:
    """A copy of a notebook (as parsed JSON) with solutions replaced by stubs and outputs cleared."""
    out = json.loads(json.dumps(nb))
    for cell in out["cells"]:
        if cell.get("cell_type") != "code":
            continue
        src = _source(cell)
        if BEGIN in src:
            cell["source"] = strip_solutions(src)
        cell["outputs"] = []
        cell["execution_count"] = None
    return out


def write_learner_copies(src_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write a learner copy of every ``NN_*.ipynb`` in ``src_dir`` into ``out_dir``; return the written paths."""
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    notebooks = sorted(src_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise ValueError(f"src_dir: expected notebooks named NN_topic.ipynb in {src_dir}, found none")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        copy = learner_notebook(json.loads(path.read_text()))
        target = out_dir / path.name
        tmp = target.with_suffix(".ipynb.tmp")
        tmp.write_text(json.dumps(copy, indent=1, ensure_ascii=False) + "\n")
        tmp.replace(target)
        written.append(target)
    return written
