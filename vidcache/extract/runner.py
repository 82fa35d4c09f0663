"""The extract loop: decode workers → batched model → shard writer, with per-stage timing.

Decode workers (threads; PyAV and torch release the GIL) turn each video into small uint8 frames
and push them through a bounded queue, so memory stays bounded whatever the video length or
resolution. The main thread batches frames across videos for the model and hands each finished
video to the `CacheWriter`. A video that fails is recorded with its reason and the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..cache.catalog import Catalog
from ..cache.layout import STATUS_DONE, STATUS_FAILED, TEXT_NAME
from ..cache.lock import ExtractLock
from ..cache.store import CacheWriter, SourceStat
from ..config import ExtractConfig, to_json
from ..errors import CacheError, ConfigError, VideoFailure
from ..manifest import VideoEntry
from .backbones import create_backbone
from .backbones.base import FrameEncoder
from .decode import FrameSampler, frame_to_rgb
from .device import resolve_device
from .text import DEFAULT_TEMPLATES, prompt_embeddings, write_text_embeddings

log = logging.getLogger("vidcache.extract")
_IGNORED_IDENTITY_KEYS = ("weights_path",)  # a moved file with the same sha256 is the same weights


@dataclass
class ExtractSummary:
    total: int = 0
    extracted: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    frames: int = 0
    decode_seconds: float = 0.0
    model_seconds: float = 0.0
    write_seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    cache: str = ""
    run_id: str = ""
    device: str = ""
    random_weights: bool = False

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["frames_per_s"] = round(self.frames_per_s, 2)
        return out


@dataclass
class _VideoState:
    entry: VideoEntry
    source: SourceStat | None
    chunks: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = field(default_factory=dict)
    n_chunks: int | None = None  # known once the worker says the video is complete
    info: dict = field(default_factory=dict)


ProgressFn = Callable[[ExtractSummary], None]


def _identity_mismatch(recorded: dict, wanted: dict) -> list[str]:
    keys = (set(recorded) | set(wanted)) - set(_IGNORED_IDENTITY_KEYS)
    return sorted(k for k in keys if recorded.get(k) != wanted.get(k))


class Extractor:
    def __init__(
        self, cache_dir: str | Path, config: ExtractConfig, *, command: str = "", progress: ProgressFn | None = None
    ):
        self.cache_dir = Path(cache_dir)
        self.config = config
        self.command = command
        self.progress = progress or (lambda summary: None)
        if tuple(config.views) != ("clip",):
            raise ConfigError(f"--views {','.join(config.views)}: this version extracts the 'clip' view")
        if config.sampling.clip_len is not None:
            raise ConfigError(
                "--clip-len/--clip-stride group frames for clip models (s3d); the clip view embeds "
                "single frames, so leave them out"
            )

    # planning ------------------------------------------------------------------------------------
    def _plan(
        self, catalog: Catalog, entries: list[VideoEntry], views: list[str], summary: ExtractSummary
    ) -> list[tuple[VideoEntry, SourceStat | None]]:
        todo = []
        for entry in entries:
            source = SourceStat.of(entry.path)
            items = [catalog.item(entry.video_id, view) for view in views]

            def same_source(item, source=source) -> bool:
                if item is None:
                    return False
                if source is None:  # unreadable now (e.g. unmounted): keep what is cached
                    return item.status == STATUS_DONE or item.source_size is None
                return (item.source_size, item.source_mtime_ns) == (source.size, source.mtime_ns)

            unchanged = all(same_source(i) for i in items)
            statuses = {i.status for i in items if i is not None}
            if unchanged and statuses == {STATUS_DONE}:
                summary.skipped += 1
            elif unchanged and statuses == {STATUS_FAILED} and not self.config.run.retry_failed:
                summary.failed += 1
                summary.failures[entry.video_id] = items[0].reason or "failed"  # type: ignore[union-attr]
            else:
                todo.append((entry, source))
        return todo

    # decode workers ------------------------------------------------------------------------------
    def _decode_worker(
        self, tasks: queue.Queue, out: queue.Queue, encoder: FrameEncoder, stop: threading.Event
    ) -> None:
        run, sampling = self.config.run, self.config.sampling
        while not stop.is_set():
            try:
                index, entry = tasks.get_nowait()
            except queue.Empty:
                return
            started = time.perf_counter()
            try:
                chunks = DecodedChunks(entry, encoder, sampling=sampling, run=run, stop=stop)
                chunk_no = 0
                for times, images, repeats in chunks:
                    out.put(("frames", index, chunk_no, times, images, repeats))
                    chunk_no += 1
                if stop.is_set():
                    return
                out.put(("done", index, chunk_no, chunks.details, time.perf_counter() - started))
            except VideoFailure as failure:
                out.put(("failed", index, failure.reason, time.perf_counter() - started))
            except Exception as exc:  # never let one file stop the night's run
                log.debug("unexpected decode error", exc_info=True)
                out.put(
                    (
                        "failed",
                        index,
                        f"unexpected {type(exc).__name__}: {exc}".splitlines()[0],
                        time.perf_counter() - started,
                    )
                )

    # main loop -----------------------------------------------------------------------------------
    def run(self, entries: list[VideoEntry], *, vocabulary: list[str] | None = None) -> ExtractSummary:
        """Extract `entries`; `vocabulary` (default: their labels) is embedded as text when new work was done."""
        started = time.perf_counter()
        cfg = self.config
        summary = ExtractSummary(total=len(entries), cache=str(self.cache_dir))
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        summary.run_id = run_id
        with ExtractLock(self.cache_dir, shard_index=cfg.run.shard_index, shard_count=cfg.run.shard_count):
            device = resolve_device(cfg.run.device)
            summary.device = str(device)
            encoder = create_backbone("clip", config=cfg.clip, device=device, allow_download=cfg.run.allow_download)
            summary.random_weights = bool(getattr(encoder, "random_weights", False))
            identity = {**encoder.identity(), "sampling": dataclasses.asdict(cfg.sampling)}
            catalog = Catalog.open(self.cache_dir, create=True)
            try:
                recorded = catalog.claim_view(encoder.view, identity)
                differs = _identity_mismatch(recorded, identity)
                if differs:
                    raise ConfigError(
                        f"cache {self.cache_dir} holds view '{encoder.view}' made with other settings "
                        f"({', '.join(differs)} differ); use the same options or another --cache"
                    )
                catalog.upsert_entries(entries)
                writer = CacheWriter(
                    self.cache_dir,
                    catalog,
                    run_id=run_id,
                    writer_tag=f"k{cfg.run.shard_index}of{cfg.run.shard_count}",
                    exclusive=cfg.run.shard_count == 1,
                    root_attrs={"config_json": to_json(cfg), "command": self.command},
                    view_attrs={encoder.view: identity},
                    dtypes={encoder.view: encoder.store_dtype},
                    shard_size_mb=cfg.run.shard_size_mb,
                    commit_every_s=cfg.run.commit_every_s,
                )
                writer.remove_own_partials()
                adopted = writer.adopt_orphans()
                if adopted:
                    log.info("adopted %d complete shard(s) left unrecorded by an interrupted run", adopted)
                todo = self._plan(catalog, entries, [encoder.view], summary)
                catalog.start_run(run_id, command=self.command, config_json=to_json(cfg))
                self.progress(summary)
                try:
                    self._process(todo, encoder, writer, summary, started)
                    writer.commit()
                except BaseException:
                    try:
                        writer.commit()  # keep every video that finished before the interruption
                    except Exception:
                        writer.abort()
                    raise
                summary.write_seconds = writer.write_seconds
                labels = vocabulary if vocabulary is not None else sorted({lab for e in entries for lab in e.labels})
                text_missing = not (self.cache_dir / TEXT_NAME).exists()
                if labels and hasattr(encoder, "encode_text") and (summary.extracted or text_missing):
                    embed_labels(self.cache_dir, encoder, labels, list(DEFAULT_TEMPLATES))
                summary.seconds = time.perf_counter() - started
                catalog.finish_run(run_id, summary.as_dict())
            except OSError as exc:
                raise CacheError(
                    f"cannot write to cache {self.cache_dir} ({exc.strerror or exc}); free space or "
                    "fix permissions and run again: finished videos are kept"
                ) from None
            finally:
                catalog.close()
        self.progress(summary)
        return summary

    def _process(
        self,
        todo: list[tuple[VideoEntry, SourceStat | None]],
        encoder: FrameEncoder,
        writer: CacheWriter,
        summary: ExtractSummary,
        started: float,
    ) -> None:
        if not todo:
            return
        run = self.config.run
        tasks: queue.Queue = queue.Queue()
        for index, (entry, _) in enumerate(todo):
            tasks.put((index, entry))
        out: queue.Queue = queue.Queue(maxsize=max(4, 2 * run.workers))
        stop = threading.Event()
        workers = [
            threading.Thread(
                target=self._decode_worker, args=(tasks, out, encoder, stop), daemon=True, name=f"decode-{i}"
            )
            for i in range(min(run.workers, len(todo)))
        ]
        for worker in workers:
            worker.start()
        states = {i: _VideoState(entry, source) for i, (entry, source) in enumerate(todo)}
        pending: list[tuple[int, int, np.ndarray, torch.Tensor, np.ndarray]] = []
        pending_frames = 0

        def flush() -> None:
            nonlocal pending, pending_frames
            if not pending:
                return
            t0 = time.perf_counter()
            features = encoder.encode(torch.cat([p[3] for p in pending]))
            summary.model_seconds += time.perf_counter() - t0
            offset = 0
            for index, chunk_no, times, images, repeats in pending:
                n = len(images)
                if index in states:
                    states[index].chunks[chunk_no] = (times, features[offset : offset + n], repeats)
                offset += n
            pending, pending_frames = [], 0
            finish_ready()

        def finish_ready() -> None:
            for index in [i for i, s in states.items() if s.n_chunks is not None and len(s.chunks) == s.n_chunks]:
                state = states.pop(index)
                parts = [state.chunks[c] for c in range(state.n_chunks)]  # type: ignore[arg-type]
                repeats = np.concatenate([p[2] for p in parts])
                timestamps = np.repeat(np.concatenate([p[0] for p in parts]), repeats)
                features = np.repeat(np.concatenate([p[1] for p in parts]), repeats, axis=0)
                writer.add(
                    state.entry.video_id,
                    {encoder.view: (features, timestamps)},
                    source=state.source,
                    info_json=json.dumps(state.info, sort_keys=True, default=str),
                )
                summary.extracted += 1
                summary.frames += len(timestamps)
                writer.maybe_commit()
                self.progress(summary)

        try:
            while states:
                try:
                    message = out.get(timeout=0.05)
                except queue.Empty:
                    if pending:
                        flush()
                    elif not any(w.is_alive() for w in workers) and out.empty():
                        lost = ", ".join(s.entry.video_id for s in states.values())
                        raise RuntimeError(f"decode workers stopped with videos unfinished: {lost}") from None
                    continue
                kind, index = message[0], message[1]
                if kind == "frames":
                    _, _, chunk_no, times, images, repeats = message
                    if pending_frames + len(images) > run.batch_size:
                        flush()
                    pending.append((index, chunk_no, times, images, repeats))
                    pending_frames += len(images)
                    if pending_frames >= run.batch_size:
                        flush()
                elif kind == "done":
                    _, _, n_chunks, info, decode_s = message
                    states[index].n_chunks, states[index].info = n_chunks, info
                    summary.decode_seconds += decode_s
                    finish_ready()
                else:
                    _, _, reason, decode_s = message
                    state = states.pop(index)
                    summary.decode_seconds += decode_s
                    summary.failed += 1
                    summary.failures[state.entry.video_id] = reason
                    writer.record_failure(state.entry.video_id, [encoder.view], reason, source=state.source)
                    self.progress(summary)
                summary.seconds = time.perf_counter() - started
        finally:
            stop.set()
            while any(w.is_alive() for w in workers):
                try:
                    out.get(timeout=0.05)  # unblock workers waiting on a full queue
                except queue.Empty:
                    pass


class DecodedChunks:
    """The decode stage for one video: sampled frames, prepared for `encoder`, in chunks of at most
    `run.batch_size` as `(times_s, uint8 images, repeats)`. After iteration, `details` holds the
    per-video facts recorded in the catalog. The extract workers and benchmarks/bench_extract.py's
    decode-only timing both run this, so the benchmark measures exactly what extract does."""

    def __init__(self, entry: VideoEntry, encoder: FrameEncoder, *, sampling, run, stop: threading.Event | None = None):
        self.entry, self.encoder, self.sampling, self.run, self.stop = entry, encoder, sampling, run, stop
        self.details: dict = {}

    def __iter__(self) -> Iterator[tuple[np.ndarray, torch.Tensor, np.ndarray]]:
        entry, run = self.entry, self.run
        max_short = min(self.encoder.preprocess.size) if hasattr(self.encoder, "preprocess") else None
        deadline = time.monotonic() + run.video_timeout_s
        produced = 0
        with FrameSampler(
            entry.path,
            sampling=self.sampling,
            start_s=entry.start_s,
            end_s=entry.end_s,
            seek=run.seek,
            threads=run.decode_threads,
            deadline=deadline,
        ) as sampler:
            times, images, repeats = [], [], []
            for frame, time_s, count in sampler:
                if self.stop is not None and self.stop.is_set():
                    return
                images.append(self.encoder.prepare(frame_to_rgb(frame, max_short_side=max_short)))
                times.append(time_s)
                repeats.append(count)
                if len(images) >= run.batch_size:
                    yield np.array(times), torch.stack(images), np.array(repeats)
                    produced += 1
                    times, images, repeats = [], [], []
            if images:
                yield np.array(times), torch.stack(images), np.array(repeats)
                produced += 1
            stats, info = sampler.stats, sampler.info
        if produced == 0:
            end = info.end_s
            raise VideoFailure(
                f"no frames in the requested segment (video ends at {end:.3f} s)"
                if end is not None
                else "no frames to sample"
            )
        self.details = {
            **dataclasses.asdict(info),
            "decoded_frames": stats.decoded_frames,
            "seeks": stats.seeks,
            "bad_packets": stats.bad_packets,
            "estimated_times": stats.estimated_times,
            "notes": stats.notes,
        }


def embed_labels(cache_dir: str | Path, encoder, labels: list[str], templates: list[str]) -> Path:
    per_template, embeddings = prompt_embeddings(encoder.encode_text, labels, templates)
    attrs = {
        "vidcache_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **{k: v for k, v in encoder.identity().items() if k != "preprocess"},
    }
    return write_text_embeddings(
        cache_dir, labels=labels, templates=templates, per_template=per_template, embeddings=embeddings, attrs=attrs
    )
