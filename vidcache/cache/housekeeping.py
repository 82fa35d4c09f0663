"""`vidcache remove` and `vidcache compact`: a cache does not only grow.

`remove` drops videos from the catalog (every view, their records and manifest entry); their rows stay
in their shards, unreachable, until `compact` rewrites the live rows of small or partly dead shards into
fewer, larger ones. Compaction is crash-safe: new shards are committed the usual way (rows into a
`.partial`, fsync, rename, one catalog transaction moving each (video, view) to its new place), every
moved row is read back and compared with the original bytes, and only then are the old shard files
deleted, each before its catalog record: a kill at any moment leaves either the old rows or the new
ones reachable, never neither, and a later `compact` finishes the cleanup. Both commands take the
extract lock: they never run beside an extract.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .catalog import Catalog
from .layout import SHARD_SUFFIX, STATUS_DONE, shard_dir
from .lock import ExtractLock
from .reader import ShardFiles
from .store import CacheWriter, SourceStat


@dataclass
class RemoveSummary:
    cache: str
    removed: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    kept: int = 0


@dataclass
class CompactSummary:
    cache: str
    shards_before: int = 0
    shards_after: int = 0
    shards_rewritten: int = 0
    rows_moved: int = 0
    videos_moved: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0


def remove_videos(
    cache_dir: str | Path, *, video_ids: list[str] | None = None, keep_only: list[str] | None = None
) -> RemoveSummary:
    """Drop `video_ids`, or every video not in `keep_only` (a manifest's complement), from the catalog."""
    if (video_ids is None) == (keep_only is None):
        raise ConfigError("remove: give VIDEO_ID... or --not-in MANIFEST (one of the two)")
    summary = RemoveSummary(cache=str(cache_dir))
    with ExtractLock(cache_dir):
        catalog = Catalog.open(cache_dir, create=True)
        try:
            with catalog.transaction() as db:
                summary.removed, summary.kept, not_found = catalog.drop_videos(
                    db, keep_only=keep_only, video_ids=video_ids
                )
            if video_ids is not None:  # in the order given, as before
                removed, missing = set(summary.removed), set(not_found)
                summary.removed = [v for v in dict.fromkeys(video_ids) if v in removed]
                summary.not_found = [v for v in dict.fromkeys(video_ids) if v in missing]
        finally:
            catalog.close()
    return summary


def compact_cache(cache_dir: str | Path, *, shard_size_mb: float = 256.0, command: str = "") -> CompactSummary:
    """Rewrite the live rows of every shard that is smaller than `shard_size_mb` or holds rows no
    video uses any more into new shards of about that size; verify them; delete the old ones."""
    started = time.perf_counter()
    cache_dir = Path(cache_dir)
    summary = CompactSummary(cache=str(cache_dir))
    directory = shard_dir(cache_dir)
    with ExtractLock(cache_dir):
        catalog = Catalog.open(cache_dir, create=True)
        files = ShardFiles(directory)
        try:
            known = catalog.shard_names()
            for orphan in directory.glob(f"*-compact-*{SHARD_SUFFIX}"):  # a killed compact's new shard that its
                if orphan.name[: -len(SHARD_SUFFIX)] not in known:  # transaction never recorded: the old
                    orphan.unlink()  # shards still hold those rows
            shards = {s["name"]: s for s in catalog.shards()}
            summary.shards_before = len(shards)
            summary.bytes_before = sum(s["bytes"] for s in shards.values())
            live: dict[str, list] = {name: [] for name in shards}
            for item in catalog.items(status=STATUS_DONE):
                if item.shard in live:
                    live[item.shard].append(item)
            limit = shard_size_mb * 2**20
            dead_rows = {n: shards[n]["n_rows"] - sum(i.row_count or 0 for i in live[n]) for n in shards}
            small = [n for n in shards if shards[n]["bytes"] < limit and live[n]]
            candidates = sorted(n for n in shards if not live[n] or dead_rows[n] > 0 or (len(small) > 1 and n in small))
            movers = [i for n in candidates for i in live[n]]
            originals: dict[tuple[str, str], tuple] = {}
            if movers:
                identities = catalog.views()
                # a view stays compressed as it was written (the view that wrote it said so: flow fields)
                compressed = {
                    item.view for item in movers if files.get(item.shard)[item.view]["features"].compression is not None
                }
                writer = CacheWriter(
                    cache_dir,
                    catalog,
                    run_id=f"compact-{time.strftime('%Y%m%dT%H%M%S')}",
                    writer_tag="compact",
                    root_attrs={"config_json": "{}", "command": command},
                    view_attrs=identities,
                    dtypes={},
                    compressed=compressed,
                    shard_size_mb=shard_size_mb,
                    commit_every_s=float("inf"),
                )
                writer.remove_own_partials()
                for item in sorted(movers, key=lambda i: (i.video_id, i.view)):
                    stop = item.row_start + item.row_count
                    features, times = files.read_rows(item.shard, item.view, item.row_start, stop)
                    ends = files.read_end_times(item.shard, item.view, item.row_start, stop)
                    writer._dtypes.setdefault(item.view, features.dtype.name)
                    originals[(item.video_id, item.view)] = (features, times, ends)
                    source = (
                        SourceStat(item.source_size, item.source_mtime_ns)
                        if item.source_size is not None and item.source_mtime_ns is not None
                        else None
                    )
                    writer.add(
                        item.video_id,
                        {item.view: (features, times, ends)},
                        source=source,
                        info_json=item.info_json or "{}",
                    )
                    writer.maybe_commit()
                    if len(originals) >= 256:  # bounded memory: verify what is committed so far
                        writer.commit()
                        _verify_moved(catalog, files, originals)
                        originals.clear()
                writer.commit()
                _verify_moved(catalog, files, originals)
                summary.rows_moved = sum(i.row_count or 0 for i in movers)
                summary.videos_moved = len({i.video_id for i in movers})
            for name in candidates:  # every row they held that anyone reads now lives elsewhere
                still = [i for i in catalog.items(status=STATUS_DONE) if i.shard == name]
                if still:
                    continue
                files._files.pop(name, None)
                (directory / f"{name}{SHARD_SUFFIX}").unlink(missing_ok=True)  # the file first (see above)
                catalog.forget_shard(name)
                summary.shards_rewritten += 1
            after = catalog.shards()
            summary.shards_after = len(after)
            summary.bytes_after = sum(s["bytes"] for s in after)
        finally:
            files.close()
            catalog.close()
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _verify_moved(catalog: Catalog, files: ShardFiles, originals: dict[tuple[str, str], tuple]) -> None:
    """Every moved (video, view) reads back from its new shard byte for byte, or compaction stops
    before any old shard is deleted."""
    for (video_id, view), (features, times, ends) in originals.items():
        item = catalog.item(video_id, view)
        assert item is not None and item.shard is not None and item.row_start is not None
        stop = item.row_start + (item.row_count or 0)
        new_features, new_times = files.read_rows(item.shard, view, item.row_start, stop)
        new_ends = files.read_end_times(item.shard, view, item.row_start, stop)
        same = (
            np.array_equal(new_features, features)
            and np.array_equal(new_times, times)
            and ((ends is None and new_ends is None) or (ends is not None and np.array_equal(ends, new_ends)))
        )
        if not same:
            raise RuntimeError(
                f"compact: {video_id} [{view}] reads back differently from {item.shard}; nothing deleted"
            )


def as_dict(summary: object) -> dict:
    return dataclasses.asdict(summary)  # type: ignore[call-overload]
