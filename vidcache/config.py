"""Plain, self-validating dataclasses for every option that changes what lands in the cache.

They are filled by the CLI and saved verbatim (as JSON) into shard attributes and the catalog, so a
number in the cache can be traced to the options that made it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from .errors import ConfigError

Dtype = Literal["float16", "float32"]
Device = Literal["auto", "cpu", "cuda"]
SeekMode = Literal["auto", "never", "always"]
DecodeIn = Literal["auto", "threads", "processes"]
EngineName = Literal["local", "ray"]


def check_choice(name: str, value: Any, allowed: Any) -> None:
    choices = get_args(allowed)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class SamplingConfig:
    """Which frames of a video are sampled.

    Exactly one of `fps` (a frame every 1/fps seconds from the start) or `num_frames` (N frames at the
    centres of N equal segments of the duration). Used by the clip view, and by flow unless it has
    its own `--flow-fps`.
    """

    fps: float | None = 1.0
    num_frames: int | None = None

    def __post_init__(self) -> None:
        if (self.fps is None) == (self.num_frames is None):
            raise ConfigError("give exactly one of --fps or --num-frames")
        if self.fps is not None and not (self.fps > 0):
            raise ConfigError(f"--fps must be > 0, got {self.fps}")
        if self.num_frames is not None and self.num_frames < 1:
            raise ConfigError(f"--num-frames must be >= 1, got {self.num_frames}")


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


ViewName = Literal["clip", "s3d", "audio", "flow", "motion"]
VIDEO_VIEWS = ("clip", "s3d", "flow", "motion")  # views fed by the one video decode pass


@dataclass(frozen=True)
class S3dConfig:
    """torchvision's S3D on clip windows: `clip_len` frames at `fps`, a window every `stride` frames.

    Defaults follow torchvision's Kinetics-400 recipe (15 fps; resize 256x256, centre crop 224) with
    32-frame windows (2.1 s, as CoCLR/CVTCL use), not overlapping."""

    weights: str = "kinetics400"  # torchvision's KINETICS400_V1 in the torch hub cache, a file, or "none"
    fps: float = 15.0
    clip_len: int = 32
    stride: int = 32
    seed: int = 0  # only used with weights="none"

    def __post_init__(self) -> None:
        if not (self.fps > 0):
            raise ConfigError(f"--s3d-fps must be > 0, got {self.fps}")
        if self.clip_len < S3D_MIN_FRAMES or self.stride < 1:
            raise ConfigError(
                f"--s3d-clip-len must be >= {S3D_MIN_FRAMES} (S3D's temporal pooling needs it) and --s3d-stride >= 1"
            )


S3D_MIN_FRAMES = 14  # torchvision's S3D_Weights meta "min_temporal_size"
AudioEncoderName = Literal["logmel-stats", "vggish"]


@dataclass(frozen=True)
class AudioConfig:
    """16 kHz mono log-mel examples of 0.96 s (VGGish's front end) and the encoder applied to them."""

    encoder: AudioEncoderName = "logmel-stats"  # weights-free default so audio works offline
    weights: str | None = None  # --audio-weights PATH (vggish)

    def __post_init__(self) -> None:
        check_choice("--audio-encoder", self.encoder, AudioEncoderName)


FlowMethodName = Literal["tvl1", "raft"]
RaftModel = Literal["small", "large"]


@dataclass(frozen=True)
class FlowConfig:
    """Optical flow between the frame on screen at each sample time and the one `step` frames later.

    Fields are computed at `short_side` (aspect kept), stored as the centre `short_side` square,
    quantised to uint8 within ±`bound_px` (pixels of the stored resolution). The `motion` view is a
    histogram of flow orientation × magnitude over a `motion_grid` × `motion_grid` grid of each field."""

    method: FlowMethodName = "tvl1"
    raft_model: RaftModel = "small"
    weights: str = "default"  # raft: torchvision's C_T_V2 weights in the torch hub cache, a file, or "none"
    fps: float | None = None  # None: at the clip view's sample times (--fps / --num-frames)
    step: int = 1
    short_side: int = 128
    bound_px: float = 20.0
    motion_grid: int = 4
    motion_orientations: int = 8
    motion_magnitude_edges_px: tuple[float, ...] = (0.25, 1.0, 3.0, 8.0)
    seed: int = 0  # raft with weights="none"

    def __post_init__(self) -> None:
        check_choice("--flow-method", self.method, FlowMethodName)
        check_choice("--flow-raft-model", self.raft_model, RaftModel)
        if self.fps is not None and not (self.fps > 0):
            raise ConfigError(f"--flow-fps must be > 0, got {self.fps}")
        if self.step < 1:
            raise ConfigError(f"--flow-step must be >= 1, got {self.step}")
        if self.short_side < 16:
            raise ConfigError(f"--flow-short-side must be >= 16, got {self.short_side}")
        if not (self.bound_px > 0):
            raise ConfigError(f"--flow-bound must be > 0, got {self.bound_px}")
        if self.motion_grid < 1 or self.motion_orientations < 1:
            raise ConfigError("--motion-grid and the orientation count must be >= 1")
        edges = self.motion_magnitude_edges_px
        if not edges or any(b <= a for a, b in itertools.pairwise(edges)) or edges[0] <= 0:
            raise ConfigError("motion magnitude edges must be positive and increasing")


@dataclass(frozen=True)
class StreamConfig:
    """Which stream of each file is read: None is FFmpeg's own choice (av_find_best_stream, as
    ffmpeg and torchcodec take by default), a number that FFmpeg stream index (as ffprobe lists)."""

    video: int | None = None
    audio: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("--video-stream", self.video), ("--audio-stream", self.audio)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"{name}={value!r} is not allowed; give a stream index >= 0 (as ffprobe lists them)")


