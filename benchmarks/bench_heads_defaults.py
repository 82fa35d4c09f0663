"""Every head at its defaults (auto epochs, patience, lr search), as `vidcache train --head H` runs
it: wall seconds, epochs run and held-out quality, on a demo-sized corpus (issue 23: 8 training
videos, a val split too small to choose on) and on a larger one. Run it on two checkouts to compare
schedules (before/after), e.g.

    PYTHONPATH=. python benchmarks/bench_heads_defaults.py --train 8 --val 2 --test 10
    PYTHONPATH=. python benchmarks/bench_heads_defaults.py --train 600 --val 200 --test 400

The corpus is bench_heads.py's (class centres + noise per frame, a 128-d audio view for fusion,
label texts for temporal), written here with explicit train/val/test splits. Quality: test mAP
(classifiers) or R@1 (contrastive) from `evaluate_run`, what `vidcache eval` prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vidcache.cache.arrays import write_view_arrays
from vidcache.heads import HEADS, TrainConfig
from vidcache.heads.predict import evaluate_run
from vidcache.heads.train import train
from vidcache.manifest import VideoEntry


def make_cache(path: Path, *, splits: dict[str, int], frames: int, dim: int, classes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    entries = []
    for split, count in splits.items():
        for i in range(count):
            picked = set(rng.choice(classes, int(rng.integers(1, 3)), replace=False).tolist())
            picked |= {i % classes} if split == "train" else set()  # every class has a training video
            chosen = tuple(f"class{c}" for c in sorted(picked))
            entries.append(VideoEntry(f"{split}/{i:05d}", f"/bench/{split}/{i}.mp4", chosen, split))

    def rows(view_dim: int, count: int, step_s: float):
        for entry in entries:
            base = centres[[int(label[5:]) for label in entry.labels]].mean(axis=0)[:view_dim]
            noise = 2.0 * rng.normal(size=(count, view_dim)).astype(np.float32)
            yield entry.video_id, base + noise, np.arange(count) * step_s

    write_view_arrays(path, view="clip", rows=rows(dim, frames, 1.0), entries=entries, identity={"model": "b"})
    audio = rows(128, int(frames * 1.5), 0.96)
    write_view_arrays(path, view="audio", rows=audio, entries=entries, identity={"model": "b-audio"})
    (path / "labels.txt").write_text("".join(f"class{c}\n" for c in range(classes)))
    np.save(path / "text.npy", centres / np.linalg.norm(centres, axis=1, keepdims=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=8)
    parser.add_argument("--val", type=int, default=2)
    parser.add_argument("--test", type=int, default=10)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--heads", default="", help="comma-separated subset of the runs below")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="vidcache-bench-defaults-"))
    cache = workdir / "cache"
    splits = {"train": args.train, "val": args.val, "test": args.test}
    make_cache(cache, splits=splits, frames=args.frames, dim=args.dim, classes=args.classes)
    text = {"label_corpus": str(cache / "labels.txt"), "text_embeddings": str(cache / "text.npy")}
    runs = {
        "linear": {},
        "mlp": {},
        "prototype": {},
        "pool": {},
        "temporal": {"options": text},
        "fusion": {"views": ("clip", "audio")},
        "contrastive": {},
    }
    wanted = {h for h in args.heads.split(",") if h}
    rows = []
    for head, overrides in runs.items():
        if wanted and head not in wanted:
            continue
        options = HEADS.options(head, **overrides.get("options", {}))
        config = TrainConfig(head=head, views=overrides.get("views", ()), options=options, device="cpu")
        started = time.perf_counter()
        summary = train(cache, config, workdir / head)
        seconds = time.perf_counter() - started
        metrics = evaluate_run(workdir / head, cache, split="test", device="cpu")
        key = "recall_at_1" if HEADS.get(head).kind == "embed" else "map_macro"
        row = {
            "head": head,
            "seconds": round(seconds, 1),
            "epochs_run": summary.epochs_run,
            "best_epoch": summary.best_epoch,
            f"test_{key}": round(metrics[key], 4),
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    else:
        for row in rows:
            print(" ".join(f"{k}={v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
