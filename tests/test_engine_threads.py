"""The local engine sizes torch's thread pool beside its decode workers for a run, then restores it
(issue 29: on a busy machine, machine-wide torch teams spinning in every thread cost short clips
more CPU than their decoding)."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

from vidcache.extract.engines.local import cores_shared_with, torch_threads_beside


def usable_cores() -> int:
    # nproc honours the affinity, and OMP_NUM_THREADS too (set per pytest worker by conftest): not that one
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_THREAD_LIMIT")}
    return int(subprocess.run(["nproc"], capture_output=True, text=True, check=True, env=env).stdout)


@pytest.mark.parametrize("workers", [1, 2, 64])
def test_torch_threads_are_the_cores_the_workers_leave(workers):
    assert torch_threads_beside(workers) == max(1, usable_cores() - workers)


def test_the_pool_is_narrowed_for_the_run_and_restored_after_it_even_on_error():
    before = torch.get_num_threads()
    torch.set_num_threads(max(2, before))
    try:
        wide = torch.get_num_threads()
        with pytest.raises(RuntimeError), cores_shared_with(64) as threads:
            assert threads == torch.get_num_threads() == 1
            raise RuntimeError("a failed run")
        assert torch.get_num_threads() == wide
        with cores_shared_with(0) as threads:  # never widened past what the process had
            assert threads == min(wide, usable_cores())
    finally:
        torch.set_num_threads(before)
