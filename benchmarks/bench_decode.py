"""Decode benchmark: PyAV vs the ffmpeg CLI, and vidcache's sparse 1-fps sampling vs decoding everything.

Writes two synthetic 30 fps H.264 videos (long GOP with B-frames, and a short-GOP copy of the same
content) with `vidcache.synth.write_video`, then times each measurement `--repeats` times (one
untimed warm-up run first; the timed rounds interleave all measurements so that load from elsewhere
on the machine hits them alike) and reports medians:

a) decoding every frame: a plain PyAV loop (`thread_type="AUTO"`, no conversion) vs
   `ffmpeg -threads N -i X -f null -` on the same file, and vidcache's `FrameSampler` at the source
   frame rate (every frame, no conversion);
b) 1-fps sampling with `FrameSampler` + `frame_to_rgb` (seek modes x sparse decode on/off) vs
   decoding every frame and converting each one to RGB. Every mode must pick identical frames.
   Decoding only the reference frames (`skip_frame=NONREF`) bounds what any sampler can reach
   without seeking. seek=always is timed only on the short-GOP video unless `--always` is given.

    .venv/bin/python benchmarks/bench_decode.py            # table on stdout, progress on stderr
    .venv/bin/python benchmarks/bench_decode.py --json     # one JSON document on stdout
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import av
import numpy as np

from vidcache.config import SamplingConfig
from vidcache.extract.decode import FrameSampler, frame_to_rgb
from vidcache.synth import write_video

TARGET_FFMPEG_RATIO = 0.95  # ffmpeg_time / pyav_time: PyAV at least about as fast as the CLI
TARGET_SPARSE_SPEEDUP = 3.0  # 1-fps sampling (seek=auto, sparse) vs decode+RGB of every frame
DEFAULT_MODE = ("auto", True)
SAMPLER_MODES = [("auto", True), ("auto", False), ("never", True), ("never", False), ("always", True)]


# machine load ----------------------------------------------------------------------------------
def _busy_cpu_s() -> float | None:
    """CPU seconds the whole machine spent busy since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How many cores other processes kept busy between `start()` and `stop()`: machine busy time
    minus this process's own CPU time (children included), per second of wall time."""

    def start(self) -> OtherLoad:
        self._busy, self._own, self._wall = _busy_cpu_s(), self._own_cpu_s(), time.perf_counter()
        return self

    @staticmethod
    def _own_cpu_s() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def stop(self) -> float | None:
        busy = _busy_cpu_s()
        if busy is None or self._busy is None:
            return None
        wall = time.perf_counter() - self._wall
        others = (busy - self._busy) - (self._own_cpu_s() - self._own)
        return round(max(others, 0.0) / wall, 2) if wall > 0 else None


