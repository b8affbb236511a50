"""Teachers grade the course with nbgrader: the notebooks' marks make ``nbgrader generate_assignment`` release every
notebook with its solutions removed, and ``nbgrader autograde`` give a solved submission full marks and an unsolved
one zero on the exercises, without crashing.

The course directory is made in a temporary folder exactly as README's teacher section says (nbgrader_config.py,
``source/course/``). Generation does not execute notebooks, so it runs on all of them; autograde executes, so it
runs the three fastest notebooks (00, 01 and 07: a set-up check, weights and licences, DataLoader worker processes),
each once solved and once as released. ``test_autograde_every_notebook`` does the same for every notebook, one at a
time (about twice the course's run time, so outside the main run): ``CONVLAB_GRADE_ALL=1 python3 -m pytest
tests/test_nbgrader.py -k every_notebook`` (add ``and 05_`` to grade one notebook).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from convlab.exercises.copies import BEGIN, exercise_pairs, mark_for_nbgrader

if not os.environ.get("CI"):  # CI installs nbgrader (the grading extra): there a missing one fails, not skips
    pytest.importorskip("nbgrader")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ASSIGNMENT = "course"
GRADED = ("00_start_here.ipynb", "01_open_source_weights.ipynb", "07_parallel_data_loading.ipynb")

pytestmark = pytest.mark.slow


def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (
        f"nbgrader {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A course directory with every notebook as the source of one assignment, released by nbgrader."""
    root = tmp_path_factory.mktemp("nbgrader_course")
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(root)!r}\n"
        "c.CourseDirectory.course_id = 'convlab'\n"
        "c.Execute.timeout = 300  # seconds per cell\n"
    )
    source = root / "source" / ASSIGNMENT
    shutil.copytree(ROOT / "notebooks", source, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for path in source.glob("*.ipynb"):  # the committed marks (test_exercises checks they are in sync)
        path.write_text(json.dumps(mark_for_nbgrader(json.loads(path.read_text())), indent=1) + "\n")
    _nbgrader(root, "generate_assignment", ASSIGNMENT, "--force")
    return root


def test_generate_assignment_releases_every_notebook_without_solutions(course):
    released = course / "release" / ASSIGNMENT
    assert sorted(p.name for p in released.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]
    for path in NOTEBOOKS:
        ours = json.loads(path.read_text())
        theirs = json.loads((released / path.name).read_text())
        text = json.dumps(theirs)
        assert BEGIN not in text and "### END SOLUTION" not in text
        pairs = exercise_pairs(ours)
        assert text.count("raise NotImplementedError()") == len(pairs) >= 1
        for _, j in pairs:  # the check cells reach the students unchanged and locked
            cell = next(c for c in theirs["cells"] if c.get("id") == ours["cells"][j].get("id"))
            assert cell["source"] == ours["cells"][j]["source"] and cell["metadata"]["nbgrader"]["locked"]


def _grade(course: Path, names: tuple[str, ...], solved_id: str, unsolved_id: str) -> None:
    """Autograde ``names`` once solved (the source) and once as released; check full marks and zero, and that the
    released copy ran to the end with only its check cells failing (an unanswered quiz fails without an error: it
    returns the score 0, nbgrader's partial credit)."""
    from nbgrader.api import Gradebook

    for student, origin in ((solved_id, course / "source"), (unsolved_id, course / "release")):
        target = course / "submitted" / student / ASSIGNMENT
        target.mkdir(parents=True)
        for name in names:
            shutil.copy(origin / ASSIGNMENT / name, target / name)
        _nbgrader(course, "autograde", ASSIGNMENT, "--create", "--force", f"--student={student}")
    for name in names:
        n_checks = len(exercise_pairs(json.loads((ROOT / "notebooks" / name).read_text())))
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
            solved = gradebook.find_submission_notebook(Path(name).stem, ASSIGNMENT, solved_id)
            unsolved = gradebook.find_submission_notebook(Path(name).stem, ASSIGNMENT, unsolved_id)
            assert solved.max_score == unsolved.max_score == n_checks, name
            assert solved.score == n_checks, (name, [(g.name, g.score) for g in solved.grades])
            assert unsolved.score == 0, (name, [(g.name, g.score) for g in unsolved.grades])
            assert len(unsolved.grades) == n_checks and all(g.auto_score == 0 for g in unsolved.grades), name
        graded = json.loads((course / "autograded" / unsolved_id / ASSIGNMENT / name).read_text())
        code = [c for c in graded["cells"] if c["cell_type"] == "code"]
        assert all(c["execution_count"] is not None for c in code), name
        failed = [c for c in code if any(o["output_type"] == "error" for o in c["outputs"])]
        assert failed and all("check" in c["metadata"].get("tags", []) for c in failed), [c["source"] for c in failed]
        quiz = next(c for c in code if "QUIZ.check(" in "".join(c["source"]))
        plain = ["".join(o["data"]["text/plain"]) for o in quiz["outputs"] if o["output_type"] == "execute_result"]
        assert plain == ["0.0"]  # nbformat may store the text as a list of lines


def test_autograde_gives_full_marks_when_solved_and_zero_when_not(course):
    _grade(course, GRADED, "solved", "unsolved")


@pytest.mark.skipif(not os.environ.get("CONVLAB_GRADE_ALL"), reason="set CONVLAB_GRADE_ALL=1 to grade every notebook")
@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_autograde_every_notebook(course, name):
    _grade(course, (name,), f"solved{name[:2]}", f"unsolved{name[:2]}")
