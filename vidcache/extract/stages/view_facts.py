"""The only view-specific facts the stages use, one line each, so views-as-plugins can answer them
(the stages themselves know no view names)."""

from __future__ import annotations

from ..consumers import Chunk

SPILLED_VIEWS = ("flow",)  # views whose rows are large enough to wait on disk until the video is complete


def rows_in(view: str, chunk: Chunk) -> int:
    """Model-input rows a chunk adds to a batch: an S3D chunk holds windows of frames, each frame counts."""
    return len(chunk.data) * (chunk.data.shape[1] if view == "s3d" else 1)


def is_spilled(view: str) -> bool:
    """Whether a view's finished rows wait on disk (not in RAM) until their video is complete."""
    return view in SPILLED_VIEWS


def counts_frames(view: str) -> bool:
    """Whether a view's rows are the sampled frames counted in the summary's `frames`."""
    return view == "clip"
