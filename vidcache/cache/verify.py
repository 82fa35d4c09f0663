"""`vidcache verify`: check every (video, view) against the catalog, quarantine only what is damaged.

Each video's rows of each view carry their own CRC32, so damage is located to the (video, view)
pairs whose rows fail it. `--quarantine` drops exactly those pairs from the catalog (their rows stay
in the shard, unreachable, until `compact` reclaims them; `quarantine/items.jsonl` says what was set
aside) and the next `vidcache extract` redoes exactly them. Only a shard file that is missing or
cannot be opened at all is moved to `quarantine/` whole, with every pair it held.

The catalog itself is checked first with SQLite's integrity check: a damaged index answers the
listings it covers with other text while a scan of the table (what the per-pair checks read) stays
right, so no per-pair check could see it. Indexes hold nothing their tables do not: `--quarantine`
rebuilds them.

The per-pair checks (`check_rows`) and the quarantine of a list of pairs (`quarantine_items`) are
small functions of their own, for callers that verify in other orders (in parallel, per shard).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from ..errors import CacheError
from .catalog import Catalog, Item, now_iso
from .layout import SHARD_SUFFIX, STATUS_DONE, shard_dir
from .shard import ShardRows, read_shard_index, rows_checksum

QUARANTINE_DIR = "quarantine"
QUARANTINED_ITEMS = "items.jsonl"  # one line per (video, view) set aside: where its rows were and why


@dataclass
class VerifyReport:
    shards_checked: int = 0
    videos_checked: int = 0  # (video, view) pairs checked
    broken: dict[str, str] = field(default_factory=dict)  # shard -> first problem found in it
    damaged: list[dict] = field(default_factory=list)  # {video_id, view, shard, problem}: each failing pair
    unrecorded: list[str] = field(default_factory=list)  # complete shards the catalog does not list yet
    quarantined: list[str] = field(default_factory=list)  # shards set aside whole (missing or unreadable)
    quarantined_items: list[dict] = field(default_factory=list)  # {video_id, view, shard}: pairs set aside
    repaired: list[str] = field(default_factory=list)  # what --quarantine repaired in place (catalog indexes)

    @property
    def ok(self) -> bool:
        return not self.broken


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def check_rows(h5: h5py.File, item: Item, recorded: ShardRows | None) -> str | None:
    """The problem with one (video, view)'s rows in an open shard, None when they match the catalog:
    the shard's own index (when readable) agrees on the row range, and the rows' CRC32 matches."""
    stop = (item.row_start or 0) + (item.row_count or 0)
    if recorded is not None and (recorded.row_start, recorded.row_count) != (item.row_start, item.row_count):
        return "rows differ from the catalog"
    try:
        group = h5[item.view]
        if stop > group["features"].shape[0]:
            return f"rows {item.row_start}:{stop} past the end"
        ends = group["end_timestamps_s"][item.row_start : stop] if "end_timestamps_s" in group else None
        checksum = rows_checksum(
            group["features"][item.row_start : stop], group["timestamps_s"][item.row_start : stop], ends
        )
    except Exception as exc:  # h5py's many error types for damaged chunks or metadata
        return f"cannot be read ({_first_line(exc)})"
    return None if checksum == item.checksum else "checksum mismatch"


def check_shard(path: Path, items: list[Item]) -> tuple[str | None, list[tuple[Item, str]]]:
    """(problem with the whole file, [(item, problem)] of its damaged pairs). A file that is missing
    or cannot be opened is a whole-file problem; anything else is located to the pairs it touches."""
    if not path.exists():
        return "missing file", []
    try:
        index = read_shard_index(path)
        recorded = {(r.video_id, r.view): r for rows in index.values() for r in rows}
    except Exception:
        recorded = None  # a damaged index: each pair is still checked by its catalog range and CRC32
    try:
        with h5py.File(path, "r") as h5:
            damaged = []
            for item in items:
                known = None if recorded is None else recorded.get((item.video_id, item.view))
                if recorded is not None and known is None:
                    damaged.append((item, "not in the shard's index"))
                    continue
                problem = check_rows(h5, item, known)
                if problem:
                    damaged.append((item, problem))
            return None, damaged
    except Exception as exc:
        return f"cannot be read ({_first_line(exc)})", []


def quarantine_items(cache_dir: str | Path, catalog: Catalog, damaged: list[tuple[Item, str]]) -> list[dict]:
    """Drop these (video, view) pairs from the catalog, so the next extract redoes exactly them, and
    note each in quarantine/items.jsonl. Every other pair of their shards stays as it is."""
    if not damaged:
        return []
    target = Path(cache_dir) / QUARANTINE_DIR
    target.mkdir(exist_ok=True)
    with open(target / QUARANTINED_ITEMS, "a", encoding="utf-8") as log:
        for item, problem in damaged:
            where = {"shard": item.shard, "row_start": item.row_start, "row_count": item.row_count}
            log.write(
                json.dumps({"video_id": item.video_id, "view": item.view, **where, "problem": problem, "at": now_iso()})
                + "\n"
            )
    catalog.forget_items([(item.video_id, item.view, item.shard) for item, _ in damaged])
    return [{"video_id": item.video_id, "view": item.view, "shard": item.shard} for item, _ in damaged]


def quarantine_shard(cache_dir: str | Path, catalog: Catalog, name: str) -> None:
    """Move a shard that cannot be read at all to quarantine/ and drop every pair it held."""
    path = shard_dir(cache_dir) / f"{name}{SHARD_SUFFIX}"
    if path.exists():
        target = Path(cache_dir) / QUARANTINE_DIR
        target.mkdir(exist_ok=True)
        os.replace(path, target / path.name)
    catalog.forget_shard(name)


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


_INDEX_ONLY = re.compile(r"missing from index|wrong # of entries in index|non-unique entry in UNIQUE index")


def check_catalog(cache_dir: str | Path, catalog: Catalog, *, rebuild: bool) -> list[str]:
    """Raise CacheError for a catalog SQLite finds damaged; damage only to its indexes (derived from its
    tables) is repaired with `rebuild` (verify --quarantine) and returned as what was repaired."""
    problems = catalog.integrity_problems()
    if not problems:
        return []
    first = problems[0]
    if not all(_INDEX_ONLY.search(p) for p in problems):
        raise sqlite3.DatabaseError(f"integrity check: {first}")
    if not rebuild:
        raise CacheError(
            f"the catalog {catalog.path} has damaged indexes ({first}); its tables are intact and the indexes "
            f"are rebuilt from them by `vidcache verify --cache {cache_dir} --quarantine`"
        )
    catalog.rebuild_indexes()
    left = catalog.integrity_problems()
    if left:
        raise sqlite3.DatabaseError(f"integrity check after rebuilding its indexes: {left[0]}")
    return [f"catalog indexes rebuilt ({first})"]


def _verify(cache_dir: str | Path, *, quarantine: bool) -> VerifyReport:
    report = VerifyReport()
    catalog = Catalog.open(cache_dir, create=quarantine)
    try:
        report.repaired = check_catalog(cache_dir, catalog, rebuild=quarantine)
        by_shard: dict[str, list[Item]] = {}
        for item in catalog.items(status=STATUS_DONE):
            if not isinstance(item.shard, str):
                raise TypeError(f"shard name {item.shard!r} of {item.video_id!r} is not text")
            by_shard.setdefault(item.shard, []).append(item)
        directory = shard_dir(cache_dir)
        known = catalog.shard_names()
        if not all(isinstance(name, str) for name in known):
            raise TypeError("a recorded shard name is not text")
        for name in sorted(known | set(by_shard)):
            items = by_shard.get(name, [])
            report.shards_checked += 1
            report.videos_checked += len(items)
            whole, damaged = check_shard(directory / f"{name}{SHARD_SUFFIX}", items)
            if whole:
                report.broken[name] = whole
                report.damaged += [
                    {"video_id": i.video_id, "view": i.view, "shard": name, "problem": whole} for i in items
                ]
                if quarantine:
                    quarantine_shard(cache_dir, catalog, name)
                    report.quarantined.append(name)
                    report.quarantined_items += [{"video_id": i.video_id, "view": i.view, "shard": name} for i in items]
                continue
            if damaged:
                item, problem = damaged[0]
                report.broken[name] = f"{item.video_id} [{item.view}]: {problem}"
                report.damaged += [
                    {"video_id": i.video_id, "view": i.view, "shard": name, "problem": p} for i, p in damaged
                ]
                if quarantine:
                    report.quarantined_items += quarantine_items(cache_dir, catalog, damaged)
        report.unrecorded = sorted(p.name for p in directory.glob(f"*{SHARD_SUFFIX}") if p.stem not in known)
    finally:
        catalog.close()
    return report
