"""Streaming PyAV decode of the frames on screen at given sample times.

Memory is bounded: frames are decoded in order and dropped unless selected; only selected frames
are converted to RGB. For sparse sampling two things avoid work: non-reference frames far from any
sample time are skipped inside the decoder (`skip_frame=NONREF`, switched per packet), and a long
gap to the next sample is crossed with a keyframe seek, which is abandoned for a video as soon as
it stops paying (the keyframe lands behind the current position).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from ..config import SamplingConfig
from ..errors import VideoFailure
from .sampling import sample_times

MAX_BAD_PACKETS = 50  # packets a decoder may reject before the video counts as failed
SEEK_GAP_S = 2.0  # "auto" seeks across gaps longer than this until it has seen the keyframe interval
KEEP_WINDOW_S = 0.25  # sparse decode keeps every frame starting this close before a sample time


@dataclass
class VideoInfo:
    """Facts about the video stream, recorded per video in the catalog."""

    width: int
    height: int
    rotation_deg: int
    codec: str
    pix_fmt: str
    avg_fps: float | None
    stream_start_s: float | None
    duration_s: float | None
    has_audio: bool

    @property
    def end_s(self) -> float | None:
        if self.duration_s is None:
            return None
        return (self.stream_start_s or 0.0) + self.duration_s


@dataclass
class DecodeStats:
    decoded_frames: int = 0
    seeks: int = 0
    useless_seeks: int = 0
    bad_packets: int = 0
    estimated_times: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class Deadline:
    """A per-video limit on the time spent *decoding*: the caller pauses it while it works on the
    frames (models, flow) or waits on a full queue, so a long video is not failed for being slow
    downstream."""

    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds

    def pause(self, seconds: float) -> None:
        self.at += max(0.0, seconds)

    def passed(self) -> bool:
        return time.monotonic() > self.at


def deadline_passed(deadline: Deadline | float | None) -> bool:
    """For a `Deadline` or a plain `time.monotonic()` value."""
    if deadline is None:
        return False
    return deadline.passed() if isinstance(deadline, Deadline) else time.monotonic() > deadline


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def open_container(path: str, *, kind: str = "video") -> av.container.InputContainer:
    """av.open with every failure turned into a `VideoFailure` whose reason a user can act on."""
    try:
        return av.open(path, metadata_errors="replace")
    except FileNotFoundError:
        raise VideoFailure("file not found") from None
    except PermissionError:
        raise VideoFailure("permission denied") from None
    except IsADirectoryError:
        raise VideoFailure("path is a directory, not a video file") from None
    except av.error.FFmpegError as exc:
        raise VideoFailure(f"not a readable {kind} ({exc.strerror or type(exc).__name__})") from None
    except Exception as exc:
        raise VideoFailure(f"cannot open ({type(exc).__name__}: {exc})") from None


def open_video(
    path: str, *, threads: int = 0
) -> tuple[av.container.InputContainer, av.video.stream.VideoStream, VideoInfo]:
    """Open a file and describe its first video stream; every failure becomes a `VideoFailure`."""
    container = open_container(path)
    if not container.streams.video:
        container.close()
        raise VideoFailure("no video stream (audio-only or data file)")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if threads:
        stream.codec_context.thread_count = threads
    tb = stream.time_base
    duration = _seconds(stream.duration, tb)
    if duration is None and container.duration is not None:
        duration = container.duration / av.time_base
    rate = stream.average_rate or stream.guessed_rate
    info = VideoInfo(
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        rotation_deg=0,
        codec=stream.codec_context.name,
        pix_fmt=str(stream.codec_context.pix_fmt),
        avg_fps=float(rate) if rate else None,
        stream_start_s=_seconds(stream.start_time, tb),
        duration_s=duration,
        has_audio=bool(container.streams.audio),
    )
    return container, stream, info


def scan_end_s(path: str) -> float | None:
    """End time from packet timestamps alone (no decoding), for files whose header has no duration;
    streams without timestamps count packets at the nominal frame rate."""
    end, packets = None, 0
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        for packet in container.demux(stream):
            if packet.size:
                packets += 1
            if packet.pts is not None:
                stop = float((packet.pts + (packet.duration or 0)) * stream.time_base)
                end = stop if end is None else max(end, stop)
    if end is None and packets and rate:
        end = packets / float(rate)
    return end


class FrameSampler:
    """Yields `(frame, time_s, repeats)` for the frames on screen at the sample times, in time order.

    `time_s` is the frame's presentation time (`frame.time`), or an estimate at the nominal rate for
    streams without timestamps (then `stats.estimated_times` is True); `repeats` is how many
    consecutive sample times show this frame."""

    def __init__(
        self,
        path: str,
        *,
        sampling: SamplingConfig | None = None,
        start_s: float | None = None,
        end_s: float | None = None,
        seek: str = "auto",
        threads: int = 0,
        sparse_decode: bool = True,
        deadline: Deadline | float | None = None,
        targets_fn: Callable[[float, float], np.ndarray] | None = None,
    ):
        if (sampling is None) == (targets_fn is None):
            raise ValueError("give exactly one of sampling or targets_fn")
        self.path = path
        self.sampling = sampling
        self.targets_fn = targets_fn  # explicit sample times from (origin_s, end_s); fps-style tail
        self.container, self.stream, self.info = open_video(path, threads=threads)
        self.stats = DecodeStats()
        self.seek_mode = seek
        self.sparse_decode = sparse_decode
        self.deadline = deadline
        self._tb = self.stream.time_base
        self.segment_start_s = start_s
        self.segment_end_s = end_s

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> FrameSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # decoding ------------------------------------------------------------------------------------
    def _check_deadline(self) -> None:
        if deadline_passed(self.deadline):
            raise VideoFailure("decode time limit exceeded (raise --video-timeout-s for very long videos)")

    def _frames(self, keep: Callable[[float], bool] | None) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order; `keep(pts_s)` False lets the decoder skip a
        non-reference frame. Corrupt packets are skipped (counted) up to MAX_BAD_PACKETS."""
        codec = self.stream.codec_context
        skipping = False
        try:
            for packet in self.container.demux(self.stream):
                self._check_deadline()
                if keep is not None and packet.pts is not None:
                    want_skip = not keep(float(packet.pts * self._tb))
                    if want_skip != skipping:
                        codec.skip_frame = "NONREF" if want_skip else "DEFAULT"
                        skipping = want_skip
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as exc:
                    self.stats.bad_packets += 1
                    if self.stats.bad_packets > MAX_BAD_PACKETS:
                        raise VideoFailure(f"too many corrupt packets ({exc.strerror or exc})") from None
                    continue
                for frame in frames:
                    self.stats.decoded_frames += 1
                    yield frame
        except av.error.FFmpegError as exc:
            raise VideoFailure(f"demux error ({exc.strerror or type(exc).__name__})") from None
        finally:
            if skipping:
                codec.skip_frame = "DEFAULT"

    def _seek(self, target_s: float) -> None:
        self.container.seek(math.floor(target_s / self._tb), backward=True, stream=self.stream)
        self.stats.seeks += 1

    def __iter__(self) -> Iterator[tuple[av.VideoFrame, float, int]]:
        started = time.perf_counter()
        try:
            yield from self._select()
        finally:
            self.stats.seconds += time.perf_counter() - started

    def _select(self) -> Iterator[tuple[av.VideoFrame, float, int]]:
        info = self.info
        start = self.segment_start_s
        end = self.segment_end_s if self.segment_end_s is not None else info.end_s
        explicit = self.targets_fn is not None
        n_mode = not explicit and self.sampling.num_frames is not None  # type: ignore[union-attr]
        if (n_mode or explicit) and end is None:
            end = scan_end_s(self.path)
            if end is None:
                raise VideoFailure("duration unknown and no packet timestamps; use --fps sampling")

        def make_targets(origin_s: float) -> np.ndarray:
            if explicit:
                return np.asarray(self.targets_fn(origin_s, end), dtype=np.float64)  # type: ignore[misc]
            return sample_times(self.sampling, start_s=origin_s, end_s=end)  # type: ignore[arg-type]

        origin = start if start is not None else info.stream_start_s
        lazy = not explicit and not n_mode and end is None  # fps grid without a known end: open-ended
        targets = make_targets(origin) if origin is not None and not lazy else None
        fps = None if explicit else self.sampling.fps  # type: ignore[union-attr]

        def target(k: int) -> float:
            if targets is not None:
                return float(targets[k])
            return origin + k / fps  # type: ignore[operator]

        count = len(targets) if targets is not None else math.inf
        nominal_dt = 1.0 / info.avg_fps if info.avg_fps else 1 / 30

        def keep(pts_s: float) -> bool:
            """Could a frame presented at pts_s be on screen at some sample time?"""
            if origin is None:
                return True
            if targets is not None:
                i = int(np.searchsorted(targets, pts_s - 1e-9))
                return i < len(targets) and targets[i] <= pts_s + KEEP_WINDOW_S + nominal_dt
            k = math.ceil((pts_s - origin) * fps - 1e-9)  # type: ignore[operator]
            return origin + max(k, 0) / fps <= pts_s + KEEP_WINDOW_S + nominal_dt  # type: ignore[operator]

        seek_enabled = self.seek_mode != "never"
        seek_gap = SEEK_GAP_S if self.seek_mode == "auto" else nominal_dt * 2
        if start is not None and seek_enabled and start - (info.stream_start_s or 0.0) > seek_gap:
            self._seek(start)
        frames = self._frames(keep if self.sparse_decode else None)
        k, prev, prev_t, prev_count, before_first, last_t = 0, None, 0.0, 0, 0, -math.inf
        just_sought = False
        last_key_t, no_seek_before_k = -math.inf, 0
        while k < count:
            frame = next(frames, None)
            if frame is None:
                break
            t = frame.time
            if t is None:  # no timestamps (raw elementary streams): count frames at the nominal rate
                self.stats.estimated_times = True
                t = 0.0 if last_t == -math.inf else last_t + nominal_dt
            if frame.key_frame and t > last_key_t:
                if last_key_t > -math.inf and not just_sought and self.seek_mode == "auto":
                    # seek when the gap exceeds the keyframe interval seen while decoding in order
                    seek_gap = max(t - last_key_t, 2 * nominal_dt)
                last_key_t = t
            if just_sought:
                just_sought = False
                if t > target(k) + 1e-9:  # seek overshot: go back to where we were, stop seeking
                    seek_enabled = False
                    self.stats.notes.append("seek overshot; decoded sequentially")
                    self._seek(max(last_t, 0.0))
                    frames = self._frames(keep if self.sparse_decode else None)
                    continue
                if t <= last_t:  # landed behind us: no keyframe in the gap, so don't seek again for it
                    self.stats.useless_seeks += 1
                    no_seek_before_k = k + 1
                    if self.stats.useless_seeks >= 2 and self.seek_mode == "auto":
                        seek_enabled = False
            if t <= last_t + 1e-9:
                continue  # already seen (decoding again from a keyframe after a seek)
            if prev is None:
                self.info.rotation_deg = frame_rotation(frame)
                if self.segment_end_s is not None and t >= self.segment_end_s - 1e-9:
                    raise VideoFailure(f"segment ends at {self.segment_end_s} s, before the first frame at {t:.3f} s")
            if origin is None:  # no stream start in the header: sample times start at the first frame
                origin = start if start is not None else t
                if not lazy:
                    targets = make_targets(origin)
                    count = len(targets)
            while k < count and target(k) < t - 1e-9:
                if prev is None:
                    before_first += 1
                else:
                    prev_count += 1
                k += 1
            if end is not None and not n_mode and t >= end - 1e-9:
                break
            if prev is not None and prev_count:
                yield prev, prev_t, prev_count
            if self.segment_end_s is not None and t >= self.segment_end_s and prev is not None:
                prev = None
                break
            prev, prev_t, prev_count, before_first = frame, t, before_first, 0
            last_t = t
            if prev_count == 0 and seek_enabled and no_seek_before_k <= k < count and target(k) - t > seek_gap:
                self._seek(target(k))
                frames = self._frames(keep if self.sparse_decode else None)
                just_sought = True
        if prev is not None:
            frame_dt = float(prev.duration * self._tb) if prev.duration else nominal_dt
            if start is not None and prev_t + frame_dt <= start + 1e-9 and k == 0:
                raise VideoFailure(f"segment starts at {start} s, after the video ends at {prev_t + frame_dt:.3f} s")
            if n_mode:
                prev_count += count - k  # N-frame sampling keeps N rows even past the last frame
            else:  # fps: only sample times while the last frame is still on screen
                while k < count and target(k) < prev_t + frame_dt - 1e-9 and (end is None or target(k) < end):
                    prev_count += 1
                    k += 1
            if prev_count:
                yield prev, prev_t, prev_count
        elif self.stats.decoded_frames == 0:
            raise VideoFailure("no decodable video frames")


def frame_rotation(frame: av.VideoFrame) -> int:
    try:
        return round((frame.rotation or 0) / 90.0) * 90 % 360
    except Exception:  # side data missing or malformed
        return 0


def frame_to_rgb(frame: av.VideoFrame, *, max_short_side: int | None = None) -> np.ndarray:
    """RGB uint8 HxWx3 as displayed (rotation applied). Frames much larger than needed are first
    shrunk with swscale's area filter in the same pass as the colour conversion."""
    width, height = frame.width, frame.height
    if max_short_side and min(width, height) > 2 * max_short_side:
        scale = max_short_side / min(width, height)
        width, height = max(2, round(width * scale)), max(2, round(height * scale))
        rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
    else:
        rgb = frame.to_ndarray(format="rgb24")
    quarter_turns = frame_rotation(frame) // 90
    if quarter_turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=quarter_turns))
    return rgb
