"""The Ray engine (`--engine ray`): the extraction stages spread over a Ray cluster.

- decode: one Ray task per video (1 CPU; SPREAD over the nodes) runs `DecodeStage` with the model-free
  consumers of a decode process (`decode_spec`), so flow and motion rows are finished there and the
  clip / S3D / audio inputs come back as NumPy arrays;
- models: per model view an actor pool (asking for `--gpus-per-model` GPUs each when the cluster has
  GPUs) encodes a video's inputs with the same `ModelStage` batching as the local engine;
- assembly + write: a Ray task per group of finished videos assembles their rows (`AssembleStage`) and
  writes them with the real `WriteStage` / `CacheWriter` into shard files on the cache directory
  (`.partial` → fsync → rename, a shared filesystem), against a recording stand-in for the catalog;
- the driver (this process) alone touches the catalog: it replays each write task's records (shard,
  absent and failed views) in the order they happened, after the shard file is renamed. So the
  crash-safe order is today's, and the next run adopts a complete shard a dead driver never recorded
  and removes the `.partial` files of dead writers (their names carry this run's writer tag).

Faults: a decode task whose worker process dies is run again (`DECODE_RETRIES`), then its video is
recorded failed with the reason; model actors restart and retry their call; a write task that dies
has its complete shards adopted and its other videos written again. Nothing is recorded twice: each
(video, view) is one catalog row, written only by the driver.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import secrets
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...cache.catalog import Catalog
from ...cache.layout import SHARD_SUFFIX, shard_dir
from ...cache.shard import read_shard_index
from ...cache.store import CacheWriter, done_items
from ...errors import FAULT_ENV, FAULT_MATCH_ENV, ConfigError
from ...signals import STOP_SIGNALS, deferred
from ..decode_process import DecodeSpec, decode_spec, processes_unsupported
from ..plan import ExtractSummary
from ..stages import (
    AssembleStage,
    ChunkMessage,
    DecodeStage,
    ModelStage,
    VideoCounts,
    VideoTask,
    WriteStage,
    account,
    rows_in,
)
from ..viewset import make_consumers
from .base import SPILL_DIR, ExtractJob

log = logging.getLogger("vidcache.extract")

DECODE_RETRIES = 2  # a decode task whose worker process died runs again this many times, then its video fails
MODEL_RESTARTS = 2  # a model actor whose process died restarts (and retries the call) this many times
WRITE_ATTEMPTS = 3  # a write task that died: its videos' rows are written again this many times in all
VIDEOS_PER_SHARD = 16  # a write task's group: small enough that commits and progress come often
INTERRUPT_WAIT_S = 120.0  # on Ctrl-C/SIGTERM: how long the driver waits for the shards being written


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--engine ray: Ray is not installed; pip install 'vidcache[ray]' (or use --engine local)"
        ) from None
    return ray


def _fault_env() -> dict[str, str]:
    """The test fault hook (errors.fault_point) reaches the Ray workers as it reaches decode processes."""
    return {k: os.environ[k] for k in (FAULT_ENV, FAULT_MATCH_ENV) if os.environ.get(k)}


def _options(**options: Any) -> dict[str, Any]:
    env = _fault_env()
    return {**options, "runtime_env": {"env_vars": env}} if env else options


def _to_wire(message: ChunkMessage) -> ChunkMessage:
    """Tensors travel as NumPy arrays (Ray stores those without a copy)."""
    if isinstance(message.chunk.data, torch.Tensor):
        message.chunk = dataclasses.replace(message.chunk, data=message.chunk.data.numpy())
    return message


# the remote side ---------------------------------------------------------------------------------
def decode_video(spec: DecodeSpec, task: VideoTask) -> tuple[dict, dict[str, list[ChunkMessage]], list]:
    """A decode task: (facts for the driver, model inputs per view, finished chunks + `VideoDecoded`)."""
    import ray

    torch.set_num_threads(1)  # parallelism is across tasks; one resize per frame needs no pool
    from ..plan import cache_views
    from ..viewset import load_decode_models, view_context

    ctx = view_context(spec.config, "cpu")
    decode_models = load_decode_models(cache_views(spec.config.views), spec.config, ctx)

    def consumers_for(views: list[str]) -> list:
        return make_consumers(views, config=spec.config, ctx=ctx, models=spec.twins, decode_models=decode_models)

    stage = DecodeStage(consumers_for, run=spec.config.run, streams=spec.config.streams)
    inputs: dict[str, list[ChunkMessage]] = {}
    rest: list = []
    for message in stage.process(task):
        if isinstance(message, ChunkMessage) and not message.chunk.encoded:
            inputs.setdefault(message.chunk.view, []).append(_to_wire(message))
        else:
            rest.append(message)
    decoded = rest[-1]
    if decoded.n_chunks is None:  # an unexpected error: every view failed, nothing it sent counts
        inputs, rest = {}, [decoded]
    rows = {view: sum(rows_in(view, m.chunk) for m in found) for view, found in inputs.items()}
    facts = {"node": ray.get_runtime_context().get_node_id(), "rows": rows, "decode_s": decoded.decode_s}
    return facts, inputs, rest


class ModelWorker:
    """One model view's encoder in an actor, loaded as the driver loads it (`viewset.load_views`, the
    public function the local engine's runner calls too)."""

    def __init__(self, cache_dir: str, config: Any, view: str) -> None:
        from ...device import resolve_device
        from ..viewset import load_views

        device = resolve_device(config.run.device)
        if device.type == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)  # a CPU model wants the node's cores (Ray sets 1)
        loaded = load_views(dataclasses.replace(config, views=(view,)), device)
        self.identity = loaded.identities[view]
        self.view = view
        self.stage = ModelStage(view, loaded.models[view], device=device, batch_rows=config.run.batch_size)

    def identity_json(self) -> str:
        return json.dumps(self.identity, sort_keys=True, default=str)

    def encode(self, *videos: dict[str, list[ChunkMessage]]) -> tuple:
        """The inputs of this view of one or more videos, batched across them as the local engine batches
        (whole chunks, up to --batch-size rows); (each video's encoded chunks..., model seconds)."""
        out: list[ChunkMessage] = []
        for inputs in videos:
            for message in inputs.get(self.view, []):
                data = message.chunk.data  # read-only in Ray's object store: torch wants its own copy
                message.chunk = dataclasses.replace(message.chunk, data=torch.from_numpy(np.array(data)))
                out += self.stage.process(message)
        out += self.stage.flush()
        model_s, self.stage.model_s = self.stage.model_s, 0.0
        order = [next(iter(inputs[self.view])).index for inputs in videos]
        return (*([m for m in out if m.index == index] for index in order), model_s)


