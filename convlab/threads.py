"""How many PyTorch threads a process should use, on a laptop or on a seminar server shared by many kernels.

PyTorch starts one intra-op thread per core it sees. On a shared machine that is wrong twice over: a container or
a cgroup may grant fewer CPUs than the machine has, and several kernels (learners' notebooks) share those CPUs.
Kernels that each take every core then slow each other far beyond their fair share, because OpenMP threads that
wait for a busy core spin and then sleep in turns (``benchmarks/bench_shared.py`` measures kernels in company, with
this policy and with PyTorch's defaults). The policy here:

    threads = max(1, usable CPUs // kernels sharing them)

- usable CPUs: the process's CPU affinity (``os.sched_getaffinity``), capped by a cgroup CPU quota
  (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us`` in v1) when one is set;
- kernels sharing them: ``CONVLAB_SHARED_KERNELS`` (a teacher sets it on the server, e.g. to the number of
  learners per machine), else 1 (a learner's own laptop).
- ``CONVLAB_THREADS`` overrides the result (an explicit number wins), up to the usable CPUs: a larger number is
  clamped to them (thousands of OpenMP threads can crash the process at its first matrix product).

A setting that is not a positive integer is ignored, and so is said, in one sentence naming the variable
(:attr:`ThreadPolicy.notes`, printed by :func:`apply_thread_policy`): a typo in a server's environment must not stop
every notebook at its configuration cell.

OpenMP's busy-waiting is set by environment variables read when the OpenMP runtime starts (``OMP_WAIT_POLICY``),
so it cannot be changed from inside a running kernel; ``python -m convlab open`` and README's server section set
``OMP_WAIT_POLICY=PASSIVE`` for the kernels, and :func:`thread_policy` reports whether it is set.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ThreadPolicy", "usable_cpus", "thread_policy", "apply_thread_policy"]

SHARED_ENV = "CONVLAB_SHARED_KERNELS"
THREADS_ENV = "CONVLAB_THREADS"


@dataclass(frozen=True)
class ThreadPolicy:
    """The decision and its reasons: ``threads`` for ``torch.set_num_threads``."""

    threads: int
    usable_cpus: float
    shared_kernels: int
    source: str  # "override" (CONVLAB_THREADS), "shared" (CONVLAB_SHARED_KERNELS) or "cpus"
    passive_wait: bool  # OMP_WAIT_POLICY=PASSIVE is set for this process
    capped: bool = False  # the caller's max_threads lowered the choice (tiny models gain nothing from threads)
    notes: tuple[str, ...] = ()  # settings ignored or clamped, one sentence each
    clamped: bool = False  # CONVLAB_THREADS asked for more threads than there are usable CPUs

    def describe(self) -> str:
        """One line for a notebook's configuration cell."""
        cpus = f"{self.usable_cpus:g} usable CPU{'s' if self.usable_cpus != 1 else ''}"
        if self.source == "override":
            why = f"{THREADS_ENV}, clamped to the {cpus}" if self.clamped else f"{THREADS_ENV}={self.threads}"
        elif self.shared_kernels > 1:
            why = f"{cpus} shared by {self.shared_kernels} kernels ({SHARED_ENV})"
        else:
            why = f"{cpus}, one kernel (a shared server sets {SHARED_ENV})"
        cap = "; capped by this notebook: its models are tiny" if self.capped else ""
        wait = "" if self.passive_wait else "; OpenMP threads spin while waiting (OMP_WAIT_POLICY unset)"
        return f"torch threads: {self.threads} ({why}{cap}{wait})"


def _cgroup_cpu_limit(root: Path) -> float | None:
    """The CPU quota of this process's cgroup in CPUs, or ``None`` when there is none (or it cannot be read)."""
    try:
        text = (root / "cpu.max").read_text().split()  # v2: "max 100000" or "150000 100000"
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:  # v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus(cgroup_root: str | Path = "/sys/fs/cgroup") -> float:
    """CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota (a fraction is possible)."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_limit(Path(cgroup_root))
    return min(cpus, quota) if quota else cpus


def _positive_int(env: Mapping[str, str], name: str, notes: list[str]) -> int | None:
    """``env[name]`` as a positive integer; ``None`` if unset, or if invalid (then a sentence in ``notes``)."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        notes.append(f"{name}: expected a positive integer, got {raw!r}; ignored")
        return None
    return value


def thread_policy(
    env: Mapping[str, str] | None = None, cpus: float | None = None, max_threads: int | None = None
) -> ThreadPolicy:
    """Decide the number of torch threads from ``env`` (default ``os.environ``) and ``cpus`` (default
    :func:`usable_cpus`), at most ``max_threads`` unless ``CONVLAB_THREADS`` says otherwise, never more than the
    usable CPUs (rounded up). Invalid settings are ignored and clamped ones lowered, each with a sentence in
    :attr:`ThreadPolicy.notes`. Pure: sets nothing."""
    if max_threads is not None and (not isinstance(max_threads, int) or max_threads < 1):
        raise ValueError(f"max_threads: expected a positive integer or None, got {max_threads!r}")
    env = os.environ if env is None else env
    cpus = usable_cpus() if cpus is None else cpus
    if not cpus > 0:
        raise ValueError(f"cpus: expected a positive number of CPUs, got {cpus}")
    notes: list[str] = []
    shared = _positive_int(env, SHARED_ENV, notes) or 1
    override = _positive_int(env, THREADS_ENV, notes)
    passive = env.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE"
    if override is not None:
        limit = max(1, math.ceil(cpus))
        if override > limit:
            notes.append(f"{THREADS_ENV}={override} is more than the {cpus:g} usable CPU(s); using {limit}")
        threads = min(override, limit)
        return ThreadPolicy(threads, cpus, shared, "override", passive, notes=tuple(notes), clamped=override > limit)
    threads = max(1, int(cpus // shared))
    capped = max_threads is not None and max_threads < threads
    threads = min(threads, max_threads) if capped else threads
    return ThreadPolicy(threads, cpus, shared, "shared" if shared > 1 else "cpus", passive, capped, tuple(notes))


def apply_thread_policy(
    env: Mapping[str, str] | None = None, verbose: bool = True, max_threads: int | None = None
) -> ThreadPolicy:
    """Decide (:func:`thread_policy`) and set ``torch.set_num_threads``; print the decision if ``verbose``, and
    every setting ignored or clamped (one line each, on stderr) always.
    ``max_threads``: a cap for work that gains nothing from threads (tiny models).

    Call it once, in a notebook's configuration cell or at the start of a script. The inter-op pool is left alone
    (it can be set only before the first parallel work, and convlab does not use it).
    """
    import torch

    policy = thread_policy(env, max_threads=max_threads)
    for note in policy.notes:
        print(f"note: {note}", file=sys.stderr)
    torch.set_num_threads(policy.threads)
    if verbose:
        print(policy.describe())
    return policy
