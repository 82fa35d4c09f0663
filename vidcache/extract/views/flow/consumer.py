"""The `flow` and `motion` views' share of the decode pass: flow pairs, computed in the decode worker."""

from __future__ import annotations

import math

import numpy as np

from ....config import SamplingConfig
from ...consumers import Chunk, Consumer, resize_short_side
from ...sampling import sample_times
from .settings import FlowConfig


class FlowPairs(Consumer):
    """For each sample time t, the frame shown at t and the one shown `step` nominal frame
    intervals later (the next decoded frame(s) for constant frame rate). Flow is computed at
    `short_side` in this worker, quantised, and the centre square stored; the motion descriptor
    uses the whole field."""

    def __init__(self, method, config: FlowConfig, sampling: SamplingConfig, *, views: tuple[str, ...], batch: int):
        from .motion import motion_descriptor
        from .quantize import quantize_flow

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
