"""How many threads the numeric libraries may use: the CPUs this process may really run on.

`os.cpu_count()` is the machine's count; a process pinned to fewer CPUs (taskset, Slurm, a
container's cpuset) or given a CPU quota (cgroup `cpu.max`, Kubernetes limits) that starts that many
threads per library makes them wait on each other. OpenMP's spinning waits (torch, FAISS) then burn
the CPUs that other processes need: on a shared machine a small `dot` took 4 ms (issue 29). So every
CLI command starts with `configure_threads()`: one thread per usable CPU and passive OpenMP waits,
unless the user set the variables.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """The cgroup's CPU quota in CPUs (v2 `cpu.max`, else v1 `cpu.cfs_quota_us / cpu.cfs_period_us`),
    None when there is none or it cannot be read."""
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus(*, cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup quota (rounded up), >= 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def configure_threads() -> int:
    """Thread pools sized to `usable_cpus()` (variables the user set are kept), OpenMP threads that
    sleep instead of spin while waiting, and BLAS pools already loaded (NumPy's) limited likewise;
    torch and FAISS read the variables when they are imported. Returns the thread count."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "") or 0) or usable_cpus()
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    return threads
