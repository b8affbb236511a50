"""Exercises check themselves: learner copies are in sync, every check fails on the stub and passes on the solution.

A check must also fail *with its hint* (``AssertionError``) on a wrong-typed answer (the solution returns ``None``):
a check cell that only calls the function, or that crashes with ``AttributeError`` on the answer, would pass the
stub test (the stub raises ``NotImplementedError``) but tells a learner nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from convlab.exercises import BEGIN, END, STUB, learner_notebook, make_course_folder, none_solutions, strip_solutions
from convlab.exercises.copies import CHECK_TAGS, exercise_pairs, mark_for_nbgrader, notebook_problems

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _src(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _exercises(nb: dict) -> list[tuple[dict, dict]]:
    """(exercise cell, check cell) pairs: the check is the next code cell, tagged 'check'."""
    pairs = []
    for i, j in exercise_pairs(nb):
        assert j is not None, (
            f"the code cell after an exercise must be its check cell, tagged 'check': {_src(nb['cells'][i])[:60]!r}"
        )
        pairs.append((nb["cells"][i], nb["cells"][j]))
    return pairs


def test_strip_solutions_keeps_indentation_and_rejects_unbalanced_markers():
    src = f"def f(x):\n    {BEGIN}\n    return x + 1\n    {END}\n"
    assert strip_solutions(src) == f"def f(x):\n    {STUB}\n"
    with pytest.raises(ValueError, match="without a matching"):
        strip_solutions(f"def f():\n    {BEGIN}\n    return 1\n")
    with pytest.raises(ValueError, match="without a matching"):
        strip_solutions(f"{END}\n")


def test_none_solutions_returns_none_in_functions_and_assigns_none_at_module_level():
    src = f'def f(x):\n    """Doc."""\n    {BEGIN}\n    y = x + 1\n    return y\n    {END}\n'
    assert none_solutions(src) == 'def f(x):\n    """Doc."""\n    return None\n'
    top = (
        f"import math\n{BEGIN}\nroot, (a, b) = math.sqrt(2), (1, 2)\nfor i in range(2):\n    a += i\n"
        f"{END}\nprint(root)\n"
    )
    namespace: dict = {}
    exec(none_solutions(top), namespace)
    assert {k: namespace[k] for k in ("root", "a", "b", "i")} == {"root": None, "a": None, "b": None, "i": None}
    assert none_solutions(f"if True:\n    {BEGIN}\n    print(1)\n    {END}\n") == "if True:\n    pass\n"
    with pytest.raises(ValueError, match="without a matching"):
        none_solutions(f"def f():\n    {BEGIN}\n    return 1\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_learner_copy_in_sync(path, tmp_path):
    nb = json.loads(path.read_text())
    written = [p for p in make_course_folder(tmp_path, ROOT / "notebooks").written if p.suffix == ".ipynb"]
    copy = json.loads((tmp_path / path.name).read_text())
    assert len(written) == len(NOTEBOOKS)
    assert copy == learner_notebook(nb)
    assert len(copy["cells"]) == len(nb["cells"])
    n_stubs = 0
    for ours, theirs in zip(nb["cells"], copy["cells"]):
        if BEGIN in _src(ours):
            assert BEGIN not in _src(theirs) and END not in _src(theirs) and STUB in _src(theirs)
            n_stubs += 1
        else:
            assert _src(ours) == _src(theirs) and ours["cell_type"] == theirs["cell_type"]
    assert n_stubs == len(_exercises(nb)) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_check_cells_carry_both_tags(path):
    """A check cell raises while its exercise is unfinished; ``raises-exception`` lets Run All, nbval and nbgrader
    go on past it, so a learner's copy runs to the end."""
    nb = json.loads(path.read_text())
    checks = [c for _, c in _exercises(nb)] + [c for c in nb["cells"] if "check" in _tags(c)]
    assert checks
    for cell in checks:
        missing = [t for t in CHECK_TAGS if t not in _tags(cell)]
        assert not missing, f"check cell {_src(cell)[:60]!r} lacks the tag(s) {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_solution_sits_inside_a_function_body(path):
    """A stub at cell level would raise NotImplementedError at once and stop Run All; inside a function it raises
    only when the check calls it."""
    nb = json.loads(path.read_text())
    outside = [p for p in notebook_problems(nb) if "not inside a function body" in p]
    assert not outside, "\n".join(outside)


