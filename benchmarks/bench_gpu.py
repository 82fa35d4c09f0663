"""The GPU check: one script that measures vidcache's GPU stage on one machine in a few minutes.

Sections, each timed, each guarded (a failing section records its error and the rest still run),
the JSON document rewritten after every section so a run cut short still leaves its numbers:

  machine     GPU, driver, torch/CUDA, CPU cores; a bf16 matmul ceiling (TFLOP/s) measured here
  corpus      synthetic H.264 videos (a few distinct encodes, copied), manifest
  model       images/s of the open_clip image tower alone (ViT-B-32, ViT-L-14; random weights of the
              real architecture): fp32, autocast bf16/fp16, bf16 weights, channels-last, and
              timm's own `vit_*_clip_224` beside it as the public reference on the same GPU; then
              the extractor's `encode` path (uint8 host frames → pinned copy → normalise → model → host)
  decode      decode-only sampled frames/s with 1 … cores workers (the extractor's own decode stage)
  extract     `Extractor.run` end to end, GPU utilisation sampled, ratio to min(decode, model)
  s3d, raft   clips/s and flow pairs/s through vidcache's encoders
  mining      exact top-k on the GPU (torch, blocked matmul) vs vidcache's FAISS path on the CPU cores,
              ids checked against a float64 NumPy brute force
  heads       training throughput (videos/s) of the heads through `vidcache.heads.train` (AMP on CUDA)
  compile     torch.compile on/off for the image towers
  nvdec       --decode-device cuda: NVDEC vs CPU decode processes (sampled frames/s at 360p, 720p,
              1080p), NVDEC's frames vs FFmpeg's (mean abs diff), end to end per model with NVDEC
              (720p) against min(decode, model) and the CPU-decode extract; "skipped: reason" without
              NVDEC (the gpu-decode extra, a GPU, the driver's decoder)

    make bench-gpu                                   # on a GPU machine (wheels from benchmarks/gpu_wheels.sh)
    .venv/bin/python benchmarks/bench_gpu.py --quick  # CPU, about a minute (the test suite runs this)

Writes OUT/bench_gpu.json (OUT = --out, default bench_out/gpu) and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, when not installed (GPU machine)

from bench_decode import make_frame_fn

from vidcache.config import RunConfig, SamplingConfig
from vidcache.device import resolve_device
from vidcache.extract.config import ExtractConfig
from vidcache.extract.nvdec import nvdec_missing
from vidcache.extract.views.clip import ClipConfig
from vidcache.extract.views.clip.model import ClipEncoder
from vidcache.extract.views.flow import FlowConfig
from vidcache.extract.views.s3d import S3dConfig
from vidcache.extract.views.s3d.model import S3dEncoder
from vidcache.manifest import VideoEntry, read_manifest
from vidcache.synth import write_video

E2E_TARGET = 0.9  # extract frames/s >= 0.9 x min(decode frames/s, model frames/s)
TIMM_TARGET = 0.8  # vidcache's image tower >= 0.8 x timm's same architecture, same GPU, same precision
TIMM_TWINS = {"ViT-B-32": "vit_base_patch32_clip_224", "ViT-L-14": "vit_large_patch14_clip_224"}


# settings ---------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Sizes of every section: the full GPU run, or `--quick` (CPU, about a minute)."""

    models: tuple[str, ...]
    model_batch: int
    min_timed_s: float
    videos: int
    distinct_videos: int
    seconds: float
    width: int
    height: int
    src_fps: float
    sample_fps: float
    extract_batch: int
    extract_models: tuple[str, ...]
    decode_workers: tuple[int, ...]
    s3d_clips: int
    s3d_frames: int
    raft_pairs: int
    raft_models: tuple[str, ...]
    mining_rows: int
    mining_queries_faiss: int
    heads_videos: int
    heads: tuple[str, ...]
    compile_models: tuple[str, ...]
    budget_s: float
    precisions: tuple[str, ...] = ("fp32", "autocast_bf16", "autocast_fp16", "bf16_weights", "channels_last_bf16")
    extra: dict[str, Any] = field(default_factory=dict)


