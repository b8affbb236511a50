"""pytest plugin: the suite in several processes (pytest-xdist, ``-n auto``) shares the cores like a seminar server.

README's test command runs the tests in one worker process per usable core (``-n auto``, counted here). Left
alone, every worker (and every notebook kernel a worker starts) would take one PyTorch thread per core, and their
OpenMP threads would spin against each other (``benchmarks/bench_shared.py`` measured 17x slowdowns that way).
So each worker applies convlab's own policy for kernels that share a machine (:mod:`convlab.threads`), before
torch is imported: ``cores // workers`` threads, ``CONVLAB_SHARED_KERNELS`` set to the number of workers for the
kernels it starts, and ``OMP_WAIT_POLICY=PASSIVE``.
Values already in the environment win. Without xdist (one process) nothing changes.

Scheduling (``--dist loadgroup``): a notebook's cells run in order in one kernel, so each notebook, and each test
module (its fixtures are built once), goes to one worker as a whole; each test marked ``own_process`` (it runs a
whole notebook in a process of its own) is a work unit of its own, so those spread over the workers.
"""

from __future__ import annotations

import os

import pytest

try:
    from convlab.threads import usable_cpus  # the standard library only: torch is not imported yet
except ImportError:  # convlab not importable: let the tests say so, and count the CPUs without it

    def usable_cpus() -> float:
        return float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


_WORKERS = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
if os.environ.get("PYTEST_XDIST_WORKER") and _WORKERS and _WORKERS.isdigit() and int(_WORKERS) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, int(usable_cpus()) // int(_WORKERS))))
    os.environ.setdefault("CONVLAB_SHARED_KERNELS", _WORKERS)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per CPU this process may use (its affinity, capped by a cgroup quota, as convlab's
    thread policy counts them), not psutil's physical cores. ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still wins."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # xdist's own hook reads it
    return max(1, int(usable_cpus()))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into the groups it schedules by
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        if item.get_closest_marker("own_process") is not None:
            continue  # without a group, loadgroup makes the item a work unit of its own: these spread over workers
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
