"""Streaming PyAV decode of a video's audio stream (FFmpeg's default choice) into 16 kHz mono float32 chunks.

Memory is bounded by the chunk size whatever the file's length: packets of the audio stream alone
are decoded, resampled as they come and handed on in chunks of about `chunk_s` seconds. Sample
times are counted from the first decoded frame's timestamp (samples are treated as contiguous, as a
player would play them), which is also how a segment [start_s, end_s) is cut.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

from ...errors import VideoFailure, ViewAbsent
from ..decode import deadline_passed, open_container
from ..streams import pick_audio_stream
from .downmix import channel_mean
from .frontend import SAMPLE_RATE_HZ

MAX_BAD_PACKETS = 50  # audio packets the decoder may reject before the video counts as failed
SEEK_MIN_GAP_S = 10.0  # a segment starting further than this into the stream is reached by a seek
SEEK_PREROLL_S = 1.0  # seek this far before the segment: the decoder's overlap state and the resampler settle


def _open(path: str) -> av.container.InputContainer:
    return open_container(path, kind="file")


class _Resampler:
    """Channel mean at the source rate (`downmix.channel_mean`, as VGGish), then PyAV's resampler
    from mono float32 to 16 kHz mono float32, rebuilt when the sample rate changes mid-stream (a
    fixed AudioResampler refuses frames that differ from its first one)."""

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None
        self._rate: int | None = None

    @staticmethod
    def _samples(frames: list[av.AudioFrame]) -> list[np.ndarray]:
        # copy: the array may view the frame's buffer, which PyAV can reuse
        return [frame.to_ndarray().reshape(-1).astype(np.float32, copy=True) for frame in frames if frame.samples]

    def resample(self, frame: av.AudioFrame) -> list[np.ndarray]:
        if not frame.samples:
            return []
        out = []
        if frame.sample_rate != self._rate:
            out = self.flush()
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
            self._rate = frame.sample_rate
        mono = av.AudioFrame.from_ndarray(channel_mean(frame)[None, :], format="flt", layout="mono")
        mono.sample_rate = frame.sample_rate
        return out + self._samples(self._resampler.resample(mono))

    def flush(self) -> list[np.ndarray]:
        if self._resampler is None:
            return []
        resampler, self._resampler, self._rate = self._resampler, None, None
        return self._samples(resampler.resample(None))


class _Chunker:
    """Collects sample blocks and cuts them into chunks of exactly `size` samples (the last shorter)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._blocks: list[np.ndarray] = []
        self._count = 0

    def add(self, block: np.ndarray) -> list[np.ndarray]:
        if block.size:
            self._blocks.append(block)
            self._count += block.size
        chunks = []
        while self._count >= self.size:
            joined = np.concatenate(self._blocks) if len(self._blocks) > 1 else self._blocks[0]
            chunks.append(joined[: self.size])
            rest = joined[self.size :]
            self._blocks, self._count = ([rest] if rest.size else []), rest.size
        return chunks

    def rest(self) -> np.ndarray | None:
        if not self._count:
            return None
        joined = np.concatenate(self._blocks)
        self._blocks, self._count = [], 0
        return joined


class _PacketDecoder:
    def __init__(self, container: av.container.InputContainer, stream, deadline: float | None):
        self.container = container
        self.stream = stream
        self.deadline = deadline
        self.bad_packets = 0

    def frames(self) -> Iterator[av.AudioFrame]:
        """Decoded frames of the audio stream; corrupt packets skipped (counted) up to MAX_BAD_PACKETS."""
        try:
            for packet in self.container.demux(self.stream):
                if deadline_passed(self.deadline):
                    raise VideoFailure("decode time limit exceeded (raise --video-timeout-s for very long videos)")
                try:
                    decoded = packet.decode()
                except av.error.FFmpegError:
                    self.bad_packets += 1
                    if self.bad_packets > MAX_BAD_PACKETS:
                        raise VideoFailure("too many corrupt audio packets") from None
                    continue
                yield from decoded
        except av.error.FFmpegError as exc:
            raise VideoFailure(f"audio demux error ({exc.strerror or type(exc).__name__})") from None


def _seconds(value: int | None, time_base: Fraction | None) -> float | None:
    if value is None or time_base is None:
        return None
    return float(value * time_base)


