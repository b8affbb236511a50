"""Course folders (``python -m convlab learner-copies``, ``python -m convlab open``) lose nothing: they never write
into the course's ``notebooks/``, never change a byte of a copy a learner edited, and carry every file the notebooks
read beside them. The runs of these copies top to bottom are in tests/test_exercises.py."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from convlab.course_open import free_port
from convlab.exercises import STUB, check_course_folder, course_notebooks, learner_notebook, make_course_folder

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def _convlab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "convlab", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=120
    )


def _tree(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` (symbolic links not followed) with the sha256 of its bytes (or its kind)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def course(tmp_path) -> Path:
    """``tmp_path/repo/notebooks``: a copy of the course notebooks and the files beside them."""
    shutil.copytree(ROOT / "notebooks", tmp_path / "repo" / "notebooks", ignore=shutil.ignore_patterns(".ipynb_*"))
    return tmp_path / "repo"


@pytest.mark.parametrize("out", ["notebooks", "./notebooks/", "notebooks/figures", "link", "link/results", "."])
def test_learner_copies_refuse_the_course_notebooks_and_change_no_byte_there(course, out):
    (course / "link").symlink_to("notebooks")
    cwd = course / "notebooks" if out == "." else course
    before = _tree(course / "notebooks")
    result = _convlab("learner-copies", "--src", str(course / "notebooks"), "--out", out, cwd=cwd)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "outside the course notebooks" in result.stderr
    assert _tree(course / "notebooks") == before


def test_the_repositorys_own_notebooks_are_refused_however_named(tmp_path, monkeypatch):
    """Checked without writing: the same check guards every write of make_course_folder."""
    notebooks = course_notebooks()
    assert notebooks == ROOT / "notebooks"
    (tmp_path / "link").symlink_to(notebooks)
    monkeypatch.chdir(notebooks)
    for dest in (
        notebooks,
        notebooks / "figures",
        tmp_path / "link",
        tmp_path / "link" / "new",
        Path("."),
        "../notebooks/",
    ):
        with pytest.raises(ValueError, match="outside the course notebooks"):
            check_course_folder(dest, tmp_path)  # refused even when another --src is given
    assert check_course_folder(tmp_path / "mine", tmp_path / "src") == tmp_path / "mine"


def test_a_link_inside_the_course_folder_cannot_lead_into_the_notebooks(course, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "figures").symlink_to(course / "notebooks" / "figures")
    before = _tree(course / "notebooks")
    with pytest.raises(ValueError, match="outside the course notebooks"):
        make_course_folder(tmp_path / "mine", course / "notebooks")
    assert _tree(course / "notebooks") == before and [p.name for p in (tmp_path / "mine").iterdir()] == ["figures"]


def test_open_refuses_a_folder_inside_the_notebooks(course):
    port = free_port()
    before = _tree(ROOT / "notebooks")
    result = _convlab("open", "--dir", "notebooks/figures", "--no-browser", "--port", str(port), cwd=ROOT)
    assert result.returncode == 2 and "outside the course notebooks" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and _tree(ROOT / "notebooks") == before


def test_learner_copies_carry_every_file_the_notebooks_read(course, tmp_path):
    result = _convlab(
        "learner-copies", "--src", str(course / "notebooks"), "--out", str(tmp_path / "mine"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    src, mine = _tree(course / "notebooks"), _tree(tmp_path / "mine")
    assert set(mine) == set(src), "the copies' folder holds exactly the course's files"
    support = [rel for rel in src if not rel.endswith(".ipynb") and src[rel] != "dir"]
    assert any(rel.startswith("results/") for rel in support) and all(mine[rel] == src[rel] for rel in support)
    for nb in (course / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        assert json.loads((tmp_path / "mine" / nb.name).read_text()) == learner_notebook(json.loads(nb.read_text()))


def test_learner_copies_keep_an_edited_copy_byte_for_byte(course, tmp_path):
    mine = tmp_path / "mine"
    args = ("learner-copies", "--src", str(course / "notebooks"), "--out", str(mine))
    assert _convlab(*args, cwd=tmp_path).returncode == 0
    notebook = sorted(mine.glob("0*.ipynb"))[0]
    stored = next((mine / "results").iterdir())
    notebook.write_text(notebook.read_text().replace(STUB.split("(")[0], "return 42  # mine"))
    stored.write_text('{"mine": true}')
    missing = sorted(mine.glob("0*.ipynb"))[1]
    missing.unlink()
    edited = _tree(mine)
    again = _convlab(*args, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.split() == [str(missing)], "only the missing copy is written"
    assert again.stderr.count("\n") == 1 and "kept 2 file(s)" in again.stderr and "--fresh" in again.stderr
    assert {k: v for k, v in _tree(mine).items() if k != missing.name} == edited
    fresh = _convlab(*args, "--fresh", cwd=tmp_path)
    assert fresh.returncode == 0 and "moved 2 file(s)" in fresh.stderr, fresh.stderr
    (backup,) = (mine / "backups").iterdir()
    assert _tree(backup) == {k: edited[k] for k in (notebook.name, "results", f"results/{stored.name}")}
    assert (
        "return 42  # mine" not in notebook.read_text()
        and stored.read_bytes() == (course / "notebooks" / "results" / stored.name).read_bytes()
    )
