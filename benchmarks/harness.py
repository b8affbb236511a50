"""The timing harness every benchmark shares: synchronised timers, interleaved repeats with medians, the markdown
table of a set of cases, and the results file.

Each case's throughput is reported under one key, :data:`THROUGHPUT` (``items_per_s``: images, crops or renders per
second; a table's unit column says which). Torch is imported only when a timer needs it, so a benchmark whose
timing runs in child processes (``bench_shared.py``) keeps its parent light.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "RESULTS",
    "THROUGHPUT",
    "results_path",
    "run_cases",
    "seconds_per_call",
    "sync",
    "table",
    "timed",
    "write_results",
]

RESULTS = Path(__file__).resolve().parent / "results"
#: The key of a case's throughput in every results file.
THROUGHPUT = "items_per_s"


def sync(device: Any = "cpu") -> None:
    """:func:`convlab.device.synchronize`, imported when first needed (a CPU run never needs torch here)."""
    if str(device).startswith("cuda"):
        from convlab.device import synchronize

        synchronize(device)


def timed(fn: Callable[[], Any], device: Any = "cpu") -> tuple[float, Any]:
    """``(seconds, result)`` of one call of ``fn``, the device synchronised before and after."""
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def seconds_per_call(fn: Callable[[], Any], device: Any, steps: int, warmup: int) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return timed(lambda: [fn() for _ in range(steps)], device)[0] / steps


def run_cases(
    cases: dict[str, Callable[[], object]], repeats: int, items: int, device: Any = "cpu", memory: bool = False
) -> dict[str, dict[str, float]]:
    """Warm up each case, then ``repeats`` interleaved rounds (every case sees the same machine state).

    Per case: ``median_ms`` (wall time), :data:`THROUGHPUT` (``items`` per median call), ``cpu_ms`` (median CPU time
    of this process: steadier than wall time on a busy machine for one-thread cases; worker processes not counted)
    and, with ``memory``, ``peak_mem_mb`` (the largest peak seen, see :class:`convlab.memory.PeakMemory`).
    """
    from contextlib import nullcontext

    from convlab.memory import PeakMemory

    for f in cases.values():  # warm-up (allocator, lazy init, DataLoader workers)
        f()
    times: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    peaks: dict[str, float] = dict.fromkeys(cases, 0.0)
    for _ in range(repeats):
        for k, f in cases.items():
            with PeakMemory(device) if memory else nullcontext() as mem:
                c0 = time.process_time()
                seconds, _ = timed(f, device)
                cpu[k].append(time.process_time() - c0)
                times[k].append(seconds)
            if memory:
                peaks[k] = max(peaks[k], mem.mb)
    out = {}
    for k, v in times.items():
        med = statistics.median(v)
        out[k] = {"median_ms": 1e3 * med, THROUGHPUT: items / med, "cpu_ms": 1e3 * statistics.median(cpu[k])}
        if memory:
            out[k]["peak_mem_mb"] = peaks[k]
    return out


def table(
    title: str,
    res: dict[str, dict[str, float]],
    unit: str = "img/s",
    compare: tuple[str, Callable[[dict[str, float]], float | None]] | None = None,
    note: str = "",
) -> str:
    """A markdown table of :func:`run_cases` results: case, median ms, throughput in ``unit``, then ``compare``'s
    column (``(header, value of a row)``, shown as ``1.23x``) and peak memory when measured."""
    mem = any("peak_mem_mb" in v for v in res.values())
    head = f"| case | median ms | {unit} |" + (f" {compare[0]} |" if compare else "") + (" peak MB |" if mem else "")
    lines = [f"\n### {title}", "", head, "|---|---:|---:|" + ("---:|" if compare else "") + ("---:|" if mem else "")]
    for k, v in res.items():
        row = f"| {k} | {v['median_ms']:.2f} | {v[THROUGHPUT]:,.1f} |"
        if compare:
            x = compare[1](v)
            row += f" {x:.2f}x |" if x is not None else " |"
        lines.append(row + (f" {v['peak_mem_mb']:,.0f} |" if mem else ""))
    return "\n".join(lines + ([f"\n{note}"] if note else []))


def results_path(stem: str, device: str, quick: bool) -> Path:
    """``results/<stem>_<device>[_quick].json``: a quick run never overwrites the full run's figures."""
    return RESULTS / f"{stem}_{device}{'_quick' if quick else ''}.json"


def write_results(path: Path, report: dict) -> Path:
    """Write ``report`` as JSON to ``path`` (its folder made if needed) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwrote {path}", flush=True)
    return path