def _first_frame(
    container: av.container.InputContainer, stream, start_s: float | None, deadline: float | None
) -> tuple[Iterator[av.AudioFrame], av.AudioFrame | None]:
    """Position the decode and return its first frame: at the stream start, or for a segment far
    into the stream after a seek to shortly before it (undone if the seek lands past the segment)."""
    decoder = _PacketDecoder(container, stream, deadline)
    stream_start = _seconds(stream.start_time, stream.time_base) or 0.0
    if start_s is not None and stream.time_base and start_s > stream_start + SEEK_MIN_GAP_S:
        try:
            container.seek(math.floor((start_s - SEEK_PREROLL_S) / stream.time_base), backward=True, stream=stream)
        except av.error.FFmpegError:
            pass  # not seekable: decode from where we are (the start)
        else:
            frames = decoder.frames()
            first = next(frames, None)
            if first is not None and first.time is not None and first.time <= start_s:
                return frames, first
            frames.close()
            try:
                container.seek(0, backward=True)  # the seek overshot or lost the timeline: start over
            except av.error.FFmpegError as exc:
                raise VideoFailure(f"audio seek failed ({exc.strerror or type(exc).__name__})") from None
            decoder = _PacketDecoder(container, stream, deadline)
    frames = decoder.frames()
    return frames, next(frames, None)


def iter_audio(
    path: str,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    deadline: float | None = None,
    chunk_s: float = 10.0,
    stream_index: int | None = None,
    facts: dict | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield `(start_time_s, samples)`: the audio stream (FFmpeg's best one, or `stream_index`) as
    16 kHz mono float32 chunks of `chunk_s` seconds (the last shorter), contiguous from the first
    sample's time, cut to [start_s, end_s) of the container's timeline when given. `facts`, when
    given, receives `audio_stream`: the index of the stream read.

    A generator: every error is raised on iteration, not on the call. `ViewAbsent` when the file has
    no audio stream or it yields no samples (in the segment); `VideoFailure` for an unreadable file,
    too many corrupt packets or the `deadline` (a `time.monotonic()` value) passing. On a failure
    after some chunks were yielded, those chunks are incomplete and should be discarded."""
    chunk_samples = max(1, round(chunk_s * SAMPLE_RATE_HZ))
    container = _open(path)
    frames: Iterator[av.AudioFrame] | None = None
    try:
        stream = pick_audio_stream(container, index=stream_index)
        if facts is not None:
            facts["audio_stream"] = stream.index
        if stream.codec_context is None:
            raise VideoFailure(f"no decoder for the audio codec in this FFmpeg build (PyAV {av.__version__})")
        frames, first = _first_frame(container, stream, start_s, deadline)
        t0 = first.time if first is not None and first.time is not None else 0.0
        # samples [lo, hi) counted from t0 are inside the segment (small epsilon: float times)
        lo = 0 if start_s is None else max(0, math.ceil((start_s - t0) * SAMPLE_RATE_HZ - 1e-6))
        hi = None if end_s is None else max(0, math.ceil((end_s - t0) * SAMPLE_RATE_HZ - 1e-6))
        resampler, chunker = _Resampler(), _Chunker(chunk_samples)
        yielded = 0  # samples handed out

        def blocks() -> Iterator[tuple[int, np.ndarray]]:
            """(index of its first sample counted from t0, block) for each resampled block."""
            position = 0
            try:
                for frame in itertools.chain([first] if first is not None else [], frames):
                    for block in resampler.resample(frame):
                        yield position, block
                        position += block.size
                    if hi is not None and position >= hi:
                        return  # past the segment: stop decoding
                for block in resampler.flush():
                    yield position, block
                    position += block.size
            except (av.error.FFmpegError, ValueError) as exc:
                raise VideoFailure(f"audio resampling failed ({type(exc).__name__}: {exc})") from None

        for begin, block in blocks():
            stop = begin + block.size if hi is None else max(begin, min(hi, begin + block.size))
            for chunk in chunker.add(block[max(lo, begin) - begin : stop - begin]):
                yield t0 + (lo + yielded) / SAMPLE_RATE_HZ, chunk
                yielded += chunk.size
        tail = chunker.rest()
        if tail is not None:
            yield t0 + (lo + yielded) / SAMPLE_RATE_HZ, tail
            yielded += tail.size
        if not yielded:
            segment = "" if start_s is None and end_s is None else f" in the segment [{start_s}, {end_s})"
            raise ViewAbsent(f"audio stream has no samples{segment}")
    finally:
        if frames is not None:
            frames.close()  # end the demux generator before its container goes
        container.close()
