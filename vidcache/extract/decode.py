"""Streaming PyAV decode of the frames on screen at given sample times.

Memory is bounded: frames are decoded in order and dropped unless selected; only selected frames
are converted to RGB. For sparse sampling two things avoid work: non-reference frames far from any
sample time are skipped inside the decoder (`skip_frame=NONREF`, switched per packet), and a long
gap to the next sample is crossed with a keyframe seek, which is abandoned for a video as soon as
it stops paying (the keyframe lands behind the current position).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from ..config import SamplingConfig
from ..errors import VideoFailure, fault_point
from ..threads import usable_cpus
from .colour import exact_rgb, needs_exact
from .sampling import sample_times
from .streams import pick_video_stream

DEFAULT_VIDEO_TIMEOUT_S = 600.0  # per-video decode limit unless --video-timeout-s is given ...
DECODE_S_PER_VIDEO_S = 2.0  # ... raised to this many seconds per second of a longer video
MAX_BAD_PACKETS = 50  # packets a decoder may reject before the video counts as failed
SEEK_GAP_S = 2.0  # "auto" seeks across gaps longer than this until it has seen the keyframe interval
KEEP_WINDOW_S = 0.25  # sparse decode keeps every frame starting this close before a sample time
TRUNCATED_GAP_S = 0.5  # frames ending this much before the header's end are noted as a possibly truncated file


@dataclass
class VideoInfo:
    """Facts about the video stream, recorded per video in the catalog."""

    video_stream: int  # FFmpeg's index of the stream decoded
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
    """A per-video limit on the time spent *decoding*: the caller holds it while it works on the
    frames (models, flow) or waits on a full queue, so a long video is not failed for being slow
    downstream. Holds nest (the stage holds around its consumers, the worker around its queue)."""

    def __init__(self, seconds: float | None):
        # None: the default limit, raised for long videos once their duration is known (`fit_to`)
        self.scales = seconds is None
        self.seconds = DEFAULT_VIDEO_TIMEOUT_S if seconds is None else seconds
        self.at = time.monotonic() + self.seconds
        self._holds = 0
        self._held_since = 0.0

    def fit_to(self, duration_s: float | None) -> None:
        """With the default limit: at least `DECODE_S_PER_VIDEO_S` per second of video, so an hour of
        4K is not failed for being long. A limit the user gave is kept as given."""
        if not self.scales or not duration_s or not math.isfinite(duration_s):
            return
        extra = DECODE_S_PER_VIDEO_S * duration_s - self.seconds
        if extra > 0:
            self.seconds += extra
            self.at += extra

    def remaining_s(self) -> float:
        """Decode time left; during a hold, what was left when the hold began."""
        now = self._held_since if self._holds else time.monotonic()
        return self.at - now

    def restart(self, *, seconds: float, remaining_s: float) -> None:
        """Mirror another process's deadline: its limit and the decode time it has left from now."""
        self.seconds = seconds
        self.at = time.monotonic() + remaining_s

    def pause(self, seconds: float) -> None:
        self.at += max(0.0, seconds)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self._holds == 0:
            self._held_since = time.monotonic()
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if self._holds == 0:
                self.pause(time.monotonic() - self._held_since)

    def overdue_s(self) -> float:
        """Decode time spent past the limit; 0 while held (downstream work is not decoding)."""
        if self._holds:
            return 0.0
        return max(0.0, time.monotonic() - self.at)

    def passed(self) -> bool:
        return self._holds == 0 and time.monotonic() > self.at


