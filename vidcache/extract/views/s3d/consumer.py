"""The `s3d` view's share of the decode pass: frames at `fps` grouped in windows of `clip_len`."""

from __future__ import annotations

import math

import numpy as np
import torch

from ...consumers import Chunk, Consumer
from .settings import S3dConfig


class S3dWindows(Consumer):
    """Frames at `fps` grouped in windows of `clip_len`, one every `stride` frames; a video shorter
    than one window gives one window padded with its last frame."""

    def __init__(self, encoder, config: S3dConfig, *, batch_frames: int):
        self.encoder, self.config = encoder, config
        self.view_names = (encoder.view,)
        self.max_short_side = encoder.max_short_side
        self.windows_per_chunk = max(1, batch_frames // config.clip_len)
        self._frames: list[torch.Tensor] = []  # frames from `_first` on, at most one window's worth
        self._times: list[float] = []
        self._first = 0  # grid index of self._frames[0]
        self._next_start = 0  # grid index where the next window starts
        self._emitted = 0
        self._grid_dt = 1.0 / config.fps
        self._grid: np.ndarray = np.zeros(0)
        self._pending: list[tuple[float, float, torch.Tensor]] = []

    def targets_s(
        self, origin_s: float, end_s: float, nominal_dt_s: float, *, frame_origin_s: float | None = None
    ) -> np.ndarray:
        count = max(1, math.ceil((end_s - origin_s) * self.config.fps - 1e-9))
        self._grid = origin_s + np.arange(count) * self._grid_dt
        return self._grid

    def _window(self, frames: list[torch.Tensor], start_s: float, last_grid: int) -> None:
        end_s = float(self._grid[last_grid]) + self._grid_dt
        self._pending.append((start_s, end_s, torch.stack(frames)))
        self._emitted += 1

    def _flush(self, *, force: bool = False) -> list[Chunk]:
        if not self._pending or (len(self._pending) < self.windows_per_chunk and not force):
            return []
        starts, ends, clips = zip(*self._pending, strict=True)
        self._pending = []
        return [Chunk(self.view_names[0], np.array(starts), np.array(ends), torch.stack(clips), False)]

    def feed(self, rgb: np.ndarray, time_s: float, indices: np.ndarray) -> list[Chunk]:
        image = self.encoder.prepare(rgb)
        length, stride = self.config.clip_len, self.config.stride
        for _ in indices:  # a frame shown at several grid times fills several window slots
            self._frames.append(image)
            self._times.append(time_s)
            while self._first + len(self._frames) >= self._next_start + length:  # a full window is here
                offset = self._next_start - self._first
                self._window(self._frames[offset : offset + length], self._times[offset], self._next_start + length - 1)
                self._next_start += stride
            drop = max(0, min(self._next_start - self._first, len(self._frames)))  # before the next window
            if drop:
                del self._frames[:drop], self._times[:drop]
                self._first += drop
        return self._flush()

    def finish(self) -> list[Chunk]:
        if self._emitted == 0 and self._frames:  # shorter than one window: pad with the last frame
            count = len(self._frames)
            frames = self._frames + [self._frames[-1]] * (self.config.clip_len - count)
            self._window(frames, self._times[0], self._first + count - 1)
        self._frames, self._times = [], []
        return self._flush(force=True)
