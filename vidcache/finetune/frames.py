"""Where fine-tuning gets its pixels: the cache's `frames` view, or the source videos decoded again.

Both give, per video, the uint8 crops [T, 3, H, W] that `extract` fed the CLIP tower (resize +
centre crop of its preprocessing, before normalisation) at the clip view's sample times. Decoding
goes through `VideoStage` and `FramesConsumer`, i.e. extract's own sampler and `prepare`, so the
two sources agree byte for byte (tests/test_finetune.py checks it) and train and inference see
identical pixels.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..cache.reader import Cache
from ..errors import ConfigError
from ..extract.preprocess import ImagePreprocess
from ..extract.views.frames.model import FramesConsumer


def even_picks(count: int, max_frames: int) -> np.ndarray:
    """At most `max_frames` row positions, evenly spaced (as the heads subsample a view's rows)."""
    if count <= max_frames:
        return np.arange(count)
    return np.linspace(0, count - 1, max_frames).round().astype(int)


def preprocess_of(identity: dict) -> ImagePreprocess:
    """The CLIP preprocessing recorded in a clip (or frames) view identity."""
    recorded = dict(identity["preprocess"])
    recorded["size"] = tuple(recorded["size"])
    recorded["mean"], recorded["std"] = tuple(recorded["mean"]), tuple(recorded["std"])
    return ImagePreprocess(**recorded)


class FrameSource:
    """Per video: uint8 crops [T, 3, H, W] (at most `max_frames`, evenly spaced) and their times.
    Held in memory after the first read when all of them fit `memory_budget_bytes`."""

    def __init__(self, video_ids: list[str], *, max_frames: int, memory_budget_bytes: float, row_bytes: int):
        self.video_ids, self.max_frames = list(video_ids), max_frames
        self._keep = len(self.video_ids) * max_frames * row_bytes <= memory_budget_bytes
        self._held: dict[str, tuple[torch.Tensor, np.ndarray]] = {}

    def _load(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:  # all rows, [T, 3, H, W] uint8
        raise NotImplementedError

    def preload(self, *, workers: int = 1) -> None:
        """Read every video now (in `workers` threads: PyAV and zlib release the GIL)."""
        if not self._keep:
            return
        todo = [v for v in self.video_ids if v not in self._held]
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for video_id, got in zip(todo, pool.map(self._subsampled, todo), strict=True):
                self._held[video_id] = got

    def _subsampled(self, video_id: str) -> tuple[torch.Tensor, np.ndarray]:
        crops, times = self._load(video_id)
        pick = even_picks(len(crops), self.max_frames)
        return torch.from_numpy(np.ascontiguousarray(crops[pick])), np.asarray(times)[pick]

    def get(self, video_id: str) -> tuple[torch.Tensor, np.ndarray]:
        held = self._held.get(video_id)
        if held is not None:
            return held
        got = self._subsampled(video_id)
        if self._keep:
            self._held[video_id] = got
        return got


class CacheFrames(FrameSource):
    """Rows of the cache's frames view (`extract --views clip,frames`)."""

    def __init__(self, cache: Cache, view: str, video_ids: list[str], *, max_frames: int, memory_budget_bytes: float):
        if view not in cache.views():
            raise ConfigError(
                f"--frames-from cache: cache {cache.path} has no {view!r} view; extract it with "
                f"`vidcache extract MANIFEST --cache {cache.path} --views clip,frames` (same options as the "
                "clip view), or use --frames-from videos"
            )
        missing = sorted(set(video_ids) - set(cache.video_ids(view)))
        if missing:
            raise ConfigError(
                f"--frames-from cache: {len(missing)} video(s) have no {view!r} rows (e.g. {missing[0]!r}); "
                "run the same extract again to complete them, or use --frames-from videos"
            )
        shape = cache.view_info(view)["row_shape"]
        super().__init__(
            video_ids, max_frames=max_frames, memory_budget_bytes=memory_budget_bytes, row_bytes=math.prod(shape)
        )
        self.cache, self.view, self.row_shape = cache, view, tuple(shape)
        # resolved here, in the catalog's thread: reads may then run in preload threads (SQLite may not)
        self._locations = {loc.video_id: loc for loc in cache._locations(view, video_ids)}
        self._decoder = cache._decoder(view, raw=True)

    def _load(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        rows, times = self.cache._read_located(self.view, [self._locations[video_id]], decode=self._decoder)[0]
        return np.asarray(rows).reshape(len(rows), *self.row_shape), times


@dataclass(frozen=True)
class _PrepareOnly:
    """What `FramesConsumer` uses of an encoder: its view name and the preprocessing's first half."""

    preprocess: ImagePreprocess
    view: str = "clip"

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        return self.preprocess.resize_crop(rgb)


class VideoFrames(FrameSource):
    """The source videos decoded again with extract's decode stage, sampler and preprocessing, under
    the settings recorded in the clip view's identity (sampling, preprocessing, video stream)."""

    def __init__(
        self, cache: Cache, clip_identity: dict, video_ids: list[str], *, max_frames: int, memory_budget_bytes: float
    ):
        from ..config import SamplingConfig

        self.preprocess = preprocess_of(clip_identity)
        sampling = clip_identity.get("sampling") or {}
        self.sampling = SamplingConfig(fps=sampling.get("fps"), num_frames=sampling.get("num_frames"))
        stream = clip_identity.get("video_stream", "ffmpeg-best")
        self.video_stream = stream if isinstance(stream, int) else None
        entries = cache.entries().set_index("video_id")
        self.entries = {v: entries.loc[v] for v in video_ids}
        height, width = self.preprocess.size
        super().__init__(
            video_ids, max_frames=max_frames, memory_budget_bytes=memory_budget_bytes, row_bytes=3 * height * width
        )

    def _load(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        from ..cache.layout import STATUS_DONE
        from ..config import RunConfig, StreamConfig
        from ..extract.stage import VideoStage
        from ..manifest import VideoEntry

        row = self.entries[video_id]

        def seconds(value) -> float | None:
            return None if value is None or value != value else float(value)

        entry = VideoEntry(video_id, str(row["path"]), tuple(row["labels"]), row["split"], seconds(row["start_s"]),
                           seconds(row["end_s"]))  # fmt: skip
        consumer = FramesConsumer(_PrepareOnly(self.preprocess), self.sampling, batch_size=64)
        stage = VideoStage(
            entry, [consumer], run=RunConfig(device="cpu"), streams=StreamConfig(video=self.video_stream)
        )
        chunks = list(stage)
        status, reason = stage.outcomes.get("frames", ("failed", "no outcome"))
        if status != STATUS_DONE or not chunks:
            raise ConfigError(f"--frames-from videos: {video_id} ({entry.path}) cannot be decoded: {reason}")
        height, width = self.preprocess.size
        rows = np.concatenate([np.asarray(c.data) for c in chunks]).reshape(-1, 3, height, width)
        return rows, np.concatenate([c.times_s for c in chunks])
