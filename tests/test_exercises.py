"""Exercises check themselves: learner copies are in sync, every check fails on the stub and passes on the solution.

A check must also fail *with its hint* (``AssertionError``) on a wrong-typed answer (the solution returns ``None``):
a check cell that only calls the function, or that crashes with ``AttributeError`` on the answer, would pass the
stub test (the stub raises ``NotImplementedError``) but tells a learner nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convlab.exercises import BEGIN, END, STUB, learner_notebook, none_solutions, strip_solutions, write_learner_copies

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _src(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _exercises(nb: dict) -> list[tuple[dict, dict]]:
    """(exercise cell, check cell) pairs: the check is the next code cell, tagged 'check'."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    pairs = []
    for i, cell in enumerate(code):
        if BEGIN in _src(cell):
            nxt = code[i + 1] if i + 1 < len(code) else None
            assert nxt is not None and "check" in nxt.get("metadata", {}).get("tags", []), (
                f"the code cell after an exercise must be its check cell, tagged 'check': {_src(cell)[:60]!r}"
            )
            pairs.append((cell, nxt))
    return pairs


def test_strip_solutions_keeps_indentation_and_rejects_unbalanced_markers():
    src = f"def f(x):\n    {BEGIN}\n    return x + 1\n    {END}\n"
    assert strip_solutions(src) == f"def f(x):\n    {STUB}\n"
    with pytest.raises(ValueError, match="without a matching"):
        strip_solutions(f"def f():\n    {BEGIN}\n    return 1\n")
    with pytest.raises(ValueError, match="without a matching"):
        strip_solutions(f"{END}\n")


def test_none_solutions_returns_none_in_functions_and_assigns_none_at_module_level():
    src = f"def f(x):\n    \"\"\"Doc.\"\"\"\n    {BEGIN}\n    y = x + 1\n    return y\n    {END}\n"
    assert none_solutions(src) == 'def f(x):\n    """Doc."""\n    return None\n'
    top = f"import math\n{BEGIN}\nroot, (a, b) = math.sqrt(2), (1, 2)\nfor i in range(2):\n    a += i\n{END}\nprint(root)\n"
    namespace: dict = {}
    exec(none_solutions(top), namespace)
    assert {k: namespace[k] for k in ("root", "a", "b", "i")} == {"root": None, "a": None, "b": None, "i": None}
    assert none_solutions(f"if True:\n    {BEGIN}\n    print(1)\n    {END}\n") == "if True:\n    pass\n"
    with pytest.raises(ValueError, match="without a matching"):
        none_solutions(f"def f():\n    {BEGIN}\n    return 1\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_learner_copy_in_sync(path, tmp_path):
    nb = json.loads(path.read_text())
    written = write_learner_copies(ROOT / "notebooks", tmp_path)
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


class _Kernel:
    def __init__(self, cwd: Path):
        from jupyter_client.manager import start_new_kernel

        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(cwd))

    def run(self, code: str) -> dict:
        reply = self.kc.execute_interactive(code, timeout=600, output_hook=lambda msg: None)
        return reply["content"]

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_check_fails_on_stub_and_on_none_and_passes_on_solution(path):
    nb = json.loads(path.read_text())
    setup = [c for c in nb["cells"] if "setup" in c.get("metadata", {}).get("tags", [])]
    assert setup, "tag the configuration and import cells 'setup'"
    kernel = _Kernel(path.parent)
    try:
        for cell in setup:
            result = kernel.run(_src(cell))
            assert result["status"] == "ok", f"setup cell failed: {result.get('ename')}: {result.get('evalue')}"
        for exercise, check_cell in _exercises(nb):
            assert kernel.run(strip_solutions(_src(exercise)))["status"] == "ok"
            on_stub = kernel.run(_src(check_cell))
            assert on_stub["status"] == "error" and on_stub["ename"] in ("AssertionError", "NotImplementedError"), (
                f"check must fail on the stub, got {on_stub.get('status')} {on_stub.get('ename')}: {on_stub.get('evalue')}"
            )
            assert kernel.run(none_solutions(_src(exercise)))["status"] == "ok"
            on_none = kernel.run(_src(check_cell))
            assert on_none["status"] == "error" and on_none["ename"] == "AssertionError", (
                f"{_src(exercise)[:60]!r}: its check must fail with its hint (AssertionError from check(...)) on a "
                "wrong-typed answer (None); start the check cell with check(isinstance(...), hint). Got "
                f"{on_none.get('status')} {on_none.get('ename')}: {on_none.get('evalue')}"
            )
            assert kernel.run(_src(exercise))["status"] == "ok"
            on_solution = kernel.run(_src(check_cell))
            assert on_solution["status"] == "ok", (
                f"check must pass on the solution: {on_solution.get('ename')}: {on_solution.get('evalue')}"
            )
    finally:
        kernel.close()
