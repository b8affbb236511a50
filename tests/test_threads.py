"""The thread policy: CPUs from affinity and cgroup quota, divided by the kernels that share them."""

from __future__ import annotations

import pytest
import torch

from convlab.threads import SHARED_ENV, THREADS_ENV, apply_thread_policy, thread_policy, usable_cpus


@pytest.mark.parametrize(
    "env, cpus, threads, source",
    [
        ({}, 2, 2, "cpus"),  # a learner's laptop: every usable CPU
        ({SHARED_ENV: "4"}, 2, 1, "shared"),  # 4 kernels on 2 CPUs: never below 1
        ({SHARED_ENV: "4"}, 16, 4, "shared"),  # 4 kernels on 16 CPUs: a fair quarter each
        ({SHARED_ENV: "3"}, 16, 5, "shared"),  # rounded down: 3 x 5 <= 16
        ({THREADS_ENV: "3", SHARED_ENV: "8"}, 2, 3, "override"),
        ({}, 1.5, 1, "cpus"),  # a fractional cgroup quota
    ],
)
def test_policy_divides_usable_cpus_among_kernels(env, cpus, threads, source):
    policy = thread_policy(env, cpus=cpus)
    assert (policy.threads, policy.source) == (threads, source)
    assert f"torch threads: {threads}" in policy.describe()


@pytest.mark.parametrize(
    "env, match",
    [
        ({SHARED_ENV: "two"}, "CONVLAB_SHARED_KERNELS: expected a positive integer, got 'two'"),
        ({THREADS_ENV: "0"}, "CONVLAB_THREADS: expected a positive integer, got 0"),
    ],
)
def test_bad_settings_are_named(env, match):
    with pytest.raises(ValueError, match=match):
        thread_policy(env, cpus=2)


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
