"""What an extract run has to do, decided from the catalog alone: no model is loaded, torch is not
imported. A re-run with nothing to do (every video complete, the same settings as a run that finished
on this cache) ends here in a fraction of a second, and a cache locked by another extract is refused
(exit 3) before anything heavy starts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import resource
import secrets
import sqlite3
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..cache.catalog import Catalog, Item
from ..cache.fidelity import FIDELITY_VERSION
from ..cache.layout import CATALOG_NAME, STATUS_ABSENT, STATUS_DONE, STATUS_FAILED, TEXT_NAME, failed_item, failure_text
from ..cache.lock import ExtractLock
from ..cache.sources import SourceCheck
from ..cache.store import SourceStat, check_cache_writable
from ..cache.text import stale_text_message
from ..config import to_json
from ..errors import CacheError, cache_write_error
from ..gcpause import paused_gc
from ..manifest import VideoEntry
from ..remote import is_url
from ..version import __version__
from .config import ExtractConfig
from .views import VIEWS

BULK_PLAN_VIDEOS = 2000  # from this many manifest videos on, plan_videos reads the catalog's items whole


@dataclass
class ExtractSummary:
    total: int = 0
    extracted: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    frames: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    absent: dict[str, int] = field(default_factory=dict)
    decode_seconds: float = 0.0
    model_seconds: float = 0.0
    write_seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)  # video_id: reason ("view: reason; ..." for several)
    failed_items: list[dict] = field(default_factory=list)  # {video_id, view, reason}: the same in `status`
    cache: str = ""
    run_id: str = ""
    device: str = ""
    decode_in: str = ""  # threads or processes (RunConfig.decode_in resolved)
    workers: int = 0  # decode workers (RunConfig.workers resolved)
    decode_device: str = "cpu"  # RunConfig.decode_device resolved (auto → cpu or cuda)
    random_weights: bool = False
    models_rss_mib: float = 0.0  # this process's peak RSS once the models are loaded: the fixed part
    peak_rss_mib: float = 0.0  # its peak over the whole run; the difference is what the videos cost
    warnings: list[str] = field(default_factory=list)  # manifest mistakes read_manifest accepts (unknown columns...)
    settings_key: str = ""  # see settings_key(): a re-run with the same key and nothing to do loads no model

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["frames_per_s"] = round(self.frames_per_s, 2)
        return out


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def cache_views(views: tuple[str, ...]) -> list[str]:
    """The cache views a `--views` list writes: a view's `writes_with` come along (`flow` writes `motion`)."""
    out: list[str] = []
    for name in views:
        for written in (name, *VIEWS.get(name).writes_with):
            if written not in out:
                out.append(written)
    return out


def plan_videos(
    catalog: Catalog,
    entries: list[VideoEntry],
    views: list[str],
    summary: ExtractSummary,
    *,
    retry_failed: bool,
    check: SourceCheck | None = None,
) -> list[tuple[VideoEntry, SourceStat | None, list[str]]]:
    """Per video, the views that still need work: missing, made from an older version of the source,
    or failed before (with --retry-failed). Videos with nothing to do are counted in `summary`. With
    `check`, a source whose mtime changed but whose size and content hash did not is the same source
    (`check.restamp` then lists the records to give the new mtime)."""
    with paused_gc():  # 1M plan tuples: see gcpause.py
        return _plan(catalog, entries, views, summary, retry_failed=retry_failed, check=check)


def _plan(catalog: Catalog, entries: list[VideoEntry], views: list[str], summary: ExtractSummary, *,
          retry_failed: bool, check: SourceCheck | None) -> list:  # fmt: skip
    todo = []
    # a large manifest: one query per view, not one per (video, view) (1M lookups cost a 1M-video no-op
    # re-run a third of its time); a few videos against a large cache: the primary key, video by video
    bulk = len(entries) >= BULK_PLAN_VIDEOS
    known = [catalog.source_records(view) for view in views] if bulk else []
    single = known[0] if len(known) == 1 else None
    missing_dirs: set[str] = set()
    for entry in entries:
        source = _stamp(entry.path, missing_dirs)
        if single is not None:  # the common re-run: one view, its record holds; no lists per video
            record = single.get(entry.video_id)
            if record is not None and record[1] != STATUS_FAILED and _same_source(record, source, entry, check):
                summary.skipped += 1
                continue
        if bulk:
            records = [records_of.get(entry.video_id) for records_of in known]
        else:
            records = [_record(catalog.item(entry.video_id, view)) for view in views]
        needed = [
            view
            for view, record in zip(views, records, strict=True)
            if not _same_source(record, source, entry, check) or (retry_failed and record[1] == STATUS_FAILED)
        ]
        if needed:
            todo.append((entry, SourceStat(*source) if source is not None else None, needed))
            continue
        reasons = {view: r[2] or "failed" for view, r in zip(views, records, strict=True) if r[1] == STATUS_FAILED}
        if reasons:
            summary.failed += 1
            summary.failures[entry.video_id] = failure_text(reasons, several_views=len(views) > 1)
            summary.failed_items.extend(failed_item(entry.video_id, v, r) for v, r in reasons.items())
        else:
            summary.skipped += 1
    return todo


def _record(item: Item | None) -> tuple | None:
    """An `Item` in the layout of `Catalog.source_records`: (video_id, status, reason, size, mtime_ns)."""
    if item is None:
        return None
    return (item.video_id, item.status, item.reason, item.source_size, item.source_mtime_ns)


