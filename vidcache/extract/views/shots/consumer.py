"""The shots view's consumer: every decoded frame (one target per nominal frame interval), shrunk
by the decoder's own reformat straight to the detector's size, in; at the end of the video the shot
rows and the per-frame probabilities out (shots need the whole video's probabilities)."""

from __future__ import annotations

import math

import numpy as np

from ...consumers import Chunk, Consumer
from .content import ContentStream, work_size
from .segments import merge_short, scenes_from_cuts, scenes_from_probabilities, shot_rows
from .settings import ShotsConfig
from .transnetv2 import INPUT_HW


class ShotFrames(Consumer):
    def __init__(self, detector, settings: ShotsConfig, *, views: tuple[str, ...]) -> None:
        self.detector, self.settings, self.view_names = detector, settings, views
        self._times: list[float] = []
        self._frame_s = 1 / 30
        self._stream = detector.stream() if settings.method == "transnetv2" else None
        self._content: ContentStream | None = None

    def frame_size(self, width: int, height: int) -> tuple[int, int] | None:
        if self.settings.method == "transnetv2":
            return INPUT_HW[1], INPUT_HW[0]  # as the reference's `ffmpeg -s 48x27`: aspect not kept
        return work_size(width, height)

    def targets_s(
        self, origin_s: float, end_s: float, nominal_dt_s: float, *, frame_origin_s: float | None = None
    ) -> np.ndarray:
        """The middle of each nominal frame interval in [origin_s, end_s): every frame of a
        constant-rate video once (a variable-rate one: the frame on screen at each interval)."""
        self._frame_s = nominal_dt_s
        grid = origin_s if frame_origin_s is None else frame_origin_s
        first = math.floor((origin_s - grid) / nominal_dt_s + 1e-6)
        last = max(first + 1, math.ceil((end_s - grid) / nominal_dt_s - 1e-6))
        targets = grid + (np.arange(first, last) + 0.5) * nominal_dt_s
        targets = np.maximum(targets, origin_s)
        if self._content is None and self.settings.method == "content":
            min_frames = math.ceil(self.settings.min_s / nominal_dt_s - 1e-6)
            self._content = ContentStream(threshold=self.settings.content_threshold, min_frames=min_frames)
        return targets[targets < end_s] if len(targets) > 1 else targets

    def feed(self, rgb: np.ndarray, time_s: float, indices: np.ndarray) -> list[Chunk]:
        for _ in indices:  # a frame on screen over several intervals counts once per interval
            self._times.append(time_s)
            if self._stream is not None:
                self._stream.add(rgb)
            else:
                self._content.add(rgb)  # type: ignore[union-attr]
        return []

    def failure(self, *, bad_packets: int) -> str | None:
        """Why this video's shots cannot be trusted (a frame missing from the sequence), or None."""
        if bad_packets:
            return f"{bad_packets} packet(s) could not be decoded: shots need every frame"
        return None

    def finish(self) -> list[Chunk]:
        if not self._times:
            return []
        times = np.asarray(self._times, np.float64)
        if self._stream is not None:
            probs = self._stream.finish()
            scenes = scenes_from_probabilities(probs, self.settings.threshold)
        else:
            content = self._content
            probs = np.asarray(content.scores, np.float32) / 255.0  # type: ignore[union-attr]
            scenes = scenes_from_cuts(content.cuts, len(times))  # type: ignore[union-attr]
            # the flash filter already keeps cuts min_s apart; min_s below also merges the last shot
        scenes = merge_short(scenes, times, self._frame_s, self.settings.min_s)
        chunks = []
        if "shots" in self.view_names:
            start_s, end_s, rows = shot_rows(scenes, probs, times, self._frame_s)
            chunks.append(Chunk("shots", start_s, end_s, rows, True))
        if "shot_probs" in self.view_names:
            chunks.append(Chunk("shot_probs", times, times + self._frame_s, probs[:, None].astype(np.float32), True))
        self._times = []
        return chunks
