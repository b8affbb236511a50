"""The silence rule for notebook cells (tests/plugins/cell_progress_plugin.py), on synthetic messages and on a real
kernel under nbval."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from cell_progress_plugin import longest_silence

ROOT = Path(__file__).resolve().parents[1]


def _msg(kind: str, t: float, **content) -> dict:
    date = dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=t)
    return {"msg_type": kind, "header": {"date": date}, "content": content, "parent_header": {"msg_id": "x"}}


def test_longest_silence_counts_outputs_and_widget_updates():
    quiet = [
        _msg("status", 0, execution_state="busy"),
        _msg("stream", 14, text="done\n"),
        _msg("status", 15, execution_state="idle"),
    ]
    assert longest_silence(quiet) == (15.0, 14.0)
    bar = [
        _msg("status", 0, execution_state="busy"),
        *[_msg("comm_msg", t) for t in range(1, 15, 2)],
        _msg("status", 15, execution_state="idle"),
    ]
    assert longest_silence(bar) == (15.0, 2.0)
    assert longest_silence([_msg("stream", 3)]) == (0.0, 0.0)  # no busy/idle pair: nothing to judge


def _notebook(path: Path, cells: list[str]) -> None:
    nb = {
        "cells": [
            {"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": src, "outputs": [], "execution_count": None}
            for i, src in enumerate(cells)
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(nb))


def test_a_silent_cell_fails_and_a_chatty_one_passes(tmp_path):
    busy = "import time\nend = time.perf_counter() + 1.5\n"
    _notebook(tmp_path / "silent.ipynb", [busy + "while time.perf_counter() < end:\n    pass\n"])
    _notebook(
        tmp_path / "chatty.ipynb",
        [
            busy + "n = 0\nwhile time.perf_counter() < end:\n    n += 1\n"
            "    if n % 20000 == 0:\n        print('.', end='', flush=True)\n"
        ],
    )
    env = {**os.environ, "CONVLAB_SILENCE_LIMIT_S": "0.4", "CONVLAB_SILENCE_SCALE_WITH_LOAD": "0"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            str(tmp_path / "silent.ipynb"),
            str(tmp_path / "chatty.ipynb"),
            "--rootdir",
            str(ROOT),
            "-c",
            str(ROOT / "pyproject.toml"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "1 failed, 1 passed" in done.stdout, done.stdout[-3000:]
    assert "showed nothing for" in done.stdout
    assert done.stdout.startswith("F."), done.stdout[:200]  # the silent notebook (given first) is the one that failed
