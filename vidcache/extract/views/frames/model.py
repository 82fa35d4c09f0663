"""The `frames` view's decode side: the clip view's sampled frames as pixels, stored once so
fine-tuning never decodes the videos again (the plugin is `views/frames.py`).

Each row is one sample time of the clip view (same sampler, same times, same row count) holding the
frame after the CLIP preprocessing's resize and centre crop and before normalisation: a uint8
[3, H, W] crop (H = W = 224 for every CLIP this vidcache knows), flattened. `vidcache finetune
--frames-from cache` reads these rows; `--frames-from videos` decodes with `FramesConsumer` too,
so both see the same bytes. Rows are gzip-compressed in the shards (`compressed_views`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ....config import SamplingConfig
from ...consumers import Chunk, ClipFrames

FRAMES_VIEW = "frames"
FRAMES_DTYPE = "uint8"
# measured on the generated test videos and 480p H.264 screen/camera clips: gzip level 4 keeps
# 35-70 % of the raw crop bytes (flat synthetic frames go far lower); the estimate quotes the range
GZIP_KEPT_RANGE = (0.35, 0.7)


class FramesConsumer(ClipFrames):
    """The clip view's sample times and `prepare` (resize + centre crop), rows stored as uint8.

    Its rows are written from host memory, so it takes no NVDEC frames (`device_frames`).

    Subclassing `ClipFrames` keeps the two views' row-for-row agreement by construction: the same
    targets, the same "frame on screen at t", the same N-frame padding. A frame shown at several
    sample times is repeated here (one row per sample time) rather than in the writer, so the rows
    can be spilled to disk as they come."""

    device_frames = False

    def __init__(self, encoder, sampling: SamplingConfig, *, batch_size: int):
        super().__init__(encoder, sampling, batch_size=batch_size)
        self.view_names = (FRAMES_VIEW,)

    def _chunk(self) -> Chunk:
        repeats = np.array(self._repeats)
        crops = np.stack([image.numpy() for image in self._images]).reshape(len(self._images), -1)
        chunk = Chunk(
            FRAMES_VIEW,
            np.repeat(np.array(self._times), repeats),
            None,
            np.repeat(crops.astype(np.uint8, copy=False), repeats, axis=0),
            True,  # finished rows: nothing for a model thread to do
        )
        self._times, self._images, self._repeats = [], [], []
        return chunk


def frames_identity(preprocess: dict, sampling: dict, *, clip_model: str) -> dict:
    """The frames view's identity: what its pixels are a function of (the clip settings' sampling and
    preprocessing) plus the row layout; `clip_model` names the tower the crops are prepared for."""
    size = [int(s) for s in preprocess["size"]]
    return {
        "stored": "resize + centre crop of the CLIP preprocessing, before normalisation; uint8 [3, H, W] flattened",
        "preprocess": preprocess,
        "sampling": sampling,
        "clip_model": clip_model,
        "row_shape": [3, *size],
        "dtype": FRAMES_DTYPE,
        "feature_dim": 3 * size[0] * size[1],
    }


class CropPreparer:
    """The frames view's "model": the CLIP tower's preprocessing without the tower, for the decode
    side (`prepare`, `process_prepare`, `preprocess`); nothing is encoded in the main process (the
    consumer's chunks are finished rows)."""

    view = FRAMES_VIEW
    store_dtype = FRAMES_DTYPE
    random_weights = False

    def __init__(self, preprocess) -> None:
        self.preprocess = preprocess
        self.max_short_side = min(preprocess.size)

    def prepare(self, rgb: np.ndarray):
        return self.preprocess.resize_crop(rgb)

    @property
    def process_prepare(self):
        return self.preprocess.resize_crop


def crop_bytes(size: Iterable[int]) -> int:
    """Bytes of one stored crop before compression."""
    height, width = size
    return 3 * int(height) * int(width)


def estimate_frames_bytes(
    durations_s: list[float | None], sampling: SamplingConfig, *, size: tuple[int, int]
) -> tuple[int, int]:
    """(rows, uncompressed bytes) of the frames view for videos of these durations (None: unknown,
    counted as the mean of the known ones)."""
    known = [d for d in durations_s if d is not None]
    fallback = float(np.mean(known)) if known else 0.0
    rows = 0
    for duration in durations_s:
        span = fallback if duration is None else duration
        if sampling.num_frames is not None:
            rows += sampling.num_frames
        else:
            rows += max(1, math.ceil(span * float(sampling.fps or 1.0) - 1e-9))
    return rows, rows * crop_bytes(size)


def probe_durations_s(paths: list[str], *, limit: int = 64) -> list[float | None]:
    """Durations from the container headers (no decoding) of at most `limit` files, evenly picked;
    the rest count as unknown (the estimate extrapolates from the probed ones)."""
    from ...decode import open_video

    picked = (
        set(np.linspace(0, len(paths) - 1, min(limit, len(paths))).round().astype(int).tolist()) if paths else set()
    )
    out: list[float | None] = []
    for number, path in enumerate(paths):
        duration = None
        if number in picked and "://" not in path:  # a URL would be fetched: not for an estimate
            try:
                container, _, info = open_video(path)
                container.close()
                duration = info.duration_s
            except Exception:  # unreadable files fail in the run itself, with their reason
                duration = None
        out.append(duration)
    return out


def estimate_message(paths: list[str], sampling: SamplingConfig, *, size: tuple[int, int] = (224, 224)) -> str:
    """The line `extract --views ...,frames` prints before it starts."""
    rows, raw = estimate_frames_bytes(probe_durations_s(paths), sampling, size=size)
    low, high = (raw * kept / 2**20 for kept in GZIP_KEPT_RANGE)
    return (
        f"frames view: about {rows} frames of {size[0]}x{size[1]} px for {len(paths)} video(s), "
        f"{raw / 2**20:.1f} MiB uncompressed, about {low:.1f}-{high:.1f} MiB gzip-compressed in the cache"
    )


def clip_input_size(model: str) -> tuple[int, int]:
    """The image size of an open_clip architecture from its config alone (no weights); 224 where
    the config is not known locally (hf-hub models)."""
    import open_clip

    from ..clip.model import register_vidcache_configs

    register_vidcache_configs()
    config = open_clip.get_model_config(model) or {}
    size = config.get("vision_cfg", {}).get("image_size", 224)
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
