"""Thread counts from the CPUs a process may use (affinity and cgroup quota), not the machine's."""

from __future__ import annotations

import os

import pytest
from threadpoolctl import threadpool_info

from vidcache.threads import THREAD_VARIABLES, cgroup_cpu_limit, configure_threads, usable_cpus


def test_cgroup_v2_and_v1_quotas(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 0.5
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no quota"
    assert cgroup_cpu_limit(v1) is None
    assert cgroup_cpu_limit(tmp_path / "none") is None


def test_usable_cpus_is_the_affinity_capped_by_the_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(cgroup_root=tmp_path) == affinity  # no quota files: the affinity mask
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: one thread
    assert usable_cpus(cgroup_root=tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{100000 * (affinity + 8)} 100000\n")  # a quota above the mask
    assert usable_cpus(cgroup_root=tmp_path) == affinity


def test_configure_threads_sets_unset_variables_and_limits_loaded_pools(monkeypatch):
    import numpy  # noqa: F401  (its BLAS pool is what threadpoolctl reports)

    for name in (*THREAD_VARIABLES, "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    threads = configure_threads()
    assert threads == usable_cpus()
    assert all(os.environ[name] == str(threads) for name in THREAD_VARIABLES)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert all(pool["num_threads"] <= threads for pool in threadpool_info())
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice wins
    assert configure_threads() == 1


@pytest.fixture(autouse=True)
def _restore_pools():
    from threadpoolctl import threadpool_limits

    yield
    threadpool_limits(limits=usable_cpus())
