"""`vidcache demo`: a small labelled corpus generated with PyAV, extracted offline in seconds."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd

from .errors import MissingWeightsError
from .synth import COLOURS, DIRECTIONS, TONES_HZ, moving_square_frame, write_video

DEMO_SECONDS = 2.0
DEMO_FPS = 15


def make_demo_corpus(out_dir: str | Path, *, seconds: float = DEMO_SECONDS, fps: int = DEMO_FPS) -> Path:
    """24 clips: colour × motion direction × tone × 2 speeds; labels `colour;direction;tone tone`.
    Returns the manifest path. Existing files are reused, so a second demo run reads the same corpus."""
    out = Path(out_dir)
    videos = out / "videos"
    rows = []
    for (colour, direction, tone), variant in itertools.product(
        itertools.product(COLOURS, DIRECTIONS, TONES_HZ), range(2)
    ):
        relative = f"videos/{colour}/{direction}-{tone}-{variant}.mp4"
        path = out / relative
        if not path.exists():
            speed = 30.0 + 25.0 * variant
            write_video(
                path,
                int(seconds * fps),
                fps=fps,
                width=96,
                height=72,
                tone_hz=TONES_HZ[tone],
                frame_fn=lambda i, t, c=colour, d=direction, s=speed: moving_square_frame(
                    t, colour=c, direction=d, speed_px_s=s
                ),
            )
        rows.append(
            {
                "path": relative,
                "labels": f"{colour};{direction};{tone} tone",
                "split": "train" if variant == 0 else "test",
            }
        )
    videos.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


def pick_demo_model() -> tuple[str, str, bool]:
    """ViT-B-32/openai when its weights are cached locally, else the tiny random model."""
    from .extract.weights import resolve_clip_weights

    try:
        resolve_clip_weights("ViT-B-32", "openai")
        return "ViT-B-32", "openai", False
    except MissingWeightsError:
        return "vidcache-tiny", "none", True
