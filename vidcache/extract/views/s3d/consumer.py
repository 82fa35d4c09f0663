"""The `s3d` view's share of the decode pass: frames at `fps` grouped in windows of `clip_len`
(the machinery's FrameWindows, which the video view shares)."""

from __future__ import annotations

from ...consumers import FrameWindows

S3dWindows = FrameWindows

__all__ = ["S3dWindows"]
