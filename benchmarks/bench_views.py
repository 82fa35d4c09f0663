"""Views benchmark: what each `vidcache extract` view costs on CPU, what it stores, TV-L1's overhead, and memory.

Generates videos with `vidcache.synth` (a moving smooth texture with an AAC tone) and runs the real
CLI, `python -m vidcache.cli extract ... --device cpu --json`, as a child process per measurement,
each into a fresh cache, with random weights (`--clip-model vidcache-tiny --clip-pretrained none`,
`--s3d-weights none`; TV-L1 and the log-mel statistics need none):

1. cost per video-second of each view: one run per view (`clip`, `s3d`, `audio`, `flow` = flow +
   motion, `motion`, and `video` once per transformers family with its tiny random model
   `--video-model vidcache-tiny-FAMILY` at the family's default sampling) and one with
   `clip,s3d,audio,flow`; wall time of the child, the extract run's
   own `seconds` and its per-stage `decode_seconds` / `model_seconds` / `write_seconds`;
2. bytes stored per video-second per view, from the shard files of the all-views cache
   (`dataset.id.get_storage_size()` of every dataset in each view's group);
3. TV-L1 overhead: `--views motion --workers 1` (one flow pair at a time) vs
   `cv2.optflow.DualTVL1OpticalFlow_create().calc` called directly on the same pairs, decoded
   beforehand with plain PyAV and resized with the same function. Both sides use one OpenCV thread
   (`cv2.setNumThreads(1)` here, `OPENCV_FOR_THREADS_NUM=1` for the child); then, as shipped, with
   OpenCV's default threads, for 1 worker vs 1 calling thread and `--workers 2` vs 2 threads;
4. bounded memory: peak RSS of the child (`os.wait4` rusage) for `--views clip,s3d,audio,flow` on a
   long vs a short video of the same resolution (`--mem-minutes`, default 1,10), and the RSS sampled
   from /proc during the longest run (second half vs first half);
5. on a CUDA machine only: RAFT pairs/s, S3D clips/s and each video family's clips/s at its real
   size (the config class's defaults, random weights) on the GPU.

    .venv/bin/python benchmarks/bench_views.py            # table on stdout, progress on stderr
    .venv/bin/python benchmarks/bench_views.py --json     # one JSON document on stdout
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import cv2
import h5py
import numpy as np
import torch

from vidcache.cache.reader import Cache
from vidcache.extract.consumers import resize_short_side
from vidcache.extract.decode import frame_to_rgb
from vidcache.extract.views.flow import FlowConfig
from vidcache.extract.views.flow.methods import motion_descriptor
from vidcache.synth import shifting_texture, smooth_texture, write_video

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import OtherLoad, bench_workdir, progress_log  # sibling script: machine load from /proc/stat

TARGET_TVL1_OVERHEAD = 1.1  # vidcache flow stage / bare OpenCV TV-L1 on the same pairs
TARGET_MEMORY_RATIO = 1.1  # peak RSS long video / short video ("does not grow with length")
VIEW_RUNS = (  # (name in the report, --views)
    ("clip", "clip"),
    ("s3d", "s3d"),
    ("audio", "audio"),
    ("flow", "flow"),
    ("motion", "motion"),
    ("all", "clip,s3d,audio,flow"),
)
OVERHEAD_CONFIGS = (  # (name, --workers, OpenCV threads on both sides; None = OpenCV's default)
    ("w1-cv1", 1, 1),  # the target: one pair at a time, single-threaded TV-L1 on both sides
    ("w1-cvdefault", 1, None),  # as shipped with 1 worker: OpenCV parallelises each calc over its pool
    ("w2-cvdefault", 2, None),  # as shipped (default --workers 2) vs 2 calling threads
)
RANDOM_WEIGHTS = ["--clip-model", "vidcache-tiny", "--clip-pretrained", "none", "--s3d-weights", "none"]
VIDEO_FAMILIES = "videomae,vjepa2,xclip,timesformer,vivit"
FLOW_DEFAULTS = FlowConfig()


# videos -----------------------------------------------------------------------------------------
def make_video(path: Path, *, seconds: float, fps: float, width: int, height: int, seed: int, preset: str) -> Path:
    """A smooth texture moving (2, 1) px per frame with a sine tone: trackable flow everywhere, an
    audio stream for the audio view."""
    if path.exists():
        return path
    texture = smooth_texture(height, width, seed=seed)
    return write_video(
        path,
        round(seconds * fps),
        fps=fps,
        frame_fn=shifting_texture(texture, dx_px_per_frame=2, dy_px_per_frame=1),
        width=width,
        height=height,
        tone_hz=220.0 * (1 + seed % 4),
        options={"preset": preset},
    )


def write_manifest(path: Path, videos: list[Path]) -> Path:
    lines = ["path,video_id"] + [f"{v.resolve()},{v.stem}" for v in videos]
    path.write_text("\n".join(lines) + "\n")
    return path


# child processes --------------------------------------------------------------------------------
def _rss_mib(pid: int) -> float | None:
    """Resident set size of a running process (Linux /proc), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def run_child(argv: list[str], log_dir: Path, name: str, *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `argv` and wait for it with `os.wait4`, which gives that child's own rusage: peak RSS
    (ru_maxrss, KiB on Linux) and CPU seconds. Its RSS is also sampled every 0.25 s (`rss_samples`,
    (seconds since start, MiB)). stdout/stderr go to files in `log_dir`."""
    out_path, err_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)

        def sample() -> None:
            while not done.wait(0.25):
                rss = _rss_mib(proc.pid)
                if rss is not None:
                    samples.append((round(time.perf_counter() - started, 2), round(rss, 1)))

        sampler = threading.Thread(target=sample, daemon=True, name=f"rss-{name}")
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "rc": proc.returncode,
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_util": cpu / wall / (os.cpu_count() or 1),
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "rss_samples": samples,
        "stdout": out_path.read_text(errors="replace"),
        "stderr": err_path.read_text(errors="replace"),
    }


def extract(
    manifest: Path,
    cache: Path,
    views: str,
    options: dict[str, Any],
    log_dir: Path,
    name: str,
    *,
    env: dict[str, str] | None = None,
) -> dict:
    """`vidcache extract MANIFEST --cache CACHE --views VIEWS --device cpu --json` with random weights
    into a fresh cache; returns the child's figures with the parsed JSON summary under "summary"."""
    shutil.rmtree(cache, ignore_errors=True)
    argv = [sys.executable, "-m", "vidcache.cli", "extract", str(manifest), "--cache", str(cache)]
    argv += ["--views", views, "--device", "cpu", "--json", *RANDOM_WEIGHTS]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    child = run_child(argv, log_dir, name, env=env)
    lines = child["stdout"].strip().splitlines()
    if child["rc"] != 0 or not lines:
        raise RuntimeError(f"extract {views} exited {child['rc']}:\n{child['stderr'][-3000:]}")
    summary = json.loads(lines[-1])
    if summary["failed"]:
        raise RuntimeError(f"extract {views}: failed videos {summary['failures']}")
    child["summary"] = summary
    child["argv"] = argv[2:]
    del child["stdout"], child["stderr"]
    return child


def rss_profile(samples: list[tuple[float, float]], parts: int = 4) -> list[float]:
    """Peak sampled RSS (MiB) in each of `parts` equal slices of the run's wall time: flat when memory
    does not grow as the video goes on (the first slice includes start-up and model loading)."""
    if not samples:
        return []
    end = samples[-1][0]
    peaks = [0.0] * parts
    for t, rss in samples:
        k = min(parts - 1, int(t / end * parts)) if end > 0 else 0
        peaks[k] = max(peaks[k], rss)
    return peaks


# 2. bytes stored --------------------------------------------------------------------------------
def stored_bytes(cache: Path) -> dict[str, dict[str, Any]]:
    """Per view, over every shard: `allocated_bytes` = `dataset.id.get_storage_size()` summed over all
    datasets of the view's group (features, timestamps, end times, per-video index): what the files
    hold, including the unfilled part of each dataset's last chunk (HDF5 allocates whole chunks, and
    vidcache sizes chunks to about 1 MiB); `data_bytes` = what the rows themselves take: features
    (their raw size, or their storage size when gzip-compressed) + 8 bytes per timestamp column."""
    out: dict[str, dict[str, Any]] = {}
    for shard in sorted((cache / "shards").glob("*.h5")):
        with h5py.File(shard, "r") as h5:
            for view, group in h5.items():
                if not isinstance(group, h5py.Group):
                    continue
                entry = out.setdefault(
                    view, {"rows": 0, "allocated_bytes": 0, "features_allocated_bytes": 0, "data_bytes": 0}
                )
                features = group["features"]
                rows = features.shape[0]
                entry["rows"] += rows
                entry["row_dim"] = features.shape[1]
                entry["dtype"] = str(features.dtype)
                entry["compression"] = features.compression
                entry["chunk_rows"] = features.chunks[0]
                storage = features.id.get_storage_size()
                raw = features.size * features.dtype.itemsize
                columns = 2 if "end_timestamps_s" in group else 1
                entry["features_allocated_bytes"] += storage
                entry["data_bytes"] += (storage if features.compression else raw) + 8 * columns * rows
                entry["allocated_bytes"] += sum(d.id.get_storage_size() for d in group.values())
    return out


# 3. TV-L1 overhead ------------------------------------------------------------------------------
def bare_pairs(path: Path, *, fps: float, step: int, short_side: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """The flow pairs vidcache takes, found with a plain PyAV loop: for each sample time t = k / fps
    in [0, duration), the frame on screen at t and the one on screen `step` nominal frame intervals
    later (pairs whose second time is past the end are dropped), resized with vidcache's
    `resize_short_side` and converted to grey with cv2.COLOR_RGB2GRAY, as `TVL1Flow.compute` does.
    Returns (t, grey first, grey second)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 30)
        times, greys = [], []
        for frame in container.decode(stream):
            small = resize_short_side(frame_to_rgb(frame, max_short_side=short_side), short_side)
            times.append(float(frame.time))
            greys.append(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
    frame_dt = 1.0 / rate
    end = times[-1] + frame_dt
    starts = times[0] + np.arange(max(1, math.ceil((end - times[0]) * fps - 1e-9))) / fps
    stamps = np.asarray(times)
    pairs = []
    for t in starts:
        second_t = t + step * frame_dt
        if second_t >= end - 1e-9:
            continue
        i = int(np.searchsorted(stamps, t + 1e-9, side="right")) - 1
        j = int(np.searchsorted(stamps, second_t + 1e-9, side="right")) - 1
        pairs.append((times[i], greys[i], greys[j]))
    return pairs


def bare_tvl1(
    videos: list[list[tuple[float, np.ndarray, np.ndarray]]], threads: int, flows: list
) -> tuple[float, float, float]:
    """`DualTVL1OpticalFlow.calc` on every pair, videos shared out over `threads` Python threads
    (one solver object per thread, one pair at a time, as vidcache's decode workers run it).
    Returns (wall seconds, summed seconds inside calc, CPU seconds of the calling threads (OpenCV's
    own pool threads, if it uses them, not counted)); the flows ([N, 2, H, W] per video) go to `flows`."""
    tasks: queue.Queue = queue.Queue()
    for number in range(len(videos)):
        tasks.put(number)
    flows[:] = [None] * len(videos)
    calc_s = [0.0] * threads
    cpu_s = [0.0] * threads

    def worker(slot: int) -> None:
        solver = cv2.optflow.DualTVL1OpticalFlow_create()
        cpu0 = time.thread_time()
        while True:
            try:
                number = tasks.get_nowait()
            except queue.Empty:
                break
            out = []
            for _, first, second in videos[number]:
                t0 = time.perf_counter()
                flow = solver.calc(first, second, None)
                calc_s[slot] += time.perf_counter() - t0
                out.append(flow.transpose(2, 0, 1))
            flows[number] = np.stack(out)
        cpu_s[slot] = time.thread_time() - cpu0

    pool = [threading.Thread(target=worker, args=(slot,), name=f"bare-tvl1-{slot}") for slot in range(threads)]
    started = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return time.perf_counter() - started, sum(calc_s), sum(cpu_s)


def check_same_pairs(cache: Path, videos: list[Path], pairs: list[list], flows: list[np.ndarray]) -> dict[str, Any]:
    """Do vidcache's cached motion rows come from the same pairs? Compare their times and the motion
    descriptors of the bare flows with the cached ones."""
    times_equal, max_diff, rows = True, 0.0, 0
    with Cache(cache) as reader:
        for path, video_pairs, flow in zip(videos, pairs, flows, strict=True):
            cached, stamps = reader.read(path.stem, "motion")
            bare = motion_descriptor(
                flow,
                grid=FLOW_DEFAULTS.motion_grid,
                orientations=FLOW_DEFAULTS.motion_orientations,
                magnitude_edges_px=FLOW_DEFAULTS.motion_magnitude_edges_px,
            )
            ours = np.array([p[0] for p in video_pairs])
            if len(stamps) != len(ours) or not np.allclose(stamps, ours, atol=1e-6):
                times_equal = False
                continue
            rows += len(stamps)
            max_diff = max(max_diff, float(np.abs(np.asarray(cached, np.float32) - bare).max()))
    return {"times_equal": times_equal, "rows_compared": rows, "max_abs_motion_diff": max_diff}


# 5. GPU -----------------------------------------------------------------------------------------
def gpu_figures(device: torch.device, *, seconds: float = 5.0) -> dict[str, Any]:
    """RAFT-small (random weights, 12 updates) pairs/s at 128x170, and S3D (random weights) clips/s
    on 32x224x224 windows in batches of 2, via the classes extract uses; timed after one warm-up."""
    from vidcache.extract.views.flow.methods import FLOW_METHODS
    from vidcache.extract.views.s3d import S3dConfig
    from vidcache.extract.views.s3d.model import S3dEncoder

    def rate(fn: Callable[[], int]) -> float:
        fn()
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            done += fn()  # both return numpy arrays, so the device has finished
        return done / (time.perf_counter() - started)

    rng = np.random.default_rng(0)
    raft = FLOW_METHODS.create("raft", config=FlowConfig(method="raft", weights="none"), device=device)
    first = rng.integers(0, 256, (8, 128, 170, 3), dtype=np.uint8)
    second = np.roll(first, 2, axis=2)
    s3d = S3dEncoder(config=S3dConfig(weights="none"), device=device, dtype="float16")
    clips = torch.from_numpy(rng.integers(0, 256, (2, 32, 3, 224, 224), dtype=np.uint8))
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "raft_small_pairs_per_s": round(rate(lambda: len(raft.compute(first, second))), 1),
        "s3d_clips_per_s": round(rate(lambda: len(s3d.encode(clips))), 2),
        "video_clips_per_s": video_clip_rates(device, rate, families=VIDEO_FAMILIES.split(",")),
    }


def video_clip_rates(device: torch.device, rate: Callable[[Callable[[], int]], float], *, families: list[str]) -> dict:
    """Clips/s of each transformers video family at its real size (the config class's defaults: ViT-B
    class encoders, their default frames per clip and input size) with random weights, batches of 2,
    through the encoder extract uses (fp16 autocast on CUDA)."""
    import transformers

    from vidcache.extract.views.video.families import FAMILIES
    from vidcache.extract.views.video.model import HfVideoEncoder
    from vidcache.extract.views.video.settings import VideoConfig

    out = {}
    for family in families:
        config = transformers.AutoConfig.for_model(family)
        torch.manual_seed(0)
        encoder = HfVideoEncoder(config=VideoConfig(model=f"vidcache-tiny-{family}"), device=device, dtype="float16")
        model = getattr(transformers, FAMILIES[family].model_class)(config, **FAMILIES[family].model_kwargs)
        encoder.model = model.eval().to(device)  # the real-size architecture in place of the tiny one
        side = int(getattr(config, "image_size", None) or getattr(config, "crop_size", None) or 224)
        side = int(getattr(getattr(config, "vision_config", None), "image_size", side))
        frames = int(getattr(config, "num_frames", None) or getattr(config, "frames_per_clip", None) or 8)
        frames = int(getattr(getattr(config, "vision_config", None), "num_frames", frames))
        clips = torch.randint(0, 256, (2, frames, 3, side, side), dtype=torch.uint8)
        out[family] = {
            "frames": frames,
            "side": side,
            "clips_per_s": round(rate(lambda e=encoder, c=clips: len(e.encode(c))), 2),
        }
    return out


# driver -----------------------------------------------------------------------------------------
def corpus(args: argparse.Namespace, workdir: Path) -> tuple[list[Path], Path]:
    """The `--videos` test videos (made once per workdir) and a manifest listing them."""
    videos = [
        make_video(
            workdir / "videos" / f"v{i}_{args.width}x{args.height}_{args.seconds:g}s.mp4",
            seconds=args.seconds,
            fps=args.src_fps,
            width=args.width,
            height=args.height,
            seed=i,
            preset=args.preset,
        )
        for i in range(args.videos)
    ]
    return videos, write_manifest(workdir / "manifest.csv", videos)


def view_costs(args: argparse.Namespace, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    videos, manifest = corpus(args, workdir)
    video_s = args.videos * args.seconds
    options = {
        "fps": args.fps,
        "s3d_fps": args.s3d_fps,
        "s3d_clip_len": args.s3d_clip_len,
        "s3d_stride": args.s3d_stride,
        "flow_short_side": args.flow_short_side,
        "workers": args.workers,
    }
    runs: dict[str, Any] = {}
    others = OtherLoad().start()
    runs_asked = [(name, views, {}) for name, views in VIEW_RUNS]
    runs_asked[-1:-1] = [
        (f"video-{family}", "video", {"video_model": f"vidcache-tiny-{family}"}) for family in args.video_families
    ]  # before "all"
    for name, views, extra in runs_asked:
        cache = workdir / "caches" / name
        run = extract(manifest, cache, views, {**options, **extra}, workdir, f"view-{name}")
        run.pop("rss_samples")
        s = run["summary"]
        run["per_video_s"] = {"wall": run["wall_s"] / video_s, "run": s["seconds"] / video_s}
        runs[name] = run
        log(
            f"  {name:<17} wall {run['wall_s']:6.1f} s  run {s['seconds']:6.1f} s  decode {s['decode_seconds']:6.1f} s"
            f"  model {s['model_seconds']:6.1f} s  write {s['write_seconds']:5.2f} s  rows {s['rows']}"
            f"  peak {run['peak_rss_mib']:.0f} MiB"
        )
        if name == "all":
            runs[name]["stored"] = stored_bytes(cache)
            runs[name]["cache_dir_bytes"] = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "videos": len(videos),
        "video_seconds": video_s,
        "options": options,
        "runs": runs,
        "other_processes_cores": others.stop(),
    }


def tvl1_overhead(args: argparse.Namespace, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    videos, manifest = corpus(args, workdir)
    started = time.perf_counter()
    pairs = [bare_pairs(v, fps=args.fps, step=1, short_side=args.flow_short_side) for v in videos]
    log(f"  decoded {sum(map(len, pairs))} pairs with plain PyAV in {time.perf_counter() - started:.1f} s (untimed)")
    default_threads = cv2.getNumThreads()
    cv2.optflow.DualTVL1OpticalFlow_create().calc(pairs[0][0][1], pairs[0][0][2], None)  # warm-up
    options = {"fps": args.fps, "flow_short_side": args.flow_short_side}
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in OVERHEAD_CONFIGS}
    same_pairs = None
    others = OtherLoad().start()
    for rep in range(args.overhead_repeats):
        for name, workers, cv_threads in OVERHEAD_CONFIGS:
            row: dict[str, Any] = {}
            cache = workdir / "caches" / f"motion-{name}"
            flows: list = []
            # alternate which side goes first, so a change in outside load hits both alike
            for side in ("vidcache", "bare") if rep % 2 == 0 else ("bare", "vidcache"):
                if side == "bare":
                    cv2.setNumThreads(cv_threads or -1)  # -1: OpenCV's default
                    try:
                        wall, calc, cpu = bare_tvl1(pairs, workers, flows)
                    finally:
                        cv2.setNumThreads(-1)
                    row.update(bare_wall_s=wall, bare_calc_s=calc, bare_thread_cpu_s=cpu)
                    continue
                env = {"OPENCV_FOR_THREADS_NUM": str(cv_threads)} if cv_threads else {}
                run = extract(manifest, cache, "motion", {**options, "workers": workers}, workdir, "motion", env=env)
                run.pop("rss_samples")
                s = run["summary"]
                row.update(
                    vidcache_stage_s=s["decode_seconds"],
                    vidcache_run_s=s["seconds"],
                    vidcache_wall_s=run["wall_s"],
                    rows=s["rows"].get("motion", 0),
                )
            if same_pairs is None:
                same_pairs = check_same_pairs(cache, videos, pairs, flows)
            shutil.rmtree(cache, ignore_errors=True)
            rounds[name].append(row)
            log(
                f"  [{rep + 1}/{args.overhead_repeats}] {name}: vidcache stage {row['vidcache_stage_s']:.2f} s, "
                f"run {row['vidcache_run_s']:.2f} s (child {row['vidcache_wall_s']:.2f} s); bare OpenCV "
                f"{row['bare_wall_s']:.2f} s (inside calc {row['bare_calc_s']:.2f} s, calling threads' CPU "
                f"{row['bare_thread_cpu_s']:.2f} s)"
            )
    out: dict[str, Any] = {
        "pairs": sum(map(len, pairs)),
        "pair_size_hw": list(pairs[0][0][1].shape),
        "cv2_default_threads": default_threads,
        "cv2_version": cv2.__version__,
        "same_pairs": same_pairs,
        "rounds": rounds,
        "other_processes_cores": others.stop(),
        "configs": {},
    }
    for name, workers, cv_threads in OVERHEAD_CONFIGS:
        rows = rounds[name]

        def med(key: str, rows: list[dict[str, Any]] = rows) -> float:
            return statistics.median(r[key] for r in rows)

        summary: dict[str, Any] = {key: round(med(key), 3) for key in rows[0] if key != "rows"}
        summary.update(workers=workers, opencv_threads=cv_threads or default_threads)
        # one worker: its busy time (decode_seconds) is the wall time of the whole flow stage
        summary["ratio_stage"] = round(med("vidcache_stage_s") / med("bare_wall_s"), 3) if workers == 1 else None
        summary["ratio_run"] = round(med("vidcache_run_s") / med("bare_wall_s"), 3)
        summary["ratio_child"] = round(med("vidcache_wall_s") / med("bare_wall_s"), 3)
        out["configs"][name] = summary
    return out


def memory(args: argparse.Namespace, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    options = {
        "fps": args.mem_fps,
        "s3d_fps": args.mem_s3d_fps,
        "s3d_clip_len": args.mem_s3d_clip_len,
        "s3d_stride": args.mem_s3d_stride,
        "flow_short_side": args.mem_flow_short_side,
        "video_timeout_s": 7200,  # the decode deadline also runs while a worker waits for the model
    }
    out: dict[str, Any] = {"views": args.mem_views, "options": options, "runs": {}}
    others = OtherLoad().start()
    for minutes in args.mem_minutes:
        label = f"{minutes:g}min"
        started = time.perf_counter()
        path = make_video(
            workdir / "videos" / f"mem_{args.mem_width}x{args.mem_height}_{minutes:g}min.mp4",
            seconds=60 * minutes,
            fps=args.src_fps,
            width=args.mem_width,
            height=args.mem_height,
            seed=7,
            preset="ultrafast",
        )
        made = time.perf_counter() - started
        manifest = write_manifest(workdir / f"manifest-{label}.csv", [path])
        cache = workdir / "caches" / f"mem-{label}"
        run = extract(manifest, cache, args.mem_views, options, workdir, f"mem-{label}")
        run["rss_quarters_mib"] = rss_profile(run["rss_samples"])
        stored = stored_bytes(cache)
        shutil.rmtree(cache, ignore_errors=True)
        run["minutes"] = minutes
        run["video_bytes"] = path.stat().st_size
        run["rows_bytes"] = sum(v["data_bytes"] for v in stored.values())
        out["runs"][label] = run
        log(
            f"  {minutes:g} min video (made in {made:.0f} s), extract {run['wall_s']:.1f} s, "
            f"peak RSS {run['peak_rss_mib']:.0f} MiB (per quarter of the run: "
            f"{', '.join(f'{q:.0f}' for q in run['rss_quarters_mib'])}), rows {run['summary']['rows']}"
        )
    peaks = [run["peak_rss_mib"] for run in out["runs"].values()]
    out["ratio"] = round(peaks[-1] / peaks[0], 3)  # longest / shortest
    # within the longest run: peak of its second half / peak of its first half (1.0: no growth as it goes on)
    quarters = list(out["runs"].values())[-1]["rss_quarters_mib"]
    out["growth_within_longest"] = round(max(quarters[2:]) / max(quarters[:2]), 3) if len(quarters) == 4 else None
    out["other_processes_cores"] = others.stop()
    return out


def bench(args: argparse.Namespace, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "opencv": cv2.__version__,
            "pyav": av.__version__,
            "loadavg_before": os.getloadavg(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    started = time.perf_counter()
    others = OtherLoad().start()
    if "views" in args.sections:
        log("== 1+2. cost and bytes per view (one child process per run, fresh cache each)")
        result["views"] = view_costs(args, workdir, log)
    if "tvl1" in args.sections:
        log("== 3. TV-L1 overhead")
        result["tvl1"] = tvl1_overhead(args, workdir, log)
    if "memory" in args.sections:
        log("== 4. peak RSS, long vs short video")
        result["memory"] = memory(args, workdir, log)
    if torch.cuda.is_available():
        log("== 5. GPU")
        result["gpu"] = gpu_figures(torch.device("cuda"))
    else:
        log("== 5. GPU: no GPU (torch.cuda.is_available() is False), skipped")
        result["gpu"] = None
    result["machine"]["loadavg_after"] = os.getloadavg()
    result["machine"]["other_processes_cores"] = others.stop()
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


def print_views(v: dict[str, Any], a: dict[str, Any]) -> None:
    """Tables 1 (cost per view) and 2 (bytes stored per view)."""
    print(
        f"\n1. cost per view: {v['videos']} videos x {a['seconds']:g} s = {v['video_seconds']:g} video-s, "
        f"{a['width']}x{a['height']} {a['src_fps']:g} fps + AAC tone; --device cpu --workers {a['workers']}; "
        f"random weights (vidcache-tiny CLIP, S3D, vidcache-tiny-FAMILY video models: 32 px, 4 frames per clip)"
    )
    print(
        f"   --fps {a['fps']:g} (clip frames, flow pairs); S3D {a['s3d_fps']:g} fps, {a['s3d_clip_len']}-frame "
        f"windows, stride {a['s3d_stride']}; audio logmel-stats (0.96 s examples); flow tvl1 at short side "
        f"{a['flow_short_side']}; other processes: {v['other_processes_cores']} cores"
    )
    head = f"   {'views':<17} {'rows':>28} {'wall s':>7} {'run s':>6} {'run s/vid-s':>11} {'decode s':>8}"
    print(head + f" {'model s':>7} {'write s':>7} {'peak RSS MiB':>12} {'CPU':>5}")
    for name, run in v["runs"].items():
        s = run["summary"]
        rows = ",".join(f"{k}={n}" for k, n in s["rows"].items())
        print(
            f"   {name:<17} {rows:>28} {run['wall_s']:7.1f} {s['seconds']:6.1f} {run['per_video_s']['run']:11.3f}"
            f" {s['decode_seconds']:8.1f} {s['model_seconds']:7.1f} {s['write_seconds']:7.2f}"
            f" {run['peak_rss_mib']:12.0f} {run['cpu_util']:5.0%}"
        )
    print("   (wall: child process incl. Python/torch start-up; run: the extract's own `seconds`; decode s is summed")
    print("    over the workers' videos and includes TV-L1 and the log-mel front end, computed in the workers)")
    stored, cache_bytes = v["runs"]["all"]["stored"], v["runs"]["all"]["cache_dir_bytes"]
    print(
        f"\n2. bytes stored per view (all-views cache; cache dir {cache_bytes / 1e6:.2f} MB on disk incl. catalog); "
        "data = rows only, allocated = HDF5 storage incl. unfilled chunk space and index"
    )
    print(
        f"   {'view':<7} {'rows':>5} {'row':>16} {'chunk rows':>10} {'data B/row':>10} {'data B/video-s':>14} "
        f"{'MB/video-h':>10} {'allocated B':>11} {'alloc B/video-s':>15}"
    )
    for view, e in stored.items():
        per_s = e["data_bytes"] / v["video_seconds"]
        shape = f"{e['row_dim']} {e['dtype']}" + (" gz" if e["compression"] else "")
        print(
            f"   {view:<7} {e['rows']:5d} {shape:>16} {e['chunk_rows']:10d} {e['data_bytes'] / max(e['rows'], 1):10.0f}"
            f" {per_s:14.0f} {per_s * 3600 / 1e6:10.2f} {e['allocated_bytes']:11d}"
            f" {e['allocated_bytes'] / v['video_seconds']:15.0f}"
        )


def print_report(res: dict[str, Any]) -> None:
    m, a = res["machine"], res["args"]
    print(f"\nmachine: {m['cpus']} CPUs, {m['platform']}; torch {m['torch']} ({m['torch_threads']} threads), ", end="")
    print(f"OpenCV {m['opencv']}, PyAV {m['pyav']}; {'GPU' if res['gpu'] else 'no GPU'}")
    print(
        f"load average (1 min): {m['loadavg_before'][0]:.2f} before, {m['loadavg_after'][0]:.2f} after; other "
        f"processes kept {m['other_processes_cores']} of {m['cpus']} cores busy (whole run, {res['total_s']:.0f} s)"
    )
    if "views" in res:
        print_views(res["views"], a)
    if "tvl1" in res:
        t = res["tvl1"]
        h, w = t["pair_size_hw"]
        print(
            f"\n3. TV-L1 overhead: {t['pairs']} pairs at {w}x{h} (grey), OpenCV {t['cv2_version']} (default "
            f"{t['cv2_default_threads']} threads); median of {a['overhead_repeats']} rounds; other processes: "
            f"{t['other_processes_cores']} cores"
        )
        sp = t["same_pairs"]
        print(
            f"   same pairs: times equal {sp['times_equal']}, motion rows compared {sp['rows_compared']}, "
            f"max |descriptor diff| {sp['max_abs_motion_diff']:.2g}"
        )
        print(
            f"   {'config':<13} {'workers':>7} {'cv threads':>10} {'vidcache stage s':>16} {'run s':>6} "
            f"{'child s':>7} {'bare OpenCV s':>13} {'stage/bare':>10} {'run/bare':>8}"
        )
        for name, r in t["configs"].items():
            stage = f"{r['vidcache_stage_s']:.2f}" if r["ratio_stage"] is not None else "-"
            ratio = f"{r['ratio_stage']:.3f}" if r["ratio_stage"] is not None else "-"
            print(
                f"   {name:<13} {r['workers']:7d} {r['opencv_threads']:10d} {stage:>16} {r['vidcache_run_s']:6.2f} "
                f"{r['vidcache_wall_s']:7.2f} {r['bare_wall_s']:13.2f} {ratio:>10} {r['ratio_run']:8.3f}"
            )
        ratio, target = t["configs"]["w1-cv1"]["ratio_stage"], TARGET_TVL1_OVERHEAD
        verdict = "OK" if ratio <= target else "MISSED"
        print(f"   vidcache flow stage / bare TV-L1 (1 worker, 1 thread) = {ratio:.3f} (target <= {target}) {verdict}")
    if "memory" in res:
        mem = res["memory"]
        o = mem["options"]
        print(
            f"\n4. peak RSS of extract --views {mem['views']} on one {a['mem_width']}x{a['mem_height']} "
            f"{a['src_fps']:g} fps video: --fps {o['fps']:g}, S3D {o['s3d_fps']:g} fps {o['s3d_clip_len']}-frame "
            f"windows stride {o['s3d_stride']}, flow short side {o['flow_short_side']}; other processes: "
            f"{mem['other_processes_cores']} cores"
        )
        print(
            f"   {'minutes':>7} {'rows':>50} {'wall s':>7} {'rows MB':>8} {'peak RSS MiB':>12}  "
            "sampled peak per quarter of the run (MiB)"
        )
        for run in mem["runs"].values():
            rows = ",".join(f"{k}={n}" for k, n in run["summary"]["rows"].items())
            print(
                f"   {run['minutes']:7g} {rows:>50} {run['wall_s']:7.1f} {run['rows_bytes'] / 1e6:8.2f}"
                f" {run['peak_rss_mib']:12.0f}  {' / '.join(f'{q:.0f}' for q in run['rss_quarters_mib'])}"
            )
        verdict = "OK" if mem["ratio"] <= TARGET_MEMORY_RATIO else "MISSED"
        print(f"   peak RSS longest / shortest = {mem['ratio']:.3f} (target <= {TARGET_MEMORY_RATIO}) {verdict}")
        growth = mem["growth_within_longest"]
        if growth is not None:
            print(f"   longest run, sampled peak of its second half / first half = {growth:.3f} (1.0 = no growth)")
    if res["gpu"]:
        g = res["gpu"]
        print(f"\n5. GPU {g['device']}: RAFT-small {g['raft_small_pairs_per_s']} pairs/s (8 x 128x170), ", end="")
        print(f"S3D {g['s3d_clips_per_s']} clips/s (2 x 32x224x224)")
    else:
        print("\n5. GPU: no GPU, skipped")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="videos for 1-3 (default 4)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each (default 10)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--src-fps", type=float, default=30.0, help="frame rate of every video (default 30)")
    parser.add_argument("--preset", default="ultrafast", help="x264 preset")
    parser.add_argument("--fps", type=float, default=1.0, help="--fps: clip frames and flow pairs (default 1)")
    parser.add_argument("--s3d-fps", type=float, default=15.0)
    parser.add_argument("--s3d-clip-len", type=int, default=32)
    parser.add_argument("--s3d-stride", type=int, default=32)
    parser.add_argument("--flow-short-side", type=int, default=FLOW_DEFAULTS.short_side)
    parser.add_argument(
        "--video-families",
        type=lambda text: [f for f in text.split(",") if f],
        default=VIDEO_FAMILIES.split(","),
        help=f"video view runs in 1, one per family (default {VIDEO_FAMILIES}; empty: none)",
    )
    parser.add_argument("--workers", type=int, default=2, help="--workers for the per-view runs (default 2)")
    parser.add_argument("--overhead-repeats", type=int, default=2, help="rounds for 3, median reported (default 2)")
    parser.add_argument(
        "--mem-minutes",
        type=lambda text: sorted(float(v) for v in text.split(",")),
        default=[1.0, 10.0],
        help="video lengths for 4, comma-separated (default 1,10); ratio = longest / shortest",
    )
    parser.add_argument("--mem-views", default="clip,s3d,audio,flow", help="--views for 4")
    parser.add_argument("--mem-width", type=int, default=160)
    parser.add_argument("--mem-height", type=int, default=120)
    parser.add_argument("--mem-fps", type=float, default=0.5)
    parser.add_argument("--mem-s3d-fps", type=float, default=2.0)
    parser.add_argument("--mem-s3d-clip-len", type=int, default=16)
    parser.add_argument("--mem-s3d-stride", type=int, default=16)
    parser.add_argument("--mem-flow-short-side", type=int, default=64)
    parser.add_argument(
        "--sections",
        type=lambda text: sorted(set(text.split(","))),
        default=["memory", "tvl1", "views"],
        help="which of views (1 and 2), tvl1 (3), memory (4) to run, comma-separated (default all)",
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep videos and logs here (default: temp dir)")
    parser.add_argument("--json", action="store_true", help="print only a JSON document on stdout")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the JSON document to this file")
    args = parser.parse_args(argv)
    if args.videos < 1 or args.overhead_repeats < 1:
        parser.error("--videos and --overhead-repeats must be >= 1")
    if len(args.mem_minutes) < 2:
        parser.error("--mem-minutes needs at least two lengths")
    if not args.sections or set(args.sections) - {"views", "tvl1", "memory"}:
        parser.error("--sections: choose from views, tvl1, memory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = progress_log(args.json)
    with bench_workdir(args.workdir, prefix="vidcache-bench-views-") as workdir:
        result = bench(args, workdir, log)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
