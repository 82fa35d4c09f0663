"""Sweep benchmark: `vidcache train --sweep` (16 configs: 4 learning rates × 2 weight decays × the
head's key option) against the same 16 configs trained as 16 separate `vidcache train` runs, each a
separate process as a shell loop or a job array would run them; and, in one process, the sweep
(`api.train(sweep=True)`) against its 16 configs as 16 `api.train` calls (no start-up per config, but
the features read and the mlp/prototype probe branch solved once per config).

Every run trains the same fixed number of epochs (`--epochs`), so the three do the same optimisation;
the sweep differs only in reading the cache once and training every config on those tensors. The
chosen config and its val score must match the best of the separate runs (checked, printed).

    .venv/bin/python benchmarks/bench_heads_sweep.py --workdir /tmp/bsweep
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vidcache.cache.arrays import write_view_arrays
from vidcache.manifest import VideoEntry


def make_cache(path: Path, *, videos: int, frames: int, dim: int, classes: int, seed: int = 0) -> None:
    """Single-label: each video's frames are its class centre plus noise (train 70 %, val 15 %, test 15 %)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)).astype(np.float32)
    entries, rows = [], []
    for i in range(videos):
        split = "train" if i % 20 < 14 else ("val" if i % 20 < 17 else "test")
        c = int(rng.integers(classes))
        video_id = f"{split}/{i:06d}"
        entries.append(VideoEntry(video_id, f"/src/{video_id}.mp4", (f"class{c}",), split))
        x = centres[c] + 2.5 * rng.normal(size=(frames, dim)).astype(np.float32)
        rows.append((video_id, x, np.arange(frames, dtype=float)))
    write_view_arrays(path, view="clip", rows=rows, entries=entries, identity={"model": "bench"}, dtype="float16")


def cli(*args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "vidcache.cli", *args], check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3000)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--head", default="mlp")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--skip-processes", action="store_true", help="Only the in-process comparison.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vidcache-bench-sweep-"))
    cache = workdir / "cache"
    if not (cache / "catalog.sqlite").exists():
        make_cache(cache, videos=args.videos, frames=args.frames, dim=args.dim, classes=args.classes)
    for old in ("sweep", "separate", "inproc", "sweep-in-0", "sweep-in-1"):
        shutil.rmtree(workdir / old, ignore_errors=True)
    common = ["--cache", str(cache), "--head", args.head, "--view", "clip", "--epochs", str(args.epochs)]
    common += ["--patience", str(args.epochs), "--device", "cpu"]

    from vidcache.heads import HEADS, TrainConfig, api

    base = TrainConfig(epochs=args.epochs, patience=args.epochs, device="cpu")
    # in one process: the sweep, then its 16 configs as 16 api.train calls, then the sweep again
    # (alternating, so load from outside hits both alike; the first sweep also pays the warm-up)
    sweep_in_s = []
    for attempt in range(2):
        started = time.perf_counter()
        api.train(cache, workdir / f"sweep-in-{attempt}", head=args.head, config=base, sweep=True)
        sweep_in_s.append(time.perf_counter() - started)
        if attempt == 1:
            break
        with open(workdir / "sweep-in-0" / "sweep.csv") as handle:
            grid = list(csv.DictReader(handle))
        started = time.perf_counter()
        for row in grid:
            options = HEADS.options(args.head)
            if row["option"]:
                kind = type(getattr(options, row["option"]))
                options = HEADS.options(args.head, **{row["option"]: kind(row["option_value"])})
            config = TrainConfig(**{**base.saved(), "lr": float(row["lr"]), "weight_decay": float(row["weight_decay"])})
            api.train(cache, workdir / "inproc" / row["name"], head=args.head, options=options, config=config)
        inproc_s = time.perf_counter() - started
    sweep_in = min(sweep_in_s)
    if args.skip_processes:
        result = {
            "settings": vars(args),
            "sweep_in_process_s": [round(x, 2) for x in sweep_in_s],
            "separate_in_process_s": round(inproc_s, 2),
            "speedup_vs_in_process": round(inproc_s / sweep_in, 2),
        }
        print(json.dumps(result, indent=2))
        return

    sweep_s = cli("train", *common, "--sweep", "--out", str(workdir / "sweep"), "--json")
    with open(workdir / "sweep" / "sweep.csv") as handle:
        grid = list(csv.DictReader(handle))

    separate_s, separate = 0.0, {}
    for row in grid:
        flags = ["--lr", row["lr"], "--weight-decay", row["weight_decay"]]
        if row["option"]:
            flags += ["--" + row["option"].replace("_", "-"), row["option_value"]]
        run = workdir / "separate" / row["name"]
        separate_s += cli("train", *common, *flags, "--out", str(run), "--json")
        separate[row["name"]] = json.loads((run / "summary.json").read_text())["best_value"]

    from vidcache.heads import HEADS, TrainConfig, api

    started = time.perf_counter()
    base = TrainConfig(epochs=args.epochs, patience=args.epochs, device="cpu")
    for row in grid:
        options = HEADS.options(args.head)
        if row["option"]:
            kind = type(getattr(options, row["option"]))
            options = HEADS.options(args.head, **{row["option"]: kind(row["option_value"])})
        config = TrainConfig(**{**base.saved(), "lr": float(row["lr"]), "weight_decay": float(row["weight_decay"])})
        api.train(cache, workdir / "inproc" / row["name"], head=args.head, options=options, config=config)
    inproc_s = time.perf_counter() - started

    chosen = next(r["name"] for r in grid if r["chosen"] == "True")
    best = max(separate, key=lambda name: separate[name])
    same = chosen == best and all(abs(float(r["value"]) - separate[r["name"]]) < 1e-9 for r in grid)
    result = {
        "settings": vars(args),
        "configs": len(grid),
        "sweep_s": round(sweep_s, 2),
        "separate_processes_s": round(separate_s, 2),
        "sweep_in_process_s": [round(x, 2) for x in sweep_in_s],
        "separate_in_process_s": round(inproc_s, 2),
        "speedup_vs_processes": round(separate_s / sweep_s, 2),
        "speedup_vs_in_process": round(inproc_s / sweep_in, 2),
        "chosen": chosen,
        "best_of_separate": best,
        "same_choice_and_scores": same,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.head}, {args.videos} videos x {args.frames} x {args.dim}, {args.epochs} epochs per config")
    print(f"{'':<34}{'seconds':>9}")
    print(f"{'train --sweep (16 configs)':<34}{sweep_s:>9.1f}")
    print(f"{'16 separate vidcache train':<34}{separate_s:>9.1f}  ({separate_s / sweep_s:.1f}x the sweep)")
    print(f"{'api.train(sweep=True), in process':<34}{sweep_in:>9.1f}  (best of {len(sweep_in_s)})")
    print(f"{'16 api.train calls, one process':<34}{inproc_s:>9.1f}  ({inproc_s / sweep_in:.1f}x the in-process sweep)")
    print(f"chosen {chosen}; best of the separate runs {best}; identical scores: {same}")


if __name__ == "__main__":
    main()