@dataclass(frozen=True)
class RunConfig:
    """How a run is executed; it does not change the numbers written, so it may differ between runs."""

    device: Device = "auto"
    batch_size: int = 64
    workers: int = 0  # decode workers; 0 = auto: 2 on CPU, every core but one on CUDA, the cluster's CPUs on Ray
    decode_threads: int = 0  # FFmpeg codec threads per video, 0 = FFmpeg's choice (processes: cores / workers)
    # Decode workers as threads or as processes. Threads stop scaling at ~4 workers (the Python work per
    # frame and torch's resize share one interpreter); processes scale with the cores. auto = processes
    # when the models run on CUDA (decoding is then the bottleneck) unless RAFT flow needs the GPU model
    # inside the decode workers; threads on CPU, where the models want the cores anyway.
    decode_in: DecodeIn = "auto"
    shard_index: int = 0
    shard_count: int = 1
    shard_size_mb: float = 256.0
    commit_every_s: float = 60.0
    video_timeout_s: float | None = None  # None: 600 s, or 2 s per second of a longer video
    seek: SeekMode = "auto"
    retry_failed: bool = False
    allow_download: bool = False
    # Where the stages run: local = decode threads/processes on this machine (today's loop); ray = decode
    # tasks and model actors on a Ray cluster, shards written by workers, the catalog by this process.
    engine: EngineName = "local"
    ray_address: str | None = None  # None: start Ray on this machine; "auto" / "host:6379" / "ray://host:10001": join
    gpus_per_model: float | None = None  # GPUs per model actor (fractions share one); None: 1 if the cluster has GPUs

    def __post_init__(self) -> None:
        check_choice("--device", self.device, Device)
        check_choice("--engine", self.engine, EngineName)
        if self.gpus_per_model is not None and not (self.gpus_per_model >= 0):
            raise ConfigError(f"--gpus-per-model must be >= 0 (0.5 shares a GPU), got {self.gpus_per_model}")
        if self.engine != "ray" and (self.ray_address is not None or self.gpus_per_model is not None):
            raise ConfigError("--ray-address and --gpus-per-model need --engine ray")
        check_choice("--seek", self.seek, SeekMode)
        check_choice("--decode-in", self.decode_in, DecodeIn)
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 1 (or 0 for auto), got {self.workers}")
        if not (0 <= self.shard_index < self.shard_count):
            raise ConfigError(f"--shard {self.shard_index}/{self.shard_count}: K must be in 0..N-1 (e.g. 0/4 .. 3/4)")
        timeout_bad = self.video_timeout_s is not None and self.video_timeout_s <= 0
        if self.shard_size_mb <= 0 or self.commit_every_s <= 0 or timeout_bad:
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
    s3d: S3dConfig = field(default_factory=S3dConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    streams: StreamConfig = field(default_factory=StreamConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if not self.views:
            raise ConfigError("--views is empty; choose from: " + ", ".join(get_args(ViewName)))
        for view in self.views:
            check_choice("--views", view, ViewName)
        if len(set(self.views)) != len(self.views):
            raise ConfigError(f"--views {','.join(self.views)} names a view twice")


def to_json(obj: Any) -> str:
    """Stable JSON of a (nested) dataclass, for HDF5 attributes and the catalog."""
    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
