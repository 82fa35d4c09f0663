"""In-process: build_index (auto choice) on 1M synthetic clustered unit vectors × 512 (the faiss part of
`index build` only: no cache read, no fingerprint, no save). Issue 29 item 2; docs/benchmarks.md 14.4.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_ivf_1m.py
"""

import resource
import time

import numpy as np

from vidcache.index.build import build_index, choose_index


def main() -> None:
    rng = np.random.default_rng(0)
    n, d = 1_000_000, 512
    centres = rng.standard_normal((1000, d), dtype=np.float32)
    v = np.empty((n, d), np.float32)
    for lo in range(0, n, 100_000):
        v[lo : lo + 100_000] = centres[rng.integers(0, 1000, 100_000)] + 0.5 * rng.standard_normal(
            (100_000, d), dtype=np.float32
        )
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t = time.perf_counter()
    c = choose_index(n, d, memory_budget_bytes=4 * 2**30)
    cal = {}
    build_index(v, c, use_gpu=False, calibration=cal)
    print(
        c.factory,
        round(time.perf_counter() - t, 1),
        "s",
        cal,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "MiB peak",
    )


if __name__ == "__main__":
    main()
