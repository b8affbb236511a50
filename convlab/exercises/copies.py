"""Self-checking exercises and learner copies of the notebooks.

Conventions in the committed notebooks (which hold the solutions, so the course runs under nbval):

- An *exercise cell* defines a function; its solution sits between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` lines inside the function body.
- The next code cell is its *check cell* (tagged ``check``). It calls :func:`check`, which raises an
  ``AssertionError`` with a hint when the answer is wrong. A check cell only uses what the notebook's
  ``setup``-tagged cells (configuration, imports) define, so it can be run right after the exercise cell.

``python -m convlab learner-copies --out DIR`` writes copies in which every solution is replaced by a stub that
raises ``NotImplementedError``; a test runs each check on the stub (it must fail) and on the solution (it must pass).
The test also runs each check on a wrong-typed answer (:func:`none_solutions`: the solution returns, or assigns,
``None``): the check must then fail with its hint (``AssertionError``), not crash with a ``TypeError`` or
``AttributeError`` that tells the learner nothing, so a check cell starts with an ``isinstance``/shape check.
"""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path
from typing import Callable

__all__ = ["strip_solutions", "none_solutions", "learner_notebook", "write_learner_copies", "BEGIN", "END", "STUB"]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: replace this line with your solution")'


def _replace_blocks(source: str, stub: Callable[[str, int, list[str]], list[str]]) -> str:
    """Replace every solution block by ``stub(indent, begin_line_number, block_lines)`` (lines with newlines)."""
    out, block, skipping, indent, begin_no = [], [], False, "", 0
    for no, line in enumerate(source.splitlines(keepends=True), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if skipping:
                raise ValueError(f"source: nested {BEGIN!r}")
            indent = line[: len(line) - len(line.lstrip())]
            block, skipping, begin_no = [], True, no
        elif stripped == END:
            if not skipping:
                raise ValueError(f"source: {END!r} without a matching {BEGIN!r}")
            out.extend(stub(indent, begin_no, block))
            skipping = False
        elif skipping:
            block.append(line)
        else:
            out.append(line)
    if skipping:
        raise ValueError(f"source: {BEGIN!r} without a matching {END!r}")
    return "".join(out)


def strip_solutions(source: str) -> str:
    """Replace every solution block in a cell's source by a stub line at the block's indentation."""
    return _replace_blocks(source, lambda indent, _no, _block: [f"{indent}{STUB}\n"])


def none_solutions(source: str) -> str:
    """A wrong-typed answer: every solution block returns ``None`` (inside a function) or assigns ``None``.

    A block inside a ``def`` becomes ``return None``; a block at module level (possibly under ``if``/``for``) sets
    every name it would have bound to ``None`` (or becomes ``pass`` if it binds none). Used by the tests to check
    that a check cell fails with its hint on an answer of the wrong type instead of crashing.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as err:  # e.g. an IPython magic line: say which cell, rather than guess
        raise ValueError(f"source: not plain Python, cannot build a wrong-typed stub: {err}") from err
    functions = [(n.lineno, n.end_lineno) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

    def stub(indent: str, begin_no: int, block: list[str]) -> list[str]:
        if any(first < begin_no <= last for first, last in functions):
            return [f"{indent}return None\n"]
        names: dict[str, None] = {}
        for node in ast.walk(ast.parse(textwrap.dedent("".join(block)))):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names[node.id] = None
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names[node.name] = None
        return [f"{indent}{name} = None\n" for name in names] or [f"{indent}pass\n"]

    return _replace_blocks(source, stub)


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
