"""pytest plugin: a notebook cell under nbval may not stay silent for longer than about 10 s.

A learner (or a seminar on a projector) should never watch a cell run for long without a sign of progress: a tqdm
bar (its widget updates arrive as ``comm_msg``), or a line per step. nbval waits for a cell to finish before it
reads the cell's output messages, so this plugin records those messages as nbval reads them and uses the kernel's
own send times (``header["date"]``): the longest silence is the longest gap between the cell going busy, each
output or widget update, and the cell going idle.

The limit is 10 s on idle cores (``CONVLAB_SILENCE_LIMIT_S`` changes it). On a busy machine every cell runs slower
by about the load per core, so the limit is scaled by ``max(1, load average / cores)``: the rule is "10 s on 2 idle
cores", not "10 s whatever else runs" (``CONVLAB_SILENCE_SCALE_WITH_LOAD=0`` turns the scaling off).
``CONVLAB_SILENCE_REPORT=file`` appends every cell's node id, run time, longest silence and load factor to ``file``
(to see how close the notebooks come to the limit).
"""

from __future__ import annotations

import os

import pytest

LIMIT_S = float(os.environ.get("CONVLAB_SILENCE_LIMIT_S", "10"))

# nbval reads a cell's iopub messages only after the cell has finished, and ZeroMQ drops what does not fit in its
# queues (about 2,000 messages, send + receive high-water marks). A long cell whose tqdm widgets refresh every 0.1 s
# (tqdm's default) on a loaded machine can overflow them; the dropped "idle" status then fails the cell with
# "Timeout of 5 seconds exceeded waiting for output" (seen once in CI on notebook 03). JupyterLab reads iopub as it
# comes, so learners keep tqdm's default; the kernels nbval starts inherit this: one refresh per second at most.
os.environ.setdefault("TQDM_MININTERVAL", "1")
ACTIVITY = {"stream", "display_data", "update_display_data", "execute_result", "error", "comm_msg", "comm_open"}


def _busy_factor() -> float:
    if os.environ.get("CONVLAB_SILENCE_SCALE_WITH_LOAD", "1") == "0":
        return 1.0
    try:
        return max(1.0, os.getloadavg()[0] / max(1, len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):
        return 1.0


def longest_silence(messages: list[dict]) -> tuple[float, float]:
    """(cell run time, longest gap without output) in seconds, from the iopub messages of one execution."""
    times, start, end = [], None, None
    for msg in messages:
        date = msg.get("header", {}).get("date")
        if date is None:
            continue
        kind = msg.get("msg_type")
        state = msg.get("content", {}).get("execution_state")
        if kind == "status" and state == "busy" and start is None:
            start = date
        elif kind == "status" and state == "idle":
            end = date
        elif kind in ACTIVITY:
            times.append(date)
    if start is None or end is None:
        return 0.0, 0.0
    marks = [start, *sorted(t for t in times if start <= t <= end), end]
    gaps = [(b - a).total_seconds() for a, b in zip(marks, marks[1:])]
    return (end - start).total_seconds(), max(gaps, default=0.0)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if type(item).__name__ != "IPyNbCell":
        return (yield)
    parent, seen = item.parent, []
    original = parent.get_kernel_message

    def recording(*args, **kwargs):
        msg = original(*args, **kwargs)
        seen.append(msg)
        return msg

    parent.get_kernel_message = recording
    factor = _busy_factor()
    try:
        result = yield
    finally:
        del parent.get_kernel_message  # back to the class's method
    factor = max(factor, _busy_factor())
    ids = [m.get("parent_header", {}).get("msg_id") for m in seen if m.get("msg_type") == "execute_input"]
    mine = [m for m in seen if m.get("parent_header", {}).get("msg_id") == ids[-1]] if ids else seen
    total, silence = longest_silence(mine)
    limit = LIMIT_S * factor
    report = os.environ.get("CONVLAB_SILENCE_REPORT")  # a file to append each cell's numbers to (tab-separated)
    if report:
        with open(report, "a", encoding="utf-8") as f:
            f.write(f"{item.nodeid}\t{total:.2f}\t{silence:.2f}\t{factor:.2f}\n")
    if silence > limit:
        raise AssertionError(
            f"this cell ran {total:.0f} s and showed nothing for {silence:.0f} s (limit {limit:.0f} s: {LIMIT_S:g} s "
            f"on idle cores x {factor:.1f} for the machine's load): show progress, e.g. a tqdm bar (convlab functions "
            "take progress=True) or a line per step"
        )
    return result
