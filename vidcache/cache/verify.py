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
import numpy as np
from isal.isal_zlib import crc32  # zlib's CRC32 (the same values), 4-10x faster

from ..errors import CacheError
from .blocks import row_blocks
from .catalog import Catalog, Item, Located, now_iso
from .layout import SHARD_SUFFIX, shard_dir
from .shard import ShardRows, read_shard_ranges, rows_checksum

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


def check_rows(h5: h5py.File, item: Item | Located, recorded: ShardRows | None) -> str | None:
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


def check_shard(path: Path, items: list[Located]) -> tuple[str | None, list[tuple[Located, str]]]:
    """(problem with the whole file, [(item, problem)] of its damaged pairs). A file that is missing
    or cannot be opened is a whole-file problem; anything else is located to the pairs it touches.

    Each view's rows are read in storage order, in blocks of about 64 MiB (`blocks.row_blocks`) (one HDF5 read per
    dataset per block, not one per pair), and each pair's CRC32 runs over its slice of the block; a
    block that cannot be read is checked pair by pair (`check_rows`), so damage is still located."""
    if not path.exists():
        return "missing file", []
    try:
        recorded = read_shard_ranges(path)
    except Exception:
        recorded = None  # a damaged index: each pair is still checked by its catalog range and CRC32
    try:
        with h5py.File(path, "r", rdcc_nbytes=0) as h5:  # whole chunks in order: no chunk cache copy
            damaged = []
            by_view: dict[str, list[Located]] = {}
            for item in items:
                known = None if recorded is None else recorded.get((item.video_id, item.view))
                if recorded is not None and known is None:
                    damaged.append((item, "not in the shard's index"))
                elif known is not None and known != (item.row_start, item.row_count):
                    damaged.append((item, "rows differ from the catalog"))
                else:
                    by_view.setdefault(item.view, []).append(item)
            for view, pairs in by_view.items():
                damaged += _check_view(h5, view, pairs)
            order = {id(item): i for i, item in enumerate(items)}  # report in the catalog's order, as before
            return None, sorted(damaged, key=lambda pair: order[id(pair[0])])
    except Exception as exc:
        return f"cannot be read ({_first_line(exc)})", []


def _check_view(h5: h5py.File, view: str, items: list[Located]) -> list[tuple[Located, str]]:
    """The damaged pairs among one view's (whose row ranges already agree with the shard's index)."""
    try:
        group = h5[view]
        datasets = (
            group["features"],
            group["timestamps_s"],
            group["end_timestamps_s"] if "end_timestamps_s" in group else None,
        )
        n_rows, row_bytes = (
            datasets[0].shape[0],
            max(1, int(np.prod(datasets[0].shape[1:])) * datasets[0].dtype.itemsize),
        )
    except Exception:  # the view's own metadata is damaged: each pair says so in its own words
        return [(item, problem) for item in items if (problem := check_rows(h5, item, None))]
    damaged: list[tuple[Located, str]] = []
    in_order: list[Located] = []
    for item in sorted(items, key=_sort_key):
        stop = (item.row_start or 0) + (item.row_count or 0) if _plain_range(item) else None
        if stop is None:  # a damaged catalog record: checked alone, exactly as check_rows says
            if problem := check_rows(h5, item, None):
                damaged.append((item, problem))
        elif stop > n_rows:
            damaged.append((item, f"rows {item.row_start}:{stop} past the end"))
        else:
            in_order.append(item)
    ranges = [(item.row_start or 0, (item.row_start or 0) + (item.row_count or 0)) for item in in_order]
    for lo, hi, members in row_blocks(ranges, row_bytes=row_bytes):
        damaged += _check_block(h5, datasets, [in_order[m] for m in members], lo, hi, row_bytes=row_bytes)
    return damaged


def _plain_range(item: Located) -> bool:
    start, count = item.row_start or 0, item.row_count or 0
    return type(start) is int and type(count) is int and start >= 0 and count >= 0


def _sort_key(item: Located) -> tuple[int, int]:
    return (item.row_start or 0, item.row_count or 0) if _plain_range(item) else (-1, 0)


def _check_block(
    h5: h5py.File, datasets: tuple, block: list[Located], lo: int, hi: int, *, row_bytes: int, fine: bool = False
) -> list[tuple[Located, str]]:
    """CRC32 of each pair of a run of pairs sorted by row, over one read of their rows lo:hi. A block
    that cannot be read is read again in blocks of about one chunk (`fine`), and the pairs of a chunk
    that still cannot be read are checked one by one: damage is located to the pairs it touches."""
    try:
        columns = [None if d is None else d[lo:hi] for d in datasets]
    except Exception:  # h5py's many error types for damaged chunks
        if fine:
            return [(item, problem) for item in block if (problem := check_rows(h5, item, None))]
        chunk_rows = (datasets[0].chunks or (1,))[0]
        ranges = [(i.row_start or 0, (i.row_start or 0) + (i.row_count or 0)) for i in block]
        damaged = []
        for sub_lo, sub_hi, members in row_blocks(ranges, row_bytes=row_bytes, block_bytes=chunk_rows * row_bytes):
            damaged += _check_block(
                h5, datasets, [block[m] for m in members], sub_lo, sub_hi, row_bytes=row_bytes, fine=True
            )
        return damaged
    # each column as little-endian bytes, one row per line: a pair's CRC32 runs over its lines, which
    # are the bytes rows_checksum hashes, in the same order (no copy per pair)
    features, stamps, ends = (
        None if c is None else np.ascontiguousarray(c, c.dtype.newbyteorder("<")).reshape(len(c), -1).view(np.uint8)
        for c in columns
    )
    damaged = []
    for item in block:
        a = (item.row_start or 0) - lo
        b = a + (item.row_count or 0)
        checksum = crc32(stamps[a:b], crc32(features[a:b]))
        if ends is not None:
            checksum = crc32(ends[a:b], checksum)
        if checksum != item.checksum:
            damaged.append((item, "checksum mismatch"))
    return damaged


def quarantine_items(
    cache_dir: str | Path, catalog: Catalog, damaged: list[tuple[Item, str]] | list[tuple[Located, str]]
) -> list[dict]:
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
        by_shard: dict[str, list[Located]] = {}
        for item in catalog.done_located():
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
