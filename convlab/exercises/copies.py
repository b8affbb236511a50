"""Self-checking exercises and learner copies of the notebooks.

Conventions in the committed notebooks (which hold the solutions, so the course runs under nbval):

- An *exercise cell* defines a function; its solution sits between ``### BEGIN SOLUTION`` and
  ``### END SOLUTION`` lines inside the function body.
- The next code cell is its *check cell*, usually ``nbNN.NAME.check(function)`` (:meth:`Exercise.check
  <convlab.exercises.core.Exercise.check>`), which raises an ``AssertionError`` with the reason (and where a hint
  is) when the answer is wrong. A check cell only uses what the notebook's ``setup``-tagged cells (configuration,
  imports) define, so it can be run right after the exercise cell; a quiz's check cell also passes the values of
  the run that its measured questions ask about (``QUIZ.check(quiz_answers, measured={"acc10": acc10})``).
- The check cell is tagged ``check`` *and* ``raises-exception``: it raises while the exercise is unfinished, and the
  tag makes JupyterLab's Run All, nbval and nbgrader go on past it, so a learner's copy always runs to the end.

Teachers grade with nbgrader: :func:`mark_for_nbgrader` gives every exercise cell nbgrader's *solution* metadata and
every check cell its *autograded test* metadata (1 point, locked). ``python -m convlab.exercises --mark
notebooks/*.ipynb`` writes the marks into the notebooks; ``--check`` only reports what is missing (marks, tags,
solutions outside a function body) and exits with status 1 if anything is.

``python -m convlab learner-copies --out DIR`` and ``python -m convlab open`` make a course folder
(:func:`make_course_folder`) of copies in which every solution is replaced by a stub that raises
``NotImplementedError``, with the files the notebooks read beside them; a copy the learner changed is kept, and no
folder inside the course's ``notebooks/`` is accepted. A test runs each check on the stub (it must fail) and on the
solution (it must pass). The test also runs each check on a wrong-typed answer (:func:`none_solutions`: the
solution returns, or assigns, ``None``): the check must then fail with its hint (``AssertionError``), not crash
with a ``TypeError`` or ``AttributeError`` that tells the learner nothing, so a check cell starts with an
``isinstance``/shape check.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from convlab.atomicio import atomic_write_bytes

__all__ = [
    "strip_solutions",
    "none_solutions",
    "learner_notebook",
    "course_notebooks",
    "check_course_folder",
    "make_course_folder",
    "CourseFolder",
    "exercise_pairs",
    "mark_for_nbgrader",
    "notebook_problems",
    "read_notebook",
    "BEGIN",
    "END",
    "STUB",
    "CHECK_TAGS",
]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = 'raise NotImplementedError("Exercise: replace this line with your solution")'
CHECK_TAGS = ("check", "raises-exception")
NBGRADER_SCHEMA = 3
_NOTEBOOK_NAME = re.compile(r"[0-9][0-9]_.*\.ipynb")


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
    functions = [
        (n.lineno, n.end_lineno) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]

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


def _parse_notebook(data: bytes, where: str | os.PathLike) -> dict:
    """The notebook in ``data`` (the bytes of an ``.ipynb`` file), or ValueError in one sentence naming ``where``:
    an empty file, invalid JSON (e.g. a truncated file), or JSON that is not a notebook."""
    expected = "expected a notebook (JSON with a list of cells)"
    if not data.strip():
        raise ValueError(f"{where}: {expected}, got an empty file")
    try:
        nb = json.loads(data)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{where}: {expected}, got invalid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg}; truncated "
            "or damaged?)"
        ) from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: {expected}, got bytes that are not UTF-8 text ({exc.reason})") from None
    if not isinstance(nb, dict):
        raise ValueError(f"{where}: {expected}, got a JSON {type(nb).__name__}")
    if not isinstance(nb.get("cells"), list):
        raise ValueError(
            f"{where}: {expected}, got JSON {'without' if 'cells' not in nb else 'with a non-list'} 'cells'"
        )
    for k, cell in enumerate(nb["cells"]):
        source = cell.get("source", "") if isinstance(cell, dict) else None
        if not isinstance(cell, dict) or not isinstance(cell.get("cell_type"), str):
            raise ValueError(f"{where}: cell {k}: expected an object with a 'cell_type', got {str(cell)[:60]!r}")
        if not isinstance(source, str) and not (isinstance(source, list) and all(isinstance(x, str) for x in source)):
            raise ValueError(f"{where}: cell {k}: expected its 'source' as text or a list of lines, got {source!r:.60}")
    return nb


def read_notebook(path: str | os.PathLike) -> dict:
    """The notebook at ``path`` (parsed JSON), checked for the structure this module relies on; a missing,
    unreadable, empty, truncated or foreign file raises ValueError in one sentence naming ``path``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: expected a notebook file, got {exc.strerror or exc}") from None
    return _parse_notebook(data, path)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def learner_notebook(nb: dict) -> dict:
    """A copy of a notebook (as parsed JSON) with solutions replaced by stubs and outputs cleared."""
    out = json.loads(json.dumps(nb))
    for k, cell in enumerate(out["cells"]):
        if cell.get("cell_type") != "code":
            continue
        src = _source(cell)
        if BEGIN in src or END in src:
            try:
                cell["source"] = strip_solutions(src)
            except ValueError as exc:
                raise ValueError(f"cell {k}: {str(exc).removeprefix('source: ')}") from None
        cell["outputs"] = []
        cell["execution_count"] = None
    return out


