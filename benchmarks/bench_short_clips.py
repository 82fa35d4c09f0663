"""Short clips (issue 29, item 4): is `vidcache extract`'s fixed cost per video small next to decoding?

Builds `--videos` synthetic clips (default 300 × 2 s, 320x240, 30 fps, `vidcache.synth.write_video`)
and a manifest, then alternates, `--repeats` times, on the same files:

a) the decode floor: one Python process, a bare PyAV loop that opens each file, decodes every frame
   and converts the sampled ones (one every 1/`--fps` s from the start) to RGB;
b) `vidcache extract` as a whole CLI process (tiny random CLIP, `--fps`, `--workers`) into a fresh
   cache; its `--json` `seconds` runs from the start of extraction (with the model load) to the
   end, without the process start-up and imports;
c) the floor loop again in `--workers` threads: what the same workers gain on this machine;
d) the same `vidcache extract` on the first `--small-videos` clips: the difference between b) and d)
   is the steady-state cost per video (process start-up, imports and model load cancel out).

e) the steady state measured directly: one process extracts the first `--small-videos` clips (imports,
   model load), then the rest, timed alone (the b) − d) difference of two processes is noisier).

Ratios are printed (medians over the repeats), for the whole process and for the steady state:
- `ratio_cores`: extract wall per video × workers / floor per file (the issue's definition: the
  floor uses one core, extract has `--workers` decode workers; target <= 1.5);
- `ratio_wall`: extract wall per video / floor per file;
- `ratio_threads`: extract wall per video / the floor loop's in `--workers` threads (same files,
  same sampling, same number of workers);
- `ratio_cpu`: extract CPU seconds (user + sys, all threads) per video / the floor's: on a machine
  where other processes hold the cores, extract's threads share one scheduler share, so CPU time
  is what the workers cannot hide.

    .venv/bin/python benchmarks/bench_short_clips.py --videos 300 --repeats 2
    .venv/bin/python benchmarks/bench_short_clips.py --videos 40 --repeats 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av

from vidcache.synth import write_video

TARGET_RATIO = 1.5


def build_clips(workdir: Path, args: argparse.Namespace) -> Path:
    """`--videos` clips and manifest.csv listing them (kept between runs of the same shape)."""
    videos = workdir / "videos"
    lines = ["path,video_id"]
    for i in range(args.videos):
        path = videos / f"c{i:05d}_{args.width}x{args.height}_{args.seconds:g}s.mp4"
        if not path.exists():
            write_video(
                path, round(args.seconds * args.src_fps), fps=args.src_fps, width=args.width, height=args.height
            )
        lines.append(f"{path},c{i:05d}")
    manifest = workdir / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def floor_one(path: str, fps: float) -> int:
    """Open, decode every frame, convert the frames sampled at k/fps s to RGB; returns frames kept."""
    kept, next_t = 0, 0.0
    with av.open(path) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.time is not None and frame.time + 1e-6 >= next_t:
                frame.to_ndarray(format="rgb24")
                kept += 1
                next_t += 1.0 / fps
    return kept


def run_floor(paths: list[str], fps: float, *, threads: int = 1) -> dict[str, float]:
    start, cpu_start = time.perf_counter(), time.process_time()
    if threads == 1:
        kept = sum(floor_one(p, fps) for p in paths)
    else:  # what the same loop gains from as many threads as extract has workers on this machine
        with ThreadPoolExecutor(threads) as pool:
            kept = sum(pool.map(lambda p: floor_one(p, fps), paths))
    seconds, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    n = len(paths)
    return {
        "seconds": seconds,
        "per_video_ms": 1000 * seconds / n,
        "cpu_per_video_ms": 1000 * cpu_s / n,
        "frames": kept,
    }


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_extract(manifest: Path, cache: Path, args: argparse.Namespace) -> dict[str, float]:
    shutil.rmtree(cache, ignore_errors=True)
    vidcache = Path(sys.executable).with_name("vidcache")
    cmd = [str(vidcache), "extract", str(manifest), "--cache", str(cache), "--clip-model", "vidcache-tiny"]
    cmd += ["--clip-pretrained", "none", "--fps", f"{args.fps:g}", "--workers", str(args.workers), "--json"]
    start, cpu_start = time.perf_counter(), children_cpu_s()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds, cpu_s = time.perf_counter() - start, children_cpu_s() - cpu_start
    if done.returncode != 0:
        raise SystemExit(f"extract failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-1500:]}")
    summary = json.loads(done.stdout)
    n = len(manifest.read_text().splitlines()) - 1
    if summary["extracted"] != n:
        raise SystemExit(f"extract extracted {summary['extracted']} of {n} videos")
    return {
        "videos": n,
        "seconds": seconds,
        "cpu_s": cpu_s,
        "per_video_ms": 1000 * seconds / n,
        "cpu_per_video_ms": 1000 * cpu_s / n,
        "pipeline_seconds": summary["seconds"],
        "pipeline_per_video_ms": 1000 * summary["seconds"] / n,
        "frames": summary["frames"],
    }


IN_PROCESS = """
import json, resource, sys, time
from vidcache.config import RunConfig, SamplingConfig
from vidcache.extract.api import extract
from vidcache.extract.config import ExtractConfig
from vidcache.extract.views.clip.settings import ClipConfig
from vidcache.manifest import read_manifest
manifest, cache, small, workers, fps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
entries = read_manifest(manifest)
config = ExtractConfig.create(views=("clip",), clip=ClipConfig(model="vidcache-tiny", pretrained="none"),
                              sampling=SamplingConfig(fps=fps), run=RunConfig(workers=workers))
