"""Decode workers as processes (`--decode-in processes`, the default when the models run on CUDA).

Decode threads stop scaling at about 4 workers: on a 16-core GPU machine they plateau at ~650 sampled
frames/s whatever FFmpeg's or torch's thread counts, with 11 cores idle, while the same stage in 16
processes gives 2377 (docs/benchmarks.md, GPU section). The per-frame Python work and torch's resize
share one interpreter. So here each worker thread of the extract loop drives one child process that
runs the same `VideoStage`, with the same consumers (built by `make_consumers` from model-free twins
of the encoders), and forwards its messages into the loop's queue unchanged: batching, writing,
resume and per-(video, view) statuses stay the loop's, and rows are bit-identical to the threads'.

Child → parent messages, per video:
  ("budget", limit_s, remaining_s)                          the decode limit, once fitted to the duration
  ("chunk", chunk_no, chunk, limit_s, remaining_s)          tensors travel as NumPy arrays
  ("done", n_chunks | None, outcomes, details, decode_s)

The parent thread mirrors the child's decode deadline for the watchdog. A child stuck inside one
FFmpeg call is killed (a thread can only be parked, keeping its CPU) and a fresh child takes the next
video; a child that dies (a decoder crash) fails only the video it held.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..cache.layout import STATUS_FAILED
from ..redact import redact_standard_streams, remember_url
from .config import ExtractConfig
from .consumers import Chunk
from .decode import Deadline, threads_per_decoder
from .encoder import PrepareOnly  # noqa: F401  (re-exported: its old home)
from .stage import VideoStage, unexpected_reason
from .stages.messages import ChunkMessage, VideoDecoded
from .watchdog import DecodeWatch

POLL_S = 0.1  # how often a waiting parent thread looks at the stop flag and the watchdog
# Imported once in the fork server, so a child starts in milliseconds: a module first imported in each
# child (torchvision through the preprocessing, OpenCV for TV-L1) cost 1.5 s per child, per run.
# A missing optional one (cv2) is skipped by the fork server.
PRELOAD = (
    __name__,
    "vidcache.extract.preprocess",
    "vidcache.extract.views.s3d.model",
    "vidcache.extract.audio",
    "vidcache.extract.views.flow.tvl1",
    "cv2",
)


@dataclass(frozen=True)
class DecodeSpec:
    """Everything a decode process needs, picklable: the run's config, each model view's twin, and
    the FFmpeg threads per decoder (cores / workers unless --decode-threads was given)."""

    config: ExtractConfig
    twins: dict[str, Any]  # view → `PrepareOnly` twin of its encoder
    ffmpeg_threads: int


def decode_spec(config: ExtractConfig, encoders: dict[str, object]) -> DecodeSpec:
    from .views import VIEWS

    run = config.run
    threads = threads_per_decoder(run.decode_threads, workers=run.workers)
    twins = {name: VIEWS.get(name)().prepare_twin(encoder) for name, encoder in encoders.items()}
    return DecodeSpec(
        config=dataclasses.replace(config, run=dataclasses.replace(run, decode_threads=threads)),
        twins={name: twin for name, twin in twins.items() if twin is not None},
        ffmpeg_threads=threads,
    )


def processes_unsupported(config: ExtractConfig, encoders: dict[str, object]) -> str | None:
    """None when the views' decode-side work can run in a child process, else why not."""
    from .plan import cache_views
    from .views import VIEWS

    for name in cache_views(config.views):
        view = VIEWS.get(name)()
        why = view.process_unsupported(config.settings_of(name))
        if why:
            return why
        if view.source == "video" and name in encoders and not hasattr(encoders[name], "process_prepare"):
            return f"the {name} encoder has no model-free process_prepare"
    return None


# the child ---------------------------------------------------------------------------------------
class _ParentGone(Exception):
    pass


def _send(conn, message: tuple) -> None:
    try:
        conn.send(message)
    except (BrokenPipeError, ConnectionResetError, EOFError, OSError) as exc:
        raise _ParentGone from exc


class _ReportingDeadline(Deadline):
    """The child's decode deadline; tells the parent its limit once it is fitted to the video."""

    def __init__(self, seconds: float | None, conn):
        super().__init__(seconds)
        self._conn = conn

    def fit_to(self, duration_s: float | None) -> None:
        super().fit_to(duration_s)
        _send(self._conn, ("budget", self.seconds, self.remaining_s()))


def _to_wire(chunk: Chunk) -> Chunk:
    if isinstance(chunk.data, torch.Tensor):
        return dataclasses.replace(chunk, data=chunk.data.numpy())
    return chunk