class RecordingCatalog:
    """The catalog as a Ray writer sees it: `CacheWriter`'s records are kept, in order, for the driver."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def record_items(self, items: list) -> None:
        self.calls.append(("items", {"items": items}))

    def record_shard(self, **record: Any) -> None:
        self.calls.append(("shard", record))


def write_group(
    cache_dir: str, writer_spec: dict, videos: list[tuple[VideoTask, Any, list[Any]]]
) -> tuple[list[tuple[str, dict]], list[VideoCounts], float]:
    """A write task: assemble each video of the group and write them into shard(s) under this task's
    own writer tag; returns the catalog records (for the driver), the summary counts and the write time."""
    import ray

    cache = Path(cache_dir)
    catalog = RecordingCatalog()
    writer = CacheWriter(cache, catalog, **writer_spec)  # type: ignore[arg-type]
    assemble = AssembleStage(spill_dir=cache / SPILL_DIR, spill_prefix=writer.writer_tag)
    write = WriteStage(cache, writer, ExtractSummary())
    counts: list[VideoCounts] = []
    try:
        for task, rest_ref, encoded_refs in videos:
            assemble.expect(task)
            rest = ray.get(rest_ref)
            for encoded_ref in encoded_refs:
                for message in ray.get(encoded_ref):
                    assemble.process(message, hand_over=False)
            for message in rest:
                for video in assemble.process(message):
                    counts.append(write.process(video))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        assemble.teardown()
    return catalog.calls, counts, writer.write_seconds


# the driver --------------------------------------------------------------------------------------
@dataclass
class _Video:
    task: VideoTask
    inputs: Any = None  # ObjectRef of the model inputs per view
    rest: Any = None  # ObjectRef of the finished chunks and VideoDecoded
    failed: bool = False  # a model actor died on it (recorded failed)
    rows_in: dict[str, int] = field(default_factory=dict)  # model-input rows per view
    encoded: dict[Any, str] = field(default_factory=dict)  # model_s ObjectRef → view, until done
    rows: list[Any] = field(default_factory=list)  # ObjectRefs of the encoded chunks
    ready_at: float = 0.0


@dataclass
class _Call:
    """One `ModelWorker.encode` call: its view, the actor's place in the pool, and the videos it holds."""

    view: str
    actor: int
    videos: list[_Video]


