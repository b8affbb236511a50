"""Project facts a newcomer and CI depend on: the README's commands are the ones CI runs; notebooks are clean."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1].split("## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup)


def test_ci_runs_exactly_the_readme_commands():
    install, test, offline_browser, the_rest, numeric = _readme_commands()
    assert install == "bash .ci/install --open" and test == "python3 -m pytest -n auto --dist loadgroup"
    # CI's two test commands are the whole suite: the browser tests with no network, then everything else
    assert offline_browser == "bash .ci/offline python3 -m pytest -m browser tests"
    assert the_rest == 'python3 -m pytest -n auto --dist loadgroup -m "not browser"'
    ci = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line
        and not line.startswith(
            ("#", "set ", "cd ", "export CONVLAB_REQUIRE_BROWSER=", "export CONVLAB_REQUIRE_OFFLINE=")
        )
    ]
    assert numeric == "python3 -m pytest -m numeric"
    assert ci == ["bash .ci/install", offline_browser, the_rest, numeric]


def test_every_browser_test_is_marked_browser():
    """The offline run and the main run split the suite by the ``browser`` marker: every test that drives Chromium
    (asks for the ``browser`` fixture) must carry it, in its module's ``pytestmark`` or its own decorators."""
    import ast

    unmarked = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        module_marks = " ".join(
            ast.unparse(n.value)
            for n in tree.body
            if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
        )
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                uses_browser = "browser" in [a.arg for a in node.args.args]
                marks = module_marks + " ".join(ast.unparse(d) for d in node.decorator_list)
                if uses_browser and "pytest.mark.browser" not in marks:
                    unmarked.append(f"{path.name}::{node.name}")
    assert not unmarked, f"browser tests without the browser mark run in neither CI step: {unmarked}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_hygiene(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert re.match(r"\d\d_[a-z0-9_]+\.ipynb$", path.name)
    cells = nb["cells"]
    # as nbformat 4.5 and nbgrader write them: every cell has an id, every source is a list of lines
    assert all("id" in c and isinstance(c["source"], list) for c in cells), "cells need ids and sources as lines"
    assert cells[0]["cell_type"] == "markdown"
    first = "".join(cells[0]["source"])
    assert first.startswith("# ") and "\n\n" in first.strip(), "the title cell holds the title and the idea"
    assert "".join(cells[1]["source"]).startswith("### Learning goals\n- "), "the goals follow the title"
    code = [c for c in cells if c["cell_type"] == "code"]
    setup = "\n".join("".join(c["source"]) for c in code[:3])
    assert f'print(convlab.course.run_time("{path.stem}"))' in setup, "the run time is printed from the course map"
    assert not re.search(r"(?i)run time|\d+ s\b|minutes?\b", first), "a measured time lives in convlab.course only"
    assert all(not c["outputs"] and c["execution_count"] is None for c in code), "commit notebooks without outputs"
    assert "configuration" in "".join(code[0]["source"]).lower(), "the first code cell is the config cell"
    src = "\n".join("".join(c["source"]) for c in code)
    assert "pretrained=" not in src, "use weights=..., not the deprecated pretrained="
    assert "### BEGIN SOLUTION" in src, "every notebook has at least one exercise"


def test_course_map_lists_every_notebook_in_order():
    from convlab.course import COURSE

    names = [p.stem for p in NOTEBOOKS]
    assert [lesson.notebook for lesson in COURSE] == names
    readme = (ROOT / "README.md").read_text()
    course_map = readme.split("## Course map", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in course_map.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in rows] == names
    # the CPU time column is the measured one in convlab.course (shown by notebook 00)
    assert [line.rstrip(" |").rsplit("|", 1)[1].strip() for line in rows] == [f"{nb.cpu_s} s" for nb in COURSE]


def test_benchmark_summary_reads_every_committed_result(tmp_path):
    from convlab.benchresults import benchmark_summary

    rows = benchmark_summary(ROOT / "benchmarks" / "results")
    assert len(rows) >= 6 and not [r for r in rows if "not run yet" in r["result"]]
    assert all(re.fullmatch(r"\d+\.\d\dx|\d+ ms", r["result"]) for r in rows), rows  # figures, no targets
    assert all(
        ("1 thread each" in r["measure"]) != ("DataLoader workers" in r["measure"])
        for r in rows
        if r["benchmark"].startswith("augmentation (") and r["measure"].startswith("convlab")
    ), "equal resources: 1 thread each, or every core each (threads vs as many DataLoader workers)"
    for r in rows:  # each figure is the one at its JSON key
        if r["result"].endswith("x"):
            assert r["result"] == f"{_json_value(r['key']):.2f}x", r
    assert all("not run yet" in r["result"] for r in benchmark_summary(tmp_path))


def _json_value(key: str):
    """``"augment_cpu.json: ratios.per_core@224.ratio"`` -> that value in ``benchmarks/results/``."""
    name, path = key.split(": ")
    value = json.loads((ROOT / "benchmarks" / "results" / name).read_text())
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def test_the_hub_benchmark_ran_the_course_heaviest_notebook_with_no_teacher_setting():
    from convlab.course import COURSE

    hub = json.loads((ROOT / "benchmarks" / "results" / "hub_cpu.json").read_text())
    assert hub["settings"]["notebook"] == max(COURSE, key=lambda lesson: lesson.cpu_s).notebook
    assert hub["settings"]["teacher_settings"] == "none" and hub["settings"]["learners"] >= 4


def test_readme_benchmark_ratios_are_the_json_figures_at_their_keys():
    """README's benchmark section: every bold ratio names its JSON key on the same line, and equals it."""
    section = (ROOT / "README.md").read_text().split("\n## Benchmarks", 1)[1].split("\n## ", 1)[0]
    cited = 0
    for line in section.splitlines():
        figures = re.findall(r"\*\*(\d+\.\d\d)x\*\*", line)
        keys = re.findall(r"`(\w+\.json: [^`]+)`", line)
        assert len(figures) == len(keys), f"a bold ratio without its JSON key (or the reverse): {line}"
        for figure, key in zip(figures, keys):
            assert figure == f"{_json_value(key):.2f}", (line, key)
            cited += 1
    assert cited >= 8