# synthetic content ------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int = 16) -> np.ndarray:
    """HxWx3 float texture: coarse random values, bilinearly upsampled by `cell`."""
    coarse = rng.uniform(0, 255, (height // cell + 2, width // cell + 2, 3))
    ys = np.linspace(0, coarse.shape[0] - 1, height)
    xs = np.linspace(0, coarse.shape[1] - 1, width)
    y0 = np.floor(ys).astype(int).clip(0, coarse.shape[0] - 2)
    x0 = np.floor(xs).astype(int).clip(0, coarse.shape[1] - 2)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def make_frame_fn(width: int, height: int, seed: int = 0) -> Callable[[int, float], np.ndarray]:
    """Moving content that makes x264 do real work: a panning smooth texture with film grain and
    three coloured squares moving at different speeds (cheap to generate: one slice per frame)."""
    rng = np.random.default_rng(seed)
    tex_h, tex_w = height + 64, width * 3
    grain = rng.integers(-10, 11, (tex_h, tex_w, 1))
    texture = np.clip(_smooth_noise(rng, tex_h, tex_w) + grain, 0, 255).astype(np.uint8)
    squares = [((230, 40, 40), 90.0, 48), ((40, 220, 60), -140.0, 64), ((40, 70, 230), 60.0, 80)]

    def frame_fn(index: int, t_s: float) -> np.ndarray:
        ox = int(45.0 * t_s) % (tex_w - width)
        oy = int(32 + 30 * np.sin(0.5 * t_s))
        frame = texture[oy : oy + height, ox : ox + width].copy()
        for k, (colour, speed, side) in enumerate(squares):
            side = min(side, height // 2, width // 2)
            x = int((speed * t_s) % (width - side))
            y = int((height - side) * (0.5 + 0.4 * np.sin(t_s * 0.9 * (k + 1))))
            frame[y : y + side, x : x + side] = colour
        return frame

    return frame_fn


def make_video(path: Path, *, seconds: float, fps: float, width: int, height: int, gop: int, preset: str) -> Path:
    """A libx264 video of the moving test content; `preset` other than ultrafast gives B-frames."""
    return write_video(
        path,
        round(seconds * fps),
        fps=fps,
        frame_fn=make_frame_fn(width, height),
        width=width,
        height=height,
        gop=gop,
        options={"preset": preset},
    )


def describe(path: Path) -> dict[str, Any]:
    """Frame count, picture types (I/P/B) and bitrate of a file."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        picture_type = av.video.frame.PictureType
        types = Counter(picture_type(frame.pict_type).name for frame in container.decode(stream))
        duration = float(stream.duration * stream.time_base) if stream.duration else None
        codec = stream.codec_context.name
    size = path.stat().st_size
    return {
        "frames": sum(types.values()),
        "pict_types": dict(types),
        "codec": codec,
        "duration_s": duration,
        "bytes": size,
        "mbit_s": round(size * 8 / duration / 1e6, 3) if duration else None,
    }


# timed operations -------------------------------------------------------------------------------
def _open(path: Path, threads: int) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    container = av.open(str(path))
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if threads:
        stream.codec_context.thread_count = threads
    return container, stream


def pyav_decode_all(path: Path, threads: int, *, skip_nonref: bool = False) -> int:
    """Every frame, PyAV's own loop, no conversion; returns the frame count. `skip_nonref` lets the
    decoder drop every non-reference frame: the least decoding any sampler must do without seeking."""
    container, stream = _open(path, threads)
    with container:
        if skip_nonref:
            stream.codec_context.skip_frame = "NONREF"
        return sum(1 for _ in container.decode(stream))


def pyav_decode_all_rgb(path: Path, threads: int) -> int:
    """Every frame converted to RGB: the naive way to sample (decode and convert all, then pick)."""
    container, stream = _open(path, threads)
    with container:
        n = 0
        for frame in container.decode(stream):
            frame.to_ndarray(format="rgb24")
            n += 1
        return n


def ffmpeg_decode_all(ffmpeg: str, path: Path, threads: int, rtimes: list[float]) -> int:
    """`ffmpeg -threads N -i X -f null -`; returns the frame count ffmpeg reports and appends its own
    `-benchmark` rtime (the run without process start-up and probing) to `rtimes`."""
    argv = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-benchmark",
        "-threads",
        str(threads),
        "-i",
        str(path),
        "-map",
        "0:v:0",
        "-f",
        "null",
        "-",
    ]
    done = subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rtime = re.search(r"rtime=([0-9.]+)s", done.stderr)
    frames = re.findall(r"frame=\s*(\d+)", done.stderr)
    if rtime:
        rtimes.append(float(rtime.group(1)))
    return int(frames[-1]) if frames else -1


def sampled(sampler: FrameSampler) -> Iterator[tuple[av.VideoFrame, float, int]]:
    """`(frame, time_s, repeats)` from a `FrameSampler`, whether it yields `(frame, repeats)` (older
    vidcache) or `(frame, time_s, repeats)`."""
    for item in sampler:
        frame, repeats = item[0], item[-1]
        time_s = item[1] if len(item) == 3 else frame.time
        yield frame, time_s, repeats


def sampler_run(
    path: Path, *, fps: float, threads: int, seek: str, sparse: bool, rgb: bool, picks: list | None = None
) -> int:
    """vidcache's sampler (+ `frame_to_rgb` when `rgb`); returns the sampled rows (frames x repeats).
    With `picks`, records (time, repeats, pixel hash) per frame, then (decoded frames, seeks)."""
    rows = 0
    with FrameSampler(
        str(path), sampling=SamplingConfig(fps=fps), seek=seek, threads=threads, sparse_decode=sparse
    ) as sampler:
        for frame, time_s, repeats in sampled(sampler):
            rows += repeats
            if rgb:
                image = frame_to_rgb(frame)
                if picks is not None:
                    pixels = hashlib.sha1(image.tobytes()).hexdigest()[:12]
                    picks.append((round(time_s, 6), repeats, pixels))
        if picks is not None:
            picks.append((sampler.stats.decoded_frames, sampler.stats.seeks))
    return rows


def time_interleaved(
    measurements: dict[str, Callable[[], int]], repeats: int, log: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Each measurement once untimed (warm-up), then `repeats` rounds that time every measurement
    once, round-robin, so that load from elsewhere on the machine hits all of them alike."""
    results = {name: fn() for name, fn in measurements.items()}
    runs: dict[str, list[float]] = {name: [] for name in measurements}
    for _ in range(repeats):
        for name, fn in measurements.items():
            started = time.perf_counter()
            results[name] = fn()
            runs[name].append(time.perf_counter() - started)
    rows = {}
    for name, times in runs.items():
        median = statistics.median(times)
        rows[name] = {
            "median_s": round(median, 4),
            "min_s": round(min(times), 4),
            "runs_s": [round(r, 4) for r in times],
            "result": results[name],
        }
        log(f"  {name:<42} {median:8.3f} s  (runs {', '.join(f'{r:.3f}' for r in times)})")
    return rows


# benchmark --------------------------------------------------------------------------------------
def bench_file(
    path: Path, args: argparse.Namespace, ffmpeg: str | None, log: Callable[[str], None], *, full: bool
) -> dict[str, Any]:
    """All timings for one file; `full` adds the every-frame comparisons (a)."""
    out: dict[str, Any] = {"file": path.name, **describe(path)}
    threads = args.threads
    measurements: dict[str, Callable[[], int]] = {}
    rtimes: list[float] = []
    if full:
        measurements["pyav_decode_all"] = lambda: pyav_decode_all(path, threads)
        if ffmpeg:
            measurements["ffmpeg_null_decode_all"] = lambda: ffmpeg_decode_all(ffmpeg, path, threads, rtimes)
        measurements["sampler_every_frame_no_rgb"] = lambda: sampler_run(
            path, fps=args.fps, threads=threads, seek="auto", sparse=True, rgb=False
        )
        measurements["pyav_decode_ref_frames_only"] = lambda: pyav_decode_all(path, threads, skip_nonref=True)
    measurements["decode_all_rgb"] = lambda: pyav_decode_all_rgb(path, threads)
    modes = [m for m in SAMPLER_MODES if m[0] != "always" or args.always or not full]
    mode_names = {}
    for seek, sparse in modes:
        key = f"seek={seek},sparse={sparse}"
        mode_names[key] = f"sample_{args.sample_fps:g}fps_rgb {key}"
        measurements[mode_names[key]] = lambda s=seek, sp=sparse: sampler_run(
            path, fps=args.sample_fps, threads=threads, seek=s, sparse=sp, rgb=True
        )
    rows = time_interleaved(measurements, args.repeats, log)
    median = {name: row["median_s"] for name, row in rows.items()}
    if full:
        pyav = median["pyav_decode_all"]
        if ffmpeg:
            out["ffmpeg_over_pyav"] = round(median["ffmpeg_null_decode_all"] / pyav, 3)
            if rtimes:
                rtime = statistics.median(rtimes[1:] or rtimes)  # the first call was the warm-up
                out["ffmpeg_benchmark_rtime_s"] = round(rtime, 4)
                out["ffmpeg_rtime_over_pyav"] = round(rtime / pyav, 3)
        out["pyav_over_sampler_every_frame"] = round(pyav / median["sampler_every_frame_no_rgb"], 3)
        # sparse decoding without seeks cannot beat decoding the reference frames alone
        out["speedup_bound_without_seeks"] = round(median["decode_all_rgb"] / median["pyav_decode_ref_frames_only"], 2)
    baseline = median["decode_all_rgb"]
    out["speedup_vs_decode_all_rgb"] = {key: round(baseline / median[name], 2) for key, name in mode_names.items()}
    picks: dict[str, list] = {}
    for seek, sparse in modes:
        key = f"seek={seek},sparse={sparse}"
        picks[key] = []
        sampler_run(path, fps=args.sample_fps, threads=threads, seek=seek, sparse=sparse, rgb=True, picks=picks[key])
    reference = picks["seek=never,sparse=False"][:-1]
    out["modes_agree"] = all(p[:-1] == reference for p in picks.values())
    out["sampled_frames"] = len(reference)
    out["decoded_frames_seeks"] = {key: list(p[-1]) for key, p in picks.items()}
    out["timings"] = rows
    return out


@contextmanager
def bench_workdir(workdir: Path | None, *, prefix: str) -> Iterator[Path]:
    """The given directory (created, kept) or a temporary one removed afterwards."""
    if workdir is not None:
        workdir = workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        yield workdir
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def progress_log(quiet: bool) -> Callable[[str], None]:
    """Progress lines on stderr, silent when stdout carries JSON."""
    return (lambda text: None) if quiet else (lambda text: print(text, file=sys.stderr, flush=True))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="video length (default 60)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=float, default=30.0, help="source frame rate (default 30)")
    parser.add_argument("--sample-fps", type=float, default=1.0, help="sampling rate for (b) (default 1)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="decoder threads for PyAV and ffmpeg (0 = FFmpeg's auto; default: cores)",
    )
    parser.add_argument("--gop", type=int, default=250, help="keyframe interval of the main video")
    parser.add_argument("--short-gop", type=int, default=15, help="keyframe interval of the second video")
    parser.add_argument("--preset", default="veryfast", help="x264 preset (veryfast has 3 B-frames)")
    parser.add_argument(
        "--always",
        action="store_true",
        help="also time seek=always on the long-GOP video (slow: it re-seeks per frame)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement; median reported")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the videos here (default: temp dir)")
    parser.add_argument("--ffmpeg", default=shutil.which("ffmpeg"), help="ffmpeg binary (default: on PATH)")
    parser.add_argument("--json", action="store_true", help="print only a JSON document on stdout")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = progress_log(args.json)
    with bench_workdir(args.workdir, prefix="vidcache-bench-decode-") as workdir:
        stem = f"{args.width}x{args.height}_{args.fps:g}fps_{args.seconds:g}s_{args.preset}"
        videos = {}
        for label, gop in (("long_gop", args.gop), ("short_gop", args.short_gop)):
            path = workdir / f"{stem}_gop{gop}.mp4"
            if not path.exists():
                started = time.perf_counter()
                make_video(
                    path,
                    seconds=args.seconds,
                    fps=args.fps,
                    width=args.width,
                    height=args.height,
                    gop=gop,
                    preset=args.preset,
                )
                log(f"wrote {path} in {time.perf_counter() - started:.1f} s")
            videos[label] = path
        ffmpeg_version = None
        if args.ffmpeg:
            version = subprocess.run([args.ffmpeg, "-version"], capture_output=True, text=True, check=True)
            ffmpeg_version = version.stdout.splitlines()[0]
        else:
            log("ffmpeg not found: skipping the ffmpeg comparison (apt-get install ffmpeg)")
        machine = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "pyav": av.__version__,
            "pyav_ffmpeg": getattr(av, "ffmpeg_version_info", None),
            "ffmpeg_cli": ffmpeg_version,
            "loadavg_before": os.getloadavg(),
        }
        args_out = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        result: dict[str, Any] = {"machine": machine, "args": args_out}
        others = OtherLoad().start()
        for label, path in videos.items():
            log(f"\n== {label}: {path.name}")
            result[label] = bench_file(path, args, args.ffmpeg, log, full=(label == "long_gop"))
        machine["loadavg_after"] = os.getloadavg()
        machine["other_processes_cores"] = others.stop()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


def print_report(result: dict[str, Any]) -> None:
    """The human-readable table and the ratios against the targets."""
    machine = result["machine"]
    print(
        f"\nmachine: {machine['cpus']} CPUs, {machine['platform']}; PyAV {machine['pyav']} "
        f"(FFmpeg {machine['pyav_ffmpeg']}); CLI: {machine['ffmpeg_cli'] or 'none'}"
    )
    before, after = machine["loadavg_before"][0], machine["loadavg_after"][0]
    print(
        f"load average (1 min): {before:.2f} before, {after:.2f} after; other processes kept "
        f"{machine['other_processes_cores']} of {machine['cpus']} cores busy during the timings"
    )
    for label in ("long_gop", "short_gop"):
        res = result[label]
        print(f"\n{label}: {res['file']}  frames={res['frames']} types={res['pict_types']} {res['mbit_s']} Mbit/s")
        print(f"  {'measurement':<42} {'median s':>9} {'min s':>7}  {'result':>7}")
        for name, row in res["timings"].items():
            print(f"  {name:<42} {row['median_s']:9.3f} {row['min_s']:7.3f}  {row['result']:>7}")
        if "ffmpeg_over_pyav" in res:
            ratio = res["ffmpeg_over_pyav"]
            verdict = "OK" if ratio >= TARGET_FFMPEG_RATIO else "MISSED"
            print(f"  ffmpeg/pyav wall-time ratio: {ratio:.3f} (target >= {TARGET_FFMPEG_RATIO}) {verdict}")
            if "ffmpeg_rtime_over_pyav" in res:
                print(
                    f"  ffmpeg -benchmark rtime {res['ffmpeg_benchmark_rtime_s']:.3f} s (no start-up); "
                    f"rtime/pyav: {res['ffmpeg_rtime_over_pyav']:.3f}"
                )
        if "pyav_over_sampler_every_frame" in res:
            print(f"  plain PyAV / FrameSampler(every frame): {res['pyav_over_sampler_every_frame']:.3f}")
        if "speedup_bound_without_seeks" in res:
            print(
                "  bound without seeks = decode_all_rgb / pyav_decode_ref_frames_only: "
                f"{res['speedup_bound_without_seeks']:.2f}x"
            )
        for mode, speedup in res["speedup_vs_decode_all_rgb"].items():
            mark = ""
            if mode == "seek={},sparse={}".format(*DEFAULT_MODE):
                verdict = "OK" if speedup >= TARGET_SPARSE_SPEEDUP else "MISSED"
                mark = f"  (default; target >= {TARGET_SPARSE_SPEEDUP:g}x) {verdict}"
            print(f"  speedup vs decode+RGB of all frames, {mode:<26} {speedup:5.2f}x{mark}")
        print(f"  [decoded frames, seeks] per mode: {res['decoded_frames_seeks']}")
        print(f"  all modes pick identical frames ({res['sampled_frames']}): {res['modes_agree']}")


if __name__ == "__main__":
    sys.exit(main())
