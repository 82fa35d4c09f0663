"""What the `video` view takes from the decode pass: frames at the clip rate in windows of the model's
frames-per-clip, one window every `stride` frames, timed by clip start and end (as S3D's windows; a
video shorter than one clip gives one clip padded with its last frame)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...consumers import FrameWindows
from ...encoder import PrepareOnly


@dataclass(frozen=True)
class WindowSpec:
    """The clip grid FrameWindows cuts: `clip_len` frames at `fps`, a window every `stride` frames."""

    fps: float
    clip_len: int
    stride: int


@dataclass(frozen=True)
class VideoTwin(PrepareOnly):
    """What a decode process gets of the encoder: the processor's first half and the clip grid."""

    grid: WindowSpec | None = None


def grid_of(encoder: Any) -> WindowSpec:
    """The clip grid of the encoder or its twin (the model's frames per clip, the resolved fps/stride)."""
    if isinstance(encoder, VideoTwin):
        return encoder.grid  # type: ignore[return-value]
    return WindowSpec(fps=encoder.fps, clip_len=encoder.frames_per_clip, stride=encoder.stride)


def twin_of(encoder: Any) -> VideoTwin:
    return VideoTwin(
        view=encoder.view,
        prepare=encoder.process_prepare,
        max_short_side=encoder.max_short_side,
        grid=grid_of(encoder),
    )


def video_windows(encoder: Any, *, batch_frames: int) -> FrameWindows:
    """The consumer of `encoder` (the model or its decode-process twin)."""
    return FrameWindows(encoder, grid_of(encoder), batch_frames=batch_frames)