@dataclass
class _Write:
    videos: list[_Video]
    tag: str
    attempt: int


class RayEngine:
    name = "ray"

    def __init__(self) -> None:
        self.nodes: dict[str, str] = {}  # video_id → the Ray node that decoded it

    def run(self, job: ExtractJob) -> None:
        if not job.tasks:
            return
        ray = _ray()
        why_not = processes_unsupported(job.config, job.encoders)
        if why_not:
            raise ConfigError(f"--engine ray: not possible here ({why_not}); use --engine local")
        started_ray = False
        if not ray.is_initialized():
            address = job.config.run.ray_address
            # a Ray started here needs no dashboard; one joined keeps its own settings
            started_here = {"include_dashboard": False} if address is None else {}
            # ray.init installs its own SIGTERM handler (its C++ logger aborts the process): put back this
            # process's, so Slurm's SIGTERM still stops the run like Ctrl-C, keeping the finished videos
            handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
            try:
                ray.init(address=address, log_to_driver=False, **started_here)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise ConfigError(
                    f"--ray-address {address}: cannot join that Ray cluster ({str(exc).splitlines()[0]}); "
                    "give 'auto' on a cluster node, host:6379, ray://host:10001, or leave it out to start Ray here"
                ) from None
            started_ray = True
            if threading.current_thread() is threading.main_thread():
                for signum, handler in handlers.items():
                    if handler is not None:
                        signal.signal(signum, handler)
        try:
            driver = _Driver(ray, job, self.nodes)
            try:
                driver.start_actors()
                driver.run()
            finally:
                driver.close()
        finally:
            if started_ray:
                ray.shutdown()