def threads_per_decoder(requested: int, *, workers: int) -> int:
    """FFmpeg codec threads per decoder: `requested` (`--decode-threads`) when given, else the CPUs
    this process may use shared among the decode workers (at least 1). FFmpeg's own choice starts
    a thread per core in every decoder it opens; with a worker per core that only adds thread
    start-ups and hand-offs, 25 % more decode CPU per 2 s clip (issue 29). Codec threads never
    change a decoded frame, so this is not part of a view's identity."""
    return requested or max(1, usable_cpus() // max(1, workers))


def deadline_passed(deadline: Deadline | float | None) -> bool:
    """For a `Deadline` or a plain `time.monotonic()` value."""
    if deadline is None:
        return False
    return deadline.passed() if isinstance(deadline, Deadline) else time.monotonic() > deadline


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


_ISO_BMFF_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pdin")  # first box of an MP4/MOV/M4A


def why_unreadable(path: str) -> str | None:
    """A specific reason for the common broken files FFmpeg only calls "Invalid data found when
    processing input": an empty file, or an MP4/MOV/M4A whose index (`moov` box) is missing, as
    when a download or a recording was cut off before the muxer wrote it at the end. None when the
    file looks like neither."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file, 0 bytes"
        with open(path, "rb") as handle:
            if handle.read(8)[4:8] not in _ISO_BMFF_BOXES:
                return None
            offset, boxes, cut = 0, set(), False
            for _ in range(10_000):  # top-level boxes only: a few reads (fragmented files: more)
                if offset + 8 > size:
                    break
                handle.seek(offset)
                header = handle.read(16)
                box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
                if box_size == 1 and len(header) == 16:
                    box_size = int.from_bytes(header[8:16], "big")
                elif box_size == 0:  # box runs to the end of the file
                    box_size = size - offset
                if box_size < 8:
                    break
                boxes.add(kind)
                cut = offset + box_size > size
                offset += box_size
    except OSError:
        return None
    if b"moov" in boxes:
        return None
    if cut:
        return f"MP4/MOV cut off: {size} bytes, no 'moov' index box (truncated download or unfinished recording)"
    return "MP4/MOV without its 'moov' index box (truncated or unfinished file)"


def open_container(path: str, *, kind: str = "video") -> av.container.InputContainer:
    """av.open with every failure turned into a `VideoFailure` whose reason a user can act on."""
    fault_point("decode-open", path)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # av.open names the failure (missing, no permission, ...)
    # opening a named pipe blocks until someone writes to it: a night's run stuck on one row
    # (directories are left to av.open, which names them)
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISBLK(mode) or stat.S_ISDIR(mode)):
        kind_of = "named pipe (FIFO)" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device"
        raise VideoFailure(f"not a regular file but a {kind_of}; point the manifest at the video file itself")
    try:
        return av.open(path, metadata_errors="replace")
    except FileNotFoundError:
        raise VideoFailure("file not found") from None
    except PermissionError:
        raise VideoFailure("permission denied") from None
    except IsADirectoryError:
        raise VideoFailure("path is a directory, not a video file") from None
    except av.error.FFmpegError as exc:
        # FFmpeg says "Invalid data found when processing input" for empty and truncated files
        # alike; name those cases so a user knows to re-download rather than to look for a codec.
        detail = why_unreadable(path)
        if detail is None and isinstance(exc, av.error.EOFError):  # FFmpeg's bare "End of file"
            detail = "the file ends before any media data: truncated or an empty container"
        detail = detail or exc.strerror or type(exc).__name__
        raise VideoFailure(f"not a readable {kind} ({detail})") from None
    except Exception as exc:
        raise VideoFailure(f"cannot open ({type(exc).__name__}: {exc})") from None


def open_video(
    path: str, *, threads: int = 0, stream_index: int | None = None
) -> tuple[av.container.InputContainer, av.video.stream.VideoStream, VideoInfo]:
    """Open a file and describe its video stream (FFmpeg's best one, or `stream_index`: see
    `streams.pick_video_stream`); every failure becomes a `VideoFailure`."""
    container = open_container(path)
    try:
        stream = pick_video_stream(container, index=stream_index)
    except VideoFailure:
        container.close()
        raise
    if stream.codec_context is None:  # a codec (FourCC) this FFmpeg build has no decoder for
        container.close()
        raise VideoFailure(
            f"no decoder for its video codec in this FFmpeg build (PyAV {av.__version__}); transcode it, e.g. to H.264"
        )
    stream.thread_type = "AUTO"
    if threads:
        stream.codec_context.thread_count = threads
    tb = stream.time_base
    stream_start_s = _seconds(stream.start_time, tb)
    duration = _seconds(stream.duration, tb)
    if duration is None and container.duration is not None:
        duration = container.duration / av.time_base
        if container.format.name.startswith("matroska") and stream_start_s and stream_start_s > 0:
            # Matroska's Duration counts from the segment's timestamp 0, not from the first frame:
            # a file whose frames start at 5 s and end at 6 s says 6 s. Taken as a span from the
            # start it put the end at 11 s, and --num-frames then aimed past the last frame.
            duration = max(duration - stream_start_s, 0.0)
    rate = stream.average_rate or stream.guessed_rate
    info = VideoInfo(
        video_stream=stream.index,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        rotation_deg=0,
        codec=stream.codec_context.name,
        pix_fmt=str(stream.codec_context.pix_fmt),
        avg_fps=float(rate) if rate else None,
        stream_start_s=stream_start_s,
        duration_s=duration,
        has_audio=bool(container.streams.audio),
    )
    return container, stream, info


def scan_packets(path: str, *, stream_index: int | None = None) -> tuple[float | None, float | None]:
    """`(end_s, untimed_frame_s)` from the packets alone (no decoding), for files whose header has
    no duration. Streams without timestamps (raw `.h264`) add up their packets' durations, which
    the parser takes from the codec's own timing info, else count packets at the nominal frame
    rate; `untimed_frame_s` is then their mean packet duration (None when some lack one)."""
    end, packets, elapsed, durations_known = None, 0, 0.0, True
    with av.open(path) as container:
        stream = pick_video_stream(container, index=stream_index)
        rate = stream.average_rate or stream.guessed_rate
        for packet in container.demux(stream):
            if not packet.size:
                continue
            packets += 1
            if packet.pts is not None:
                stop = float((packet.pts + (packet.duration or 0)) * stream.time_base)
                end = stop if end is None else max(end, stop)
            elif packet.duration:
                elapsed += float(packet.duration * stream.time_base)
            else:
                durations_known = False
    if end is None and packets:
        if durations_known and elapsed > 0:
            return elapsed, elapsed / packets
        if rate:
            return packets / float(rate), None
    return end, None


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
        stream_index: int | None = None,
    ):
        if (sampling is None) == (targets_fn is None):
            raise ValueError("give exactly one of sampling or targets_fn")
        self.path = path
        self.sampling = sampling
        self.targets_fn = targets_fn  # explicit sample times from (origin_s, end_s); fps-style tail
        self.container, self.stream, self.info = open_video(path, threads=threads, stream_index=stream_index)
        self.stats = DecodeStats()
        self.seek_mode = seek
        self.sparse_decode = sparse_decode
        self.deadline = deadline
        if isinstance(deadline, Deadline):
            deadline.fit_to(self.info.duration_s)
        self._tb = self.stream.time_base
        self.segment_start_s = start_s
        self.segment_end_s = end_s
        self.last_frame: tuple[av.VideoFrame, float] | None = None  # last frame decoded, once iterated

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
                    # int / int is correctly rounded, as float(Fraction) is: the same time without
                    # building two Fractions per packet
                    pts_s = packet.pts * self._tb.numerator / self._tb.denominator
                    want_skip = not keep(pts_s)
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

    def _seek(self, target_s: float) -> bool:
        """Seek to the keyframe at or before target_s; False (and a note) when the demuxer refuses,
        as some streams do (EPERM), rather than failing a video that decodes fine in order."""
        try:
            self.container.seek(math.floor(target_s / self._tb), backward=True, stream=self.stream)
        except av.error.FFmpegError as exc:
            self.stats.notes.append(f"seek refused ({exc.strerror or type(exc).__name__}); decoded sequentially")
            return False
        self.stats.seeks += 1
        return True

    def __iter__(self) -> Iterator[tuple[av.VideoFrame, float, int]]:
        started = time.perf_counter()
        try:
            yield from self._select()
        finally:
            self.stats.seconds += time.perf_counter() - started

    def _select(self) -> Iterator[tuple[av.VideoFrame, float, int]]:
        """Each frame that is on screen at one or more sample times, with its time and how many."""
        start, end, explicit, n_mode = self._sampling_span()
        grid = self._grid(start, end, explicit=explicit, n_mode=n_mode)
        walk = self._start_walk(start, grid)
        while walk.k < grid.count:
            frame = next(walk.frames, None)
            if frame is None:
                walk.exhausted = True
                break
            t = self._frame_time(walk, frame, grid.nominal_dt)
            if walk.just_sought and self._seek_went_back(walk, grid, t):
                continue
            if t <= walk.last_t + 1e-9:
                continue  # already seen (decoding again from a keyframe after a seek)
            if walk.prev is None:
                self._first_frame(frame, t)
            if grid.origin is None:  # no stream start in the header: sample times start at the first frame
                grid.start_at(start if start is not None else t)
            self._pass_sample_times(walk, grid, t)
            if end is not None and not n_mode and t >= end - 1e-9:
                break
            if walk.prev is not None and walk.prev_count:
                yield walk.prev, walk.prev_t, walk.prev_count
            if self.segment_end_s is not None and t >= self.segment_end_s and walk.prev is not None:
                walk.prev = None
                break
            walk.prev, walk.prev_t, walk.prev_count, walk.before_first = frame, t, walk.before_first, 0
            walk.last_t = t
            self._seek_ahead(walk, grid, t)
        yield from self._last_frame(walk, grid, start=start, end=end, n_mode=n_mode)

    # the steps of `_select` -----------------------------------------------------------------------
    def _sampling_span(self) -> tuple[float | None, float | None, bool, bool]:
        """(segment start, end of the sampled span, explicit targets?, N-frame sampling?). An end the
        header does not give is found from the packets when the sample times need it."""
        info = self.info
        start = self.segment_start_s
        end = self.segment_end_s if self.segment_end_s is not None else info.end_s
        explicit = self.targets_fn is not None
        n_mode = not explicit and self.sampling.num_frames is not None  # type: ignore[union-attr]
        if (n_mode or explicit) and end is None:
            end, untimed_frame_s = scan_packets(self.path, stream_index=self.stream.index)
            if end is None:
                raise VideoFailure("duration unknown and no packet timestamps; use --fps sampling")
            if untimed_frame_s:
                # A raw stream's demuxer reports a default rate (25 fps for .h264) while its packets
                # carry the coded frame duration; use that, or the estimated frame times (and the
                # flow pairs' frame grid) would run at the wrong speed and disagree with `end`.
                info.avg_fps = 1.0 / untimed_frame_s
        return start, end, explicit, n_mode

    def _grid(self, start: float | None, end: float | None, *, explicit: bool, n_mode: bool) -> _SampleGrid:
        def make_targets(origin_s: float) -> np.ndarray:
            if explicit:
                return np.asarray(self.targets_fn(origin_s, end), dtype=np.float64)  # type: ignore[misc]
            return sample_times(self.sampling, start_s=origin_s, end_s=end)  # type: ignore[arg-type]

        info = self.info
        grid = _SampleGrid(
            make_targets=make_targets,
            lazy=not explicit and not n_mode and end is None,  # fps grid without a known end: open-ended
            fps=None if explicit else self.sampling.fps,  # type: ignore[union-attr]
            nominal_dt=1.0 / info.avg_fps if info.avg_fps else 1 / 30,
        )
        origin = start if start is not None else info.stream_start_s
        if origin is not None:
            grid.start_at(origin)
        return grid

    def _frames_for(self, grid: _SampleGrid) -> Iterator[av.VideoFrame]:
        return self._frames(grid.keep if self.sparse_decode else None)

    def _start_walk(self, start: float | None, grid: _SampleGrid) -> _Walk:
        info = self.info
        seek_enabled = self.seek_mode != "never"
        seek_gap = SEEK_GAP_S if self.seek_mode == "auto" else grid.nominal_dt * 2
        # no start time in the header may mean no timestamps at all (raw .h264), where a seek by time
        # cannot be trusted: reach the segment by decoding in order
        timed = info.stream_start_s is not None
        if start is not None and seek_enabled and timed and start - info.stream_start_s > seek_gap:
            seek_enabled = self._seek(start)
        return _Walk(
            frames=self._frames_for(grid), seek_enabled=seek_enabled, seek_gap=seek_gap, untimed_dt=grid.nominal_dt
        )

    def _frame_time(self, walk: _Walk, frame: av.VideoFrame, nominal_dt: float) -> float:
        """The frame's presentation time (estimated for a stream without timestamps); notes keyframes."""
        t = frame.time
        if t is None:  # no timestamps (raw elementary streams): add up frame durations from 0 s
            if not self.stats.estimated_times:
                # a seek lands by byte position in such a stream, which the estimated clock
                # cannot follow: decode in order
                self.stats.estimated_times, walk.seek_enabled = True, False
            t = 0.0 if walk.last_t == -math.inf else walk.last_t + walk.untimed_dt
            walk.untimed_dt = float(frame.duration * self._tb) if frame.duration else nominal_dt
        if frame.key_frame and t > walk.last_key_t:
            if walk.last_key_t > -math.inf and not walk.just_sought and self.seek_mode == "auto":
                # seek when the gap exceeds the keyframe interval seen while decoding in order
                walk.seek_gap = max(t - walk.last_key_t, 2 * nominal_dt)
            walk.last_key_t = t
        return t

    def _seek_went_back(self, walk: _Walk, grid: _SampleGrid, t: float) -> bool:
        """After a seek: True when it overshot and decoding went back to where it was (skip this
        frame); a seek that landed behind us is counted, and seeking stops after two of them."""
        walk.just_sought = False
        if t > grid.target(walk.k) + 1e-9:  # seek overshot: go back to where we were, stop seeking
            walk.seek_enabled = False
            self.stats.notes.append("seek overshot; decoded sequentially")
            if not self._seek(max(walk.last_t, 0.0)):
                raise VideoFailure("cannot seek back after a seek overshot; try --seek never")
            walk.frames = self._frames_for(grid)
            return True
        if t <= walk.last_t:  # landed behind us: no keyframe in the gap, so don't seek again for it
            self.stats.useless_seeks += 1
            walk.no_seek_before_k = walk.k + 1
            if self.stats.useless_seeks >= 2 and self.seek_mode == "auto":
                walk.seek_enabled = False
        return False

    def _first_frame(self, frame: av.VideoFrame, t: float) -> None:
        self.info.rotation_deg = frame_rotation(frame)
        if self.segment_end_s is not None and t >= self.segment_end_s - 1e-9:
            raise VideoFailure(f"segment ends at {self.segment_end_s} s, before the first frame at {t:.3f} s")

    @staticmethod
    def _pass_sample_times(walk: _Walk, grid: _SampleGrid, t: float) -> None:
        """Sample times before `t` belong to the frame on screen before it (or to the first frame)."""
        while walk.k < grid.count and grid.target(walk.k) < t - 1e-9:
            if walk.prev is None:
                walk.before_first += 1
            else:
                walk.prev_count += 1
            walk.k += 1

    def _seek_ahead(self, walk: _Walk, grid: _SampleGrid, t: float) -> None:
        """Seek when the next sample time is further ahead than the keyframe gap."""
        k = walk.k
        if walk.prev_count == 0 and walk.seek_enabled and walk.no_seek_before_k <= k < grid.count:
            if grid.target(k) - t > walk.seek_gap:
                if self._seek(grid.target(k)):
                    walk.frames = self._frames_for(grid)
                    walk.just_sought = True
                else:
                    walk.seek_enabled = False  # keep decoding in order from where we are

    def _last_frame(
        self, walk: _Walk, grid: _SampleGrid, *, start: float | None, end: float | None, n_mode: bool
    ) -> Iterator[tuple[av.VideoFrame, float, int]]:
        """The last frame kept, with the sample times it stays on screen for."""
        prev, prev_t = walk.prev, walk.prev_t
        if prev is None:
            if self.stats.decoded_frames == 0:
                raise VideoFailure("no decodable video frames")
            return
        self.last_frame = (prev, prev_t)
        frame_dt = float(prev.duration * self._tb) if prev.duration else grid.nominal_dt
        if start is not None and prev_t + frame_dt <= start + 1e-9 and walk.k == 0:
            raise VideoFailure(f"segment starts at {start} s, after the video ends at {prev_t + frame_dt:.3f} s")
        header_end = self.info.end_s
        if walk.exhausted and header_end is not None and prev_t + frame_dt < header_end - TRUNCATED_GAP_S:
            # fps sampling stops at the last frame, N-frame sampling repeats it: say why there are
            # fewer rows (or repeated ones) than the header's duration promises
            self.stats.notes.append(
                f"video frames end at {prev_t + frame_dt:.3f} s, before the header's end at "
                f"{header_end:.3f} s (truncated file?)"
            )
        if n_mode:
            walk.prev_count += grid.count - walk.k  # N-frame sampling keeps N rows even past the last frame
        else:  # fps: only sample times while the last frame is still on screen
            while (
                walk.k < grid.count
                and grid.target(walk.k) < prev_t + frame_dt - 1e-9
                and (end is None or grid.target(walk.k) < end)
            ):
                walk.prev_count += 1
                walk.k += 1
        if walk.prev_count:
            yield prev, prev_t, walk.prev_count


@dataclass
class _SampleGrid:
    """The sample times of one pass: a consumer's explicit targets, the N-frame grid, or the fps grid
    (open-ended when the end is unknown). `origin` is None until known (from the header or the first
    frame)."""

    make_targets: Callable[[float], np.ndarray]
    lazy: bool  # an fps grid without a known end: target k is origin + k / fps
    fps: float | None
    nominal_dt: float  # the stream's nominal frame interval
    origin: float | None = None
    targets: np.ndarray | None = None
    target_list: list[float] = field(default_factory=list)  # the same times, for `keep`
    count: float = math.inf

    def start_at(self, origin: float) -> None:
        self.origin = origin
        if not self.lazy:
            self.targets = self.make_targets(origin)
            self.target_list = self.targets.tolist()
            self.count = len(self.targets)

    def target(self, k: int) -> float:
        if self.targets is not None:
            return float(self.targets[k])
        return self.origin + k / self.fps  # type: ignore[operator]

    def keep(self, pts_s: float) -> bool:
        """Could a frame presented at pts_s be on screen at some sample time?"""
        if self.origin is None:
            return True
        if self.targets is not None:  # asked for every packet: bisect on a list, not a NumPy call (2.4 µs)
            i = bisect.bisect_left(self.target_list, pts_s - 1e-9)
            return i < len(self.target_list) and self.target_list[i] <= pts_s + KEEP_WINDOW_S + self.nominal_dt
        k = math.ceil((pts_s - self.origin) * self.fps - 1e-9)  # type: ignore[operator]
        return self.origin + max(k, 0) / self.fps <= pts_s + KEEP_WINDOW_S + self.nominal_dt  # type: ignore[operator]


@dataclass
class _Walk:
    """What `FrameSampler._select` carries from one decoded frame to the next."""

    frames: Iterator[av.VideoFrame]
    seek_enabled: bool
    seek_gap: float  # seek when the next sample time is further ahead than this
    untimed_dt: float  # duration of the last decoded frame of a stream without timestamps
    k: int = 0  # the next sample time not yet given to a frame
    prev: av.VideoFrame | None = None  # the frame on screen, not yet yielded
    prev_t: float = 0.0
    prev_count: int = 0  # sample times `prev` is on screen at
    before_first: int = 0  # sample times before the first frame (they go to it)
    last_t: float = -math.inf
    just_sought: bool = False
    last_key_t: float = -math.inf
    no_seek_before_k: int = 0  # a seek for a sample time before this one landed behind us
    exhausted: bool = False  # the stream ended (not a stop at the end of the span)


def frame_rotation(frame: av.VideoFrame) -> int:
    try:
        return round((frame.rotation or 0) / 90.0) * 90 % 360
    except Exception:  # side data missing or malformed
        return 0


_SWSCALE = threading.local()  # one `VideoReformatter` per thread: swscale's context is kept between frames


def reformat_to_ndarray(frame: av.VideoFrame, *, threads: int = 1, **options: object) -> np.ndarray:
    """`frame.to_ndarray(**options)` through this thread's cached swscale context, in `threads`
    swscale threads (0: one per core). PyAV's `to_ndarray` builds a new context for every frame (a
    fresh reformatter per frame) with a thread per core: 0.8 ms of CPU per 320x240 frame against
    0.25 ms here in one thread, the same bytes (tested). The decode stage passes its decoder's
    thread count: one when every core has a decode worker, more for one worker on a big machine."""
    reformatter = getattr(_SWSCALE, "reformatter", None)
    if reformatter is None:
        reformatter = _SWSCALE.reformatter = VideoReformatter()
    return reformatter.reformat(frame, threads=threads, **options).to_ndarray()


def frame_to_rgb(
    frame: av.VideoFrame,
    *,
    max_short_side: int | None = None,
    exact: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    threads: int = 1,
) -> np.ndarray:
    """RGB uint8 HxWx3 as displayed (rotation applied). Frames more than twice `max_short_side` on
    their short side are first shrunk to it with swscale's area filter: for 8-bit frames in the
    same pass as swscale's colour conversion, for deeper ones after the exact conversion of
    `colour.exact_rgb` (`exact`: that conversion, when the caller already made it). `threads`:
    swscale's (see `reformat_to_ndarray`)."""
    if size is not None:
        return _frame_at_size(frame, size, exact, threads)
    width, height = frame.width, frame.height
    shrink = bool(max_short_side and min(width, height) > 2 * max_short_side)
    if shrink:
        scale = max_short_side / min(width, height)  # type: ignore[operator]
        width, height = max(2, round(width * scale)), max(2, round(height * scale))
    if exact is not None or needs_exact(frame):
        rgb = exact if exact is not None else exact_rgb(frame)
        if shrink:
            full = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            rgb = reformat_to_ndarray(
                full, threads=threads, format="rgb24", width=width, height=height, interpolation="AREA"
            )
    elif shrink:
        rgb = reformat_to_ndarray(
            frame, threads=threads, format="rgb24", width=width, height=height, interpolation="AREA"
        )
    else:
        rgb = reformat_to_ndarray(frame, threads=threads, format="rgb24")
    quarter_turns = frame_rotation(frame) // 90
    if quarter_turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=quarter_turns))
    return rgb


def _frame_at_size(frame: av.VideoFrame, size: tuple[int, int], exact: np.ndarray | None, threads: int) -> np.ndarray:
    """RGB at exactly `size` (width, height) as displayed, scaled and converted by one swscale call
    with bicubic interpolation, the `ffmpeg` CLI's default (the shots view's TransNetV2 reference
    decodes with `ffmpeg -s 48x27`); deep frames go through the exact conversion first."""
    quarter_turns = frame_rotation(frame) // 90
    width, height = (size[1], size[0]) if quarter_turns % 2 else size  # before the rotation
    if exact is not None or needs_exact(frame):
        source = av.VideoFrame.from_ndarray(exact if exact is not None else exact_rgb(frame), format="rgb24")
        rgb = reformat_to_ndarray(
            source, threads=threads, format="rgb24", width=width, height=height, interpolation="BICUBIC"
        )
    else:
        rgb = reformat_to_ndarray(
            frame, threads=threads, format="rgb24", width=width, height=height, interpolation="BICUBIC"
        )
    if quarter_turns:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=quarter_turns))
    return rgb
