"""Engine benchmark: what `--engine ray` costs over `--engine local` on one machine, and how it scales
with decode workers.

Builds a corpus of small synthetic videos (default 40 videos of 4 s, 12 fps, 160x120) and extracts it
into fresh caches with the real `Extractor`:

a) local: `--engine local --workers 2` (decode threads, the model in the main thread);
b) ray: `--engine ray --workers 2` on a local Ray cluster started once beforehand (as a user's cluster
   would be: its start-up is reported, not timed), and `--workers 1`, the same cluster.

Each run is end to end, as a user waits for it: models loaded (for Ray also the model actors), plan,
decode, encode, write, commit; a first Ray run on 2 videos starts the job's worker processes and is
reported apart (a user pays it once per run, whatever the corpus). Reports seconds and videos/s per
run, the overhead ratio ray(workers 2) / local(workers 2) (target <= 1.3), and checks that every Ray
cache holds the local one's rows bit for bit.

    .venv/bin/python benchmarks/bench_engine.py
    .venv/bin/python benchmarks/bench_engine.py --clip-model vidcache-tiny   # per-video overhead floor
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vidcache import Cache
from vidcache.commands.extract import build_config
from vidcache.extract.runner import Extractor
from vidcache.manifest import read_manifest
from vidcache.synth import moving_square_frame, write_video

TARGET_RATIO = 1.3  # ray / local, same machine, same decode workers


def build_corpus(root: Path, *, videos: int, seconds: float, fps: float, width: int, height: int) -> Path:
    rows = ["path,labels"]
    colours, directions = ("red", "green", "blue"), ("left", "right")
    for i in range(videos):
        colour, direction = colours[i % 3], directions[i % 2]
        name = f"v{i:03d}.mp4"
        if not (root / name).exists():
            write_video(
                root / name, int(seconds * fps), fps=fps, width=width, height=height, gop=int(fps),
                frame_fn=lambda _, t, c=colour, d=direction: moving_square_frame(
                    t, colour=c, direction=d, width=width, height=height
                ),
            )  # fmt: skip
        rows.append(f"{name},{colour}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def extract(manifest: Path, cache: Path, args: argparse.Namespace, **options: Any) -> dict[str, Any]:
    shutil.rmtree(cache, ignore_errors=True)
    config = build_config(
        clip_model=args.clip_model, clip_pretrained="none", fps=args.sample_fps, device="cpu", **options
    )
    entries = read_manifest(str(manifest))
    started = time.perf_counter()
    summary = Extractor(cache, config, command="bench_engine").run(entries)
    seconds = time.perf_counter() - started
    assert summary.extracted == len(entries) and not summary.failed, summary.failures
    return {"seconds": round(seconds, 2), "videos_per_s": round(len(entries) / seconds, 2), "rows": summary.rows}


def same_rows(a: Path, b: Path) -> bool:
    with Cache(a) as ca, Cache(b) as cb:
        ids = ca.video_ids("clip")
        return ids == cb.video_ids("clip") and all(
            np.array_equal(ca.read(v, "clip")[0], cb.read(v, "clip")[0]) for v in ids
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each video")
    parser.add_argument("--src-fps", type=float, default=12.0)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--sample-fps", type=float, default=2.0, help="--fps of the extract")
    parser.add_argument(
        "--clip-model", default="ViT-B-32", help="open_clip architecture, random weights (vidcache-tiny: the floor)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement; median reported")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the corpus here (default: temp dir)")
    parser.add_argument("--json", action="store_true", help="print only a JSON document on stdout")
    args = parser.parse_args(argv)

    import ray

    from vidcache.extract.views.clip.model import register_vidcache_configs

    register_vidcache_configs()  # vidcache-tiny
    log = (lambda *_: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-engine-"))
    workdir.mkdir(parents=True, exist_ok=True)
    manifest = build_corpus(
        workdir / "videos", videos=args.videos, seconds=args.seconds, fps=args.src_fps, width=args.width,
        height=args.height,
    )  # fmt: skip
    caches = workdir / "caches"
    runs: dict[str, list[dict]] = {"local_w2": [], "ray_w2": [], "ray_w1": []}
    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start_s = round(time.perf_counter() - started, 2)
    log(f"ray cluster started in {ray_start_s} s ({os.cpu_count()} CPUs)")
    try:
        # the first Ray run of a job starts its worker processes (imports torch, vidcache): timed apart, as a
        # user's run pays it once however long the corpus
        warm = build_corpus(workdir / "warm", videos=2, seconds=1.0, fps=args.src_fps, width=args.width,
                            height=args.height)  # fmt: skip
        cold_start = extract(warm, caches / "warm", args, engine="ray", workers=2)["seconds"]
        log(f"ray warm-up run (2 videos, worker processes starting): {cold_start} s")
        for repeat in range(args.repeats):
            for name, options in (
                ("local_w2", {"engine": "local", "workers": 2}),
                ("ray_w2", {"engine": "ray", "workers": 2}),
                ("ray_w1", {"engine": "ray", "workers": 1}),
            ):
                result = extract(manifest, caches / name, args, **options)
                runs[name].append(result)
                log(f"[{repeat + 1}/{args.repeats}] {name}: {result['seconds']} s, {result['videos_per_s']} videos/s")
            for name in ("ray_w2", "ray_w1"):
                assert same_rows(caches / "local_w2", caches / name), f"{name} rows differ from the local engine's"
    finally:
        ray.shutdown()
    median = {name: statistics.median(r["seconds"] for r in found) for name, found in runs.items()}
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "ray": ray.__version__},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "ray_start_s": ray_start_s,
        "ray_first_run_2_videos_s": cold_start,
        "median_s": median,
        "videos_per_s": {name: round(args.videos / s, 2) for name, s in median.items()},
        "ratio_ray_over_local": round(median["ray_w2"] / median["local_w2"], 3),
        "speedup_ray_2_over_1_workers": round(median["ray_w1"] / median["ray_w2"], 3),
        "target_ratio": TARGET_RATIO,
        "rows_identical": True,
        "runs": runs,
    }
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2, sort_keys=True))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
