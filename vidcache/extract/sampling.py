"""Sampling times: pure functions of the video's time span, so they are testable without video.

A sample at time t is the frame on screen at t: the last frame whose presentation time is <= t
(the first frame for a t before it). Times are PyAV presentation times in seconds (`frame.time`).
"""

from __future__ import annotations

import math

import numpy as np

from ..config import SamplingConfig


def sample_times(config: SamplingConfig, *, start_s: float, end_s: float | None) -> np.ndarray | None:
    """Target times in [start_s, end_s); None means "every 1/fps until the stream ends" (end unknown)."""
    if config.num_frames is not None:
        if end_s is None:
            raise ValueError("num_frames sampling needs the end time")
        span = max(end_s - start_s, 0.0)
        return start_s + (np.arange(config.num_frames) + 0.5) * (span / config.num_frames)
    assert config.fps is not None
    if end_s is None:
        return None
    count = max(1, math.ceil((end_s - start_s) * config.fps - 1e-9))
    return start_s + np.arange(count) / config.fps
