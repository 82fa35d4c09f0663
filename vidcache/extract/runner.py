"""The extract loop: decode workers → batched models → shard writer, with per-stage timing.

Decode workers (threads; PyAV, OpenCV and torch release the GIL) run one `VideoStage` per video:
one decode pass feeding every requested video view, then the audio stream. They push small chunks
(uint8 frames, clip windows, log-mel examples, finished flow rows) through a bounded queue, so
memory stays bounded whatever the video length or resolution. The main thread batches each model
view's inputs across videos and hands each finished video to the `CacheWriter`. Each (video, view)
ends done, absent (no stream for it) or failed with its reason, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..cache.catalog import Catalog
from ..cache.fidelity import stale_view_message
from ..cache.layout import STATUS_ABSENT, STATUS_FAILED, TEXT_NAME, failed_item, failure_text
from ..cache.lock import ExtractLock
from ..cache.store import CacheWriter, SourceStat, check_cache_writable
from ..cache.text import (
    DEFAULT_TEMPLATES,
    MADE_FROM_MANIFEST,
    prompt_embeddings,
    stale_text_message,
    write_text_embeddings,
)
from ..cache.thumbnails import THUMBNAIL_KEY, write_thumbnail
from ..config import to_json
from ..device import default_decode_workers, gather, resolve_device
from ..errors import ConfigError, cache_write_error
from ..manifest import VideoEntry
from ..signals import deferred
from .config import ExtractConfig
from .consumers import Chunk, Consumer, make_consumers
from .decode import DEFAULT_VIDEO_TIMEOUT_S
from .decode_process import decode_spec, process_context, process_worker, processes_unsupported, start_server
from .plan import ExtractSummary, cache_views, peak_rss_mib, plan_videos, settings_key
from .spill import RowSpill, remove_spills
from .stage import VideoStage, unexpected_reason
from .viewset import audio_view_of, load_views, plugin
from .watchdog import DecodeWatch

log = logging.getLogger("vidcache.extract")
# where the weights were read from: information only, identity rests on their sha256 (the same file under
# another path, a hard link, another mount point or machine is the same weights)
_IGNORED_IDENTITY_KEYS = ("weights_path",)
_WEIGHTS_LOCATION_KEYS = ("pretrained", "weights", "weights_kind", "weights_path")
SPILL_DIR = "tmp"


@dataclass
class _VideoState:
    entry: VideoEntry
    source: SourceStat | None
    views: list[str]
    chunks: dict[int, Chunk] = field(default_factory=dict)
    encoded: set[int] = field(default_factory=set)
    n_chunks: int | None = None  # known once the worker says the video is complete
    outcomes: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    spills: dict[str, RowSpill] = field(default_factory=dict)  # large finished rows, kept on disk

    def close(self) -> None:
        for spill in self.spills.values():
            spill.close()
        self.spills.clear()


ProgressFn = Callable[[ExtractSummary], None]


def _short(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _identity_differences(recorded: dict, wanted: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """(setting, recorded value, wanted value) for every setting that differs, nested ones dotted.
    Where both sides name weights with the same sha256, where they were read from is ignored."""
    ignored = set(_IGNORED_IDENTITY_KEYS) if not prefix else set()
    sha = recorded.get("weights_sha256"), wanted.get("weights_sha256")
    if sha[0] and sha[0] == sha[1]:
        ignored |= set(_WEIGHTS_LOCATION_KEYS)
    out: list[tuple[str, object, object]] = []
    for key in sorted((set(recorded) | set(wanted)) - ignored):
        old, new = recorded.get(key), wanted.get(key)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            out.extend(_identity_differences(old, new, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", old, new))
    return out


def identity_mismatch_message(cache_dir: object, view: str, recorded: dict, wanted: dict) -> str | None:
    """The refusal for a view made with other settings, each differing one as `name old vs new`."""
    differences = _identity_differences(recorded, json.loads(json.dumps(wanted, default=str)))  # as recorded
    if not differences:
        return None
    names = sorted({name.split(".", 1)[0] for name, _, _ in differences})
    shown = "; ".join(f"{name} {_short(old)} vs {_short(new)}" for name, old, new in differences)
    return (
        f"cache {cache_dir} holds view '{view}' made with other settings ({', '.join(names)} differ: {shown}; "
        "cached vs now); use the same options or another --cache"
    )


class Extractor:
    def __init__(
        self, cache_dir: str | Path, config: ExtractConfig, *, command: str = "", progress: ProgressFn | None = None
    ):
        self.cache_dir = Path(cache_dir)
        self.config = config
        self.command = command
        self.progress = progress or (lambda summary: None)
        self.views = cache_views(config.views)
        self.encoders: dict[str, object] = {}  # model views, encoded batched in the main thread
        self.device: torch.device | None = None

    # models --------------------------------------------------------------------------------------
    def _load_models(self, device) -> dict[str, dict]:
        """Create every requested view's models; return each cache view's identity."""
        self.loaded = load_views(self.config, device)
        self.encoders = self.loaded.models
        return self.loaded.identities

    def _store_dtypes(self) -> dict[str, str]:
        return self.loaded.store_dtypes(self.config)

    def _consumers(self, views: list[str]) -> list[Consumer]:
        return make_consumers(
            views,
            config=self.config,
            ctx=self.loaded.ctx,
            models=self.encoders,
            decode_models=self.loaded.decode_models,
        )

    # planning ------------------------------------------------------------------------------------
    def _plan(
        self, catalog: Catalog, entries: list[VideoEntry], summary: ExtractSummary
    ) -> list[tuple[VideoEntry, SourceStat | None, list[str]]]:
        """Per video, the views that still need work (see `plan.plan_videos`)."""
        return plan_videos(catalog, entries, self.views, summary, retry_failed=self.config.run.retry_failed)

    # decode workers ------------------------------------------------------------------------------
    def _decode_in(self) -> str:
        """threads or processes for this run (see RunConfig.decode_in)."""
        wanted = self.config.run.decode_in
        why_not = processes_unsupported(self.config, self.encoders)
        if wanted == "processes" and why_not:
            raise ConfigError(f"--decode-in processes: not possible here ({why_not}); use --decode-in threads")
        if wanted == "auto":
            on_gpu = self.device is not None and self.device.type == "cuda"
            return "processes" if on_gpu and not why_not else "threads"
        return wanted

    def _decode_worker(
        self, slot: int, tasks: queue.Queue, out: queue.Queue, stop: threading.Event, watch: DecodeWatch
    ) -> None:
        while not stop.is_set() and not watch.abandoned(slot):
            try:
                index, entry, views = tasks.get_nowait()
            except queue.Empty:
                return
            started = time.perf_counter()
            try:
                stage = VideoStage(
                    entry,
                    self._consumers(views),
                    run=self.config.run,
                    streams=self.config.streams,
                    audio_view=audio_view_of(views),
                    stop=stop,
                )
                watch.begin(slot, index, stage.deadline)
                chunk_no = 0
                for chunk in stage:
                    if watch.abandoned(slot):  # the main thread failed this video and moved on
                        return
                    with stage.deadline.held():
                        out.put(("chunk", index, chunk_no, chunk))
                    chunk_no += 1
                watch.end(slot)
                if stop.is_set() or watch.abandoned(slot):
                    return
                out.put(("done", index, chunk_no, stage.outcomes, stage.details, time.perf_counter() - started))
            except Exception as exc:  # never let one file stop the night's run
                watch.end(slot)
                if watch.abandoned(slot):
                    return
                reason = unexpected_reason(exc)
                outcomes = {view: (STATUS_FAILED, reason) for view in views}
                out.put(("done", index, None, outcomes, {}, time.perf_counter() - started))

    # main loop -----------------------------------------------------------------------------------
    def run(self, entries: list[VideoEntry], *, vocabulary: list[str] | None = None) -> ExtractSummary:
        """Extract `entries`; `vocabulary` (default: their labels) is embedded as text when new work was done."""
        started = time.perf_counter()
        cfg = self.config
        summary = ExtractSummary(total=len(entries), cache=str(self.cache_dir), settings_key=settings_key(cfg))
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        summary.run_id = run_id
        check_cache_writable(self.cache_dir)
        with ExtractLock(self.cache_dir, shard_index=cfg.run.shard_index, shard_count=cfg.run.shard_count):
            device = self.device = resolve_device(cfg.run.device)
            summary.device = str(device)
            # --workers 0 (the default) resolved for this device, and recorded so in the run's config
            workers = cfg.run.workers or default_decode_workers(device)
            cfg = self.config = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, workers=workers))
            summary.workers = workers
            identities = self._load_models(device)
            summary.random_weights = self.loaded.random_weights
            summary.models_rss_mib = peak_rss_mib()
            catalog = Catalog.open(self.cache_dir, create=True)
            try:
                for view, identity in identities.items():
                    recorded = catalog.claim_view(view, identity)
                    stale = stale_view_message(self.cache_dir, view, recorded)
                    if stale:
                        raise ConfigError(stale)
                    differs = identity_mismatch_message(self.cache_dir, view, recorded, identity)
                    if differs:
                        raise ConfigError(differs)
                catalog.upsert_entries(entries)
                writer = CacheWriter(
                    self.cache_dir,
                    catalog,
                    run_id=run_id,
                    writer_tag=f"k{cfg.run.shard_index}of{cfg.run.shard_count}",
                    exclusive=cfg.run.shard_count == 1,
                    root_attrs={"config_json": to_json(cfg), "command": self.command},
                    view_attrs=identities,
                    dtypes=self._store_dtypes(),
                    compressed={name for name in self.views if plugin(name).compressed},
                    shard_size_mb=cfg.run.shard_size_mb,
                    commit_every_s=cfg.run.commit_every_s,
                )
                writer.remove_own_partials()
                remove_spills(self.cache_dir / SPILL_DIR, writer.writer_tag)
                if writer.exclusive:
                    # a run killed inside write_text_embeddings leaves text.h5.<pid>.<hex>.partial that nothing
                    # removed; only a plain run may: a --shard part cannot tell if another part (any host) writes one
                    for stale in self.cache_dir.glob(f"{TEXT_NAME}.*.partial"):
                        stale.unlink(missing_ok=True)
                adopted = writer.adopt_orphans()
                if adopted:
                    log.info("adopted %d complete shard(s) left unrecorded by an interrupted run", adopted)
                todo = self._plan(catalog, entries, summary)
                catalog.start_run(run_id, command=self.command, config_json=to_json(cfg))
                self.progress(summary)
                try:
                    self._process(todo, writer, summary, started)
                    writer.commit()
                except BaseException:
                    with deferred():  # a second SIGTERM/Ctrl-C must not cut the commit in half
                        try:
                            writer.commit()  # keep every video that finished before the interruption
                        except Exception:
                            writer.abort()
                    raise
                summary.write_seconds = writer.write_seconds
                labels = vocabulary if vocabulary is not None else sorted({lab for e in entries for lab in e.labels})
                text_missing = not (self.cache_dir / TEXT_NAME).exists()
                text_tower = next((self.encoders[v] for v in self.encoders if plugin(v).embeds_labels), None)
                text_stale = stale_text_message(self.cache_dir, labels) is not None  # the manifest's labels changed
                if labels and text_tower is not None and (summary.extracted or text_missing or text_stale):
                    embed_labels(self.cache_dir, text_tower, labels, list(DEFAULT_TEMPLATES))
                summary.seconds = time.perf_counter() - started
                summary.peak_rss_mib = peak_rss_mib()
                catalog.finish_run(run_id, summary.as_dict())
            except (OSError, sqlite3.OperationalError) as exc:
                # SQLite reports a read-only cache or a full disk as OperationalError, not OSError, and h5py's
                # OSError text spans lines: both used to escape as tracebacks or multi-line messages
                raise cache_write_error(self.cache_dir, exc) from None
            finally:
                catalog.close()
        self.progress(summary)
        return summary

    def _process(
        self,
        todo: list[tuple[VideoEntry, SourceStat | None, list[str]]],
        writer: CacheWriter,
        summary: ExtractSummary,
        started: float,
    ) -> None:
        if not todo:
            return
        run = self.config.run
        tasks: queue.Queue = queue.Queue()
        for index, (entry, _, views) in enumerate(todo):
            tasks.put((index, entry, views))
        out: queue.Queue = queue.Queue(maxsize=max(4, 2 * run.workers))
        stop = threading.Event()
        watch = DecodeWatch(limit_s=run.video_timeout_s or DEFAULT_VIDEO_TIMEOUT_S)
        workers: list[threading.Thread] = []

        decode_in = self._decode_in()
        summary.decode_in = decode_in
        if decode_in == "processes":
            spec, ctx = decode_spec(self.config, self.encoders), process_context()
            start_server(ctx)

            def target(slot, tasks, out, stop, watch):
                process_worker(slot, tasks, out, stop, watch, spec=spec, ctx=ctx)
        else:
            target = self._decode_worker

        def spawn_worker() -> None:
            slot = len(workers)
            worker = threading.Thread(
                target=target, args=(slot, tasks, out, stop, watch), daemon=True, name=f"decode-{slot}"
            )
            workers.append(worker)
            worker.start()

        def live_workers() -> list[threading.Thread]:
            return [w for slot, w in enumerate(workers) if w.is_alive() and not watch.abandoned(slot)]

        for _ in range(min(run.workers, len(todo))):
            spawn_worker()
        given_up: set[int] = set()  # videos whose worker got stuck: later messages about them are ignored
        next_watch_s = 0.0
        states = {i: _VideoState(entry, source, views) for i, (entry, source, views) in enumerate(todo)}
        pending: dict[str, list[tuple[int, int, Chunk]]] = {view: [] for view in self.encoders}

        def batch_rows(view: str) -> int:
            cost = plugin(view).rows_in
            return sum(cost(c) for _, _, c in pending[view])

        def flush(view: str) -> None:
            items = pending[view]
            if not items:
                return
            t0 = time.perf_counter()
            features = self.encoders[view].encode(gather([c.data for _, _, c in items], self.device))
            summary.model_seconds += time.perf_counter() - t0
            offset = 0
            for index, chunk_no, chunk in items:
                n = len(chunk.data)
                chunk.data, chunk.encoded = features[offset : offset + n], True
                offset += n
                if index in states:
                    states[index].encoded.add(chunk_no)
            pending[view] = []
            finish_ready()

        def finish_ready() -> None:
            ready = [i for i, s in states.items() if s.n_chunks is not None and len(s.encoded) == s.n_chunks]
            for index in ready:
                with deferred():  # a stop signal waits until the video is written (and maybe committed)
                    finish(states.pop(index))

        def finish(state: _VideoState) -> None:
            video_id = state.entry.video_id
            thumbnail = state.info.pop(THUMBNAIL_KEY, None)  # bytes from the decode pass: a file, not catalog JSON
            if thumbnail:
                write_thumbnail(self.cache_dir, video_id, thumbnail)
            info_json = json.dumps(state.info, sort_keys=True, default=str)
            rows: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
            failed: dict[str, str] = {}
            absent: dict[str, str] = {}
            for view in state.views:
                status, reason = state.outcomes.get(view, (STATUS_FAILED, "worker ended without a result"))
                if status == STATUS_FAILED:
                    failed[view] = reason or "failed"
                    continue
                if status == STATUS_ABSENT:
                    absent[view] = reason or "absent"
                    summary.absent[view] = summary.absent.get(view, 0) + 1
                    continue
                parts = [state.chunks[c] for c in sorted(state.chunks) if state.chunks[c].view == view]
                if not parts:
                    absent[view] = "no rows (e.g. fewer than two frames for flow)"
                    summary.absent[view] = summary.absent.get(view, 0) + 1
                    continue
                times = np.concatenate([p.times_s for p in parts])
                if view in state.spills:
                    features = state.spills[view].rows()
                else:
                    features = np.concatenate([np.asarray(p.data) for p in parts])
                ends = np.concatenate([p.end_times_s for p in parts]) if parts[0].end_times_s is not None else None
                if parts[0].repeats is not None:
                    repeats = np.concatenate([p.repeats for p in parts])
                    times, features = np.repeat(times, repeats), np.repeat(features, repeats, axis=0)
                    ends = np.repeat(ends, repeats) if ends is not None else None
                rows[view] = (features, times, ends)
                summary.rows[view] = summary.rows.get(view, 0) + len(times)
                if plugin(view).counts_frames:
                    summary.frames += len(times)
            if failed:
                writer.record_failure(video_id, list(failed), failed, source=state.source, info_json=info_json)
                summary.failed += 1
                summary.failures[video_id] = failure_text(failed, several_views=len(state.views) > 1)
                summary.failed_items.extend(failed_item(video_id, v, r) for v, r in failed.items())
            try:
                if rows or absent:
                    writer.add(video_id, rows, absent=absent, source=state.source, info_json=info_json)
            finally:
                state.close()
            if not failed:
                summary.extracted += 1
            writer.maybe_commit()
            self.progress(summary)

        def give_up_stuck() -> None:
            for stuck in watch.give_up_stuck():
                state = states.get(stuck.index)
                if state is None:
                    continue
                given_up.add(stuck.index)
                log.warning("gave up on %s: %s", state.entry.video_id, stuck.reason())
                for view in pending:
                    pending[view] = [p for p in pending[view] if p[0] != stuck.index]
                state.close()
                state.chunks, state.encoded, state.info = {}, set(), {}
                state.outcomes = {view: (STATUS_FAILED, stuck.reason()) for view in state.views}
                state.n_chunks = 0
                if not tasks.empty():
                    spawn_worker()  # the stuck thread keeps its slot; the run keeps its parallelism
                finish_ready()

        try:
            while states:
                if time.monotonic() >= next_watch_s:
                    next_watch_s = time.monotonic() + 0.5
                    give_up_stuck()
                    if not states:
                        break
                try:
                    message = out.get(timeout=0.05)
                except queue.Empty:
                    if any(pending.values()):
                        for view in pending:
                            flush(view)
                    elif not live_workers() and out.empty():
                        if not tasks.empty():  # every worker was abandoned as stuck
                            spawn_worker()
                            continue
                        lost = ", ".join(s.entry.video_id for s in states.values())
                        raise RuntimeError(f"decode workers stopped with videos unfinished: {lost}") from None
                    continue
                kind, index = message[0], message[1]
                if index in given_up:
                    continue
                if kind == "chunk":
                    _, _, chunk_no, chunk = message
                    state = states[index]
                    state.chunks[chunk_no] = chunk
                    if chunk.encoded:
                        if plugin(chunk.view).spilled:  # large rows wait on disk until the video is complete
                            if chunk.view not in state.spills:
                                state.spills[chunk.view] = RowSpill(self.cache_dir / SPILL_DIR, writer.writer_tag)
                            state.spills[chunk.view].append(np.asarray(chunk.data))
                            chunk.data = np.zeros((len(chunk), 0), np.uint8)  # the rows are on disk now
                        state.encoded.add(chunk_no)
                        continue
                    view = chunk.view
                    size = plugin(view).rows_in(chunk)
                    if pending[view] and batch_rows(view) + size > run.batch_size:
                        flush(view)
                    pending[view].append((index, chunk_no, chunk))
                    if batch_rows(view) >= run.batch_size:
                        flush(view)
                else:
                    _, _, n_chunks, outcomes, info, decode_s = message
                    state = states[index]
                    summary.decode_seconds += decode_s
                    state.outcomes, state.info = outcomes, info
                    if n_chunks is None:  # the worker crashed: drop what it sent
                        for view in pending:
                            pending[view] = [p for p in pending[view] if p[0] != index]
                        state.chunks, state.encoded, n_chunks = {}, set(), 0
                        state.close()
                    state.n_chunks = n_chunks
                    finish_ready()
                summary.seconds = time.perf_counter() - started
        finally:
            stop.set()
            for state in states.values():
                state.close()
            # a worker stuck inside FFmpeg would never end: wait a bounded time, then leave it (a daemon)
            give_up_at = time.monotonic() + watch.grace_s
            while live_workers() and time.monotonic() < give_up_at:
                try:
                    out.get(timeout=0.05)  # unblock workers waiting on a full queue
                except queue.Empty:
                    pass


def embed_labels(
    cache_dir: str | Path, encoder, labels: list[str], templates: list[str], *, made_from: str = MADE_FROM_MANIFEST
) -> Path:
    per_template, embeddings = prompt_embeddings(encoder.encode_text, labels, templates)
    attrs = {
        "vidcache_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "made_from": made_from,  # what the labels came from: stale_text_message() compares it with the manifest
        **{k: v for k, v in encoder.identity().items() if k != "preprocess"},
    }
    return write_text_embeddings(
        cache_dir, labels=labels, templates=templates, per_template=per_template, embeddings=embeddings, attrs=attrs
    )