def course_notebooks() -> Path:
    """The repository's ``notebooks/`` beside the package (the teacher's versions, with the solutions)."""
    return Path(__file__).resolve().parents[2] / "notebooks"


@dataclass
class CourseFolder:
    """What :func:`make_course_folder` did in ``folder``: files ``written`` now (missing ones, or fresh ones over
    ``backups``), files ``kept`` as they were because they differ from what would be written (a learner's edits,
    or copies of an older course), files ``unchanged`` (already what would be written); with ``fresh=True``, the
    files it replaced were ``moved`` into the folder ``backups`` (``None`` if it moved none)."""

    folder: Path
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    moved: list[Path] = field(default_factory=list)
    backups: Path | None = None


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_course_folder(dest: str | os.PathLike, src: str | os.PathLike | None = None) -> Path:
    """``dest`` as a folder for a course copy, or ValueError if it is (or resolves to, through a symbolic link or a
    relative path) the course notebooks ``src`` or the repository's ``notebooks/``, or lies inside either: a
    learner copy written there would replace the solutions with stubs."""
    dest = Path(dest).expanduser()
    where = dest.resolve()
    for protected in dict.fromkeys(p.resolve() for p in (course_notebooks(), Path(src or course_notebooks()))):
        if _is_within(where, protected):
            raise ValueError(
                f"{dest}: expected a folder outside the course notebooks {protected}, got "
                f"{'that folder' if where == protected else 'a folder inside it'} (copies there would replace the "
                "solutions with stubs); choose another folder"
            )
    return dest


def _course_files(src: Path) -> list[tuple[Path, Path]]:
    """``(source file, path relative to the course folder)`` for every course notebook (``NN_*.ipynb``) and every
    file the notebooks read beside them (``results/``, ``figures/``, ...), in name order. Hidden files, other
    notebooks, ``.ipynb_checkpoints`` and ``__pycache__`` are left out."""
    found = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts) or not path.is_file():
            continue
        if path.suffix == ".ipynb" and not (len(rel.parts) == 1 and _NOTEBOOK_NAME.fullmatch(path.name)):
            continue
        found.append((path, rel))
    return found