class _Driver:
    def __init__(self, ray: Any, job: ExtractJob, nodes: dict[str, str]) -> None:
        self.ray, self.job, self.nodes = ray, job, nodes
        self.catalog: Catalog = job.writer.catalog
        run = job.config.run
        resources = ray.cluster_resources()
        self.workers = run.workers or max(1, int(resources.get("CPU", 1)))
        job.summary.workers = self.workers
        job.summary.decode_in = "ray"
        threads = run.decode_threads or 1  # one CPU per decode task
        config = dataclasses.replace(job.config, run=dataclasses.replace(run, decode_threads=threads))
        self.spec = ray.put(decode_spec(config, job.encoders))  # stored once, not pickled into every task
        self.writer_spec = job.writer.spec()
        self.decode = ray.remote(decode_video).options(
            **_options(num_cpus=1, num_returns=3, max_retries=DECODE_RETRIES, scheduling_strategy="SPREAD")
        )
        self.write = ray.remote(write_group).options(**_options(num_cpus=0, max_retries=0))
        self.resources = resources
        self.actors: dict[str, list] = {}

    def close(self) -> None:
        """End the model actors now (a joined cluster keeps running; their models would hold its memory)."""
        for pool in self.actors.values():
            for actor in pool:
                self.ray.kill(actor)

    def start_actors(self) -> None:
        """One actor pool per model view, each actor checked to load the model the cache records."""
        job, run, resources = self.job, self.job.config.run, self.resources
        views = list(job.encoders)
        gpus = resources.get("GPU", 0)
        per_model = run.gpus_per_model if run.gpus_per_model is not None else (1.0 if gpus else 0.0)
        if per_model > gpus:
            raise ConfigError(
                f"--gpus-per-model {per_model}: the Ray cluster has {gpus:g} GPU(s); give at most that, or 0 for CPU"
            )
        count = max(1, math.floor(gpus / (per_model * max(1, len(views))))) if per_model else 1
        actor_class = self.ray.remote(ModelWorker)
        self.actors = actors = {
            view: [
                actor_class.options(
                    **_options(
                        # no CPU reserved: a CPU on a GPU node feeds the GPU, and on a CPU-only cluster the
                        # model shares the cores with the decode tasks as the local engine's model thread does
                        # (reserving one would leave a 2-CPU node no CPU to decode with, per model view)
                        num_cpus=0,
                        num_gpus=per_model,
                        max_restarts=MODEL_RESTARTS,
                        max_task_retries=MODEL_RESTARTS,
                    )
                ).remote(str(job.cache_dir), job.config, view)
                for _ in range(count)
            ]
            for view in views
        }
        for view, pool in actors.items():
            wanted = json.dumps(self.writer_spec["view_attrs"][view], sort_keys=True, default=str)
            for found in self.ray.get([actor.identity_json.remote() for actor in pool]):
                if found != wanted:
                    raise ConfigError(
                        f"--engine ray: the model actor of view '{view}' loaded other settings than this driver "
                        f"({found} vs {wanted}); give the same --device and weights files on every node"
                    )

    # the loop ------------------------------------------------------------------------------------
    def run(self) -> None:
        job, ray = self.job, self.ray
        todo: deque[VideoTask] = deque(job.tasks)
        decoding: dict[Any, _Video] = {}  # facts ObjectRef → video
        encoding: dict[Any, _Call] = {}  # model_s ObjectRef → the call
        self.queued: dict[str, list[_Video]] = {view: [] for view in self.actors}  # decoded, waiting for a model
        self.busy: dict[str, list[bool]] = {view: [False] * len(pool) for view, pool in self.actors.items()}
        self.in_models: set[int] = set()  # videos some model has still to encode
        ready: list[_Video] = []
        writing: dict[Any, _Write] = {}
        try:
            while todo or decoding or encoding or ready or writing:
                # decoded videos wait for the models in Ray's object store: at most `workers` more than decode,
                # so a model-bound run does not decode the whole corpus ahead into memory
                in_models = len(self.in_models)
                while todo and len(decoding) < self.workers and len(decoding) + in_models < 2 * self.workers:
                    task = todo.popleft()
                    facts, inputs, rest = self.decode.remote(self.spec, task)
                    decoding[facts] = _Video(task, inputs, rest)
                drained = not todo and not decoding and not self.in_models
                oldest = min((v.ready_at for v in ready), default=math.inf)
                if ready and (
                    len(ready) >= VIDEOS_PER_SHARD
                    or drained
                    or time.monotonic() - oldest >= job.config.run.commit_every_s
                ):
                    group, ready = ready[:VIDEOS_PER_SHARD], ready[VIDEOS_PER_SHARD:]
                    self._submit_write(writing, group, attempt=1)
                    continue
                waiting = [*decoding, *encoding, *writing]
                done, _ = ray.wait(waiting, num_returns=1, timeout=1.0, fetch_local=False)
                for ref in done:
                    if ref in decoding:
                        self._decoded(ref, decoding.pop(ref), encoding, ready)
                    elif ref in encoding:
                        self._encoded(ref, encoding.pop(ref), ready, encoding)
                    else:
                        self._written(ref, writing.pop(ref), writing)
                job.summary.seconds = time.perf_counter() - job.started
        except BaseException:
            with deferred():  # keep what finished: the shards being written are recorded before stopping
                for ref in decoding:
                    ray.cancel(ref, force=True)
                if ready:
                    self._submit_write(writing, ready, attempt=WRITE_ATTEMPTS)
                deadline = time.monotonic() + INTERRUPT_WAIT_S
                while writing and time.monotonic() < deadline:
                    done, _ = ray.wait(list(writing), num_returns=1, timeout=1.0)
                    for ref in done:
                        self._written(ref, writing.pop(ref), writing, resubmit=False)
            raise

    def _submit_write(self, writing: dict, group: list[_Video], *, attempt: int) -> None:
        tag = f"w{secrets.token_hex(3)}"  # this task's shards and spills: found by it after a crash
        spec = {**self.writer_spec, "writer_tag": f"{self.writer_spec['writer_tag']}-{tag}", "commit_every_s": math.inf}
        videos = [(v.task, v.rest, v.rows) for v in group]
        writing[self.write.remote(str(self.job.cache_dir), spec, videos)] = _Write(group, tag, attempt)

    def _fail(self, task: VideoTask, reason: str) -> None:
        """Record every view of `task` failed with `reason` (the driver's catalog, as the local engine)."""
        failed = dict.fromkeys(task.views, reason)
        with deferred():
            self.job.writer.record_failure(task.entry.video_id, list(task.views), failed, source=task.source)
            account(self.job.summary, VideoCounts(task.entry.video_id, len(task.views), failed=failed))
        self.job.progress(self.job.summary)

    def _decoded(self, ref: Any, video: _Video, encoding: dict, ready: list) -> None:
        try:
            facts = self.ray.get(ref)
        except Exception as exc:
            lost = (self.ray.exceptions.WorkerCrashedError, self.ray.exceptions.NodeDiedError)
            if isinstance(exc, lost):  # the worker process (or its node) died on every try
                reason = f"decode worker died {DECODE_RETRIES + 1} times on this file ({_first_line(exc)})"
            else:  # DecodeStage reports a file's own errors as outcomes: this is Ray's or a bug's
                reason = f"decode task failed ({_first_line(exc)})"
            self._fail(video.task, reason)
            return
        self.nodes[video.task.entry.video_id] = facts["node"]
        self.job.summary.decode_seconds += facts["decode_s"]
        video.rows_in = facts["rows"]
        for view in video.rows_in:
            self.queued[view].append(video)
            self.in_models.add(video.task.index)
            self._dispatch(view, encoding)
        if not video.rows_in:
            video.ready_at = time.monotonic()
            ready.append(video)

    def _dispatch(self, view: str, encoding: dict) -> None:
        """Hand the videos waiting for `view` to its idle actors, about --batch-size rows per call: while an
        actor is busy, decoded videos queue up and go together, so a model-bound run gets full batches
        across videos (as the local engine's) and a decode-bound one sends each video at once."""
        queue, pool = self.queued[view], self.actors[view]
        for number, busy in enumerate(self.busy[view]):
            if busy or not queue:
                continue
            group, rows = [], 0
            while queue and (not group or rows + queue[0].rows_in[view] <= self.job.config.run.batch_size):
                group.append(queue.pop(0))
                rows += group[-1].rows_in[view]
            *rows_refs, model_s = (
                pool[number].encode.options(num_returns=len(group) + 1).remote(*(v.inputs for v in group))
            )
            for video, rows_ref in zip(group, rows_refs, strict=True):
                video.encoded[model_s] = view
                video.rows.append(rows_ref)
            encoding[model_s] = _Call(view, number, group)
            self.busy[view][number] = True

    def _encoded(self, ref: Any, call: _Call, ready: list, encoding: dict) -> None:
        self.busy[call.view][call.actor] = False
        try:
            self.job.summary.model_seconds += self.ray.get(ref)
            error = None
        except Exception as exc:  # the actor died more often than it may restart
            error = f"model actor of view '{call.view}' died ({_first_line(exc)})"
        for video in call.videos:
            video.encoded.pop(ref)
            if error and not video.failed:
                self._fail(video.task, error)
                video.failed = True
            if not video.encoded and not any(video in q for q in self.queued.values()):
                video.inputs = None  # every model has its rows: the inputs can leave the object store
                self.in_models.discard(video.task.index)
                if not video.failed:
                    video.ready_at = time.monotonic()
                    ready.append(video)
        self._dispatch(call.view, encoding)

    def _written(self, ref: Any, write: _Write, writing: dict, *, resubmit: bool = True) -> None:
        job = self.job
        try:
            calls, counts, write_s = self.ray.get(ref)
        except Exception as exc:  # the writer died: keep its complete shards, write the other videos again
            covered = self._adopt(write.tag)
            again = [v for v in write.videos if v.task.entry.video_id not in covered]
            if again and resubmit and write.attempt < WRITE_ATTEMPTS:
                log.warning("shard writer died (%s); writing %d video(s) again", _first_line(exc), len(again))
                self._submit_write(writing, again, attempt=write.attempt + 1)
            else:
                for video in again:
                    self._fail(video.task, f"shard writer died ({_first_line(exc)})")
            return
        with deferred():  # the shard is renamed; its catalog transaction must not be cut in half
            for kind, record in calls:
                if kind == "shard":
                    self.catalog.record_shard(**record)
                else:
                    self.catalog.record_items(**record)
            job.writer.write_seconds += write_s
            for count in counts:
                account(job.summary, count)
        job.summary.seconds = time.perf_counter() - job.started
        job.progress(job.summary)

    def _adopt(self, tag: str) -> set[str]:
        """Record the complete shards a dead write task left (as the next run's `adopt_orphans` would);
        the video ids they hold."""
        covered: set[str] = set()
        known = self.catalog.shard_names()
        pattern = f"*-{self.writer_spec['writer_tag']}-{tag}-*{SHARD_SUFFIX}"
        for path in sorted(shard_dir(self.job.cache_dir).glob(pattern)):
            name = path.name[: -len(SHARD_SUFFIX)]
            if name in known:
                continue
            try:
                index = read_shard_index(path)
            except Exception:
                continue  # an unreadable shard: left for `vidcache verify`; its videos are written again
            rows = [r for found in index.values() for r in found]
            items = done_items(name, rows)
            self.catalog.record_shard(
                name=name,
                n_rows=sum(r.row_count for r in rows),
                n_videos=len({i.video_id for i in items}),
                size_bytes=path.stat().st_size,
                run_id=self.job.writer.run_id,
                items=items,
            )
            covered |= {i.video_id for i in items}
        return covered


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