def test_notebook_problems_and_nbgrader_marks_on_a_small_notebook():
    def code(text, tags=()):
        return {
            "cell_type": "code",
            "metadata": {"tags": list(tags)} if tags else {},
            "source": text,
            "outputs": [],
            "execution_count": None,
        }

    nb = {
        "cells": [
            code(f"def f(x):\n    {BEGIN}\n    return x\n    {END}\n"),
            code("E.check(f)", ["check"]),
            code(f"{BEGIN}\ny = 1\n{END}\n"),
            code("print(y)"),
        ]
    }
    problems = notebook_problems(nb)
    assert any("missing tag(s) ['raises-exception']" in p for p in problems)
    assert any("line 1 is not inside a function body" in p for p in problems)
    assert any("next code cell must be its check cell" in p for p in problems)
    assert any("nbgrader marks missing" in p for p in problems)
    marked = mark_for_nbgrader(nb)
    assert mark_for_nbgrader(marked) == marked, "marking is idempotent"
    assert marked["cells"][0]["metadata"]["nbgrader"] == {
        "grade": False,
        "grade_id": "f",
        "locked": False,
        "schema_version": 3,
        "solution": True,
        "task": False,
    }
    assert marked["cells"][1]["metadata"]["nbgrader"] == {
        "grade": True,
        "grade_id": "check_f",
        "locked": True,
        "points": 1,
        "schema_version": 3,
        "solution": False,
        "task": False,
    }
    assert marked["cells"][2]["metadata"]["nbgrader"]["grade_id"] == "exercise_2"
    assert "nbgrader" not in marked["cells"][3]["metadata"]
    nb["cells"][3]["metadata"]["nbgrader"] = {"grade": True}  # stale marks on a cell that is no exercise go
    assert "nbgrader" not in mark_for_nbgrader(nb)["cells"][3]["metadata"]


def test_mark_and_check_command(tmp_path, capsys):
    from convlab.exercises.copies import main

    src = json.loads((ROOT / "notebooks" / "00_start_here.ipynb").read_text())
    for cell in src["cells"]:
        cell.get("metadata", {}).pop("nbgrader", None)
    path = tmp_path / "00_x.ipynb"
    path.write_text(json.dumps(src))
    assert main(["--check", str(path)]) == 1 and "nbgrader marks missing" in capsys.readouterr().err
    assert main(["--mark", str(path)]) == 0
    assert json.loads(path.read_text()) == mark_for_nbgrader(src) and main(["--check", str(path)]) == 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_marked_for_nbgrader(path):
    """Exercise cells carry nbgrader's solution metadata, check cells its autograded-test metadata (1 point)."""
    nb = json.loads(path.read_text())
    assert mark_for_nbgrader(nb) == nb, (
        f"nbgrader marks missing or stale: run  python -m convlab.exercises --mark notebooks/{path.name}"
    )


@pytest.fixture(scope="module")
def learner_folder(tmp_path_factory):
    """Every notebook's learner copy (every stub unfilled) with the files the notebooks read beside them, made as
    README says to make copies without JupyterLab: ``python -m convlab learner-copies --out DIR`` (``python -m
    convlab open`` makes the same folder: tests/test_course_open.py)."""
    folder = tmp_path_factory.mktemp("learner")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    made = subprocess.run(
        [sys.executable, "-m", "convlab", "learner-copies", "--out", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in folder.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    return folder


@pytest.mark.slow
@pytest.mark.own_process
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_learner_copy_runs_to_the_end_with_every_stub_unfilled(path, learner_folder):
    """What a learner gets from Run All before solving anything: every check fails in red (tagged
    ``raises-exception``), every other cell runs, on convlab's references. Run under nbval in its own process,
    with the project's pytest configuration (network guard, --nbval-lax)."""
    copy = learner_folder / path.name
    assert "raise NotImplementedError(" in copy.read_text()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(learner_folder),
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            str(copy),
        ],
        cwd=learner_folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout[-8000:] + result.stderr[-2000:])  # IPython's colours
    assert result.returncode == 0, f"the learner copy of {path.name} stopped:\n{output}"


class _Kernel:
    def __init__(self, cwd: Path):
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd))
        self.outputs: list[dict] = []

    def run(self, code: str) -> dict:
        """Run ``code``; its reply's content (status, ename, evalue, traceback); its outputs in ``self.outputs``."""
        self.outputs = []

        def keep(msg):
            if msg["msg_type"] in ("error", "stream", "execute_result", "display_data"):
                self.outputs.append({"output_type": msg["msg_type"], **msg["content"]})

        reply = self.kc.execute_interactive(code, timeout=600, output_hook=keep)
        return reply["content"]

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def _is_quiz(exercise_cell: dict) -> bool:
    return "def quiz_answers(" in _src(exercise_cell)