def make_course_folder(
    dest: str | os.PathLike, src: str | os.PathLike | None = None, fresh: bool = False
) -> CourseFolder:
    """Make (or bring up to date) a learner's course folder ``dest`` from the course notebooks ``src`` (default:
    :func:`course_notebooks`): the learner copy (:func:`learner_notebook`) of every ``NN_*.ipynb`` and every file
    the notebooks read beside them (``results/``, ``figures/``, ...), so that each copy runs top to bottom there.

    Nothing a person wrote is lost: a missing file is written; a file that already holds what would be written is
    left alone; a file that differs (a learner's edits, an older copy) is *kept* as it is and reported, or with
    ``fresh=True`` moved to ``dest/backups/<date-time>/`` and replaced by a fresh copy. ``dest`` must lie outside
    ``src`` and the repository's ``notebooks/`` (:func:`check_course_folder`), and every folder written into is
    checked the same way before anything is written (a symbolic link inside ``dest`` cannot lead there).
    ``python -m convlab learner-copies`` and ``python -m convlab open`` both make their folders here.
    """
    src = Path(src).expanduser() if src is not None else course_notebooks()
    dest = check_course_folder(dest, src)
    files = _course_files(src)
    if not any(len(rel.parts) == 1 and rel.suffix == ".ipynb" for _, rel in files):
        raise ValueError(f"src: expected notebooks named NN_topic.ipynb in {src}, found none")
    plan = []
    for path, rel in files:  # everything read and checked before the first write
        data = path.read_bytes()
        if len(rel.parts) == 1 and rel.suffix == ".ipynb":
            try:
                data = _notebook_bytes(learner_notebook(_parse_notebook(data, path)))
            except ValueError as exc:
                raise ValueError(str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}") from None
        target = dest / rel
        check_course_folder(_nearest_existing(target.parent), src)
        plan.append((target, data))
    report = CourseFolder(dest)
    backup = dest / "backups" / time.strftime("%Y%m%d-%H%M%S")
    for target, data in plan:
        if target.is_file() and target.read_bytes() == data:
            report.unchanged.append(target)
            continue
        if target.exists() or target.is_symlink():
            if not fresh:
                report.kept.append(target)
                continue
            moved = backup / target.relative_to(dest)
            moved.parent.mkdir(parents=True, exist_ok=True)
            os.replace(target, moved)
            report.moved.append(moved)
            report.backups = backup
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
        report.written.append(target)
    return report


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


# ------------------------------------------------------------------------------------------------ exercises, nbgrader
def _tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def exercise_pairs(nb: dict) -> list[tuple[int, int | None]]:
    """``(exercise cell index, check cell index)`` for every code cell holding a solution block; the check cell is
    the next code cell if it is tagged ``check``, else ``None`` (a missing check, reported by
    :func:`notebook_problems`). Indices are positions in ``nb["cells"]``."""
    code = [i for i, c in enumerate(nb["cells"]) if c.get("cell_type") == "code"]
    pairs = []
    for k, i in enumerate(code):
        if BEGIN in _source(nb["cells"][i]):
            nxt = code[k + 1] if k + 1 < len(code) else None
            pairs.append((i, nxt if nxt is not None and "check" in _tags(nb["cells"][nxt]) else None))
    return pairs


def _solutions_outside_functions(source: str) -> list[int]:
    """Line numbers of ``BEGIN`` markers that are not inside a function body (a stub there would raise at cell
    level and stop Run All)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return [no for no, line in enumerate(source.splitlines(), 1) if line.strip() == BEGIN]
    spans = [(n.lineno, n.end_lineno) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return [
        no
        for no, line in enumerate(source.splitlines(), 1)
        if line.strip() == BEGIN and not any(first < no <= last for first, last in spans)
    ]


def _exercise_name(source: str, fallback: str) -> str:
    """The exercise's grade id: the name of the (first) function its solution sits in."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return fallback
    lines = source.splitlines()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
            lines[no - 1].strip() == BEGIN for no in range(node.lineno, (node.end_lineno or node.lineno) + 1)
        ):
            return node.name
    return fallback


def _nbgrader_solution(grade_id: str) -> dict:
    return {
        "grade": False,
        "grade_id": grade_id,
        "locked": False,
        "schema_version": NBGRADER_SCHEMA,
        "solution": True,
        "task": False,
    }


def _nbgrader_test(grade_id: str, points: int) -> dict:
    return {
        "grade": True,
        "grade_id": grade_id,
        "locked": True,
        "points": points,
        "schema_version": NBGRADER_SCHEMA,
        "solution": False,
        "task": False,
    }


