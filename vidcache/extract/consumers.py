"""What each video view takes from the one decode pass.

A consumer names the sample times it needs (`targets_s`), receives the decoded frame on screen at
each of them (`feed`), and turns them into `Chunk`s of rows: model inputs for the model thread
(clip frames, S3D windows) or finished rows (flow fields and motion descriptors, computed here in
the decode worker so TV-L1 runs in parallel over workers). Each consumer holds at most one window
of frames or flow pairs, so memory does not grow with video length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import SamplingConfig

if TYPE_CHECKING:
    from .views.flow import FlowConfig
    from .views.s3d import S3dConfig


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


class FlowPairs(Consumer):
    """For each sample time t, the frame shown at t and the one shown `step` nominal frame
    intervals later (the next decoded frame(s) for constant frame rate). Flow is computed at
    `short_side` in this worker, quantised, and the centre square stored; the motion descriptor
    uses the whole field."""

    def __init__(self, method, config: FlowConfig, sampling: SamplingConfig, *, views: tuple[str, ...], batch: int):
        from .flow import motion_descriptor, quantize_flow

        self.method, self.config, self.sampling = method, config, sampling
        self.view_names = views  # ("flow", "motion"), or one of them
        self.max_short_side = config.short_side
        self.batch = batch
        self._quantize, self._describe = quantize_flow, motion_descriptor
        self._owner = np.zeros(0, np.int64)  # target index → pair number
        self._pairs: dict[int, list] = {}  # pair → [first rgb, first time, second rgb, second time]
        self._ready: list[tuple[np.ndarray, float, np.ndarray, float]] = []

    def targets_s(
        self, origin_s: float, end_s: float, nominal_dt_s: float, *, frame_origin_s: float | None = None
    ) -> np.ndarray:
        cfg = self.config
        if cfg.fps is not None:
            firsts = origin_s + np.arange(max(1, math.ceil((end_s - origin_s) * cfg.fps - 1e-9))) / cfg.fps
        else:
            firsts = sample_times(self.sampling, start_s=origin_s, end_s=end_s)
        # Aim both frames of a pair at the middle of their frame intervals on the stream's nominal grid,
        # so timestamps rounded to a coarse time base (1/1000 in MKV) still give frames `step` apart.
        grid = origin_s if frame_origin_s is None else frame_origin_s
        index = np.floor((firsts - grid) / nominal_dt_s + 1e-6)
        firsts = np.maximum(grid + (index + 0.5) * nominal_dt_s, firsts)
        seconds = grid + (index + 0.5 + cfg.step) * nominal_dt_s
        targets = np.stack([firsts, seconds], axis=1).reshape(-1)
        order = np.argsort(targets, kind="stable")
        self._owner = np.arange(len(targets))[order]  # sorted position → original (pair*2 + which)
        return targets[order]

    def feed(self, rgb: np.ndarray, time_s: float, indices: np.ndarray) -> list[Chunk]:
        small = resize_short_side(rgb, self.config.short_side)
        for index in indices:
            original = int(self._owner[index])
            pair, which = divmod(original, 2)
            slot = self._pairs.setdefault(pair, [None, 0.0, None, 0.0])
            slot[2 * which], slot[2 * which + 1] = small, time_s
            if slot[0] is not None and slot[2] is not None:
                self._ready.append(tuple(self._pairs.pop(pair)))  # type: ignore[arg-type]
        return self._compute() if len(self._ready) >= self.batch else []

    def _compute(self) -> list[Chunk]:
        if not self._ready:
            return []
        ready, self._ready = sorted(self._ready, key=lambda p: p[1]), []
        first = np.stack([p[0] for p in ready])
        second = np.stack([p[2] for p in ready])
        flow = self.method.compute(first, second)  # [N, 2, H, W] float32, pixels at short_side
        times = np.array([p[1] for p in ready])
        ends = np.array([p[3] for p in ready])
        chunks = []
        if "flow" in self.view_names:
            side = self.config.short_side
            height, width = flow.shape[2:]
            top, left = (height - side) // 2, (width - side) // 2
            square = flow[:, :, top : top + side, left : left + side]
            quantised = self._quantize(square, self.config.bound_px).reshape(len(ready), -1)
            chunks.append(Chunk("flow", times, ends, quantised, True))
        if "motion" in self.view_names:
            cfg = self.config
            descriptor = self._describe(
                flow,
                grid=cfg.motion_grid,
                orientations=cfg.motion_orientations,
                magnitude_edges_px=cfg.motion_magnitude_edges_px,
            )
            chunks.append(Chunk("motion", times, ends, descriptor.astype(np.float32), True))
        return chunks

    def finish(self) -> list[Chunk]:
        self._pairs.clear()  # pairs whose second frame lies past the end of the video
        return self._compute()


def video_groups(views: list[str] | tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """(first view, the group's views) per decode-side consumer of the video views among `views`, in
    the registry's order: views of one group (flow, motion) share one consumer."""
    from .views import VIEWS

    wanted = [name for name in VIEWS.in_order() if name in views and VIEWS.get(name).source == "video"]
    groups: dict[str, list[str]] = {}
    for name in wanted:
        groups.setdefault(VIEWS.get(name).group or name, []).append(name)
    return [(members[0], tuple(members)) for members in groups.values()]


def make_consumers(
    views: list[str] | tuple[str, ...],
    *,
    config,
    ctx,
    models: dict,
    decode_models: dict,
) -> list[Consumer]:
    """The decode-side work of the requested video views, in the order the stage feeds them. `models`
    holds each view's encoder, or in a decode process its `PrepareOnly` twin (only `view`, `prepare`,
    `preprocess` and `max_short_side` are used here); `decode_models` each group's decode-side model."""
    from .views import VIEWS

    consumers: list[Consumer] = []
    for first, members in video_groups(views):
        plugin = VIEWS.get(first)()
        consumers.append(
            plugin.consumer(
                config.settings_of(first),
                ctx,
                model=models.get(first),
                decode_model=decode_models.get(plugin.group or first),
                views=members,
            )
        )
    return consumers
