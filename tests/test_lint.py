"""The code style CI holds the package to: ruff's lint rules and formatter (pyproject.toml, line length 120).

Run here, under the README's test command, so CI checks it without a separate step; `ruff` comes with the `dev`
extra. Fix what it reports with `ruff check --fix` and `ruff format` (the notebooks are left out: learners edit them).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["convlab", "tests", "benchmarks"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff")
    cmd = [exe] if exe else [sys.executable, "-m", "ruff"]
    return subprocess.run([*cmd, *args, *TARGETS], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_is_installed():
    probe = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True, text=True)
    if probe.returncode != 0 and shutil.which("ruff") is None:
        pytest.fail("ruff is not installed: pip install -e '.[dev]' brings it")


def test_ruff_lint_passes():
    result = _ruff("check", "--no-cache", "--output-format", "concise")
    assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"


def test_ruff_format_is_applied():
    result = _ruff("format", "--check", "--no-cache")
    assert result.returncode == 0, f"files ruff format would change:\n{result.stdout}{result.stderr}"