def mark_for_nbgrader(nb: dict, points: int = 1) -> dict:
    """A copy of ``nb`` in which every exercise cell carries nbgrader's solution-cell metadata and every check cell
    its autograded-test metadata (``points`` each, locked); stale nbgrader metadata on other cells is removed.

    Idempotent: marking a marked notebook changes nothing, so a test can check that the committed notebooks are
    marked. Grade ids are the exercise's function name (``file_sha256`` and ``check_file_sha256``)."""
    out = json.loads(json.dumps(nb))
    for cell in out["cells"]:
        cell.get("metadata", {}).pop("nbgrader", None)
    seen: set[str] = set()
    for i, j in exercise_pairs(out):
        name = _exercise_name(_source(out["cells"][i]), f"exercise_{i}")
        grade_id, n = name, 2
        while grade_id in seen:
            grade_id, n = f"{name}_{n}", n + 1
        seen.add(grade_id)
        out["cells"][i].setdefault("metadata", {})["nbgrader"] = _nbgrader_solution(grade_id)
        if j is not None:
            out["cells"][j].setdefault("metadata", {})["nbgrader"] = _nbgrader_test(f"check_{grade_id}", points)
    return out


def notebook_problems(nb: dict) -> list[str]:
    """What keeps a notebook from the exercise conventions (empty if none): a ``BEGIN`` marker without its ``END``
    (or the reverse), a solution outside a function body, an exercise without a check cell, a check cell without
    both :data:`CHECK_TAGS`, missing nbgrader marks. Unmatched markers are reported alone: the other conventions
    depend on where the solutions are."""
    problems = []
    for k, cell in enumerate(nb["cells"]):
        src = _source(cell)
        if cell.get("cell_type") == "code" and (BEGIN in src or END in src):
            try:
                strip_solutions(src)
            except ValueError as exc:
                problems.append(f"cell {k} ({src.strip().splitlines()[0][:50]!r}): {str(exc).removeprefix('source: ')}")
    if problems:  # the rest (pairs, marks) depends on where the solutions are: fix the markers first
        return problems
    for i, j in exercise_pairs(nb):
        src = _source(nb["cells"][i])
        where = f"cell {i} ({src.strip().splitlines()[0][:50]!r})"
        for no in _solutions_outside_functions(src):
            problems.append(f"{where}: the solution block at line {no} is not inside a function body")
        if j is None:
            problems.append(f"{where}: the next code cell must be its check cell, tagged 'check'")
        elif missing := [t for t in CHECK_TAGS if t not in _tags(nb["cells"][j])]:
            problems.append(f"cell {j} (the check of {where}): missing tag(s) {missing}")
    paired = {j for _, j in exercise_pairs(nb)}
    for k, cell in enumerate(nb["cells"]):  # a check cell outside an exercise pair still needs both tags
        if k not in paired and "check" in _tags(cell) and "raises-exception" not in _tags(cell):
            problems.append(f"check cell {_source(cell).strip()[:50]!r}: missing tag 'raises-exception'")
    if mark_for_nbgrader(nb) != nb:
        problems.append("nbgrader marks missing or stale: run python -m convlab.exercises --mark <notebook>")
    return list(dict.fromkeys(problems))


def _notebook_bytes(nb: dict) -> bytes:
    return (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode()


def _write_notebook(path: Path, nb: dict) -> None:
    atomic_write_bytes(path, _notebook_bytes(nb))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convlab.exercises --mark|--check NOTEBOOK...``."""
    parser = argparse.ArgumentParser(
        prog="python -m convlab.exercises",
        description="Mark the course notebooks for nbgrader, or check their exercises.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--mark", action="store_true", help="write nbgrader's cell metadata into the notebooks")
    mode.add_argument(
        "--check",
        action="store_true",
        help="report exercise problems (marks, tags, solutions outside a function body); exit status 1 if any",
    )
    parser.add_argument("notebooks", nargs="+", type=Path, help="the .ipynb files")
    args = parser.parse_args(argv)
    status = 0
    for path in args.notebooks:
        try:
            nb = read_notebook(path)
        except ValueError as exc:  # missing, empty, truncated, not a notebook: one line, and on to the next
            print(exc, file=sys.stderr)
            status = 1
            continue
        problems = notebook_problems(nb)
        if args.mark and not any(
            p.endswith(f"without a matching {BEGIN!r}") or p.endswith(f"without a matching {END!r}") for p in problems
        ):
            marked = mark_for_nbgrader(nb)
            if marked != nb:
                _write_notebook(path, marked)
            print(f"{path}: {len(exercise_pairs(marked))} exercise(s) marked{'' if marked != nb else ' (unchanged)'}")
            problems = notebook_problems(marked)
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
            status = 1
    return status
