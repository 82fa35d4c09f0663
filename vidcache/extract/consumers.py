"""What each video view takes from the one decode pass.

A consumer names the sample times it needs (`targets_s`), receives the decoded frame on screen at
each of them (`feed`), and turns them into `Chunk`s of rows: model inputs for the model thread
(clip frames; a view's own consumer, in its folder, may make others: S3D windows, or finished rows
such as flow fields computed in the decode worker so TV-L1 runs in parallel over workers). Each
consumer holds at most one window of frames or flow pairs, so memory does not grow with video length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from ..config import SamplingConfig
from .sampling import sample_times


@dataclass
class Chunk:
    """Rows of one view of one video, in time order."""

    view: str
    times_s: np.ndarray  # start of each row: the time of the (first) frame shown
    end_times_s: np.ndarray | None  # end of each row's span (windows, flow pairs, audio examples)
    data: torch.Tensor | np.ndarray  # model input when `encoded` is False, else the stored rows
    encoded: bool
    repeats: np.ndarray | None = None  # row k stands for repeats[k] sample times (clip view)

    def __len__(self) -> int:
        return len(self.times_s)


def resize_short_side(rgb: np.ndarray, short_side: int) -> np.ndarray:
    """uint8 HxWx3 → short side `short_side`, aspect kept (antialiased bilinear, as torchvision)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    height, width = rgb.shape[:2]
    if min(height, width) == short_side:
        return rgb
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    image = TF.resize(image, short_side, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return image.permute(1, 2, 0).contiguous().numpy()


class Consumer:
    view_names: tuple[str, ...]  # cache views this consumer produces
    max_short_side: int | None = None  # how large a frame it needs (RGB conversion pre-shrinks to it)
    device_frames: bool = False  # `feed` also takes an HxWx3 uint8 torch tensor on the GPU (NVDEC)

    def targets_s(
        self, origin_s: float, end_s: float, nominal_dt_s: float, *, frame_origin_s: float | None = None
    ) -> np.ndarray:
        raise NotImplementedError

    def feed(self, rgb: np.ndarray, time_s: float, indices: np.ndarray) -> list[Chunk]:
        """The frame shown at own target times `indices` (ascending, consecutive)."""
        raise NotImplementedError

    def finish(self) -> list[Chunk]:
        return []

    def frame_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The exact (width, height) this consumer wants each frame shrunk to, given the displayed
        size, made by the decoder's own reformat (shots: 48x27); None: `max_short_side` applies."""
        return None

    def failure(self, *, bad_packets: int) -> str | None:
        """Why this consumer's views fail for the video just decoded although frames came (shots
        need every frame), or None; the other consumers' views are kept."""
        return None

    def tail_indices(self) -> np.ndarray | None:
        """After the last frame: own target indices still to be given the last decoded frame, when
        this consumer was fed nothing at all but must still have rows (None: no such need)."""
        return None


class ClipFrames(Consumer):
    """One row per sample time (`--fps` / `--num-frames`); a frame shown at several sample times is
    encoded once and repeated."""

    device_frames = True  # the encoder's prepare (torch resize/crop) runs where the frame is

    def __init__(self, encoder, sampling: SamplingConfig, *, batch_size: int):
        self.encoder, self.sampling, self.batch_size = encoder, sampling, batch_size
        self.view_names = (encoder.view,)
        size = getattr(encoder, "preprocess", None)
        # an encoder that resizes before it crops (timm: size / crop_pct) says how large a frame it needs
        self.max_short_side = getattr(encoder, "max_short_side", None) or (min(size.size) if size is not None else None)
        self._times: list[float] = []
        self._images: list[torch.Tensor] = []
        self._repeats: list[int] = []
        self._expected = 0
        self._rows = 0
        self._last: tuple[torch.Tensor, float] | None = None

    def targets_s(
        self, origin_s: float, end_s: float, nominal_dt_s: float, *, frame_origin_s: float | None = None
    ) -> np.ndarray:
        targets = sample_times(self.sampling, start_s=origin_s, end_s=end_s)
        self._expected = len(targets)
        return targets

    def _chunk(self) -> Chunk:
        chunk = Chunk(
            self.view_names[0],
            np.array(self._times),
            None,
            torch.stack(self._images),
            False,
            np.array(self._repeats),
        )
        self._times, self._images, self._repeats = [], [], []
        return chunk

    def feed(self, rgb: np.ndarray, time_s: float, indices: np.ndarray) -> list[Chunk]:
        image = self.encoder.prepare(rgb)
        self._images.append(image)
        self._times.append(time_s)
        self._repeats.append(len(indices))
        self._rows += len(indices)
        self._last = (image, time_s)
        return [self._chunk()] if len(self._images) >= self.batch_size else []

    def tail_indices(self) -> np.ndarray | None:
        # N-frame sampling always has N rows; when every sample time lies past the last frame (a
        # header that promises more than the file holds) the last decoded frame stands for all
        if self.sampling.num_frames is not None and self._rows == 0 and self._expected > 0:
            return np.arange(self._expected)
        return None

    def finish(self) -> list[Chunk]:
        missing = self._expected - self._rows
        if self.sampling.num_frames is not None and missing > 0 and self._rows:  # N-frame sampling: N rows
            if not self._images:  # the last frame went out with a full batch: send it again for the rest
                image, time_s = self._last
                self._images, self._times, self._repeats = [image], [time_s], [0]
            self._repeats[-1] += missing
            self._rows += missing
        return [self._chunk()] if self._images else []


class WindowGrid(Protocol):
    """The clip grid of a clip-level view: `clip_len` frames at `fps`, a window every `stride` frames."""

    fps: float
    clip_len: int
    stride: int


class FrameWindows(Consumer):
    """Frames at `fps` grouped in windows of `clip_len`, one every `stride` frames; a video shorter
    than one window gives one window padded with its last frame. `config` is any settings object with
    `fps`, `clip_len` and `stride` (S3D's settings, a video model's clip grid): clip-level views share it."""

    def __init__(self, encoder, config: WindowGrid, *, batch_frames: int):
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
