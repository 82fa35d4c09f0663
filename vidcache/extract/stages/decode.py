"""Decode stage: one video in, its chunks and one `VideoDecoded` out (the `VideoStage` pass)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from ...cache.layout import STATUS_FAILED
from ...config import RunConfig, StreamConfig
from ..consumers import Consumer
from ..decode import Deadline
from ..stage import VideoStage, unexpected_reason
from ..viewset import audio_view_of
from .messages import ChunkMessage, DecodeMessage, VideoDecoded, VideoTask

ConsumersFn = Callable[[list[str]], list[Consumer]]


class DecodeStage:
    """Runs `VideoStage` for one `VideoTask` at a time. `consumers_for(views)` builds the decode-side
    work of the views: with the encoders in this process, or their model-free twins in a decode
    process or Ray task (then only `prepare` runs here and the model runs elsewhere)."""

    def __init__(
        self,
        consumers_for: ConsumersFn,
        *,
        run: RunConfig,
        streams: StreamConfig | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.consumers_for, self.run, self.streams, self.stop = consumers_for, run, streams, stop

    def setup(self) -> None:
        """Nothing to load: the consumers are built per video (each holds one video's state)."""

    def process(
        self, task: VideoTask, *, on_start: Callable[[Deadline], None] | None = None
    ) -> Iterator[DecodeMessage]:
        """The video's chunks in order, then its `VideoDecoded`. An error no check foresaw fails every
        view of this video (n_chunks None) and never escapes: one file never stops the run.
        `on_start` gets the video's decode deadline before decoding starts (for a watchdog); the time
        the caller spends on each chunk message does not count against it."""
        started = time.perf_counter()
        views = list(task.views)
        try:
            stage = VideoStage(
                task.entry,
                self.consumers_for(views),
                run=self.run,
                streams=self.streams,
                audio_view=audio_view_of(views),
                stop=self.stop,
            )
            if on_start is not None:
                on_start(stage.deadline)
            chunk_no = 0
            for chunk in stage:
                with stage.deadline.held():
                    yield ChunkMessage(task.index, chunk_no, chunk)
                chunk_no += 1
        except Exception as exc:  # never let one file stop the night's run
            outcomes = {view: (STATUS_FAILED, unexpected_reason(exc)) for view in views}
            yield VideoDecoded(task.index, None, outcomes, {}, time.perf_counter() - started)
            return
        yield VideoDecoded(task.index, chunk_no, stage.outcomes, stage.details, time.perf_counter() - started)

    def teardown(self) -> None:
        """Nothing held between videos."""