def make_plan(args: argparse.Namespace, device: torch.device) -> Plan:
    cores = os.cpu_count() or 1
    workers = sorted({1, max(1, cores // 4), max(1, cores // 2), cores})
    if args.quick:
        return Plan(
            models=("vidcache-tiny",),
            model_batch=16,
            min_timed_s=0.2,
            videos=4,
            distinct_videos=2,
            seconds=2.0,
            width=160,
            height=90,
            src_fps=15.0,
            sample_fps=4.0,
            extract_batch=16,
            extract_models=("vidcache-tiny",),
            decode_workers=tuple(sorted({1, min(2, cores)})),
            s3d_clips=1,
            s3d_frames=16,
            raft_pairs=2,
            raft_models=("small",),
            mining_rows=3000,
            mining_queries_faiss=500,
            heads_videos=300,
            heads=("linear", "pool"),
            compile_models=(),
            budget_s=args.budget_s or 120.0,
            precisions=("fp32", "channels_last_fp32"),
        )
    return Plan(
        models=("ViT-B-32", "ViT-L-14"),
        model_batch=256,
        min_timed_s=1.5,
        videos=3 * cores,
        distinct_videos=min(4, cores),
        seconds=20.0,
        width=640,
        height=360,
        src_fps=30.0,
        sample_fps=8.0,
        extract_batch=256,
        extract_models=("ViT-B-32", "ViT-L-14"),
        decode_workers=tuple(workers),
        s3d_clips=16,
        s3d_frames=32,
        raft_pairs=32,
        raft_models=("small", "large"),
        mining_rows=200_000,
        mining_queries_faiss=10_000,
        heads_videos=20_000,
        heads=("linear", "mlp", "prototype", "pool", "temporal", "contrastive"),
        compile_models=("ViT-B-32", "ViT-L-14") if device.type == "cuda" else (),
        budget_s=args.budget_s or 450.0,
        precisions=(
            ("fp32", "autocast_bf16", "autocast_fp16", "bf16_weights", "channels_last_bf16")
            if device.type == "cuda"
            else ("fp32", "channels_last_fp32")
        ),
    )


# timing -----------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, *, min_s: float, warmup: int = 2) -> tuple[float, int]:
    """Seconds per call of `fn` (synchronised): warm-up, one calibration call, then enough calls to
    last about `min_s` (at least 3)."""
    for _ in range(warmup):
        fn()
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    one = max(time.perf_counter() - t0, 1e-6)
    calls = int(min(200, max(3, min_s / one)))
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / calls, calls


def peak_gpu_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# the document -----------------------------------------------------------------------------------
class Report:
    """The JSON document, rewritten after every section; sections run under a shared time budget."""

    def __init__(self, out_dir: Path, budget_s: float, log: Callable[[str], None]):
        self.out_dir = out_dir
        self.path = out_dir / "bench_gpu.json"
        self.started = time.perf_counter()
        self.budget_s = budget_s
        self.log = log
        self.doc: dict[str, Any] = {"sections": {}, "errors": {}, "skipped": {}}

    def left_s(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def save(self) -> None:
        self.doc["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc, indent=2, default=str))
        tmp.replace(self.path)

    def section(self, name: str, fn: Callable[[], dict[str, Any]], *, needs_s: float = 0.0) -> dict[str, Any] | None:
        if self.left_s() < needs_s:
            self.doc["skipped"][name] = f"time budget: {self.left_s():.0f} s left, section needs about {needs_s:.0f} s"
            self.log(f"[{name}] skipped ({self.doc['skipped'][name]})")
            self.save()
            return None
        self.log(f"[{name}] ...")
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:  # recorded; the other sections still run
            self.doc["errors"][name] = f"{type(exc).__name__}: {exc}"
            self.doc["sections"].setdefault(name, {})["traceback"] = traceback.format_exc(limit=6)
            self.log(f"[{name}] FAILED: {type(exc).__name__}: {exc}")
            result = None
        else:
            result["section_s"] = round(time.perf_counter() - t0, 2)
            self.doc["sections"][name] = result
            self.log(f"[{name}] done in {result['section_s']:.1f} s")
        self.save()
        return result


# machine ----------------------------------------------------------------------------------------
def machine_section(device: torch.device, plan: Plan) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
    }
    for name in ("av", "open_clip", "faiss", "timm", "h5py", "numpy"):
        try:
            module = __import__(name)
            info[f"{name}_version"] = getattr(module, "__version__", "?")
        except Exception as exc:
            info[f"{name}_version"] = f"missing ({type(exc).__name__})"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            capability=f"{props.major}.{props.minor}",
            bf16=torch.cuda.is_bf16_supported(),
        )
        if shutil.which("nvidia-smi"):
            query = "driver_version,clocks.max.sm,power.limit"
            done = subprocess.run(
                ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True
            )
            info["nvidia_smi"] = done.stdout.strip()
        n = 8192
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
        per_call, _ = time_calls(lambda: a @ b, device, min_s=0.5, warmup=3)
        info["bf16_matmul_tflops"] = round(2 * n**3 / per_call / 1e12, 1)
        del a, b
    return info


# corpus -----------------------------------------------------------------------------------------
def _encode_one(job: tuple[str, int, float, float, int, int]) -> str:
    path, seed, seconds, fps, width, height = job
    write_video(
        Path(path),
        round(seconds * fps),
        fps=fps,
        frame_fn=make_frame_fn(width, height, seed=seed),
        width=width,
        height=height,
        gop=250,
        options={"preset": "veryfast"},
    )
    return path


def corpus_section(workdir: Path, plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    """`distinct_videos` encodes (in parallel processes), copied up to `videos` files: decoding work is
    the same per file, and the corpus is built in seconds even for 3 × cores videos."""
    videos = workdir / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    tag = f"{plan.width}x{plan.height}_{plan.seconds:g}s_{plan.src_fps:g}fps"
    jobs = [
        (str(videos / f"src{i}_{tag}.mp4"), i, plan.seconds, plan.src_fps, plan.width, plan.height)
        for i in range(plan.distinct_videos)
    ]
    t0 = time.perf_counter()
    todo = [job for job in jobs if not Path(job[0]).exists()]
    if len(todo) <= 2:  # a process pool's start-up costs more than two small encodes
        for job in todo:
            _encode_one(job)
    elif todo:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(len(todo), os.cpu_count() or 1)) as pool:
            pool.map(_encode_one, todo)
    encode_s = time.perf_counter() - t0
    lines = ["path,video_id"]
    for i in range(plan.videos):
        name = f"v{i:03d}_{tag}.mp4"
        target = videos / name
        if not target.exists():
            shutil.copyfile(jobs[i % len(jobs)][0], target)
        lines.append(f"videos/{name},v{i:03d}")
    manifest = workdir / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    state["entries"] = read_manifest(manifest)
    return {
        "videos": plan.videos,
        "distinct_encodes": plan.distinct_videos,
        "seconds_each": plan.seconds,
        "resolution": f"{plan.width}x{plan.height}",
        "src_fps": plan.src_fps,
        "sample_fps": plan.sample_fps,
        "bytes": sum(p.stat().st_size for p in videos.glob("v*.mp4")),
        "encode_s": round(encode_s, 1),
    }


# model only -------------------------------------------------------------------------------------
def _precision_context(device: torch.device, precision: str):
    if "bf16" in precision and device.type == "cuda" and not precision.startswith("bf16_weights"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if "fp16" in precision and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _tower_rate(
    tower: torch.nn.Module, device: torch.device, precision: str, batch: int, min_s: float
) -> dict[str, Any]:
    dtype = torch.bfloat16 if precision == "bf16_weights" else torch.float32
    module = tower.to(device=device, dtype=dtype)
    x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
    if precision.startswith("channels_last"):
        module = module.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    reset_peak(device)
    with torch.inference_mode(), _precision_context(device, precision):
        per_call, calls = time_calls(lambda: module(x), device, min_s=min_s)
    module.to(dtype=torch.float32, memory_format=torch.contiguous_format)
    return {"images_per_s": round(batch / per_call, 1), "calls": calls, "peak_gpu_mib": peak_gpu_mib(device)}


def _open_clip_tower(model_name: str) -> torch.nn.Module:
    from vidcache.extract.views.clip.model import load_clip

    model, *_ = load_clip(ClipConfig(model=model_name, pretrained="none"))
    return model.visual.eval()


def _timm_tower(model_name: str) -> torch.nn.Module | None:
    twin = TIMM_TWINS.get(model_name)
    if twin is None:
        return None
    import timm

    return timm.create_model(twin, pretrained=False, num_classes=0).eval()


def model_section(device: torch.device, plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    """Image towers alone, on device-resident random input, per precision; timm's twin beside it."""
    result: dict[str, Any] = {"batch": plan.model_batch}
    for model_name in plan.models:
        row: dict[str, Any] = {}
        tower = _open_clip_tower(model_name)
        for precision in plan.precisions:
            row[precision] = _tower_rate(tower, device, precision, plan.model_batch, plan.min_timed_s)
        main = "autocast_bf16" if device.type == "cuda" else "fp32"
        try:
            twin = _timm_tower(model_name)
        except Exception as exc:
            row["timm"] = {"error": f"{type(exc).__name__}: {exc}"}
            twin = None
        if twin is not None:
            row["timm"] = {
                "model": TIMM_TWINS[model_name],
                main: _tower_rate(twin, device, main, plan.model_batch, plan.min_timed_s),
            }
            ours, theirs = row[main]["images_per_s"], row["timm"][main]["images_per_s"]
            row["vs_timm"] = {"precision": main, "ratio": round(ours / theirs, 3), "target": TIMM_TARGET}
            del twin
        tower.cpu()
        del tower
        reset_peak(device)
        result[model_name] = row
    return result


def encode_path_section(device: torch.device, plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    """The extractor's own `encode` on host uint8 frames (pinned copy, normalise, model, back to the
    host): the model capacity the extract pipeline can reach, per model, at its batch size."""
    result: dict[str, Any] = {"batch": plan.extract_batch}
    for model_name in plan.extract_models:
        encoder = ClipEncoder(
            config=ClipConfig(model=model_name, pretrained="none"), device=device, allow_download=False
        )
        frames = torch.randint(0, 256, (plan.extract_batch * 4, 3, 224, 224), dtype=torch.uint8)
        batches = [frames[i : i + plan.extract_batch] for i in range(0, len(frames), plan.extract_batch)]
        reset_peak(device)

        def run_all(encoder=encoder, batches=batches) -> None:
            for batch in batches:
                encoder.encode(batch)

        per_call, calls = time_calls(run_all, device, min_s=plan.min_timed_s)
        result[model_name] = {
            "images_per_s": round(len(frames) / per_call, 1),
            "calls": calls,
            "peak_gpu_mib": peak_gpu_mib(device),
        }
        state.setdefault("encoders", {})[model_name] = encoder
    return result


# decode and extract -----------------------------------------------------------------------------
def _extract_config(plan: Plan, device: torch.device, model_name: str, workers: int) -> ExtractConfig:
    return ExtractConfig.create(
        views=("clip",),
        sampling=SamplingConfig(fps=plan.sample_fps),
        clip=ClipConfig(model=model_name, pretrained="none"),
        run=RunConfig(device=device.type, batch_size=plan.extract_batch, workers=workers),
    )


def decode_only_processes(entries: list[VideoEntry], config: ExtractConfig, encoders: dict[str, Any]) -> int:
    """The extractor's decode stage in process mode without the model: its own `process_worker` threads
    (one decode process each, `config.run.workers` of them) feeding a queue that this thread drains.
    Returns the sampled frames that arrived (prepared uint8, in the parent)."""
    import queue
    import threading

    from vidcache.extract.decode_process import decode_spec, process_context, process_worker
    from vidcache.extract.stages import ChunkMessage, VideoTask
    from vidcache.extract.watchdog import DecodeWatch

    tasks: queue.Queue = queue.Queue()
    for index, entry in enumerate(entries):
        tasks.put(VideoTask(index, entry, None, tuple(config.views)))
    out: queue.Queue = queue.Queue(maxsize=max(4, 2 * config.run.workers))
    stop, watch = threading.Event(), DecodeWatch(limit_s=600.0)
    spec, ctx = decode_spec(config, encoders), process_context()
    threads = [
        threading.Thread(target=process_worker, args=(slot, tasks, out, stop, watch), kwargs={"spec": spec, "ctx": ctx})
        for slot in range(min(config.run.workers, len(entries)))
    ]
    for thread in threads:
        thread.start()
    frames, done = 0, 0
    while done < len(entries):
        message = out.get()
        if isinstance(message, ChunkMessage):
            frames += len(message.chunk.data)
        else:  # VideoDecoded
            done += 1
            if message.n_chunks is None:
                raise RuntimeError(f"decode failed: {message.outcomes}")
    for thread in threads:
        thread.join()
    return frames


def decode_section(device: torch.device, plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    """Sampled frames/s of the extractor's decode stage alone (decode + sample + resize/crop to the
    model's uint8 input), with 1 … cores workers, as processes (the CUDA default) and as threads."""
    from bench_extract import decode_only

    entries: list[VideoEntry] = state["entries"]
    model_name = plan.extract_models[0]
    encoder = state["encoders"][model_name]
    result: dict[str, Any] = {"by_workers": {}, "threads_by_workers": {}}
    decode_only(entries[:1], _extract_config(plan, device, model_name, 1), encoder)  # warm
    decode_only_processes(entries[:1], _extract_config(plan, device, model_name, 1), {"clip": encoder})
    for workers in plan.decode_workers:
        subset = entries[: max(2, min(len(entries), 2 * workers))]
        config = _extract_config(plan, device, model_name, workers)
        for key, run in (
            ("by_workers", lambda s=subset, c=config: decode_only_processes(s, c, {"clip": encoder})),
            ("threads_by_workers", lambda s=subset, c=config: sum(len(b) for b in decode_only(s, c, encoder))),
        ):
            t0 = time.perf_counter()
            frames = run()
            wall = time.perf_counter() - t0
            result[key][str(workers)] = {
                "videos": len(subset),
                "frames": frames,
                "frames_per_s": round(frames / wall, 1),
                "video_s_per_s": round(len(subset) * plan.seconds / wall, 1),
            }
    for key, name in (("by_workers", "scaling"), ("threads_by_workers", "threads_scaling")):
        rates = result[key]
        one, most = rates[str(plan.decode_workers[0])], rates[str(plan.decode_workers[-1])]
        result[name] = {
            "workers": plan.decode_workers[-1],
            "speedup": round(most["frames_per_s"] / one["frames_per_s"], 2),
            "efficiency": round(most["frames_per_s"] / one["frames_per_s"] / plan.decode_workers[-1], 2),
        }
    return result


def decode_variants_section(device: torch.device, plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    """Why decoding stops scaling: the whole corpus with workers = cores, under FFmpeg's own thread count
    per decoder (0 = one per core, for every one of the workers) or 1, torch's intra-op threads (used by
    the resize in each worker) at the default or 1, and decode workers as threads or as processes."""
    import dataclasses

    from bench_extract import decode_only

    entries: list[VideoEntry] = state["entries"]
    encoder = state["encoders"][plan.extract_models[0]]
    cores = os.cpu_count() or 1
    default_threads = torch.get_num_threads()
    base = _extract_config(plan, device, plan.extract_models[0], cores)
    result: dict[str, Any] = {"workers": cores, "torch_threads_default": default_threads, "variants": {}}
    for ffmpeg_threads, torch_threads in ((0, default_threads), (1, default_threads), (0, 1), (1, 1)):
        config = dataclasses.replace(base, run=dataclasses.replace(base.run, decode_threads=ffmpeg_threads))
        torch.set_num_threads(torch_threads)
        try:
            t0 = time.perf_counter()
            frames = sum(len(b) for b in decode_only(entries, config, encoder))
            wall = time.perf_counter() - t0
        finally:
            torch.set_num_threads(default_threads)
        name = f"threads ffmpeg={ffmpeg_threads} torch={torch_threads}"
        result["variants"][name] = {"frames": frames, "frames_per_s": round(frames / wall, 1)}
    # the product's own process path (one fork-server child per worker, chunks through pipes)
    decode_only_processes(entries[:cores], base, {"clip": encoder})  # fork server started and warm
    t0 = time.perf_counter()
    frames = decode_only_processes(entries, base, {"clip": encoder})
    wall = time.perf_counter() - t0
    rate = {"frames": frames, "frames_per_s": round(frames / wall, 1)}
    result["variants"]["processes (--decode-in processes)"] = rate
    return result


def extract_section(device: torch.device, plan: Plan, state: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """`Extractor.run` end to end on the whole corpus with workers = cores, per model; decode-only and
    model-only on the same frames; GPU utilisation sampled during the extract."""
    from bench_extract import decode_only, extract, measure, model_only

    entries: list[VideoEntry] = state["entries"]
    # one core is left to the main process (model batches, kernel launches, writing): with every core
    # decoding, the model thread starved (ViT-L-14 reached 0.79 of min(decode, model) on the H200 run 3)
    workers = max(1, (os.cpu_count() or 1) - 1)
    result: dict[str, Any] = {"workers": workers, "batch": plan.extract_batch}
    for model_name in plan.extract_models:
        encoder = state["encoders"][model_name]
        config = _extract_config(plan, device, model_name, workers)
        batches = decode_only(entries[: len(entries) // 4 or 1], config, encoder)  # frames for model-only
        frames = torch.cat(batches)
        decode_row: dict[str, Any] = {}
        decode_in = "processes" if device.type == "cuda" else "threads"  # what extract's auto picks
        with measure(device, decode_row):
            if decode_in == "processes":
                n_decoded = decode_only_processes(entries, config, {"clip": encoder})
            else:
                n_decoded = sum(len(b) for b in decode_only(entries, config, encoder))
        model_row: dict[str, Any] = {}
        model_only(frames[: plan.extract_batch], encoder, plan.extract_batch)  # warm
        with measure(device, model_row):
            model_only(frames, encoder, plan.extract_batch)
        reset_peak(device)
        extract_row: dict[str, Any] = {}
        cache = workdir / f"cache-{model_name}-{time.time_ns()}"
        with measure(device, extract_row):
            summary, end_to_end_s, pipeline_s = extract(entries, config, cache)
        shutil.rmtree(cache, ignore_errors=True)
        if summary.failed:
            raise RuntimeError(f"extract failed for some videos: {summary.failures}")
        n = n_decoded
        decode_fps, model_fps = n / decode_row["wall_s"], len(frames) / model_row["wall_s"]
        extract_fps = summary.frames / pipeline_s
        result[model_name] = {
            "frames": n,
            "rows": summary.frames,
            "decode_in": summary.decode_in,
            "decode_frames_per_s": round(decode_fps, 1),
            "model_frames_per_s": round(model_fps, 1),
            "extract_frames_per_s": round(extract_fps, 1),
            "extract_end_to_end_s": round(end_to_end_s, 2),
            "extract_pipeline_s": round(pipeline_s, 2),
            "model_seconds_in_extract": round(summary.model_seconds, 2),
            "write_seconds_in_extract": round(summary.write_seconds, 2),
            "bound": "decode" if decode_fps < model_fps else "model",
            "ratio_extract_over_min": round(extract_fps / min(decode_fps, model_fps), 3),
            "target": E2E_TARGET,
            "cpu_util": {
                "decode": decode_row["cpu_util"],
                "model": model_row["cpu_util"],
                "extract": extract_row["cpu_util"],
            },
            "gpu_util": {"model": model_row["gpu"], "extract": extract_row["gpu"]},
            "peak_gpu_mib": peak_gpu_mib(device),
        }
        del frames, batches
    return result


# s3d, raft --------------------------------------------------------------------------------------
def s3d_section(device: torch.device, plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    encoder = S3dEncoder(config=S3dConfig(weights="none"), device=device, allow_download=False)
    clips = torch.randint(0, 256, (plan.s3d_clips, plan.s3d_frames, 3, 224, 224), dtype=torch.uint8)
    reset_peak(device)
    per_call, calls = time_calls(lambda: encoder.encode(clips), device, min_s=plan.min_timed_s, warmup=1)
    return {
        "clip_len": plan.s3d_frames,
        "batch": plan.s3d_clips,
        "clips_per_s": round(plan.s3d_clips / per_call, 2),
        "frames_per_s": round(plan.s3d_clips * plan.s3d_frames / per_call, 1),
        "calls": calls,
        "peak_gpu_mib": peak_gpu_mib(device),
    }


def raft_section(device: torch.device, plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    from vidcache.extract.views.flow.raft import RaftFlow

    short = FlowConfig().short_side
    h, w = short, round(short * 16 / 9)  # a 16:9 source at the flow view's default short side
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (plan.raft_pairs, h, w, 3), dtype=np.uint8)
    second = np.roll(first, 3, axis=2)
    result: dict[str, Any] = {"pairs_per_call": plan.raft_pairs, "size_hw": [h, w]}
    for raft_model in plan.raft_models:
        flow = RaftFlow(config=FlowConfig(method="raft", raft_model=raft_model, weights="none"), device=device)
        reset_peak(device)
        per_call, calls = time_calls(
            lambda flow=flow: flow.compute(first, second), device, min_s=plan.min_timed_s, warmup=1
        )
        result[raft_model] = {
            "pairs_per_s": round(plan.raft_pairs / per_call, 1),
            "calls": calls,
            "peak_gpu_mib": peak_gpu_mib(device),
        }
    return result


# mining -----------------------------------------------------------------------------------------
def torch_topk(vectors: torch.Tensor, k: int, *, block: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact all-vs-all top-k inner products (self excluded), one query block at a time, in fp32."""
    n = len(vectors)
    scores_out = torch.empty(n, k, device=vectors.device)
    ids_out = torch.empty(n, k, dtype=torch.long, device=vectors.device)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        scores = vectors[lo:hi] @ vectors.T
        scores[torch.arange(hi - lo, device=vectors.device), torch.arange(lo, hi, device=vectors.device)] = -2.0
        top = torch.topk(scores, k, dim=1)
        scores_out[lo:hi], ids_out[lo:hi] = top.values, top.indices
    return scores_out, ids_out


def mining_section(device: torch.device, plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    """Exact k=10 neighbours of every row among `mining_rows` × 512 unit vectors: torch on `device`
    vs vidcache's own FAISS search (`index.knn.search`, exact) on the CPU cores for a query subset."""
    k, dim = 10, 512
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(max(2, plan.mining_rows // 50), dim)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), plan.mining_rows)] + rng.normal(
        size=(plan.mining_rows, dim)
    ).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    previous_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32 products: the same candidates as FAISS
    try:
        on_device = torch.from_numpy(vectors).to(device)
        reset_peak(device)
        torch_topk(on_device[:4096], k)  # warm
        sync(device)
        t0 = time.perf_counter()
        _, ids = torch_topk(on_device, k)
        sync(device)
        torch_s = time.perf_counter() - t0
        ids_np = ids.cpu().numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous_tf32
    # independent check: float64 NumPy brute force on a sample of queries
    sample = rng.choice(plan.mining_rows, 100, replace=False)
    exact = vectors[sample].astype(np.float64) @ vectors.astype(np.float64).T
    exact[np.arange(len(sample)), sample] = -np.inf
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    agree = float(np.mean([len(set(truth[i]) & set(ids_np[q])) / k for i, q in enumerate(sample)]))
    result: dict[str, Any] = {
        "rows": plan.mining_rows,
        "dim": dim,
        "k": k,
        "torch": {
            "device": str(device),
            "seconds": round(torch_s, 3),
            "queries_per_s": round(plan.mining_rows / torch_s, 1),
            "recall_vs_numpy_float64": round(agree, 4),
            "peak_gpu_mib": peak_gpu_mib(device),
        },
    }
    try:
        import faiss

        from vidcache.index import knn
    except Exception as exc:
        result["faiss"] = {"error": f"{type(exc).__name__}: {exc}"}
        return result
    queries = vectors[: plan.mining_queries_faiss]
    index = faiss.IndexFlatIP(dim)
    index.add(vectors)
    t0 = time.perf_counter()
    _, faiss_ids = knn.search(
        index, queries, vectors, k, exclude=lambda row, cand: cand == row, query_rows=np.arange(len(queries))
    )
    faiss_s = time.perf_counter() - t0
    same = float(np.mean(faiss_ids[:, :k] == ids_np[: len(queries)]))
    result["faiss"] = {
        "threads": faiss.omp_get_max_threads(),
        "queries": len(queries),
        "seconds": round(faiss_s, 3),
        "queries_per_s": round(len(queries) / faiss_s, 1),
        "ids_equal_to_torch": round(same, 4),
    }
    result["torch_over_faiss_speedup"] = round(result["torch"]["queries_per_s"] / result["faiss"]["queries_per_s"], 1)
    return result


# heads ------------------------------------------------------------------------------------------
def heads_section(device: torch.device, plan: Plan, state: dict[str, Any], workdir: Path) -> dict[str, Any]:
    from bench_heads import make_cache

    from vidcache.cache.reader import Cache
    from vidcache.heads import HEADS, TrainConfig
    from vidcache.heads.train import train
    from vidcache.index.mining import nearest_videos, write_mined

    cache_dir = workdir / "heads-cache"
    t0 = time.perf_counter()
    if not (cache_dir / "catalog.sqlite").exists():
        make_cache(cache_dir, videos=plan.heads_videos, frames=16, dim=512, classes=50)
        with Cache(cache_dir) as cache:
            frame, summary = nearest_videos(cache, k=5, view="audio")
            write_mined(cache_dir, "neighbours_audio", frame, summary, command="bench_gpu")
    result: dict[str, Any] = {"videos": plan.heads_videos, "frames": 16, "dim": 512, "cache_s": 0.0, "heads": {}}
    result["cache_s"] = round(time.perf_counter() - t0, 1)
    text = {"label_corpus": str(cache_dir / "labels.txt"), "text_embeddings": str(cache_dir / "text.npy")}
    overrides: dict[str, dict[str, Any]] = {
        "temporal": {"head": "temporal", "options": text},
        "contrastive": {"head": "contrastive", "options": {"cross_view_k": 5, "cross_view_from": "audio"}},
        "contrastive K=0": {"head": "contrastive", "options": {"ltcl": False}},
    }
    for head in plan.heads:
        reset_peak(device)
        settings = {"head": head, **overrides.get(head, {})}
        settings["options"] = HEADS.options(settings["head"], **settings.get("options", {}))
        config = TrainConfig(**settings, epochs=2, patience=2, batch_size=256, device=device.type)
        run_dir = Path(tempfile.mkdtemp(prefix=f"run-{head}-", dir=workdir))
        summary = train(cache_dir, config, run_dir)
        result["heads"][head] = {
            "videos_per_s": round(summary.samples_per_s, 1),
            "run_s": round(summary.seconds, 2),
            "peak_gpu_mib": peak_gpu_mib(device),
        }
    return result


# compile ----------------------------------------------------------------------------------------
def compile_section(device: torch.device, plan: Plan, state: dict[str, Any]) -> dict[str, Any]:
    """torch.compile (default mode) of each image tower under bf16 autocast: compile time and images/s,
    beside eager at the same batch."""
    result: dict[str, Any] = {"batch": plan.model_batch}
    precision = "autocast_bf16" if device.type == "cuda" else "fp32"
    for model_name in plan.compile_models:
        tower = _open_clip_tower(model_name).to(device)
        x = torch.randn(plan.model_batch, 3, 224, 224, device=device)
        compiled = torch.compile(tower)
        t0 = time.perf_counter()
        with torch.inference_mode(), _precision_context(device, precision):
            compiled(x)
            sync(device)
            compile_s = time.perf_counter() - t0
            per_call, _ = time_calls(lambda compiled=compiled, x=x: compiled(x), device, min_s=plan.min_timed_s)
        eager = state.get("model_rates", {}).get(model_name)
        result[model_name] = {
            "precision": precision,
            "compile_s": round(compile_s, 1),
            "images_per_s": round(plan.model_batch / per_call, 1),
            "eager_images_per_s": eager,
            "speedup_vs_eager": round(plan.model_batch / per_call / eager, 3) if eager else None,
        }
        del compiled, tower
        reset_peak(device)
    return result


# decode on the GPU (NVDEC) ------------------------------------------------------------------------
NVDEC_RESOLUTIONS = {"360p": (640, 360), "720p": (1280, 720), "1080p": (1920, 1080)}
NVDEC_MAD_BOUND = 2.0  # mean absolute difference (8-bit RGB levels) of NVDEC's sampled frames vs FFmpeg's
NVDEC_SPEEDUP_TARGET = 3.0  # ViT-B-32 end to end at 720p: NVDEC >= 3x the CPU-decode extract


def _nvdec_corpus(workdir: Path, plan: Plan, name: str, size: tuple[int, int]) -> list[VideoEntry]:
    """`plan.videos // 3` (at least 2) copies of one encode at `size`, as the main corpus is built."""
    folder = workdir / f"nvdec-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "src.mp4"
    if not source.exists():
        _encode_one((str(source), 7, plan.seconds, plan.src_fps, size[0], size[1]))
    lines = ["path,video_id"]
    for i in range(max(2, plan.videos // 3)):
        target = folder / f"v{i:03d}.mp4"
        if not target.exists():
            shutil.copyfile(source, target)
        lines.append(f"{target.name},{name}-{i:03d}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return read_manifest(folder / "manifest.csv")


def _frames_agree(path: str, sampling: SamplingConfig) -> dict[str, Any]:
    """NVDEC's sampled frames against FFmpeg's (PyAV, the CPU path) at the same timestamps."""
    from vidcache.extract.decode import FrameSampler, frame_to_rgb
    from vidcache.extract.nvdec import NvdecSampler

    with FrameSampler(path, sampling=sampling) as sampler:
        cpu = [(frame_to_rgb(frame), t) for frame, t, _ in sampler]
    gpu, times = NvdecSampler(path, sampling=sampling).frames()
    mad = [float((gpu[i].cpu().float() - torch.from_numpy(rgb).float()).abs().mean()) for i, (rgb, _) in enumerate(cpu)]
    return {
        "frames": len(cpu),
        "times_equal": bool(np.allclose(times, [t for _, t in cpu])),
        "max_mean_abs_diff": round(max(mad), 3),
        "bound": NVDEC_MAD_BOUND,
    }


def nvdec_section(device: torch.device, plan: Plan, state: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """--decode-device cuda: sampled frames/s of NVDEC against the CPU decode processes at 360p, 720p and
    1080p; NVDEC's frames against FFmpeg's; end to end per model with NVDEC against min(decode, model) and
    against the CPU-decode extract (720p)."""
    import dataclasses

    from bench_extract import decode_only, extract, model_only

    workers = max(1, (os.cpu_count() or 1) - 1)
    result: dict[str, Any] = {"workers_cpu": workers, "by_resolution": {}, "extract_720p": {}}
    first = plan.extract_models[0]
    encoder = state["encoders"][first]
    for name, size in NVDEC_RESOLUTIONS.items():
        entries = _nvdec_corpus(workdir, plan, name, size)
        cpu_config = _extract_config(plan, device, first, workers)
        gpu_config = dataclasses.replace(cpu_config, run=dataclasses.replace(cpu_config.run, decode_device="cuda"))
        decode_only(entries[:1], gpu_config, encoder)  # warm: decoder sessions, CUDA kernels
        rates: dict[str, Any] = {}
        for key, run in (
            ("cpu_processes", lambda e=entries, c=cpu_config: decode_only_processes(e, c, {"clip": encoder})),
            ("nvdec", lambda e=entries, c=gpu_config: sum(len(b) for b in decode_only(e, c, encoder))),
        ):
            t0 = time.perf_counter()
            frames = run()
            rates[key] = {"frames": frames, "frames_per_s": round(frames / (time.perf_counter() - t0), 1)}
        rates["nvdec_over_cpu"] = round(rates["nvdec"]["frames_per_s"] / rates["cpu_processes"]["frames_per_s"], 2)
        rates["agreement"] = _frames_agree(str(entries[0].path), cpu_config.sampling)
        result["by_resolution"][name] = rates
        if name == "720p":
            state["nvdec_720p"] = (entries, rates)
    entries, rates = state.pop("nvdec_720p")
    for model_name in plan.extract_models:
        enc = state["encoders"][model_name]
        cpu_config = _extract_config(plan, device, model_name, workers)
        gpu_config = dataclasses.replace(cpu_config, run=dataclasses.replace(cpu_config.run, decode_device="cuda"))
        frames = torch.cat(decode_only(entries[:1], cpu_config, enc))
        model_only(frames[: plan.extract_batch], enc, plan.extract_batch)  # warm
        t0 = time.perf_counter()
        model_only(frames, enc, plan.extract_batch)
        model_fps = len(frames) / (time.perf_counter() - t0)
        row: dict[str, Any] = {"model_frames_per_s": round(model_fps, 1)}
        for key, config in (("cpu_decode", cpu_config), ("nvdec", gpu_config)):
            cache = workdir / f"cache-nvdec-{model_name}-{key}-{time.time_ns()}"
            summary, _, pipeline_s = extract(entries, config, cache)
            shutil.rmtree(cache, ignore_errors=True)
            if summary.failed:
                raise RuntimeError(f"extract ({key}) failed for some videos: {summary.failures}")
            row[f"{key}_extract_frames_per_s"] = round(summary.frames / pipeline_s, 1)
        decode_fps = rates["nvdec"]["frames_per_s"]
        row["nvdec_ratio_extract_over_min"] = round(row["nvdec_extract_frames_per_s"] / min(decode_fps, model_fps), 3)
        row["nvdec_over_cpu_decode_extract"] = round(
            row["nvdec_extract_frames_per_s"] / row["cpu_decode_extract_frames_per_s"], 2
        )
        row["targets"] = {"ratio": E2E_TARGET, "speedup_vit_b_32": NVDEC_SPEEDUP_TARGET}
        result["extract_720p"][model_name] = row
        del frames
    return result


# table ------------------------------------------------------------------------------------------
def summary_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, value) pairs for the printed table, from whatever sections finished."""
    s = doc["sections"]
    rows: list[tuple[str, str]] = []
    m = s.get("machine", {})
    rows.append(("machine", f"{m.get('gpu', 'CPU')} · {m.get('cpu_cores')} cores · torch {m.get('torch')}"))
    if m.get("bf16_matmul_tflops"):
        rows.append(("bf16 matmul 8192³ (ceiling)", f"{m['bf16_matmul_tflops']} TFLOP/s"))
    for name, row in s.get("model", {}).items():
        if not isinstance(row, dict):
            continue
        rates = ", ".join(
            f"{p} {v['images_per_s']:.0f}" for p, v in row.items() if isinstance(v, dict) and "images_per_s" in v
        )
        rows.append((f"model only {name} (img/s)", rates))
        if "vs_timm" in row:
            t = row["vs_timm"]
            rows.append((f"  vs timm {row['timm']['model']}", f"{t['ratio']:.2f}x (target >= {t['target']})"))
    for name, row in s.get("encode_path", {}).items():
        if isinstance(row, dict):
            rows.append((f"encode path {name} (img/s)", f"{row['images_per_s']:.0f}"))
    dec = s.get("decode", {})
    if dec:
        for key, label, scale in (
            ("by_workers", "processes", "scaling"),
            ("threads_by_workers", "threads", "threads_scaling"),
        ):
            by = ", ".join(f"{w}w {v['frames_per_s']:.0f}" for w, v in dec[key].items())
            rows.append((f"decode only, {label} (sampled frames/s)", by))
            rows.append((f"  scaling ({label})", f"{dec[scale]['speedup']}x on {dec[scale]['workers']} workers"))
    for name, row in s.get("extract", {}).items():
        if isinstance(row, dict):
            util = (row["gpu_util"]["extract"] or {}).get("mean_pct")
            rows.append(
                (
                    f"extract {name} (frames/s)",
                    f"{row['extract_frames_per_s']:.0f} vs decode {row['decode_frames_per_s']:.0f} / model "
                    f"{row['model_frames_per_s']:.0f} -> ratio {row['ratio_extract_over_min']:.2f} "
                    f"(target >= {row['target']}), GPU util {util}%",
                )
            )
    for name, row in s.get("decode_variants", {}).get("variants", {}).items():
        rows.append((f"decode {name} (frames/s)", f"{row['frames_per_s']:.0f}"))
    if "s3d" in s:
        rows.append(("S3D (clips/s)", f"{s['s3d']['clips_per_s']} ({s['s3d']['clip_len']} frames)"))
    for name, row in s.get("raft", {}).items():
        if isinstance(row, dict):
            rows.append((f"RAFT {name} (pairs/s)", f"{row['pairs_per_s']}"))
    mining = s.get("mining", {})
    if mining:
        t = mining["torch"]
        text = f"torch {t['queries_per_s']:.0f} q/s (recall vs NumPy {t['recall_vs_numpy_float64']})"
        if "queries_per_s" in mining.get("faiss", {}):
            text += f", faiss-cpu {mining['faiss']['queries_per_s']:.0f} q/s"
        rows.append((f"exact top-10 on {mining['rows']} x {mining['dim']}", text))
    for head, row in s.get("heads", {}).get("heads", {}).items():
        rows.append((f"train {head} (videos/s)", f"{row['videos_per_s']:.0f}  peak GPU {row['peak_gpu_mib']} MiB"))
    for name, row in s.get("compile", {}).items():
        if isinstance(row, dict):
            rows.append(
                (
                    f"torch.compile {name}",
                    f"{row['images_per_s']:.0f} img/s (compile {row['compile_s']} s, "
                    f"x{row['speedup_vs_eager']} vs eager)",
                )
            )
    for name, row in s.get("nvdec", {}).get("by_resolution", {}).items():
        agree = row["agreement"]
        rows.append(
            (
                f"NVDEC vs CPU processes {name} (sampled frames/s)",
                f"{row['nvdec']['frames_per_s']:.0f} vs {row['cpu_processes']['frames_per_s']:.0f} "
                f"(x{row['nvdec_over_cpu']}), frames MAD {agree['max_mean_abs_diff']} (bound {agree['bound']})",
            )
        )
    for name, row in s.get("nvdec", {}).get("extract_720p", {}).items():
        rows.append(
            (
                f"extract {name} 720p NVDEC (frames/s)",
                f"{row['nvdec_extract_frames_per_s']:.0f} vs CPU decode "
                f"{row['cpu_decode_extract_frames_per_s']:.0f}"
                f" (x{row['nvdec_over_cpu_decode_extract']}), ratio {row['nvdec_ratio_extract_over_min']}",
            )
        )
    for name, error in doc["errors"].items():
        rows.append((f"ERROR {name}", error[:150]))
    for name, why in doc["skipped"].items():
        rows.append((f"skipped {name}", why))
    return rows


def print_table(doc: dict[str, Any]) -> None:
    rows = summary_rows(doc)
    width = max(len(r[0]) for r in rows)
    print(f"\nvidcache GPU check ({doc.get('elapsed_s')} s)")
    for figure, value in rows:
        print(f"  {figure:<{width}}  {value}")


# driver -----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU, about a minute)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", type=Path, default=Path("bench_out/gpu"), help="folder for bench_gpu.json")
    parser.add_argument("--workdir", type=Path, default=None, help="corpus and caches (default: a temp dir)")
    parser.add_argument("--budget-s", type=float, default=None, help="time budget (default 450 s; quick 120 s)")
    parser.add_argument(
        "--sections", default=None, help="comma-separated subset (machine is always run), e.g. model,extract"
    )
    return parser.parse_args(argv)


ALL_SECTIONS = (
    "corpus",
    "model",
    "encode_path",
    "decode",
    "extract",
    "decode_variants",
    "s3d",
    "raft",
    "mining",
    "heads",
    "compile",
    "nvdec",
)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    plan = make_plan(args, device)
    wanted = set(args.sections.split(",")) if args.sections else set(ALL_SECTIONS)
    unknown = wanted - set(ALL_SECTIONS)
    if unknown:
        raise SystemExit(f"--sections: unknown {sorted(unknown)}; allowed: {', '.join(ALL_SECTIONS)}")

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    report = Report(args.out, plan.budget_s, log)
    report.doc["plan"] = {k: v for k, v in vars(plan).items() if k != "extra"}
    report.doc["quick"] = args.quick
    state: dict[str, Any] = {}
    workdir_cm = (
        contextlib.nullcontext(args.workdir)
        if args.workdir
        else tempfile.TemporaryDirectory(prefix="vidcache-bench-gpu-")
    )
    with workdir_cm as work:
        workdir = Path(work)
        workdir.mkdir(parents=True, exist_ok=True)
        report.section("machine", lambda: machine_section(device, plan))
        steps: list[tuple[str, Callable[[], dict[str, Any]], float]] = [
            ("corpus", lambda: corpus_section(workdir, plan, state), 0),
            ("model", lambda: model_section(device, plan, state), 20),
            ("encode_path", lambda: encode_path_section(device, plan, state), 10),
            ("decode", lambda: decode_section(device, plan, state), 15),
            ("extract", lambda: extract_section(device, plan, state, workdir), 30),
            ("decode_variants", lambda: decode_variants_section(device, plan, state), 20),
            ("s3d", lambda: s3d_section(device, plan, state), 10),
            ("raft", lambda: raft_section(device, plan, state), 10),
            ("mining", lambda: mining_section(device, plan, state), 15),
            ("heads", lambda: heads_section(device, plan, state, workdir), 30),
            ("compile", lambda: compile_section(device, plan, state), 90),
            ("nvdec", lambda: nvdec_section(device, plan, state, workdir), 60),
        ]
        for name, fn, needs_s in steps:
            if name not in wanted:
                continue
            if name == "nvdec" and (device.type != "cuda" or nvdec_missing()):
                report.doc["skipped"]["nvdec"] = f"no NVDEC here (needs {nvdec_missing() or 'a CUDA device'})"
                continue
            if name in ("decode", "extract", "decode_variants", "nvdec") and "encoders" not in state:
                report.section("encode_path", lambda: encode_path_section(device, plan, state))
            if name in ("decode", "extract", "decode_variants") and "entries" not in state:
                report.section("corpus", lambda: corpus_section(workdir, plan, state))
            if name == "compile":
                model = report.doc["sections"].get("model", {})
                main_precision = "autocast_bf16" if device.type == "cuda" else "fp32"
                state["model_rates"] = {
                    m: model[m][main_precision]["images_per_s"]
                    for m in plan.models
                    if isinstance(model.get(m), dict) and main_precision in model[m]
                }
            if name == "compile" and not plan.compile_models:
                report.doc["skipped"]["compile"] = "no GPU (compile is measured on CUDA only)"
                continue
            report.section(name, fn, needs_s=needs_s)
        state.clear()
    report.save()
    print_table(report.doc)
    print(f"\nJSON: {report.path}")
    return 0 if not report.doc["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
