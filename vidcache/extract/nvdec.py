"""GPU decoding (`--decode-device`): NVDEC through PyNvVideoCodec (`pip install 'vidcache[gpu-decode]'`).

Machinery layer: imports no view. Three parts:

* `nvdec_missing()`: why NVDEC cannot be used on this machine (None when it can): the extra, a CUDA
  GPU for torch, the driver's decoder library (libnvcuvid);
* `resolve_decode_device` and `video_decode_device`: the decisions, pure functions of those facts
  and of a video's stream (codec, bit depth, pixel format), so they are tested without a GPU;
* `NvdecSampler`: one video's sampled frames as RGB uint8 tensors on the GPU, at the frames the CPU
  path picks (the frame on screen at each sample time, `sampling.sample_times` over the demuxed
  presentation times), resized on the GPU, never copied to the host.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import importlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..config import SamplingConfig
from ..errors import ConfigError
from .sampling import sample_times

Resolved = Literal["cpu", "cuda"]

EXTRA_HINT = "pip install 'vidcache[gpu-decode]' (PyNvVideoCodec)"
DRIVER_HINT = "an NVIDIA driver with its video decoder (libnvcuvid.so.1)"
# What NVDEC decodes (NVIDIA's Video Codec SDK support matrix, Turing and later): H.264 8-bit 4:2:0
# only; HEVC, VP9 and AV1 8- and 10-bit 4:2:0. Everything else (MPEG-4, VP8 and 4:2:2 / 4:4:4
# are possible on some GPUs only) goes to the CPU path, which decodes anything FFmpeg does.
NVDEC_MAX_BIT_DEPTH = {"h264": 8, "hevc": 10, "vp9": 10, "av1": 10}
_CHROMA_420 = ("yuv420p", "yuvj420p", "nv12", "yuv420p10le", "p010le")


def _import_extra() -> Any:
    return importlib.import_module("PyNvVideoCodec")


@functools.lru_cache(maxsize=1)
def nvdec_missing() -> str | None:
    """What this machine lacks for NVDEC (one clause naming the fix), or None when it has it all."""
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        cuda = False
    try:
        ctypes.CDLL("libnvcuvid.so.1")
        driver = True
    except OSError:
        driver = False
    try:
        _import_extra()
        extra = True
    except Exception:  # the wheel raises RuntimeError/ImportError when the driver libraries are absent
        extra = False
    return why_no_nvdec(extra=extra, cuda_available=cuda, driver_decoder=driver)


def why_no_nvdec(*, extra: bool, cuda_available: bool, driver_decoder: bool) -> str | None:
    """The missing pieces, as one clause; None when NVDEC can run."""
    lacking = []
    if not extra:
        lacking.append(f"the gpu-decode extra ({EXTRA_HINT})")
    if not cuda_available:
        lacking.append("a CUDA GPU visible to torch")
    if not driver_decoder:
        lacking.append(DRIVER_HINT)
    return " and ".join(lacking) or None


def resolve_decode_device(wanted: str, *, missing: str | None) -> Resolved:
    """The run's decode device: `auto` is cuda when nothing is `missing`; `cuda` without NVDEC is a
    ConfigError (exit 2) naming what to install."""
    if wanted == "cpu":
        return "cpu"
    if missing is None:
        return "cuda"
    if wanted == "auto":
        return "cpu"
    raise ConfigError(f"--decode-device cuda: NVDEC is not usable here: needs {missing}; or use --decode-device cpu")


@dataclass(frozen=True)
class DecodeChoice:
    device: Resolved
    reason: str | None = None  # why a cuda run decodes this video on the CPU


def video_decode_device(
    run_device: Resolved,
    *,
    source: Literal["video", "audio"],
    codec: str | None,
    bit_depth: int | None,
    pix_fmt: str | None,
    broken: bool = False,
) -> DecodeChoice:
    """Where one stream of a video is decoded in a run whose decode device is `run_device`: the CPU
    for audio, for codecs, bit depths and chroma layouts NVDEC does not decode, and for a stream NVDEC
    failed on (`broken`); the reason is recorded per video."""
    if run_device == "cpu":
        return DecodeChoice("cpu")
    if source == "audio":
        return DecodeChoice("cpu")  # not a fallback: audio is always decoded by FFmpeg
    name = (codec or "").lower()
    if name not in NVDEC_MAX_BIT_DEPTH:
        return DecodeChoice("cpu", f"codec {codec or 'unknown'} is not decoded by NVDEC")
    depth = bit_depth or 8
    if depth > NVDEC_MAX_BIT_DEPTH[name]:
        return DecodeChoice("cpu", f"{depth}-bit {name} is not decoded by NVDEC")
    if pix_fmt and pix_fmt not in _CHROMA_420:
        return DecodeChoice("cpu", f"pixel format {pix_fmt} is not decoded by NVDEC")
    if broken:
        return DecodeChoice("cpu", "NVDEC failed on this stream")
    return DecodeChoice("cuda")


def frames_on_screen(pts_s: np.ndarray, targets_s: np.ndarray) -> np.ndarray:
    """Index (in presentation order) of the frame on screen at each target time: the last frame whose
    presentation time is <= t, the first frame for a t before it (the rule of `sampling`)."""
    order = np.sort(np.asarray(pts_s, dtype=np.float64))
    idx = np.searchsorted(order, np.asarray(targets_s, dtype=np.float64) + 1e-9, side="right") - 1
    return np.clip(idx, 0, len(order) - 1)


def demuxed_pts(path: str, *, stream_index: int | None = None) -> tuple[np.ndarray, Any]:
    """The presentation times (s, sorted) of every packet of the video stream, read by demuxing only
    (no decode), and the stream; the CPU path's `open_container` picks the same default stream."""
    from .decode import open_container

    container = open_container(path)
    try:
        stream = container.streams[stream_index] if stream_index is not None else container.streams.best("video")
        tb = float(stream.time_base)
        pts = [p.pts for p in container.demux(stream) if p.pts is not None and p.size]
        return np.sort(np.asarray(pts, dtype=np.float64) * tb), stream
    finally:
        container.close()


