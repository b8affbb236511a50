"""The thread policy: CPUs from affinity and cgroup quota, divided by the kernels that share them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convlab.threads import SHARED_ENV, THREADS_ENV, apply_thread_policy, thread_policy, usable_cpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "env, cpus, threads, source",
    [
        ({}, 2, 2, "cpus"),  # a learner's laptop: every usable CPU
        ({SHARED_ENV: "4"}, 2, 1, "shared"),  # 4 kernels on 2 CPUs: never below 1
        ({SHARED_ENV: "4"}, 16, 4, "shared"),  # 4 kernels on 16 CPUs: a fair quarter each
        ({SHARED_ENV: "3"}, 16, 5, "shared"),  # rounded down: 3 x 5 <= 16
        ({THREADS_ENV: "3", SHARED_ENV: "8"}, 4, 3, "override"),
        ({}, 1.5, 1, "cpus"),  # a fractional cgroup quota
    ],
)
def test_policy_divides_usable_cpus_among_kernels(env, cpus, threads, source):
    policy = thread_policy(env, cpus=cpus)
    assert (policy.threads, policy.source) == (threads, source)
    assert f"torch threads: {threads}" in policy.describe()


@pytest.mark.parametrize(
    "env, note",
    [
        ({SHARED_ENV: "two"}, "CONVLAB_SHARED_KERNELS: expected a positive integer, got 'two'; ignored"),
        ({THREADS_ENV: "0"}, "CONVLAB_THREADS: expected a positive integer, got '0'; ignored"),
        ({THREADS_ENV: "2.5"}, "CONVLAB_THREADS: expected a positive integer, got '2.5'; ignored"),
    ],
)
def test_bad_settings_are_ignored_with_a_sentence_naming_them(env, note):
    policy = thread_policy(env, cpus=2)
    assert policy.notes == (note,) and (policy.threads, policy.source) == (2, "cpus")


def test_more_threads_than_usable_cpus_are_clamped_with_a_sentence():
    policy = thread_policy({THREADS_ENV: "99999"}, cpus=2)
    assert policy.threads == 2 and policy.clamped and "clamped" in policy.describe()
    assert policy.notes == ("CONVLAB_THREADS=99999 is more than the 2 usable CPU(s); using 2",)
    assert thread_policy({THREADS_ENV: "2"}, cpus=1.5).threads == 2  # a fractional quota rounds up


@pytest.mark.parametrize("env", [{THREADS_ENV: "99999"}, {THREADS_ENV: "abc"}, {SHARED_ENV: "-1"}])
def test_a_bad_setting_ends_in_a_sentence_and_the_matrix_product_runs(env):
    """In a fresh process, as a notebook's configuration cell runs it (99999 threads crashed the process with a
    segmentation fault at the first matrix product; a bad value stopped it with a traceback)."""
    code = (
        "import torch; from convlab.threads import apply_thread_policy; apply_thread_policy(verbose=False); "
        "print(float((torch.ones(256, 256) @ torch.ones(256, 256)).sum()))"
    )
    env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == str(256.0**3), done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: CONVLAB_") and "Traceback" not in done.stderr


def test_passive_wait_is_reported():
    assert "spin" in thread_policy({}, cpus=2).describe()
    assert "spin" not in thread_policy({"OMP_WAIT_POLICY": "passive"}, cpus=2).describe()


def test_cgroup_quota_caps_affinity(tmp_path):
    affinity = usable_cpus(tmp_path / "missing")  # no cgroup files: the affinity mask alone
    assert affinity >= 1
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # v2: half a CPU
    assert usable_cpus(tmp_path) == 0.5
    (tmp_path / "cpu.max").write_text("max 100000\n")  # v2: no quota
    assert usable_cpus(tmp_path) == affinity
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert usable_cpus(v1) == min(1.0, affinity)


def test_apply_sets_torch_threads():
    before = torch.get_num_threads()
    try:
        policy = apply_thread_policy({THREADS_ENV: "1"}, verbose=False)
        assert policy.threads == torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_cap_for_tiny_models_is_said_and_an_override_still_wins():
    capped = thread_policy({}, cpus=8, max_threads=1)
    assert capped.threads == 1 and capped.capped and "capped" in capped.describe()
    assert not thread_policy({}, cpus=1, max_threads=2).capped  # a cap above the choice changes nothing
    assert thread_policy({THREADS_ENV: "4"}, cpus=8, max_threads=1).threads == 4
    with pytest.raises(ValueError, match="max_threads: expected a positive integer or None, got 0"):
        thread_policy({}, cpus=2, max_threads=0)
