"""Heads benchmark: is training over the HDF5 cache as fast as over the same tensors in memory,
and how many videos per second does each head train on?

(a) One epoch of the same head over the same videos: the view streamed from the cache (blocks of
    videos contiguous in the shards, read with `Cache.read_many`) vs padded tensors already in
    memory. Ratio = streamed / in memory; target <= 1.2.
(b) Training throughput (videos/s) of every head through the real training loop (`vidcache.heads.
    train`: batches, companions, AMP on CUDA, validation excluded), on --device: linear, mlp,
    prototype, pool, temporal (K = 0 and K = 7 mined hard negatives), fusion (clip + audio), and
    contrastive (K = 0, and K = 5 cross-view neighbours with LTCL).

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
from vidcache.heads import HEADS, TrainConfig
from vidcache.heads.data import SplitSource, make_splits, multi_hot
from vidcache.heads.train import build_head, train
from vidcache.index.mining import hard_negative_labels, nearest_videos, write_mined
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

    def audio_rows():  # a second view (fusion): 1.5x the rows, 128-d, the class centre's first 128 dims
        for entry in entries:
            idx = [int(label[5:]) for label in entry.labels]
            base = centres[idx].mean(axis=0)[:128]
            count = int(frames * 1.5)
            yield entry.video_id, base + rng.normal(size=(count, 128)).astype(np.float32), np.arange(count) * 0.96

    write_view_arrays(
        path, view="audio", rows=audio_rows(), entries=entries, identity={"model": "bench-audio"}, dtype="float16"
    )
    # label texts (temporal head): the class centres, as a label corpus + .npy
    (path / "labels.txt").write_text("".join(f"class{c}\n" for c in range(classes)))
    np.save(path / "text.npy", centres / np.linalg.norm(centres, axis=1, keepdims=True))


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
    parser.add_argument("--train-epochs", type=int, default=2, help="(b): epochs per head")
    parser.add_argument("--device", default="auto", help="(b): auto, cpu or cuda")
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
        labels_file, text_file = str(cache_dir / "labels.txt"), str(cache_dir / "text.npy")
        if not (cache_dir / "mined" / "hard_negatives.parquet").exists():
            frame, summary = hard_negative_labels(cache, k=10, label_corpus=labels_file, text_embeddings=text_file)
            write_mined(cache_dir, "hard_negatives", frame, summary, command="bench_heads")
            frame, summary = nearest_videos(cache, k=5, view="audio")
            write_mined(cache_dir, "neighbours_audio", frame, summary, command="bench_heads")
    text = {"label_corpus": labels_file, "text_embeddings": text_file}
    runs = {
        "linear": {"options": {"solver": "adamw"}},  # epochs, comparable with the other heads
        "linear (L-BFGS, solved)": {"head": "linear"},
        **{head: {} for head in ("mlp", "prototype", "pool")},
        "temporal K=0": {"head": "temporal", "options": text},
        "temporal K=7": {"head": "temporal", "options": {"hard_negatives": 7, **text}},
        "fusion clip+audio": {"head": "fusion", "views": ("clip", "audio")},
        "contrastive K=0": {"head": "contrastive", "options": {"ltcl": False}},
        "contrastive K=5 +LTCL": {"head": "contrastive", "options": {"cross_view_k": 5, "cross_view_from": "audio"}},
    }
    throughput = {}
    for name, overrides in runs.items():
        settings = {"head": name, **overrides}
        settings["options"] = HEADS.options(settings["head"], **settings.get("options", {}))
        config = TrainConfig(
            **settings,
            lr=1e-3,  # given: no search on val (throughput of the training itself)
            weight_decay=1e-4,
            epochs=args.train_epochs,
            batch_size=args.batch_size,
            patience=args.train_epochs,
            device=args.device,
        )
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
        summary = train(cache_dir, config, run_dir)
        throughput[name] = {"videos_per_s": summary.samples_per_s, "seconds_total": summary.seconds}
    results["train_videos_per_s"] = throughput
    results["device"] = args.device
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return
    print(f"train videos: {len(ids)} x <= {args.frames} frames x {args.dim} (float16 in the cache)")
    print(f"read into memory once: {load_s:.2f} s")
    print(f"{'head':<10} {'in memory s':>12} {'streamed s':>11} {'ratio':>7}")
    for head, row in ratios.items():
        print(f"{head:<10} {row['in_memory_s']:>12.3f} {row['streamed_s']:>11.3f} {row['ratio']:>7.2f}")
    print(f"training throughput on {args.device} ({args.train_epochs} epochs, batch {args.batch_size}):")
    print(f"{'head':<24} {'videos/s':>10} {'run s':>8}")
    for head, row in throughput.items():
        print(f"{head:<24} {row['videos_per_s']:>10.0f} {row['seconds_total']:>8.1f}")


if __name__ == "__main__":
    main()
