"""`vidcache verify`: check every shard against the catalog, quarantine broken ones.

A quarantined shard is moved to `quarantine/` and its videos are dropped from the catalog, so the
next `vidcache extract` redoes exactly those videos; good shards are never touched.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from ..errors import CacheError
from .catalog import Catalog
from .layout import SHARD_SUFFIX, STATUS_DONE, shard_dir
from .shard import read_shard_index, rows_checksum

QUARANTINE_DIR = "quarantine"


@dataclass
class VerifyReport:
    shards_checked: int = 0
    videos_checked: int = 0
    broken: dict[str, str] = field(default_factory=dict)  # shard -> first problem found
    unrecorded: list[str] = field(default_factory=list)  # complete shards the catalog does not list yet
    quarantined: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.broken


def _check_shard(path: Path, items: list) -> str | None:
    try:
        index = read_shard_index(path)
    except Exception as exc:
        return f"cannot be read ({type(exc).__name__}: {exc})".splitlines()[0]
    recorded = {(r.video_id, r.view): r for rows in index.values() for r in rows}
    try:
        with h5py.File(path, "r") as h5:
            for item in items:
                rows = recorded.get((item.video_id, item.view))
                if rows is None or (rows.row_start, rows.row_count) != (item.row_start, item.row_count):
                    return f"{item.video_id} [{item.view}]: rows differ from the catalog"
                group = h5[item.view]
                stop = item.row_start + item.row_count
                if stop > group["features"].shape[0]:
                    return f"{item.video_id} [{item.view}]: rows {item.row_start}:{stop} past the end"
                ends = group["end_timestamps_s"][item.row_start : stop] if "end_timestamps_s" in group else None
                checksum = rows_checksum(
                    group["features"][item.row_start : stop], group["timestamps_s"][item.row_start : stop], ends
                )
                if checksum != item.checksum:
                    return f"{item.video_id} [{item.view}]: checksum mismatch"
    except Exception as exc:
        return f"cannot be read ({type(exc).__name__}: {exc})".splitlines()[0]
    return None


def verify_cache(cache_dir: str | Path, *, quarantine: bool = False) -> VerifyReport:
    try:
        return _verify(cache_dir, quarantine=quarantine)
    except (sqlite3.DatabaseError, ValueError, TypeError, KeyError) as exc:
        # a damaged catalog (malformed pages, records of the wrong type) is reported, never a traceback
        catalog = Path(cache_dir) / "catalog.sqlite"
        raise CacheError(
            f"the catalog {catalog} is damaged ({type(exc).__name__}: {exc}); its shards cannot be checked "
            "against it. Move the cache away and extract again (shards are not trusted without their catalog)"
        ) from None


def _verify(cache_dir: str | Path, *, quarantine: bool) -> VerifyReport:
    report = VerifyReport()
    catalog = Catalog.open(cache_dir, create=quarantine)
    try:
        by_shard: dict[str, list] = {}
        for item in catalog.items(status=STATUS_DONE):
            if not isinstance(item.shard, str):
                raise TypeError(f"shard name {item.shard!r} of {item.video_id!r} is not text")
            by_shard.setdefault(item.shard, []).append(item)
        directory = shard_dir(cache_dir)
        known = catalog.shard_names()
        if not all(isinstance(name, str) for name in known):
            raise TypeError("a recorded shard name is not text")
        for name in sorted(known | set(by_shard)):
            path = directory / f"{name}{SHARD_SUFFIX}"
            report.shards_checked += 1
            report.videos_checked += len(by_shard.get(name, []))
            problem = "missing file" if not path.exists() else _check_shard(path, by_shard.get(name, []))
            if problem:
                report.broken[name] = problem
        report.unrecorded = sorted(p.name for p in directory.glob(f"*{SHARD_SUFFIX}") if p.stem not in known)
        if quarantine:
            target = Path(cache_dir) / QUARANTINE_DIR
            for name in report.broken:
                path = directory / f"{name}{SHARD_SUFFIX}"
                if path.exists():
                    target.mkdir(exist_ok=True)
                    os.replace(path, target / path.name)
                catalog.forget_shard(name)
                report.quarantined.append(name)
    finally:
        catalog.close()
    return report
