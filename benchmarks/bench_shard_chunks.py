"""Allocated vs data bytes of a small shard: 5 videos x 20 rows of clip (64-d float16), audio
(128-d float32, with end times) and motion (528-d float32), written by `ShardWriter`.

    PYTHONPATH=. python benchmarks/bench_shard_chunks.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np

from vidcache.cache.shard import ShardWriter


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        dtypes = {"clip": "float16", "audio": "float32", "motion": "float32"}
        writer = ShardWriter(Path(folder), "s", root_attrs={}, view_attrs={}, dtype=dtypes)
        for i in range(5):
            times = np.arange(20, dtype=np.float64)
            writer.add(f"v{i}", "clip", rng.standard_normal((20, 64)).astype(np.float16), times)
            writer.add(f"v{i}", "audio", rng.standard_normal((20, 128)).astype(np.float32), times,
                       end_timestamps_s=times + 0.96)  # fmt: skip
            writer.add(f"v{i}", "motion", rng.standard_normal((20, 528)).astype(np.float32), times)
        path = writer.commit()
        with h5py.File(path) as h5:
            data = sum(h5[v]["features"].size * h5[v]["features"].dtype.itemsize for v in h5)
            allocated = sum(h5[v]["features"].id.get_storage_size() for v in h5)
        print(f"features: data {data / 1024:.1f} KiB, allocated {allocated / 1024:.1f} KiB; "
              f"shard file {path.stat().st_size / 1024:.1f} KiB")  # fmt: skip


if __name__ == "__main__":
    main()
