"""Extraction benchmark: is `vidcache extract` as fast as its slowest stage (decode or model)?

Builds a small synthetic corpus (default 8 videos, 10 s, 30 fps, 320x240) and a CSV manifest, then
measures on the same frames, median of `--repeats` runs each:

a) decode only: `vidcache.extract.stage.VideoStage` (the extract workers' own decode stage) over all videos,
   in as many threads as the extractor's `--workers`, exactly as its decode workers do;
b) model only: `encoder.encode` over the same prepared frames in batches of `--batch-size`;
c) full extraction: `vidcache.extract.runner.Extractor` into a fresh temporary cache. The pipeline
   time runs from the extractor's first progress call (model loaded, cache open) to its last video
   written; the end-to-end time (with model loading) is reported beside it.

Reports ratio = extract / max(decode_only, model_only) (target <= 1.1), frames/s, process CPU
utilisation, and GPU utilisation when a CUDA device is used.

    .venv/bin/python benchmarks/bench_extract.py
    .venv/bin/python benchmarks/bench_extract.py --clip-model vidcache-tiny --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from vidcache.config import RunConfig, SamplingConfig
from vidcache.device import resolve_device
from vidcache.extract.config import ExtractConfig
from vidcache.extract.consumers import ClipFrames
from vidcache.extract.encoder import FrameEncoder
from vidcache.extract.runner import Extractor, ExtractSummary
from vidcache.extract.stage import VideoStage
from vidcache.extract.views.clip import ClipConfig
from vidcache.extract.views.clip.model import ClipEncoder
from vidcache.manifest import VideoEntry, read_manifest
from vidcache.synth import write_video

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import (  # sibling script: the same moving test content
    OtherLoad,
    bench_workdir,
    make_frame_fn,
    progress_log,
)

TARGET_RATIO = 1.1  # extract / max(decode_only, model_only)


# corpus -----------------------------------------------------------------------------------------
def build_corpus(workdir: Path, args: argparse.Namespace) -> list[VideoEntry]:
    """`--videos` synthetic videos and a manifest.csv listing them, read back with `read_manifest`."""
    videos = workdir / "videos"
    lines = ["path,video_id"]
    for i in range(args.videos):
        name = f"v{i:03d}_{args.width}x{args.height}_{args.seconds:g}s.mp4"
        path = videos / name
        if not path.exists():
            write_video(
                path,
                round(args.seconds * args.src_fps),
                fps=args.src_fps,
                frame_fn=make_frame_fn(args.width, args.height, seed=i),
                width=args.width,
                height=args.height,
                gop=args.gop,
                options={"preset": args.preset},
            )
        lines.append(f"videos/{name},v{i:03d}")
    manifest = workdir / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return read_manifest(manifest)


# utilisation ------------------------------------------------------------------------------------
class GpuSampler:
    """Samples GPU utilisation (%) every `interval_s` in a background thread: `torch.cuda.utilization()`
    (needs pynvml) or, failing that, `nvidia-smi`."""

    def __init__(self, device: torch.device, interval_s: float = 0.1):
        self.index = device.index if device.index is not None else torch.cuda.current_device()
        self.interval_s = interval_s
        self.samples: list[float] = []
        self.source = "torch.cuda.utilization"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gpu-util")

    def _read(self) -> float | None:
        if self.source == "torch.cuda.utilization":
            try:
                return float(torch.cuda.utilization(self.index))
            except Exception:
                self.source = "nvidia-smi" if shutil.which("nvidia-smi") else "none"
        if self.source == "nvidia-smi":
            argv = ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            try:
                return float(done.stdout.strip().splitlines()[0])
            except (ValueError, IndexError):
                self.source = "none"
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self._read()
            if value is not None:
                self.samples.append(value)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"source": self.source, "mean_pct": None, "samples": 0}
        return {
            "source": self.source,
            "mean_pct": round(statistics.mean(self.samples), 1),
            "max_pct": max(self.samples),
            "samples": len(self.samples),
        }


@contextmanager
def measure(device: torch.device, out: dict[str, Any]) -> Iterator[None]:
    """Wall time, process CPU utilisation (all threads, in units of the machine's cores) and, on CUDA,
    GPU utilisation of the block, written into `out`."""
    gpu = GpuSampler(device) if device.type == "cuda" else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if gpu:
        gpu.__enter__()
    try:
        yield
    finally:
        if gpu:
            gpu.__exit__()
        wall = time.perf_counter() - wall0
        out["wall_s"] = wall
        out["cpu_util"] = (time.process_time() - cpu0) / wall / (os.cpu_count() or 1)
        out["gpu"] = gpu.summary() if gpu else None


# the three measurements -------------------------------------------------------------------------
def decode_only(entries: list[VideoEntry], config: ExtractConfig, encoder: FrameEncoder) -> list[torch.Tensor]:
    """What the extractor's decode workers do, without the model: sampled frames -> prepared uint8
    batches, `workers` videos at a time. Returns the batches (input of the model-only run)."""
    run, sampling = config.run, config.sampling
    tasks: queue.Queue = queue.Queue()
    for entry in entries:
        tasks.put(entry)
    batches: list[torch.Tensor] = []
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            try:
                entry = tasks.get_nowait()
            except queue.Empty:
                return
            try:
                consumers = [ClipFrames(encoder, sampling, batch_size=run.batch_size)]
                stage = VideoStage(entry, consumers, run=run)
                for chunk in stage:
                    batches.append(chunk.data)
                if stage.outcomes.get("clip", ("done",))[0] != "done":
                    raise RuntimeError(f"{entry.video_id}: {stage.outcomes['clip'][1]}")
            except BaseException as exc:  # reported by the caller
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker, name=f"bench-decode-{i}") for i in range(min(run.workers, len(entries)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return batches


def model_only(frames: torch.Tensor, encoder: FrameEncoder, batch_size: int) -> int:
    """`encoder.encode` over `frames` in batches, as the extractor's model thread does."""
    done = 0
    for start in range(0, len(frames), batch_size):
        done += len(encoder.encode(frames[start : start + batch_size]))
    return done


@contextmanager
def batch_sizes(encoder_class: type[FrameEncoder], sizes: list[int]) -> Iterator[None]:
    """Record the size of every batch the extractor's model thread encodes (wraps `encode`)."""
    original = encoder_class.encode

    def encode(self: FrameEncoder, batch: torch.Tensor) -> Any:
        sizes.append(len(batch))
        return original(self, batch)

    encoder_class.encode = encode  # type: ignore[method-assign]
    try:
        yield
    finally:
        encoder_class.encode = original  # type: ignore[method-assign]


def extract(entries: list[VideoEntry], config: ExtractConfig, cache: Path) -> tuple[ExtractSummary, float, float]:
    """A real `Extractor.run` into `cache`; returns its summary, the end-to-end seconds and the pipeline
    seconds (first progress call, after model load and planning, to the last video written)."""
    marks: list[float] = []
    last_done: list[float] = []

    def progress(summary: ExtractSummary) -> None:
        now = time.perf_counter()
        marks.append(now)
        if summary.extracted + summary.failed + summary.skipped >= summary.total and not last_done:
            last_done.append(now)

    started = time.perf_counter()
    summary = Extractor(cache, config, command="bench_extract", progress=progress).run(entries)
    total = time.perf_counter() - started
    pipeline = (last_done[0] if last_done else marks[-1]) - marks[0]
    return summary, total, pipeline


# driver -----------------------------------------------------------------------------------------
def bench(args: argparse.Namespace, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Build the corpus, run the three measurements `--repeats` times each, return all numbers."""
    load_before = os.getloadavg()
    started = time.perf_counter()
    entries = build_corpus(workdir, args)
    log(f"corpus: {len(entries)} videos in {workdir / 'videos'} ({time.perf_counter() - started:.1f} s)")
    config = ExtractConfig.create(
        views=("clip",),
        sampling=SamplingConfig(fps=args.fps),
        clip=ClipConfig(model=args.clip_model, pretrained=args.clip_pretrained),
        run=RunConfig(
            device=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
            decode_threads=args.decode_threads,
            seek=args.seek,
        ),
    )
    device = resolve_device(args.device)
    started = time.perf_counter()
    encoder = ClipEncoder(config=config.clip, device=device, allow_download=False)
    load_s = time.perf_counter() - started
    log(f"model {args.clip_model} ({args.clip_pretrained}) on {device}: loaded in {load_s:.1f} s")

    # warm-up: file cache, torch kernels and thread pools
    batches = decode_only(entries, config, encoder)
    frames = torch.cat(batches)
    model_only(frames[:8], encoder, args.batch_size)

    runs: dict[str, list[dict[str, Any]]] = {"decode_only": [], "model_only": [], "extract": []}
    others = OtherLoad().start()
    for rep in range(args.repeats):
        row: dict[str, Any] = {}
        with measure(device, row):
            batches = decode_only(entries, config, encoder)
        row["frames"] = sum(len(b) for b in batches)
        runs["decode_only"].append(row)
        log(f"  [{rep + 1}/{args.repeats}] decode only   {row['wall_s']:7.2f} s  cpu {row['cpu_util']:.0%}")

        row = {}
        with measure(device, row):
            row["frames"] = model_only(frames, encoder, args.batch_size)
        runs["model_only"].append(row)
        log(f"  [{rep + 1}/{args.repeats}] model only    {row['wall_s']:7.2f} s  cpu {row['cpu_util']:.0%}")

        row = {}
        cache = workdir / f"cache-{rep}-{time.time_ns()}"
        sizes: list[int] = []
        with batch_sizes(type(encoder), sizes), measure(device, row):
            summary, total, pipeline = extract(entries, config, cache)
        shutil.rmtree(cache, ignore_errors=True)
        if summary.failed:
            raise RuntimeError(f"extraction failed for some videos: {summary.failures}")
        row.update(
            end_to_end_s=total,
            wall_s=pipeline,
            rows=summary.frames,
            decode_seconds_sum=summary.decode_seconds,
            model_seconds=summary.model_seconds,
            write_seconds=summary.write_seconds,
            device=summary.device,
            batch_sizes=sizes,
        )
        runs["extract"].append(row)
        log(
            f"  [{rep + 1}/{args.repeats}] extract       {pipeline:7.2f} s  (end to end {total:.2f} s, "
            f"model {summary.model_seconds:.2f} s, write {summary.write_seconds:.2f} s) cpu {row['cpu_util']:.0%}"
            f" batches {sizes}"
        )

    def median(stage: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[stage])

    n_frames = len(frames)
    dec, mod, ext = median("decode_only", "wall_s"), median("model_only", "wall_s"), median("extract", "wall_s")
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "other_processes_cores": others.stop(),
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "videos": len(entries),
        "encoded_frames": n_frames,
        "stored_rows": runs["extract"][0]["rows"],
        "model_load_s": round(load_s, 3),
        "median_s": {"decode_only": round(dec, 3), "model_only": round(mod, 3), "extract": round(ext, 3)},
        "min_s": {stage: round(min(r["wall_s"] for r in runs[stage]), 3) for stage in runs},
        "extract_end_to_end_s": round(median("extract", "end_to_end_s"), 3),
        "frames_per_s": {
            "decode_only": round(n_frames / dec, 1),
            "model_only": round(n_frames / mod, 1),
            "extract": round(n_frames / ext, 1),
        },
        "cpu_util": {stage: round(median(stage, "cpu_util"), 3) for stage in runs},
        "gpu_util": {stage: [r["gpu"] for r in runs[stage]] for stage in runs} if device.type == "cuda" else None,
        "ratio_extract_over_max": round(ext / max(dec, mod), 3),
        "ratio_extract_over_sum": round(ext / (dec + mod), 3),
        "target_ratio": TARGET_RATIO,
        "runs": runs,
    }
    return result


def print_report(res: dict[str, Any]) -> None:
    """The human-readable table and the ratio against the target."""
    m = res["machine"]
    gpu = f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"
    print(f"\nmachine: {m['cpus']} CPUs{gpu}; torch {m['torch']} ({m['torch_threads']} threads); device {m['device']}")
    print(
        f"load average (1 min): {m['loadavg_before'][0]:.2f} before, {m['loadavg_after'][0]:.2f} after; "
        f"other processes kept {m['other_processes_cores']} of {m['cpus']} cores busy during the timings"
    )
    a = res["args"]
    print(
        f"corpus: {res['videos']} videos x {a['seconds']:g} s, {a['src_fps']:g} fps, {a['width']}x{a['height']}; "
        f"sampling {a['fps']:g} fps -> {res['encoded_frames']} frames; model {a['clip_model']} "
        f"({a['clip_pretrained']}), batch {a['batch_size']}, workers {a['workers']}"
    )
    print(f"\n  {'stage':<14} {'median s':>9} {'min s':>7} {'frames/s':>9} {'CPU util':>9} {'GPU util':>9}")
    for stage in ("decode_only", "model_only", "extract"):
        gpu_text = "n/a"
        if res["gpu_util"]:
            means = [g["mean_pct"] for g in res["gpu_util"][stage] if g and g["mean_pct"] is not None]
            gpu_text = f"{statistics.median(means):.0f}%" if means else "n/a"
        print(
            f"  {stage:<14} {res['median_s'][stage]:9.2f} {res['min_s'][stage]:7.2f} {res['frames_per_s'][stage]:9.1f} "
            f"{res['cpu_util'][stage]:9.0%} {gpu_text:>9}"
        )
    print(f"  extract end to end (incl. model load {res['model_load_s']:.1f} s): {res['extract_end_to_end_s']:.2f} s")
    print(f"  model batch sizes in the extractor (first run): {res['runs']['extract'][0]['batch_sizes']}")
    ratio = res["ratio_extract_over_max"]
    verdict = "OK" if ratio <= res["target_ratio"] else "MISSED"
    print(f"\n  extract / max(decode, model) = {ratio:.3f}  (target <= {res['target_ratio']}) {verdict}")
    print(f"  extract / (decode + model)   = {res['ratio_extract_over_sum']:.3f}  (1.0 = no overlap at all)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8, help="videos in the corpus (default 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each video (default 10)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--src-fps", type=float, default=30.0, help="frame rate of the videos (default 30)")
    parser.add_argument("--gop", type=int, default=250, help="x264 keyframe interval")
    parser.add_argument("--preset", default="veryfast", help="x264 preset")
    parser.add_argument("--fps", type=float, default=2.0, help="sampling rate (default 2)")
    parser.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture (default ViT-B-32)")
    parser.add_argument(
        "--clip-pretrained", default="none", help="weights; 'none' = random init of the real architecture"
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, default=RunConfig.batch_size)
    parser.add_argument("--workers", type=int, default=2, help="decode workers (as --workers; default 2)")
    parser.add_argument("--decode-threads", type=int, default=RunConfig.decode_threads)
    parser.add_argument("--seek", choices=["auto", "never", "always"], default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; median reported")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the corpus here (default: temp dir)")
    parser.add_argument("--json", action="store_true", help="print only a JSON document on stdout")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.videos < 1:
        parser.error("--repeats and --videos must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = progress_log(args.json)
    with bench_workdir(args.workdir, prefix="vidcache-bench-extract-") as workdir:
        result = bench(args, workdir, log)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
