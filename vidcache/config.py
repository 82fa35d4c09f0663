"""Plain, self-validating dataclasses for every option that changes what lands in the cache.

They are filled by the CLI and saved verbatim (as JSON) into shard attributes and the catalog, so a
number in the cache can be traced to the options that made it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import ConfigError

Dtype = Literal["float16", "float32"]
Device = Literal["auto", "cpu", "cuda"]
SeekMode = Literal["auto", "never", "always"]


def check_choice(name: str, value: Any, allowed: Any) -> None:
    choices = get_args(allowed)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class SamplingConfig:
    """Which frames of a video are sampled.

    Exactly one of `fps` (a frame every 1/fps seconds from the start) or `num_frames` (N frames at the
    centres of N equal segments of the duration). `clip_len`/`clip_stride` group the sampled frames
    into windows for clip models (a window every `clip_stride` frames, `clip_len` frames long).
    """

    fps: float | None = 1.0
    num_frames: int | None = None
    clip_len: int | None = None
    clip_stride: int | None = None

    def __post_init__(self) -> None:
        if (self.fps is None) == (self.num_frames is None):
            raise ConfigError("give exactly one of --fps or --num-frames")
        if self.fps is not None and not (self.fps > 0):
            raise ConfigError(f"--fps must be > 0, got {self.fps}")
        if self.num_frames is not None and self.num_frames < 1:
            raise ConfigError(f"--num-frames must be >= 1, got {self.num_frames}")
        if (self.clip_len is None) != (self.clip_stride is None):
            raise ConfigError("give both --clip-len and --clip-stride, or neither")
        if self.clip_len is not None and (self.clip_len < 1 or (self.clip_stride or 0) < 1):
            raise ConfigError("--clip-len and --clip-stride must be >= 1")


@dataclass(frozen=True)
class ClipConfig:
    """The open_clip image tower used for the `clip` view."""

    model: str = "ViT-B-32"
    pretrained: str = "openai"  # tag, local file, hf-hub:org/repo, or "none" (random init, recorded)
    dtype: Dtype = "float16"
    seed: int = 0  # only used with pretrained="none", so random weights are reproducible

    def __post_init__(self) -> None:
        check_choice("--dtype", self.dtype, Dtype)
        if not self.model:
            raise ConfigError("--clip-model must not be empty")
        if not self.pretrained:
            raise ConfigError("--clip-pretrained must not be empty; use 'none' for random weights")


@dataclass(frozen=True)
class RunConfig:
    """How a run is executed; it does not change the numbers written, so it may differ between runs."""

    device: Device = "auto"
    batch_size: int = 64
    workers: int = 2
    decode_threads: int = 0  # FFmpeg codec threads per video, 0 = FFmpeg's choice
    shard_index: int = 0
    shard_count: int = 1
    shard_size_mb: float = 256.0
    commit_every_s: float = 60.0
    video_timeout_s: float = 600.0
    seek: SeekMode = "auto"
    retry_failed: bool = False
    allow_download: bool = False

    def __post_init__(self) -> None:
        check_choice("--device", self.device, Device)
        check_choice("--seek", self.seek, SeekMode)
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.workers}")
        if not (0 <= self.shard_index < self.shard_count):
            raise ConfigError(f"--shard {self.shard_index}/{self.shard_count}: K must be in 0..N-1 (e.g. 0/4 .. 3/4)")
        if self.shard_size_mb <= 0 or self.commit_every_s <= 0 or self.video_timeout_s <= 0:
            raise ConfigError("--shard-size-mb, --commit-every-s and --video-timeout-s must be > 0")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse `K/N` (0-based K) as used by Slurm array task ids."""
    try:
        k_str, n_str = text.split("/")
        k, n = int(k_str), int(n_str)
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/4") from None
    if n < 1 or not (0 <= k < n):
        raise ConfigError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/4")
    return k, n


@dataclass(frozen=True)
class ExtractConfig:
    """Everything `vidcache extract` was asked to do."""

    views: tuple[str, ...] = ("clip",)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    run: RunConfig = field(default_factory=RunConfig)


def to_json(obj: Any) -> str:
    """Stable JSON of a (nested) dataclass, for HDF5 attributes and the catalog."""
    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