def _measured_names(path: Path) -> list[str]:
    """The values of the run that the notebook's quiz asks about (its check cell reads them by name)."""
    module = importlib.import_module(f"convlab.exercises.nb{path.name[:2]}")
    return [q.measured for q in module.QUIZ.questions.values() if q.measured]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_check_fails_on_stub_and_on_none_and_passes_on_solution(path):
    """On the stub an exercise's check fails (an error that nbgrader scores 0) and shows its reason alone, with no
    traceback through convlab's source; an unanswered quiz shows an invitation whose plain text is the score 0
    (nbgrader's partial credit) instead of an error."""
    nb = json.loads(path.read_text())
    setup = [c for c in nb["cells"] if "setup" in c.get("metadata", {}).get("tags", [])]
    assert setup, "tag the configuration and import cells 'setup'"
    kernel = _Kernel(path.parent)
    try:
        for cell in setup:
            result = kernel.run(_src(cell))
            assert result["status"] == "ok", f"setup cell failed: {result.get('ename')}: {result.get('evalue')}"
        for exercise, check_cell in _exercises(nb):
            if _is_quiz(exercise):  # stands in for the run the measured questions ask about
                assert kernel.run("\n".join(f"{name} = 0.5" for name in _measured_names(path)))["status"] == "ok"
            assert kernel.run(strip_solutions(_src(exercise)))["status"] == "ok"
            on_stub = kernel.run(_src(check_cell))
            if _is_quiz(exercise):
                assert on_stub["status"] == "ok", f"an unanswered quiz is no error: {on_stub.get('evalue')}"
                results = [o for o in kernel.outputs if o["output_type"] == "execute_result"]
                assert len(results) == 1 and results[0]["data"]["text/plain"] == "0.0", kernel.outputs
                assert results[0]["data"]["text/markdown"].startswith("**Your turn:**")
            else:
                assert on_stub["status"] == "error" and on_stub["ename"] == "NotYet", (
                    f"check must fail on the stub, got {on_stub.get('status')} {on_stub.get('ename')}: "
                    f"{on_stub.get('evalue')}"
                )
                shown = "\n".join(on_stub["traceback"])
                assert "not written yet" in shown and "hint()" in shown, shown
                assert "convlab/" not in shown and "core.py" not in shown and "Traceback" not in shown, shown
                assert all(len(line) <= 100 for line in on_stub["traceback"]), on_stub["traceback"]
            assert kernel.run(none_solutions(_src(exercise)))["status"] == "ok"
            on_none = kernel.run(_src(check_cell))
            assert on_none["status"] == "error" and on_none["ename"] == "NotYet", (
                f"{_src(exercise)[:60]!r}: its check must fail with its reason (NotYet from the check) on a "
                "wrong-typed answer (None); start the check cell with check(isinstance(...), hint). Got "
                f"{on_none.get('status')} {on_none.get('ename')}: {on_none.get('evalue')}"
            )
            assert kernel.run(_src(exercise))["status"] == "ok"
            on_solution = kernel.run(_src(check_cell))
            assert on_solution["status"] == "ok", (
                f"check must pass on the solution: {on_solution.get('ename')}: {on_solution.get('evalue')}"
            )
            assert not [o for o in kernel.outputs if o["output_type"] == "execute_result"], (
                "a passing check returns nothing (nbgrader would read a returned number as a partial grade)"
            )
    finally:
        kernel.close()


def _unmatched(text: str) -> str:
    """Notebook 00 with one solution's END marker (or, for "begin", its BEGIN marker) deleted."""
    nb = json.loads(NOTEBOOKS[0].read_text())
    cell = next(c for c in nb["cells"] if BEGIN in _src(c))
    marker = END if text == "end" else BEGIN
    cell["source"] = "".join(line for line in _src(cell).splitlines(keepends=True) if line.strip() != marker)
    return json.dumps(nb)


@pytest.mark.parametrize(
    "content, said",
    [
        ("", "got an empty file"),
        ("{}", "got JSON without 'cells'"),
        ("[]", "got a JSON list"),
        ('{"cells": [1]}', "cell 0: expected an object with a 'cell_type'"),
        (NOTEBOOKS[0].read_text()[:500], "got invalid JSON at line"),
        (None, "expected a notebook file, got No such file or directory"),
        (_unmatched("end"), f"{BEGIN!r} without a matching {END!r}"),
        (_unmatched("begin"), f"{END!r} without a matching {BEGIN!r}"),
    ],
    ids=["empty", "empty object", "a list", "a number as a cell", "truncated", "missing", "no END", "no BEGIN"],
)
def test_check_reports_a_malformed_notebook_or_unmatched_markers_in_one_line(content, said, tmp_path, capsys):
    from convlab.exercises.copies import main

    (tmp_path / "src").mkdir()
    path, good = tmp_path / "src" / "00_x.ipynb", tmp_path / "src" / "01_good.ipynb"
    if content is not None:
        path.write_text(content)
    good.write_text(NOTEBOOKS[1].read_text())
    before = path.read_bytes() if content is not None else None
    for mode in ("--check", "--mark"):
        assert main([mode, str(path), str(good)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err and err.startswith(str(path)), err  # the good one: no line
        assert (path.read_bytes() if path.exists() else None) == before, f"{mode} changed a malformed notebook"
    if said.endswith(repr(END)):  # learner copies refuse it in one line too, and write nothing
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "convlab",
                "learner-copies",
                "--src",
                str(tmp_path / "src"),
                "--out",
                str(tmp_path / "o"),
            ],
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and said in done.stderr, done.stderr
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_ends_with_a_next_line(path):
    nb = json.loads(path.read_text())
    last = nb["cells"][-1]
    assert last["cell_type"] == "markdown" and "Next:" in _src(last), _src(last)[-200:]