def _stamp(path: str, missing_dirs: set[str]) -> tuple[int, int] | None:
    """(size, mtime_ns) of a source now (`SourceStat.of`), a plain tuple; None when it cannot be
    stat'ed. A folder found missing (unmounted storage, moved away) is remembered in `missing_dirs`, so
    its other files cost a set lookup, not a failed stat each."""
    if "://" in path and is_url(path):
        found = SourceStat.of(path)
        return (found.size, found.mtime_ns) if found is not None else None
    folder = path.rpartition(os.sep)[0]
    if folder in missing_dirs:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if folder and not os.path.exists(folder):
            missing_dirs.add(folder)
        return None
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _same_source(record: tuple | None, source: tuple[int, int] | None, entry: VideoEntry,
                 check: SourceCheck | None) -> bool:  # fmt: skip
    """Whether a (video, view) record still holds for the source as it is now."""
    if record is None:
        return False
    _, status, _, size, mtime_ns = record
    if source is None:  # unreadable now (e.g. unmounted): keep what is cached or known absent
        return status in (STATUS_DONE, STATUS_ABSENT) or size is None
    if (size, mtime_ns) == source:
        return True
    return check is not None and check.same_content(entry.video_id, entry.path, size, mtime_ns, *source)


def _file_stamp(value: str | None) -> list | None:
    """(absolute path, size, mtime) of a weights file named by an option, None for a tag or 'none'."""
    if not value or not os.path.isfile(value):
        return None
    st = os.stat(value)
    return [os.path.abspath(value), st.st_size, st.st_mtime_ns]


def settings_key(config: ExtractConfig) -> str:
    """A digest of everything that decides the rows (all options but the run's own: device, workers,
    shards, commit timing...), this vidcache's version and the weights files' size and mtime. Two runs
    with the same key write the same rows; a run that finished with it proves the settings match the
    cache, so a re-run with the same key and nothing to do needs no model to check them."""
    settings = json.loads(to_json(config))
    run = settings.pop("run", None) or {}
    if run.get("decode_device", "cpu") != "cpu":  # it changes the pixels (see viewset.decode_identity)
        settings["decode_device"] = run["decode_device"]
    weights = {
        name: [_file_stamp(value) for value in VIEWS.get(name)().weights_files(config.settings_of(name))]
        for name in cache_views(config.views)
    }
    text = json.dumps(
        {"settings": settings, "weights": weights, "version": __version__, "fidelity": FIDELITY_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def nothing_to_do(
    cache_dir: str | Path,
    config: ExtractConfig,
    entries: list[VideoEntry],
    *,
    all_entries: list[VideoEntry] | None = None,
    vocabulary: list[str] | None = None,
    command: str = "",
) -> ExtractSummary | None:
    """The summary of a run with nothing to do, decided without loading a model; None when there may be
    work (then the full run decides). Under the cache's lock: a locked cache raises CacheLockedError.
    Like a full run, it records the manifest's current labels and splits (`all_entries`) in the catalog."""
    started = time.perf_counter()
    cache_dir = Path(cache_dir)
    key = settings_key(config)
    check_cache_writable(cache_dir)  # a read-only cache: one line, and not even a lock file is touched
    # the lock first, also when there is no catalog yet: a first run may hold it (still loading models)
    with ExtractLock(cache_dir, shard_index=config.run.shard_index, shard_count=config.run.shard_count):
        if not (cache_dir / CATALOG_NAME).exists():
            return None
        try:  # read-only for the decision: nothing is written unless there is nothing to do
            catalog = Catalog.open(cache_dir)
        except CacheError:  # e.g. a journal a killed run left: the full run recovers it
            return None
        try:
            finished = [json.loads(r["summary_json"]) for r in catalog.runs() if r["summary_json"]]
            if not any(s.get("settings_key") == key for s in finished):
                return None
            views = cache_views(config.views)
            summary = ExtractSummary(total=len(entries), cache=str(cache_dir), settings_key=key)
            check = SourceCheck(catalog.source_digests())
            if plan_videos(catalog, entries, views, summary, retry_failed=config.run.retry_failed, check=check):
                return None
            labels = vocabulary if vocabulary is not None else sorted({lab for e in entries for lab in e.labels})
            if (
                labels
                and any(VIEWS.get(view)().has_text_tower(config.settings_of(view)) for view in views)
                and (not (cache_dir / TEXT_NAME).exists() or stale_text_message(cache_dir, labels) is not None)
            ):
                return None  # the label texts are missing or older than the manifest's labels: the full run embeds them
            catalog.close()
            catalog = Catalog.open(cache_dir, create=True)
            catalog.upsert_entries(all_entries if all_entries is not None else entries)
            catalog.restamp_sources(check.restamp)  # touched, not changed: matched by size and mtime next time
            summary.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
            summary.decode_in = "none (nothing to do)"
            catalog.start_run(summary.run_id, command=command, config_json=to_json(config))
            summary.seconds = time.perf_counter() - started
            summary.peak_rss_mib = peak_rss_mib()
            catalog.finish_run(summary.run_id, summary.as_dict())
            return summary
        except (OSError, sqlite3.OperationalError) as exc:  # read-only cache, full disk: one line, as a full run
            raise cache_write_error(cache_dir, exc) from None
        finally:
            catalog.close()