def _die_with_parent() -> None:
    """SIGKILL this child when its parent (the fork server) exits, on Linux; elsewhere the closed pipe
    ends it at its next message."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def child_main(conn, spec: DecodeSpec) -> None:
    """A decode process: videos in, chunks out, until told to stop or the parent is gone."""
    # Ctrl-C reaches the whole group, Slurm's SIGTERM every process of the step: the parent decides
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    redact_standard_streams()  # what this process prints (a traceback) never shows a URL's credentials
    torch.set_num_threads(1)  # parallelism is across processes; one resize per frame needs no pool
    with contextlib.suppress(OSError):
        # below the main process, which feeds the GPU: with every core decoding, the model thread ran at
        # 65 % of its own speed inside the extract (ViT-L-14, H200 run 3); decoding loses nothing idle
        os.nice(5)
    from .plan import cache_views
    from .viewset import audio_view_of, load_decode_models, make_consumers, view_context

    ctx = view_context(spec.config, "cpu")
    decode_models = load_decode_models(cache_views(spec.config.views), spec.config, ctx)
    run = spec.config.run
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            entry, views = job
            remember_url(entry.path)  # a library's message quoting it is scrubbed whole
            started = time.perf_counter()
            try:
                consumers = make_consumers(
                    views, config=spec.config, ctx=ctx, models=spec.twins, decode_models=decode_models
                )
                stage = VideoStage(
                    entry, consumers, run=run, streams=spec.config.streams, audio_view=audio_view_of(views)
                )
                stage.deadline = deadline = _ReportingDeadline(run.video_timeout_s, conn)
                chunk_no = 0
                for chunk in stage:
                    with deadline.held():
                        _send(conn, ("chunk", chunk_no, _to_wire(chunk), deadline.seconds, deadline.remaining_s()))
                    chunk_no += 1
                _send(conn, ("done", chunk_no, stage.outcomes, stage.details, time.perf_counter() - started))
            except _ParentGone:
                raise
            except Exception as exc:  # as in a decode thread: one file never stops the run
                outcomes = {view: (STATUS_FAILED, unexpected_reason(exc)) for view in views}
                _send(conn, ("done", None, outcomes, {}, time.perf_counter() - started))
    except _ParentGone:
        return


# the parent side ---------------------------------------------------------------------------------
_context_lock = threading.Lock()


def process_context() -> multiprocessing.context.BaseContext:
    """A fork server (children fork from a clean, preloaded process: no CUDA context, no threads of
    the extract loop) where the platform has one; spawn elsewhere."""
    with _context_lock:
        if "forkserver" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(list(PRELOAD))
            return ctx
        return multiprocessing.get_context("spawn")


def start_server(ctx: multiprocessing.context.BaseContext) -> None:
    """Start the fork server now, from the main thread, with SIGINT and SIGTERM blocked: it and the
    children it forks inherit the mask, so a signal sent to the whole process group (Slurm, Ctrl-C)
    reaches only the parent, which keeps the finished videos and stops the children itself. The
    parent's own signals wait while blocked, and are acted on when unblocked: none is lost."""
    if ctx.get_start_method() != "forkserver" or threading.current_thread() is not threading.main_thread():
        return
    from multiprocessing import forkserver

    stop_signals = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class DecodeChild:
    """One decode process and the parent's end of its pipe."""

    def __init__(self, ctx: multiprocessing.context.BaseContext, spec: DecodeSpec):
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=child_main, args=(child_conn, spec), daemon=True, name="vidcache-decode")
        self.process.start()
        child_conn.close()

    def send(self, job: Any) -> None:
        self.conn.send(job)

    def receive(self, timeout_s: float) -> tuple | None:
        """The next message, None if none came within `timeout_s`; EOFError if the child is gone."""
        if not self.conn.poll(timeout_s):
            return None
        return self.conn.recv()

    def death(self) -> str:
        self.process.join(timeout=2.0)
        code = self.process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.join(timeout=2.0)
        self.close()

    def stop(self) -> None:
        """Ask the child to finish (it is between videos), then make sure it has."""
        with contextlib.suppress(Exception):
            self.conn.send(None)
            self.process.join(timeout=5.0)
        if self.process.is_alive():
            self.kill()
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def _from_wire(chunk: Chunk) -> Chunk:
    if not chunk.encoded and isinstance(chunk.data, np.ndarray):  # model inputs are tensors in the loop
        chunk.data = torch.from_numpy(chunk.data)
    return chunk


def process_worker(
    slot: int,
    tasks: queue.Queue,
    out: queue.Queue,
    stop: threading.Event,
    watch: DecodeWatch,
    *,
    spec: DecodeSpec,
    ctx: multiprocessing.context.BaseContext,
) -> None:
    """The body of one decode worker thread in process mode: the same `VideoTask`s in and the same
    messages on `out` as a decode thread (`ChunkMessage`, `VideoDecoded`), produced by a child process."""
    child: DecodeChild | None = None
    try:
        while not stop.is_set() and not watch.abandoned(slot):
            try:
                task = tasks.get_nowait()
            except queue.Empty:
                return
            index, entry, views = task.index, task.entry, list(task.views)
            if child is None:
                child = DecodeChild(ctx, spec)
            started = time.perf_counter()
            deadline = Deadline(spec.config.run.video_timeout_s)
            watch.begin(slot, index, deadline)
            child.send((entry, views))
            while True:
                if stop.is_set() or watch.abandoned(slot):  # interrupted, or given up as stuck
                    child.kill()
                    child = None
                    return
                try:
                    message = child.receive(POLL_S)
                except (EOFError, OSError):
                    reason = f"decode process died ({child.death()}) while decoding this file"
                    child.close()
                    child = None
                    watch.end(slot)
                    outcomes = {view: (STATUS_FAILED, reason) for view in views}
                    out.put(VideoDecoded(index, None, outcomes, {}, time.perf_counter() - started))
                    break
                if message is None:
                    continue
                kind = message[0]
                if kind == "budget":
                    deadline.restart(seconds=message[1], remaining_s=message[2])
                elif kind == "chunk":
                    _, chunk_no, chunk, limit_s, remaining_s = message
                    deadline.restart(seconds=limit_s, remaining_s=remaining_s)
                    with deadline.held():
                        out.put(ChunkMessage(index, chunk_no, _from_wire(chunk)))
                else:  # done
                    _, n_chunks, outcomes, details, decode_s = message
                    watch.end(slot)
                    if stop.is_set() or watch.abandoned(slot):
                        return
                    out.put(VideoDecoded(index, n_chunks, outcomes, details, decode_s))
                    break
    finally:
        if child is not None:
            child.stop()
