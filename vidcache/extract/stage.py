"""The decode stage for one video: one pass over the video stream feeding every video view's
consumer, then one pass over the audio stream, as a stream of `Chunk`s.

Each view ends in its own outcome (done, absent, failed) so a video without audio still gets its
clip rows, and an audio-only file still gets its audio rows. The extract workers and the benchmarks
run this same class, so benchmarks measure what extract does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Iterator

import av
import numpy as np
import torch

from ..cache.layout import STATUS_ABSENT, STATUS_DONE, STATUS_FAILED
from ..cache.thumbnails import THUMBNAIL_KEY, encode_thumbnail, thumbnail_size
from ..config import RunConfig, StreamConfig
from ..errors import VideoFailure, ViewAbsent
from ..manifest import VideoEntry
from ..redact import redact_text
from ..remote import CredentialsRefused, fetch_to_temp, is_url
from .colour import exact_rgb, needs_exact
from .consumers import Chunk, Consumer
from .decode import Deadline, FrameSampler, frame_rotation, frame_to_rgb

log = logging.getLogger("vidcache.extract")
AUDIO_CHUNK_EXAMPLES = 64  # log-mel examples per chunk sent to the audio encoder


def unexpected_reason(exc: BaseException) -> str:
    """The one-line reason recorded for an error no check foresaw (the debug log has the traceback)."""
    log.debug("unexpected decode error", exc_info=exc)
    return f"unexpected {type(exc).__name__}: {exc}".splitlines()[0]


class RgbPerView:
    """The RGB conversions of one decoded frame, one per pre-shrink size, made when a consumer
    first asks: each view's frame depends on the decoded frame and that view's own size only,
    never on which other views run in the pass."""

    def __init__(self, frame: av.VideoFrame, *, threads: int = 1) -> None:
        self.frame = frame
        self.threads = threads  # swscale threads: the decoder's count (one per worker when workers fill the cores)
        self._by_side: dict[int | None, np.ndarray] = {}
        self._by_size: dict[tuple[int, int], np.ndarray] = {}
        self._exact: np.ndarray | None = None  # the exact conversion of a deep frame, made once

    def for_side(self, max_short_side: int | None) -> np.ndarray:
        rgb = self._by_side.get(max_short_side)
        if rgb is None:
            if self._exact is None and needs_exact(self.frame):
                self._exact = exact_rgb(self.frame)
            rgb = frame_to_rgb(self.frame, max_short_side=max_short_side, exact=self._exact, threads=self.threads)
            self._by_side[max_short_side] = rgb
        return rgb

    def for_consumer(self, consumer: Consumer) -> np.ndarray:
        """The frame as `consumer` wants it: at its exact `frame_size`, else by its short side."""
        size = consumer.frame_size(*self.displayed_size())
        if size is None:
            return self.for_side(consumer.max_short_side)
        return self.for_size(size)

    def displayed_size(self) -> tuple[int, int]:
        """(width, height) as displayed: rotation applied."""
        turned = frame_rotation(self.frame) in (90, 270)
        return (self.frame.height, self.frame.width) if turned else (self.frame.width, self.frame.height)

    def for_size(self, size: tuple[int, int]) -> np.ndarray:
        """The frame at exactly `size` (width, height as displayed)."""
        rgb = self._by_size.get(size)
        if rgb is None:
            if self._exact is None and needs_exact(self.frame):
                self._exact = exact_rgb(self.frame)
            rgb = frame_to_rgb(self.frame, size=size, exact=self._exact, threads=self.threads)
            self._by_size[size] = rgb
        return rgb


class VideoStage:
    """Iterate to get the chunks; afterwards `outcomes[view] = (status, reason)` for every view
    asked for and `details` holds the per-video facts recorded in the catalog."""

    def __init__(
        self,
        entry: VideoEntry,
        consumers: list[Consumer],
        *,
        run: RunConfig,
        streams: StreamConfig | None = None,
        audio_view: str | None = None,
        stop: threading.Event | None = None,
    ):
        # audio_view: the view fed by the audio pass (log-mel examples), None for no audio pass
        self.entry, self.consumers, self.run, self.audio_view, self.stop = entry, consumers, run, audio_view, stop
        self.streams = streams or StreamConfig()
        self.outcomes: dict[str, tuple[str, str | None]] = {}
        self.details: dict = {}
        # created here, not when iteration starts, so the worker can hand it to the watchdog first
        self.deadline = Deadline(run.video_timeout_s)

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def __iter__(self) -> Iterator[Chunk]:
        if not is_url(self.entry.path):
            yield from self._passes()
            return
        remote = self.entry  # a URL: decoded from a local copy, deleted when the video is done
        try:
            local = fetch_to_temp(remote.path)
        except Exception as exc:
            if isinstance(exc, FileNotFoundError):
                reason = "file not found (no such object at the URL)"
            elif isinstance(exc, CredentialsRefused):  # already one line naming the redacted URL
                reason = str(exc)
            else:  # a library's message may quote the URL, credentials and all
                first = (str(exc).strip().splitlines() or [""])[0]
                reason = redact_text(f"cannot fetch the URL ({type(exc).__name__}: {first})")
            views = [v for c in self.consumers for v in c.view_names] + ([self.audio_view] if self.audio_view else [])
            self.outcomes.update({view: (STATUS_FAILED, reason) for view in views})
            return
        self.entry = dataclasses.replace(remote, path=local)
        try:
            yield from self._passes()
        finally:
            self.entry = remote
            os.unlink(local)

    def _passes(self) -> Iterator[Chunk]:
        deadline = self.deadline
        if self.consumers:
            video_views = [v for c in self.consumers for v in c.view_names]
            try:
                yield from self._video(deadline)
                if self._stopped():  # interrupted mid-video: nothing to report as done
                    return
                for view in video_views:
                    self.outcomes.setdefault(view, (STATUS_DONE, None))
            except VideoFailure as failure:
                for view in video_views:
                    self.outcomes[view] = (STATUS_FAILED, failure.reason)
            except ViewAbsent as absent:
                for view in video_views:
                    self.outcomes[view] = (STATUS_ABSENT, absent.reason)
            except Exception as exc:  # a bug or an odd file: these views fail, the audio pass still runs
                reason = unexpected_reason(exc)
                for view in video_views:
                    self.outcomes[view] = (STATUS_FAILED, reason)
        if self.audio_view and not self._stopped():
            try:
                yield from self._audio(deadline)
                self.outcomes[self.audio_view] = (STATUS_DONE, None)
            except VideoFailure as failure:
                self.outcomes[self.audio_view] = (STATUS_FAILED, failure.reason)
            except ViewAbsent as absent:
                self.outcomes[self.audio_view] = (STATUS_ABSENT, absent.reason)
            except Exception as exc:
                self.outcomes[self.audio_view] = (STATUS_FAILED, unexpected_reason(exc))

    # video ---------------------------------------------------------------------------------------
    def _video(self, deadline: Deadline) -> Iterator[Chunk]:
        entry, run, consumers = self.entry, self.run, self.consumers
        if run.decode_device == "cuda":  # NVDEC, or this video falls back to the CPU pass below (recorded)
            from .nvdec import nvdec_video

            if (yield from nvdec_video(self, deadline)):
                return
        owners: list[np.ndarray] = []  # union position → (consumer number, own target index)

        with FrameSampler(
            entry.path,
            start_s=entry.start_s,
            end_s=entry.end_s,
            seek=run.seek,
            threads=run.decode_threads,
            deadline=deadline,
            targets_fn=lambda origin_s, end_s: self._union(origin_s, end_s, owners, sampler_info),
            stream_index=self.streams.video,
        ) as sampler:
            sampler_info = sampler.info
            cursor, rows = 0, 0
            for frame, time_s, count in sampler:
                if self._stopped():
                    return
                rgb = RgbPerView(frame, threads=run.decode_threads)
                if cursor <= (owners[0].shape[1] - 1) // 2 < cursor + count:  # the middle sampled frame
                    self._keep_thumbnail(rgb)
                covered = owners[0][:, cursor : cursor + count]
                cursor += count
                with deadline.held():  # consumers' work and the wait on a full queue: not decoding
                    for number in np.unique(covered[0]):
                        own = covered[1][covered[0] == number]
                        consumer = consumers[number]
                        yield from consumer.feed(rgb.for_consumer(consumer), time_s, own)
                rows += count
            if sampler.last_frame is not None and not self._stopped():
                tail = [(c, c.tail_indices()) for c in consumers]
                tail = [(c, own) for c, own in tail if own is not None and len(own)]
                if tail:  # e.g. --num-frames times all past the last frame: that frame for each of them
                    last, last_s = sampler.last_frame
                    rgb = RgbPerView(last, threads=run.decode_threads)
                    if THUMBNAIL_KEY not in self.details:
                        self._keep_thumbnail(rgb)
                    with deadline.held():
                        for consumer, own in tail:
                            yield from consumer.feed(rgb.for_consumer(consumer), last_s, own)
                            rows += len(own)
            stats, info = sampler.stats, sampler.info
            with deadline.held():
                for consumer in consumers:
                    reason = consumer.failure(bad_packets=stats.bad_packets)
                    if reason:  # only this consumer's views fail; the others keep their rows
                        self.outcomes.update({view: (STATUS_FAILED, reason) for view in consumer.view_names})
                        continue
                    yield from consumer.finish()
        if rows == 0:
            end = info.end_s
            raise VideoFailure(
                f"no frames in the requested segment (video ends at {end:.3f} s)"
                if end is not None
                else "no frames to sample"
            )
        self.details.update(
            {
                **dataclasses.asdict(info),
                "decoded_frames": stats.decoded_frames,
                "seeks": stats.seeks,
                "bad_packets": stats.bad_packets,
                "estimated_times": stats.estimated_times,
                "notes": stats.notes,
            }
        )

    def _keep_thumbnail(self, rgb: RgbPerView) -> None:
        """The video's thumbnail (JPEG bytes in `details`, written by the main process), converted
        from the decoded frame straight to its small size; a frame that cannot be encoded costs the
        thumbnail only."""
        try:
            self.details[THUMBNAIL_KEY] = encode_thumbnail(rgb.for_size(thumbnail_size(*rgb.displayed_size())))
        except Exception as exc:
            log.debug("no thumbnail for %s: %s", self.entry.video_id, exc)

    def _union(self, origin_s: float, end_s: float, owners: list[np.ndarray], info) -> np.ndarray:
        nominal_dt = 1.0 / info.avg_fps if info.avg_fps else 1 / 30
        times, consumer_no, own_index = [], [], []
        for number, consumer in enumerate(self.consumers):
            targets = consumer.targets_s(origin_s, end_s, nominal_dt, frame_origin_s=info.stream_start_s)
            targets = np.asarray(targets, dtype=np.float64)
            times.append(targets)
            consumer_no.append(np.full(len(targets), number))
            own_index.append(np.arange(len(targets)))
        all_times = np.concatenate(times)
        order = np.argsort(all_times, kind="stable")
        owners.append(np.stack([np.concatenate(consumer_no)[order], np.concatenate(own_index)[order]]))
        return all_times[order]

    # audio ---------------------------------------------------------------------------------------
    def _audio(self, deadline: Deadline) -> Iterator[Chunk]:
        from .audio import LogMelExamples, iter_audio
        from .audio.frontend import EXAMPLE_S

        frontend = LogMelExamples()
        start_s: float | None = None
        pending: list = []
        emitted = 0

        def chunk(examples) -> Chunk:
            nonlocal emitted
            starts = start_s + (emitted + np.arange(len(examples))) * EXAMPLE_S  # type: ignore[operator]
            emitted += len(examples)
            return Chunk(self.audio_view, starts, starts + EXAMPLE_S, examples, False)

        facts: dict = {}
        for chunk_start_s, samples in iter_audio(
            self.entry.path,
            start_s=self.entry.start_s,
            end_s=self.entry.end_s,
            deadline=deadline,
            stream_index=self.streams.audio,
            facts=facts,
        ):
            if self._stopped():
                return
            if start_s is None:
                start_s = chunk_start_s
            with deadline.held():
                examples = frontend.feed(samples)
                if len(examples):
                    pending.append(examples)
                if sum(len(p) for p in pending) >= AUDIO_CHUNK_EXAMPLES:
                    yield chunk(torch.cat(pending))
                    pending = []
        tail = frontend.finish()
        if len(tail):
            pending.append(tail)
        if pending:
            yield chunk(torch.cat(pending))
        if emitted == 0:
            raise ViewAbsent("audio shorter than one 25 ms window")
        self.details["audio_examples"] = emitted
        self.details["audio_stream"] = facts["audio_stream"]