def sample_indices(pts_s: np.ndarray, sampling: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices, their presentation times) of the sampled frames, repeats kept once."""
    start = float(pts_s[0])
    end = float(pts_s[-1]) + (float(np.median(np.diff(pts_s))) if len(pts_s) > 1 else 0.0)
    targets = sample_times(sampling, start_s=start, end_s=end)
    idx = np.unique(frames_on_screen(pts_s, targets))
    return idx, pts_s[idx]


def stream_facts(path: str, *, stream_index: int | None = None) -> dict:
    """codec, bit depth and pixel format of the video stream the CPU path reads (header only)."""
    from .decode import open_video

    container, stream, info = open_video(path, stream_index=stream_index)
    try:
        ctx = stream.codec_context
        fmt = ctx.pix_fmt or ""
        depth = 10 if "10" in fmt else 12 if "12" in fmt else 8
        return {"codec": ctx.name, "bit_depth": depth, "pix_fmt": fmt or None, "info": info}
    finally:
        container.close()


def nvdec_video(stage: Any, deadline: Any) -> Any:
    """`VideoStage`'s video pass on NVDEC (a generator; returns True when it handled the video, False
    when this video goes to the CPU path). Records `decode_device` (and `decode_fallback`) in the
    video's details. NVDEC feeds consumers that take frames on the device (`device_frames`), one per
    pass, whole videos (a segment, `start_s`/`end_s`, decodes on the CPU)."""
    entry, consumers = stage.entry, stage.consumers
    facts = stream_facts(entry.path, stream_index=stage.streams.video)
    choice = video_decode_device("cuda", source="video", **{k: facts[k] for k in ("codec", "bit_depth", "pix_fmt")})
    if choice.device == "cuda" and not (len(consumers) == 1 and getattr(consumers[0], "device_frames", False)):
        choice = DecodeChoice("cpu", "these views take host frames")
    if choice.device == "cuda" and (entry.start_s is not None or entry.end_s is not None):
        choice = DecodeChoice("cpu", "segments decode on the CPU")
    fed = False
    if choice.device == "cuda":
        try:
            for chunk in _nvdec_chunks(entry.path, consumers[0], facts["info"], stage, deadline):
                fed = True
                yield chunk
        except Exception as exc:
            if fed:
                raise
            choice = DecodeChoice("cpu", f"NVDEC failed on this stream ({type(exc).__name__}: {exc})".splitlines()[0])
    stage.details["decode_device"] = choice.device
    if choice.reason:
        stage.details["decode_fallback"] = choice.reason
    if choice.device == "cuda":
        decoded = stage.details.get("decoded_frames", 0)
        stage.details.update({**dataclasses.asdict(facts["info"]), "decoded_frames": decoded})
    return choice.device == "cuda"


def _nvdec_chunks(path: str, consumer: Any, info: Any, stage: Any, deadline: Any, *, batch: int = 32):
    import torch

    from ..errors import VideoFailure

    nvc = _import_extra()
    pts_s, _ = demuxed_pts(path, stream_index=stage.streams.video)
    if not len(pts_s):
        raise VideoFailure("no frames to sample")
    dt = float(np.median(np.diff(pts_s))) if len(pts_s) > 1 else 1 / 30
    origin = info.stream_start_s if info.stream_start_s is not None else float(pts_s[0])
    end = info.end_s if info.end_s is not None else float(pts_s[-1]) + dt
    targets = consumer.targets_s(origin, end, dt, frame_origin_s=info.stream_start_s)
    on_screen = frames_on_screen(pts_s, targets)  # nondecreasing: the targets are sorted
    wanted = np.unique(on_screen)
    decoder = nvc.SimpleDecoder(path, use_device_memory=True, output_color_type=nvc.OutputColorType.RGB)
    for start in range(0, len(wanted), batch):
        if deadline.passed():
            raise VideoFailure("decode time limit exceeded (raise --video-timeout-s for very long videos)")
        indices = [int(i) for i in wanted[start : start + batch]]
        for index, frame in zip(indices, decoder.get_batch_frames_by_index(indices), strict=True):
            rgb = torch.from_dlpack(frame).clone()  # HxWx3 uint8 on the GPU; clone: the decoder reuses its buffer
            stage.details["decoded_frames"] = stage.details.get("decoded_frames", 0) + 1
            with deadline.held():
                yield from consumer.feed(rgb, float(pts_s[index]), np.flatnonzero(on_screen == index))
    with deadline.held():
        yield from consumer.finish()


def resize_on_gpu(rgb: Any, *, short_side: int) -> Any:
    """uint8 [N, H, W, 3] on the GPU → float [N, 3, h, w] with the short side `short_side` (bicubic,
    antialiased, as the CPU path's torch resize)."""
    import torch.nn.functional as F

    chw = rgb.permute(0, 3, 1, 2).float()
    h, w = chw.shape[-2:]
    scale = short_side / min(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(chw, size=size, mode="bicubic", antialias=True, align_corners=False).clamp_(0, 255)
