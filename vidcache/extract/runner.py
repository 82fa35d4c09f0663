"""The extract coordinator: lock, models, catalog, shard writer, plan and summary; the work itself
runs as stages (`vidcache.extract.stages`: decode → per-view model batches → row assembly → write)
on an engine (`vidcache.extract.engines`: `local` threads or processes, or `ray`).

Each (video, view) ends done, absent (no stream for it) or failed with its reason, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..cache.catalog import Catalog
from ..cache.fidelity import stale_view_message
from ..cache.layout import TEXT_NAME
from ..cache.lock import ExtractLock
from ..cache.sources import SourceCheck
from ..cache.store import CacheWriter, SourceStat, check_cache_writable
from ..cache.text import (
    DEFAULT_TEMPLATES,
    MADE_FROM_MANIFEST,
    prompt_embeddings,
    stale_text_message,
    write_text_embeddings,
)
from ..config import to_json
from ..device import default_decode_workers, resolve_device
from ..errors import ConfigError, cache_write_error, fault_point
from ..manifest import VideoEntry
from ..signals import deferred, interruptible
from ..version import __version__
from .config import ExtractConfig
from .consumers import Consumer
from .decode_process import processes_unsupported
from .engines import Engine, ExtractJob, create_engine
from .engines.base import SPILL_DIR
from .nvdec import nvdec_missing, resolve_decode_device
from .plan import ExtractSummary, cache_views, peak_rss_mib, plan_videos, settings_key
from .spill import remove_spills
from .stages import VideoTask
from .viewset import load_views, make_consumers, plugin

log = logging.getLogger("vidcache.extract")
# where the weights were read from: information only, identity rests on their sha256 (the same file under
# another path, a hard link, another mount point or machine is the same weights)
_IGNORED_IDENTITY_KEYS = ("weights_path",)
_WEIGHTS_LOCATION_KEYS = ("pretrained", "weights", "weights_kind", "weights_path")


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


def _decode_default(identity: dict, other: dict) -> dict:
    """An identity without `decode` was decoded on the CPU (only a GPU decode is recorded, so the identities
    of CPU-decoded caches stay as they were): say so when the other side records it."""
    if "decode" in other and "decode" not in identity:
        return {**identity, "decode": {"device": "cpu"}}
    return identity


def identity_mismatch_message(cache_dir: object, view: str, recorded: dict, wanted: dict) -> str | None:
    """The refusal for a view made with other settings, each differing one as `name old vs new`."""
    wanted = json.loads(json.dumps(wanted, default=str))  # as recorded
    recorded, wanted = _decode_default(recorded, wanted), _decode_default(wanted, recorded)
    differences = _identity_differences(recorded, wanted)
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
        self.engine: Engine | None = None  # the engine of the last run (the ray engine records nodes)

    # models --------------------------------------------------------------------------------------
    def _load_models(self, device) -> dict[str, dict]:
        """Create every requested view's models; return each cache view's identity."""
        fault_point("load-models", self.cache_dir)
        self.loaded = load_views(self.config, device)
        self.encoders = self.loaded.models
        return self.loaded.identities

    def _keep_text_towers(self, catalog: Catalog, labels: list[str]) -> None:
        """Each loaded view with a text tower keeps what text queries need without its model (the clip view:
        the tower exported for NumPy, so even a cache's first `search --text` imports no torch). Once per view
        and cache; a failure costs only that: the first text query makes the export instead."""
        prompts = [template.format(label) for label in labels[:16] for template in DEFAULT_TEMPLATES]
        for view, encoder in self.encoders.items():
            identity = catalog.view_identity(view)
            if identity is None or not plugin(view).has_text_tower(self.config.settings_of(view)):
                continue
            try:
                line = plugin(view).keep_text_tower(
                    encoder, cache_dir=self.cache_dir, identity=identity, prompts=prompts
                )
            except Exception as exc:  # the rows are committed: an optional export must not fail the run
                log.warning(
                    "view %s: text tower not exported (%s); the first `search --text` will export it", view, exc
                )
                continue
            if line:
                log.info("%s", line)

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
        """Per video, the views that still need work (see `plan.plan_videos`). Sources only touched
        since (same size and content hash) are restamped, not redone; the content hash of each source
        about to be extracted is recorded (cache/sources.py)."""
        check = SourceCheck(catalog.source_digests())
        retry = self.config.run.retry_failed
        todo = plan_videos(catalog, entries, self.views, summary, retry_failed=retry, check=check)
        catalog.restamp_sources(check.restamp)
        planned = [(e.video_id, e.path, s.size, s.mtime_ns) for e, s, _ in todo if s is not None]
        catalog.record_sources(check.to_record(planned))
        return todo

    # decode workers ------------------------------------------------------------------------------
    def _decode_in(self) -> str:
        """threads or processes for this run (see RunConfig.decode_in)."""
        wanted = self.config.run.decode_in
        why_not = processes_unsupported(self.config, self.encoders)
        if self.config.run.decode_device == "cuda":  # NVDEC frames live in this process's CUDA context
            why_not = why_not or "--decode-device cuda decodes in threads"
        if wanted == "processes" and why_not:
            raise ConfigError(f"--decode-in processes: not possible here ({why_not}); use --decode-in threads")
        if wanted == "auto":
            on_gpu = self.device is not None and self.device.type == "cuda"
            return "processes" if on_gpu and not why_not else "threads"
        return wanted

    def _run_engine(
        self,
        todo: list[tuple[VideoEntry, SourceStat | None, list[str]]],
        writer: CacheWriter,
        summary: ExtractSummary,
        started: float,
    ) -> None:
        """Hand the planned videos to the run's engine (RunConfig.engine)."""
        tasks = [VideoTask(i, entry, source, tuple(views)) for i, (entry, source, views) in enumerate(todo)]
        engine = create_engine(self.config.run.engine)
        if tasks and engine.name == "local":
            decode_in = self._decode_in()
        else:
            decode_in = engine.name
        job = ExtractJob(
            tasks=tasks,
            config=self.config,
            cache_dir=self.cache_dir,
            encoders=self.encoders,
            device=self.device,  # type: ignore[arg-type]
            writer=writer,
            summary=summary,
            progress=self.progress,
            started=started,
            consumers_for=self._consumers,
            decode_in=decode_in,
        )
        self.engine = engine
        engine.run(job)

    # main loop -----------------------------------------------------------------------------------
    def run(self, entries: list[VideoEntry], *, vocabulary: list[str] | None = None) -> ExtractSummary:
        """Extract `entries`; `vocabulary` (default: their labels) is embedded as text when new work was done."""
        started = time.perf_counter()
        cfg = self.config
        summary = ExtractSummary(total=len(entries), cache=str(self.cache_dir), settings_key=settings_key(cfg))
        run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        summary.run_id = run_id
        # --decode-device auto resolved here and recorded so (cuda without NVDEC: a one-line error, exit 2)
        wanted_decode = cfg.run.decode_device
        decode_device = resolve_decode_device(
            wanted_decode if cfg.run.engine == "local" else "cpu",
            missing=None if wanted_decode == "cpu" else nvdec_missing(),
        )
        cfg = self.config = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, decode_device=decode_device))
        summary.decode_device = decode_device
        check_cache_writable(self.cache_dir)
        with ExtractLock(self.cache_dir, shard_index=cfg.run.shard_index, shard_count=cfg.run.shard_count):
            # CUDA initialisation and model loading may sit in one long C call: run them where a stop
            # signal does not have to wait for it (see signals.interruptible); they write nothing
            device = self.device = interruptible(lambda: resolve_device(cfg.run.device))
            summary.device = str(device)
            # --workers 0 (the default) resolved for this device, and recorded so in the run's config
            # (the ray engine resolves 0 itself: one decode task per CPU of the cluster)
            workers = cfg.run.workers or (0 if cfg.run.engine == "ray" else default_decode_workers(device))
            cfg = self.config = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, workers=workers))
            summary.workers = workers
            identities = interruptible(lambda: self._load_models(device))
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
                    self._run_engine(todo, writer, summary, started)
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
                text_tower = next(
                    (enc for v, enc in self.encoders.items() if plugin(v).has_text_tower(cfg.settings_of(v))), None
                )
                text_stale = stale_text_message(self.cache_dir, labels) is not None  # the manifest's labels changed
                if labels and text_tower is not None and (summary.extracted or text_missing or text_stale):
                    embed_labels(self.cache_dir, text_tower, labels, list(DEFAULT_TEMPLATES))
                self._keep_text_towers(catalog, labels)
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
