"""Put back the videos that `remove --not-in keep90.csv` took from a kept bench_scale cache (the last 10 %
of the N synthetic videos, with the same draws), so the next `bench_scale.py --reuse` times N videos again.

    .venv/bin/python benchmarks/bench_scale_restore.py /tmp/scale/1000000
    # then the real video's rows again: vidcache extract N/real.csv --cache N/cache --views clip \
    #     --clip-model ViT-B-32 --clip-pretrained none --fps 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scale

from vidcache.cache.reader import Cache


def restore(size_dir: Path, *, dim: int, seed: int, dup_every: int) -> int:
    n = int(size_dir.name)
    with Cache(size_dir / "cache") as opened:
        identity = opened.view_info("clip")
        have = set(opened.video_ids("clip"))
    # every draw is made, so the restored rows equal the first build's
    drawn = bench_scale.synthetic_rows(n, dim, seed=seed, dup_every=dup_every)
    return len(bench_scale.write_videos(size_dir, identity, (video for video in drawn if video[0] not in have)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("size_dir", type=Path, help="--workdir/N of a kept bench_scale run.")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dup-every", type=int, default=50)
    args = parser.parse_args()
    started = time.perf_counter()
    count = restore(args.size_dir, dim=args.dim, seed=args.seed, dup_every=args.dup_every)
    print(f"restored {count} videos in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
