"""Heads benchmark: is training over the HDF5 cache as fast as over the same tensors in memory,
and how many videos per second does each head train on?

(a) One epoch of the same head over the same videos: the view streamed from the cache (blocks of
    videos contiguous in the shards, read with `Cache.read_many`) vs padded tensors already in
    memory. Ratio = streamed / in memory; target <= 1.2.
(b) Training throughput (videos/s) of every registered head, in memory, on this machine's device.

The corpus is synthetic (seeded), written with `vidcache.cache.arrays.write_view_arrays`, so the
numbers measure vidcache, not decoding.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidcache.cache.arrays import write_view_arrays
from vidcache.cache.reader import Cache
from vidcache.heads import HEADS, HeadOptions, TrainConfig
from vidcache.heads.data import SplitSource, make_splits, multi_hot
from vidcache.heads.train import build_head
from vidcache.manifest import VideoEntry


def make_cache(path: Path, *, videos: int, frames: int, dim: int, classes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    entries, labels = [], {}
    for i in range(videos):
        video_id = f"v{i:06d}"
        chosen = tuple(f"class{c}" for c in sorted(rng.choice(classes, int(rng.integers(1, 4)), replace=False)))
        labels[video_id] = chosen
        split = "val" if i % 10 == 0 else "train"
        entries.append(VideoEntry(video_id, f"/bench/{video_id}.mp4", chosen, split))

    def rows():
        for entry in entries:
            idx = [int(label[5:]) for label in entry.labels]
            base = centres[idx].mean(axis=0)
            x = base + rng.normal(size=(frames, dim)).astype(np.float32)
            yield entry.video_id, x, np.arange(frames, dtype=float)

    write_view_arrays(path, view="clip", rows=rows(), entries=entries, identity={"model": "bench"}, dtype="float16")


def epoch_seconds(model, source: SplitSource, batch_size: int, *, repeats: int) -> list[float]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in source.batches(batch_size, shuffle=True, generator=generator):
            output = model.forward_batch(batch)
            loss, _ = model.loss(output, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=5000)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vidcache-bench-heads-"))
    cache_dir = workdir / "cache"
    if not (cache_dir / "catalog.sqlite").exists():
        t0 = time.perf_counter()
        make_cache(cache_dir, videos=args.videos, frames=args.frames, dim=args.dim, classes=args.classes)
        print(
            f"wrote {args.videos} videos x {args.frames} x {args.dim} in {time.perf_counter() - t0:.1f} s",
            file=sys.stderr,
        )
    results: dict = {
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
        "settings": vars(args),
    }
    with Cache(cache_dir) as cache:
        splits = make_splits(cache, "clip")
        ids = splits.ids["train"]
        targets = multi_hot(ids, splits.labels, splits.vocabulary)
        t0 = time.perf_counter()
        memory = SplitSource(cache, "clip", ids, targets, max_frames=64, memory_budget_bytes=1 << 40)
        load_s = time.perf_counter() - t0
        streamed = SplitSource(cache, "clip", ids, targets, max_frames=64, memory_budget_bytes=0)
        assert memory.in_memory and not streamed.in_memory
        ratios = {}
        for head in ("linear", "prototype", "pool"):
            model = build_head(
                TrainConfig(head=head), input_dim=memory.dim, num_classes=len(splits.vocabulary), multi_label=True
            )
            epoch_seconds(model, memory, args.batch_size, repeats=1)  # warm-up (allocator, kernels)
            mem_runs, stream_runs = [], []
            for _ in range(args.repeats):  # interleaved, so machine load hits both alike
                mem_runs += epoch_seconds(model, memory, args.batch_size, repeats=1)
                stream_runs += epoch_seconds(model, streamed, args.batch_size, repeats=1)
            mem, stream = statistics.median(mem_runs), statistics.median(stream_runs)
            ratios[head] = {"in_memory_s": mem, "streamed_s": stream, "ratio": stream / mem}
        results["epoch_streamed_vs_in_memory"] = ratios
        results["load_into_memory_s"] = load_s
        throughput = {}
        for head in HEADS.names():
            model = build_head(
                TrainConfig(head=head, options=HeadOptions()),
                input_dim=memory.dim,
                num_classes=len(splits.vocabulary),
                multi_label=True,
            )
            seconds = statistics.median(epoch_seconds(model, memory, args.batch_size, repeats=args.repeats))
            throughput[head] = {"epoch_s": seconds, "videos_per_s": len(memory) / seconds}
        results["train_videos_per_s"] = throughput
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return
    print(f"train videos: {len(ids)} x <= {args.frames} frames x {args.dim} (float16 in the cache)")
    print(f"read into memory once: {load_s:.2f} s")
    print(f"{'head':<10} {'in memory s':>12} {'streamed s':>11} {'ratio':>7}")
    for head, row in ratios.items():
        print(f"{head:<10} {row['in_memory_s']:>12.3f} {row['streamed_s']:>11.3f} {row['ratio']:>7.2f}")
    print(f"{'head':<10} {'epoch s':>9} {'videos/s':>10}")
    for head, row in throughput.items():
        print(f"{head:<10} {row['epoch_s']:>9.3f} {row['videos_per_s']:>10.0f}")


if __name__ == "__main__":
    main()