extract(entries[:small], cache, config)  # imports, model load, first batch: not timed
start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
summary = extract(entries[small:], cache, config)
after = resource.getrusage(resource.RUSAGE_SELF)
cpu_s = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
print(json.dumps({"videos": len(entries) - small, "seconds": time.perf_counter() - start, "cpu_s": cpu_s,
                  "extracted": summary.extracted}))
"""


def run_in_process(manifest: Path, cache: Path, args: argparse.Namespace) -> dict[str, float]:
    """The steady state measured directly: one process extracts the first `--small-videos` clips
    (imports, model load), then the rest, timed alone (same config as the CLI run)."""
    shutil.rmtree(cache, ignore_errors=True)
    cmd = [sys.executable, "-c", IN_PROCESS, str(manifest), str(cache), str(args.small_videos)]
    cmd += [str(args.workers), f"{args.fps:g}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"in-process extract failed ({done.returncode}): {done.stderr[-1500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["extracted"] != result["videos"]:
        raise SystemExit(f"in-process extract extracted {result['extracted']} of {result['videos']} videos")
    result["per_video_ms"] = 1000 * result["seconds"] / result["videos"]
    result["cpu_per_video_ms"] = 1000 * result["cpu_s"] / result["videos"]
    return result


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    manifest = build_clips(workdir, args)
    lines = manifest.read_text().splitlines()
    paths = [line.split(",")[0] for line in lines[1:]]
    small = workdir / "manifest_small.csv"  # the same process on a few clips: its fixed cost
    small.write_text("\n".join(lines[: args.small_videos + 1]) + "\n")
    floors, floors_w, extracts, smalls, inprocs = [], [], [], [], []
    for _ in range(args.repeats):  # alternate, so all five see the same machine load
        floors.append(run_floor(paths, args.fps))
        floors_w.append(run_floor(paths, args.fps, threads=args.workers))
        extracts.append(run_extract(manifest, workdir / "cache", args))
        smalls.append(run_extract(small, workdir / "cache_small", args))
        inprocs.append(run_in_process(manifest, workdir / "cache_inproc", args))
    med = statistics.median
    floor_ms, floor_cpu_ms = med(f["per_video_ms"] for f in floors), med(f["cpu_per_video_ms"] for f in floors)
    floor_w_ms = med(f["per_video_ms"] for f in floors_w)
    whole_ms, whole_cpu_ms = med(e["per_video_ms"] for e in extracts), med(e["cpu_per_video_ms"] for e in extracts)
    extra = args.videos - args.small_videos
    # steady state: what each video past the first few adds (start-up, imports, model load cancel out)
    steady_ms = med(1000 * (e["seconds"] - s["seconds"]) / extra for e, s in zip(extracts, smalls, strict=True))
    steady_cpu_ms = med(1000 * (e["cpu_s"] - s["cpu_s"]) / extra for e, s in zip(extracts, smalls, strict=True))
    fixed_s = med(s["seconds"] - args.small_videos * steady_ms / 1000 for s in smalls)
    inproc_ms, inproc_cpu_ms = med(r["per_video_ms"] for r in inprocs), med(r["cpu_per_video_ms"] for r in inprocs)
    w = args.workers
    return {
        "videos": args.videos,
        "workers": w,
        "clip": f"{args.seconds:g} s, {args.width}x{args.height}, {args.src_fps:g} fps, sampled at {args.fps:g} fps",
        "floor_per_video_ms": round(floor_ms, 2),
        "floor_cpu_per_video_ms": round(floor_cpu_ms, 2),
        "floor_in_workers_threads_per_video_ms": round(floor_w_ms, 2),
        "extract_per_video_ms": round(whole_ms, 2),
        "extract_cpu_per_video_ms": round(whole_cpu_ms, 2),
        "extract_steady_per_video_ms": round(steady_ms, 2),
        "extract_steady_cpu_per_video_ms": round(steady_cpu_ms, 2),
        "extract_fixed_s": round(fixed_s, 2),
        "extract_in_process_per_video_ms": round(inproc_ms, 2),
        "extract_in_process_cpu_per_video_ms": round(inproc_cpu_ms, 2),
        "ratio_cores_whole": round(whole_ms * w / floor_ms, 2),
        "ratio_cores_in_process": round(inproc_ms * w / floor_ms, 2),
        "ratio_cores_steady": round(steady_ms * w / floor_ms, 2),
        "ratio_wall_whole": round(whole_ms / floor_ms, 2),
        "ratio_wall_steady": round(steady_ms / floor_ms, 2),
        "ratio_threads_whole": round(whole_ms / floor_w_ms, 2),
        "ratio_threads_steady": round(steady_ms / floor_w_ms, 2),
        "ratio_cpu_whole": round(whole_cpu_ms / floor_cpu_ms, 2),
        "ratio_cpu_steady": round(steady_cpu_ms / floor_cpu_ms, 2),
        "target_ratio_cores": TARGET_RATIO,
        "floors": floors,
        "floors_in_threads": floors_w,
        "extracts": extracts,
        "smalls": smalls,
        "in_process": inprocs,
        "loadavg": load_average(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=300)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--src-fps", type=float, default=30.0)
    p.add_argument("--fps", type=float, default=1.0, help="sampling rate (extract --fps)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--small-videos", type=int, default=10, help="the short run whose time is the fixed cost")
    p.add_argument("--workdir", type=Path, default=None, help="keep the clips here between runs")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = measure(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-short-") as tmp:
            result = measure(args, Path(tmp))
    if args.json:
        print(json.dumps(result))
        return 0
    for key, value in result.items():
        if key not in ("floors", "floors_in_threads", "extracts", "smalls", "in_process"):
            print(f"{key:32} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
