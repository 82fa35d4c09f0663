"""The local engine: decode workers on this machine (threads running `DecodeStage`, or threads each
driving a decode process), the model stages and the assembly and write stages in this thread.

Decode workers push small chunk messages through a bounded queue, so memory stays bounded whatever
the video length. A watchdog gives up on a worker stuck inside FFmpeg (its video fails, a fresh worker
takes its place); a stop signal waits until the video being written is written.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ...signals import deferred
from ...threads import usable_cpus
from ..decode import DEFAULT_VIDEO_TIMEOUT_S, threads_per_decoder
from ..decode_process import decode_spec, process_context, process_worker, start_server
from ..stages import AssembleStage, ChunkMessage, DecodeStage, ModelStage, VideoDecoded, VideoRows, WriteStage
from ..watchdog import DecodeWatch
from .base import SPILL_DIR, ExtractJob
from .handoff import HANDOFF_MESSAGES, HandOff

log = logging.getLogger("vidcache.extract")


def _decode_worker(
    slot: int,
    tasks: queue.Queue,
    out: queue.Queue,
    stop: threading.Event,
    watch: DecodeWatch,
    *,
    stage: DecodeStage,
) -> None:
    """One decode thread: tasks from `tasks`, messages onto `out`, until none is left or it is
    abandoned as stuck (then it sends nothing more)."""
    while not stop.is_set() and not watch.abandoned(slot):
        try:
            task = tasks.get_nowait()
        except queue.Empty:
            return

        def started(deadline, index: int = task.index) -> None:
            watch.begin(slot, index, deadline)

        for message in stage.process(task, on_start=started):
            if isinstance(message, VideoDecoded):
                watch.end(slot)
                if message.n_chunks is not None and stop.is_set():
                    return
                if watch.abandoned(slot):
                    return
            elif watch.abandoned(slot):  # the main thread failed this video and moved on
                return
            out.put(message)


def torch_threads_beside(workers: int) -> int:
    """torch's intra-op threads for a run with `workers` decode workers: the cores this process may
    use that the workers leave free (at least one)."""
    return max(1, usable_cpus() - workers)


@contextmanager
def cores_shared_with(workers: int) -> Iterator[int]:
    """torch's thread pool sized beside the decode workers for the run, restored after. Each torch op
    of the model and of every decode thread's resize otherwise starts a team as wide as the machine:
    on a busy machine those threads spin waiting for each other, which cost short clips more CPU than
    their decoding (issue 29)."""
    before, threads = torch.get_num_threads(), torch_threads_beside(workers)
    torch.set_num_threads(min(before, threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


class LocalEngine:
    name = "local"

    def run(self, job: ExtractJob) -> None:
        if not job.tasks:
            return
        with cores_shared_with(job.config.run.workers):
            self._run(job)

    def _run(self, job: ExtractJob) -> None:
        run, summary = job.config.run, job.summary
        tasks: queue.Queue = queue.Queue()
        for task in job.tasks:
            tasks.put(task)
        out: queue.Queue = HandOff(max_messages=max(HANDOFF_MESSAGES, 4 * run.workers))
        stop = threading.Event()
        watch = DecodeWatch(limit_s=run.video_timeout_s or DEFAULT_VIDEO_TIMEOUT_S)
        workers: list[threading.Thread] = []

        summary.decode_in = job.decode_in
        if job.decode_in == "processes":
            spec, ctx = decode_spec(job.config, job.encoders), process_context()
            start_server(ctx)

            def target(slot, tasks, out, stop, watch):
                process_worker(slot, tasks, out, stop, watch, spec=spec, ctx=ctx)
        else:
            threads = threads_per_decoder(run.decode_threads, workers=run.workers)
            decode_run = dataclasses.replace(run, decode_threads=threads)
            decode = DecodeStage(job.consumers_for, run=decode_run, streams=job.config.streams, stop=stop)
            decode.setup()

            def target(slot, tasks, out, stop, watch):
                _decode_worker(slot, tasks, out, stop, watch, stage=decode)

        def spawn_worker() -> None:
            slot = len(workers)
            worker = threading.Thread(
                target=target, args=(slot, tasks, out, stop, watch), daemon=True, name=f"decode-{slot}"
            )
            workers.append(worker)
            worker.start()

        def live_workers() -> list[threading.Thread]:
            return [w for slot, w in enumerate(workers) if w.is_alive() and not watch.abandoned(slot)]

        for _ in range(min(run.workers, len(job.tasks))):
            spawn_worker()
        models = {
            view: ModelStage(view, encoder, device=job.device, batch_rows=run.batch_size)
            for view, encoder in job.encoders.items()
        }
        assemble = AssembleStage(spill_dir=job.cache_dir / SPILL_DIR, spill_prefix=job.writer.writer_tag)
        write = WriteStage(job.cache_dir, job.writer, summary)
        for stage in (*models.values(), assemble, write):
            stage.setup()
        for task in job.tasks:
            assemble.expect(task)
        next_watch_s = 0.0

        def written(videos: list[VideoRows]) -> None:
            for video in videos:
                with deferred():  # a stop signal waits until the video is written (and maybe committed)
                    write.process(video)
                job.progress(summary)

        def encoded(model: ModelStage, messages: list[ChunkMessage]) -> None:
            summary.model_seconds += model.model_s
            model.model_s = 0.0
            for message in messages:
                assemble.process(message, hand_over=False)
            written(assemble.ready())

        def give_up_stuck() -> None:
            for stuck in watch.give_up_stuck():
                state = assemble.states.get(stuck.index)
                if state is None:
                    continue
                log.warning("gave up on %s: %s", state.task.entry.video_id, stuck.reason())
                for model in models.values():
                    model.drop(stuck.index)
                if not tasks.empty():
                    spawn_worker()  # the stuck thread keeps its slot; the run keeps its parallelism
                written(assemble.fail(stuck.index, stuck.reason()))

        try:
            while len(assemble):
                if time.monotonic() >= next_watch_s:
                    next_watch_s = time.monotonic() + 0.5
                    give_up_stuck()
                    if not len(assemble):
                        break
                try:
                    message = out.get(timeout=0.05)
                except queue.Empty:
                    if any(model.pending for model in models.values()):
                        for model in models.values():
                            encoded(model, model.flush())
                    elif not live_workers() and out.empty():
                        if not tasks.empty():  # every worker was abandoned as stuck
                            spawn_worker()
                            continue
                        lost = ", ".join(s.task.entry.video_id for s in assemble.states.values())
                        raise RuntimeError(f"decode workers stopped with videos unfinished: {lost}") from None
                    continue
                if message.index not in assemble.states:  # given up as stuck: later messages are ignored
                    continue
                if isinstance(message, ChunkMessage) and not message.chunk.encoded:
                    model = models[message.chunk.view]
                    encoded(model, model.process(message))
                else:
                    if isinstance(message, VideoDecoded):
                        summary.decode_seconds += message.decode_s
                        if message.n_chunks is None:  # the worker crashed: drop what it sent
                            for model in models.values():
                                model.drop(message.index)
                    written(assemble.process(message))
                summary.seconds = time.perf_counter() - job.started
        finally:
            stop.set()
            assemble.teardown()
            for model in models.values():
                model.teardown()
            # a worker stuck inside FFmpeg would never end: wait a bounded time, then leave it (a daemon)
            give_up_at = time.monotonic() + watch.grace_s
            while live_workers() and time.monotonic() < give_up_at:
                try:
                    out.get(timeout=0.05)  # unblock workers waiting on a full queue
                except queue.Empty:
                    pass
