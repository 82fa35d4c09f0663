"""Plain, self-validating dataclasses for the options every extraction shares: sample times, streams,
and how a run is executed. Each view's own settings live with the view (vidcache/extract/views/), and
`vidcache.extract.config.ExtractConfig` puts them together.

Fields are made with `vidcache.fields.setting` (help text, flag), so the CLI is generated from them;
they are saved verbatim (as JSON) into shard attributes and the catalog, so a number in the cache can
be traced to the options that made it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError
from .fields import check, setting
from .fields import check_choice as _check_choice

Dtype = Literal["float16", "float32"]
Device = Literal["auto", "cpu", "cuda"]
SeekMode = Literal["auto", "never", "always"]
DecodeIn = Literal["auto", "threads", "processes"]
DecodeDevice = Literal["auto", "cpu", "cuda"]
EngineName = Literal["local", "ray"]


def check_choice(name: str, value: Any, allowed: Any) -> None:
    """`value` must be one of the `Literal` `allowed`; the error names `name` and lists the choices."""
    _check_choice("", name, value, allowed)


@dataclass(frozen=True)
class SamplingConfig:
    """Which frames of a video are sampled.

    Exactly one of `fps` (a frame every 1/fps seconds from the start) or `num_frames` (N frames at the
    centres of N equal segments of the duration). Used by the frame views (clip, timm), and by flow
    unless it has its own `--flow-fps`.
    """

    fps: float | None = setting(
        None, flag="--fps", help="Sample a frame every 1/FPS s (default 1.0 unless --num-frames)."
    )
    num_frames: int | None = setting(None, flag="--num-frames", help="Sample N frames uniformly instead of --fps.")

    def __post_init__(self) -> None:
        if self.fps is None and self.num_frames is None:
            object.__setattr__(self, "fps", 1.0)  # the default: one frame a second
        check(self, "fps", (self.fps is None) != (self.num_frames is None), "give exactly one of fps or num_frames")
        check(self, "fps", self.fps is None or self.fps > 0, "must be > 0")
        check(self, "num_frames", self.num_frames is None or self.num_frames >= 1, "must be >= 1")


def _stream_ok(value: int | None) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


@dataclass(frozen=True)
class StreamConfig:
    """Which stream of each file is read: None is FFmpeg's own choice (av_find_best_stream, as
    ffmpeg and torchcodec take by default), a number that FFmpeg stream index (as ffprobe lists)."""

    video: int | None = setting(
        None,
        flag="--video-stream",
        help="FFmpeg index of the video stream to read (as ffprobe lists; default: FFmpeg's best stream).",
    )
    audio: int | None = setting(
        None,
        flag="--audio-stream",
        help="FFmpeg index of the audio stream to read (as ffprobe lists; default: FFmpeg's best stream).",
    )

    def __post_init__(self) -> None:
        rule = "give a stream index >= 0 (as ffprobe lists them)"
        check(self, "video", _stream_ok(self.video), rule)
        check(self, "audio", _stream_ok(self.audio), rule)


@dataclass(frozen=True)
class RunConfig:
    """How a run is executed; it does not change the numbers written, so it may differ between runs."""

    device: Device = setting("auto", flag="--device", help="Where the models run.")
    batch_size: int = setting(64, flag="--batch-size", help="Frames per model batch.")
    workers: int = setting(
        0,
        flag="--workers",
        help="Videos decoded in parallel; 0 = auto: 2 on CPU, every core but one on CUDA, the cluster's CPUs on Ray.",
    )
    decode_threads: int = setting(
        0,
        flag="--decode-threads",
        help="FFmpeg codec threads per video; 0 = auto: the CPUs this process may use / --workers (at least 1).",
    )
    # Threads stop scaling at ~4 workers (the Python work per frame and torch's resize share one
    # interpreter); processes scale with the cores. auto = processes when the models run on CUDA
    # (decoding is then the bottleneck) unless RAFT flow needs the GPU model inside the decode workers.
    decode_in: DecodeIn = setting(
        "auto",
        flag="--decode-in",
        help="Decode workers as threads or processes (processes scale with the cores; auto: processes "
        "when the models run on CUDA, threads on CPU).",
    )
    # Unlike the other run settings this one changes the pixels (NVDEC's YUV→RGB and resize are not
    # FFmpeg's), so the resolved device enters the identity of every view fed by decoded frames.
    decode_device: DecodeDevice = setting(
        "cpu",
        flag="--decode-device",
        help="Where video is decoded: cpu (FFmpeg via PyAV), cuda (NVDEC via PyNvVideoCodec: pip install "
        "'vidcache[gpu-decode]' and an NVIDIA driver), auto = cuda when both and a GPU are present. Part of "
        "the views' identity; audio and codecs NVDEC cannot decode fall back to cpu per video.",
    )
    shard_index: int = setting(0, help="K of --shard K/N.", cli=False)
    shard_count: int = setting(1, help="N of --shard K/N.", cli=False)
    shard_size_mb: float = setting(256.0, flag="--shard-size-mb", help="Rotate shard files at this size.")
    commit_every_s: float = setting(
        60.0,
        flag="--commit-every-s",
        help="Commit finished videos at least this often (work lost to a crash is bounded by it).",
    )
    video_timeout_s: float | None = setting(
        None,
        flag="--video-timeout-s",
        help="Per-video decode time limit (default: 600 s, or 2 s per second of a longer video); past it the "
        "video fails, and a decoder stuck inside FFmpeg is abandoned after a grace (10%, 5-60 s) while a "
        "fresh worker goes on.",
    )
    seek: SeekMode = setting("auto", flag="--seek", help="Keyframe seeking across long gaps between samples.")
    retry_failed: bool = setting(
        False, flag="--retry-failed", help="Retry videos that failed before even if unchanged."
    )
    allow_download: bool = setting(False, flag="--download", help="Allow downloading missing weights.")
    # Where the stages run: local = decode threads/processes on this machine; ray = decode tasks and model
    # actors on a Ray cluster, shards written by workers, the catalog by this process (docs/cluster.md).
    engine: EngineName = setting(
        "local",
        flag="--engine",
        help="Where the work runs: local = decode threads/processes and models on this machine; ray = decode tasks "
        "and model actors on a Ray cluster (pip install 'vidcache[ray]'; the cache on a shared filesystem).",
    )
    ray_address: str | None = setting(
        None,
        flag="--ray-address",
        help="--engine ray: the cluster to join ('auto' on a cluster node, host:6379, ray://host:10001); default: "
        "start Ray on this machine.",
    )
    gpus_per_model: float | None = setting(
        None,
        flag="--gpus-per-model",
        help="--engine ray: GPUs each model actor asks for (0.5 puts two on one GPU); default 1 when the cluster "
        "has GPUs, else 0.",
    )

    def __post_init__(self) -> None:
        _check_choice(self, "device", self.device, Device)
        _check_choice(self, "seek", self.seek, SeekMode)
        _check_choice(self, "decode_in", self.decode_in, DecodeIn)
        _check_choice(self, "decode_device", self.decode_device, DecodeDevice)
        _check_choice(self, "engine", self.engine, EngineName)
        check(self, "gpus_per_model", self.gpus_per_model is None or self.gpus_per_model >= 0, "must be >= 0")
        ray_only = self.ray_address is None and self.gpus_per_model is None
        check(self, "ray_address" if self.ray_address is not None else "gpus_per_model",
              self.engine == "ray" or ray_only, "needs engine ray")  # fmt: skip
        check(self, "decode_device", self.decode_device != "cuda" or self.engine == "local", "needs engine local")
        check(self, "batch_size", self.batch_size >= 1, "must be >= 1")
        check(self, "workers", self.workers >= 0, "must be >= 1 (or 0 for auto)")
        check(self, "decode_threads", self.decode_threads >= 0, "must be >= 0 (0: auto, usable CPUs / workers)")
        check(self, "shard_index", 0 <= self.shard_index < self.shard_count, "K of K/N must be in 0..N-1")
        check(self, "shard_size_mb", self.shard_size_mb > 0, "must be > 0")
        check(self, "commit_every_s", self.commit_every_s > 0, "must be > 0")
        check(self, "video_timeout_s", self.video_timeout_s is None or self.video_timeout_s > 0, "must be > 0")


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


def to_json(obj: Any) -> str:
    """Stable JSON of a (nested) dataclass, for HDF5 attributes and the catalog."""
    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
