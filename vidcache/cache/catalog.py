"""The catalog: one SQLite file that says where each video's rows are and what happened to it.

SQLite gives atomic, durable transactions and safe concurrent writers (several `--shard K/N`
processes) from the standard library. Shards are made visible first and recorded here second, so a
crash between the two leaves a complete shard the next run adopts (see `ShardStore.adopt_orphans`).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..errors import CacheError, cache_write_error, fault_point, write_problem
from ..gcpause import paused_gc
from ..redact import redact_text, redact_url
from ..remote import is_url
from . import changes, counts
from .layout import SCHEMA_VERSION, STATUS_DONE, catalog_path


def _shown_path(path: str) -> str:
    """A URL's credentials are never written to the catalog (docs/security.md)."""
    return redact_url(path) if "://" in path and is_url(path) else path  # `in` first: 1M local paths


def _stored(item: Item) -> tuple:
    """An item's row, its reason scrubbed of credentials: a library's error message may quote a URL."""
    values = dict(item.__dict__)
    values["reason"] = redact_text(values["reason"]) if values["reason"] else values["reason"]
    return tuple(values.values())


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS views(
    view TEXT PRIMARY KEY, identity_json TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shards(
    name TEXT PRIMARY KEY, created_at TEXT NOT NULL, n_videos INTEGER NOT NULL,
    n_rows INTEGER NOT NULL, bytes INTEGER NOT NULL, run_id TEXT);
CREATE TABLE IF NOT EXISTS entries(
    video_id TEXT PRIMARY KEY, path TEXT NOT NULL, labels TEXT NOT NULL, split TEXT,
    start_s REAL, end_s REAL);
CREATE TABLE IF NOT EXISTS items(
    video_id TEXT NOT NULL, view TEXT NOT NULL, status TEXT NOT NULL, shard TEXT,
    row_start INTEGER, row_count INTEGER, checksum INTEGER, reason TEXT,
    source_size INTEGER, source_mtime_ns INTEGER, info_json TEXT, updated_at TEXT NOT NULL,
    PRIMARY KEY(video_id, view));
CREATE INDEX IF NOT EXISTS items_by_shard ON items(shard, row_start);
CREATE TABLE IF NOT EXISTS sources(
    video_id TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, digest TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS items_by_view ON items(view, status, video_id);
CREATE INDEX IF NOT EXISTS items_failed ON items(video_id, view) WHERE status = 'failed';
CREATE TABLE IF NOT EXISTS runs(
    run_id TEXT PRIMARY KEY, started_at TEXT NOT NULL, finished_at TEXT, command TEXT,
    config_json TEXT, summary_json TEXT);
"""


BULK_ENTRIES = 2000  # from this many rows on, upsert_entries compares with what is recorded first


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass(frozen=True)
class Item:
    """One (video, view) record of the catalog."""

    video_id: str
    view: str
    status: str
    shard: str | None
    row_start: int | None
    row_count: int | None
    checksum: int | None
    reason: str | None
    source_size: int | None
    source_mtime_ns: int | None
    info_json: str | None
    updated_at: str


_ITEM_COLUMNS = ", ".join(Item.__dataclass_fields__)


class Located(NamedTuple):
    """The fields of a done `Item` that `verify` checks: where its rows are and their CRC32."""

    video_id: str
    view: str
    shard: str | None
    row_start: int | None
    row_count: int | None
    checksum: int | None


def _roll_back_interrupted_write(path: Path) -> None:
    """A writer killed inside a transaction leaves a hot journal (catalog.sqlite-journal) that only a
    writable connection may roll back: a read-only open then fails ("attempt to write a readonly
    database") although the catalog is whole. Roll it back with a short writable connection (SQLite
    does so on its first read); in a directory this process cannot write, say what to do instead."""
    journal = path.with_name(path.name + "-journal")
    if not journal.exists() or journal.stat().st_size == 0:
        return
    if not os.access(path.parent, os.W_OK) or not os.access(path, os.W_OK):
        raise CacheError(
            f"catalog {path} has the journal of an interrupted write ({journal.name}) and this process cannot "
            "write there to roll it back; run any vidcache command on the cache with write access (e.g. "
            "`vidcache verify --cache DIR --quarantine`), and never delete the journal"
        )
    db = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the first read rolls the journal back
    finally:
        db.close()


class Catalog:
    def __init__(self, connection: sqlite3.Connection, path: Path):
        self._db = connection
        self.path = path
        self._counts_usable: bool | None = None  # item_counts checked against items once per open

    @classmethod
    def open(cls, cache_dir: str | Path, *, create: bool = False) -> Catalog:
        path = catalog_path(cache_dir)
        if not path.exists():
            if not create:
                raise CacheError(f"{cache_dir} is not a vidcache cache (no {path.name}); run `vidcache extract` first")
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if create:
                db = sqlite3.connect(path, timeout=60, isolation_level=None)
                db.executescript(_SCHEMA)
                db.execute("INSERT OR IGNORE INTO meta VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
                db.execute("INSERT OR IGNORE INTO meta VALUES('created_at', ?)", (now_iso(),))
                counts.ensure_counts(db)  # an older catalog: its per-view counts, once (cache/counts.py)
                changes.ensure_changes(db)  # an older catalog: its per-view change counter (cache/changes.py)
            else:
                _roll_back_interrupted_write(path)
                db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60, isolation_level=None)
            version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            if create and write_problem(exc):
                # a read-only directory or a full disk is not a damaged catalog: never advise moving it away
                raise cache_write_error(cache_dir, exc) from None
            raise CacheError(
                f"catalog {path} cannot be read ({exc}); move it away and run extract again: "
                "complete shards are adopted back"
            ) from None
        if version is None or int(version[0]) != SCHEMA_VERSION:
            found = version[0] if version else "none"
            raise CacheError(f"catalog {path} has schema version {found}, this vidcache reads {SCHEMA_VERSION}")
        return cls(db, path)

    def close(self) -> None:
        self._db.close()

    def integrity_problems(self, *, limit: int = 20) -> list[str]:
        """SQLite's own full check (pages, records, and every index against its table), [] when sound.
        Needed because a damaged index silently answers the queries it covers with other text."""
        rows = self._db.execute(f"PRAGMA integrity_check({int(limit)})").fetchall()
        return [] if rows == [("ok",)] else [str(row[0]) for row in rows]

    def rebuild_indexes(self) -> None:
        """Rebuild every index from its table: indexes hold nothing the tables do not."""
        self._db.execute("REINDEX")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            # a failed COMMIT (disk full) can leave the transaction open, which would make every later
            # BEGIN fail; SQLite may also have rolled back already: never let ROLLBACK hide the real error
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise

    # views ---------------------------------------------------------------------------------------
    def view_identity(self, view: str) -> dict | None:
        row = self._db.execute("SELECT identity_json FROM views WHERE view=?", (view,)).fetchone()
        return json.loads(row[0]) if row else None

    def views(self) -> dict[str, dict]:
        return {v: json.loads(j) for v, j in self._db.execute("SELECT view, identity_json FROM views")}

    def claim_view(self, view: str, identity: dict) -> dict:
        """Record the view's identity the first time; return what is recorded."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO views VALUES(?, ?, ?)",
                (view, json.dumps(identity, sort_keys=True), now_iso()),
            )
        recorded = self.view_identity(view)
        assert recorded is not None
        return recorded

    # entries -------------------------------------------------------------------------------------
    def upsert_entries(self, entries: Iterable) -> None:
        """Record the manifest's rows; with many rows, only those that differ from what is recorded (a
        1M-row no-op re-run rewrote every row: 11 s of its time), compared as stored tuples."""
        labels_json: dict[tuple[str, ...], str] = {}  # a few distinct label sets: each encoded once
        rows = []
        with paused_gc():  # 1M rows: see gcpause.py
            for e in entries:
                labels = labels_json.get(e.labels)
                if labels is None:
                    labels = labels_json[e.labels] = json.dumps(list(e.labels))
                rows.append((e.video_id, _shown_path(e.path), labels, e.split, e.start_s, e.end_s))
            if len(rows) >= BULK_ENTRIES:
                recorded = set(self._db.execute("SELECT video_id, path, labels, split, start_s, end_s FROM entries"))
                rows = [row for row in rows if row not in recorded]
                del recorded
        if not rows:
            return
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO entries VALUES(?, ?, ?, ?, ?, ?)", rows)

    def entries(self) -> list[dict]:
        columns = self.entry_columns()
        return [
            {"video_id": v, "path": p, "labels": list(lab), "split": s, "start_s": a, "end_s": b}
            for v, p, lab, s, a, b in zip(*columns.values(), strict=True)
        ]

    def entry_columns(self) -> dict[str, list]:
        """The entries as columns (video_id, path, labels, split, start_s, end_s), labels as tuples;
        each distinct labels text is JSON-decoded once (a million videos share a few hundred)."""
        rows = self._db.execute("SELECT video_id, path, labels, split, start_s, end_s FROM entries").fetchall()
        names = ("video_id", "path", "labels", "split", "start_s", "end_s")
        values = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in names]
        columns = dict(zip(names, values, strict=True))
        decoded = {text: tuple(json.loads(text)) for text in set(columns["labels"])}
        columns["labels"] = [decoded[text] for text in columns["labels"]]
        return columns

    def view_state(self, view: str) -> str | None:
        """A token that changes whenever any item of `view` is written (cache/changes.py), None for a
        catalog no writer of this version has opened yet."""
        return changes.state(self._db, view)

    def labels_of(self, video_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """{video_id: labels} of these videos (those the manifest lists), by primary key: a search's k
        hits, without reading a million entries."""
        rows = self._by_ids("SELECT video_id, labels FROM entries WHERE video_id IN ({})", [], video_ids)
        return {video_id: tuple(json.loads(text)) for video_id, text in rows}

    def _by_ids(self, query: str, args: list, video_ids: Iterable[str]) -> Iterator[tuple]:
        """Rows of `query` (its `IN ({})` filled with the ids) run over blocks of distinct ids: SQLite's
        bound-parameter limit, and a lookup by key instead of a scan of a million rows."""
        asked = list(dict.fromkeys(video_ids))
        for start in range(0, len(asked), 500):
            block = asked[start : start + 500]
            yield from self._db.execute(query.format(", ".join("?" * len(block))), [*args, *block])

    # items ---------------------------------------------------------------------------------------
    def items(self, view: str | None = None, *, status: str | None = None) -> list[Item]:
        query, args = f"SELECT {_ITEM_COLUMNS} FROM items WHERE 1=1", []
        if view is not None:
            query += " AND view=?"
            args.append(view)
        if status is not None:  # a literal, not a parameter: so SQLite can use the partial index items_failed
            query += " AND status='" + status.replace("'", "''") + "'"
        return [Item(*row) for row in self._db.execute(query + " ORDER BY video_id", args)]

    def done_located(self) -> list[Located]:
        """Every done (video, view), by video_id, as the six fields `verify` checks: plain tuples
        rather than twelve-field `Item`s (a million pairs: seconds less)."""
        query = f"SELECT {', '.join(Located._fields)} FROM items WHERE status=? ORDER BY video_id"
        return list(map(Located._make, self._db.execute(query, (STATUS_DONE,))))

    def located(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str, int, int, str]]:
        """(shard, view, row_start, row_count, video_id) of these done (video_id, view) pairs, by shard
        and row (one join against a temporary table, not a query per pair); pairs not done are left out."""
        with self.transaction() as db:
            db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS asked_pairs(video_id TEXT, view TEXT, PRIMARY KEY(video_id, view))"
            )
            db.execute("DELETE FROM asked_pairs")
            db.executemany("INSERT OR IGNORE INTO asked_pairs VALUES(?, ?)", pairs)
            rows = db.execute(
                "SELECT i.shard, i.view, i.row_start, i.row_count, i.video_id FROM asked_pairs a JOIN items i "
                "ON i.video_id = a.video_id AND i.view = a.view WHERE i.status = ? "
                "ORDER BY i.shard, i.view, i.row_start",
                (STATUS_DONE,),
            ).fetchall()
            db.execute("DELETE FROM asked_pairs")
        return rows

    def shards_in_use(self) -> set[str]:
        """The shards some done (video, view) reads its rows from."""
        return {name for (name,) in self._db.execute("SELECT DISTINCT shard FROM items WHERE status=?", (STATUS_DONE,))}

    def drop_videos(self, db: sqlite3.Connection, *, keep_only: Iterable[str] | None = None,
                    video_ids: Iterable[str] | None = None) -> tuple[list[str], int, list[str]]:  # fmt: skip
        """Inside `transaction()`: delete every video the catalog knows (in entries or items) that is in
        `video_ids`, or that is not in `keep_only`; returns (removed, how many known videos are left, the
        `video_ids` it does not know). Set operations in SQLite against a temporary table of the ids,
        not Python sets of the whole catalog: a 1M-video `remove --not-in` in seconds (issue 29)."""
        db.execute("CREATE TEMP TABLE IF NOT EXISTS asked_ids(video_id TEXT PRIMARY KEY)")
        db.execute("DELETE FROM asked_ids")
        asked = list(dict.fromkeys(keep_only if keep_only is not None else video_ids or []))
        db.executemany("INSERT INTO asked_ids VALUES(?)", ((v,) for v in asked))
        known = "SELECT video_id FROM entries UNION SELECT video_id FROM items"
        test = "NOT IN" if keep_only is not None else "IN"
        removed = [
            v for (v,) in db.execute(f"SELECT video_id FROM ({known}) WHERE video_id {test} asked_ids ORDER BY 1")
        ]
        not_found = [] if keep_only is not None else sorted(set(asked) - set(removed))
        for table in ("items", "entries"):  # one statement each: SQLite walks the table once
            db.execute(f"DELETE FROM {table} WHERE video_id {test} asked_ids")
        (left,) = db.execute(f"SELECT count(*) FROM ({known})").fetchone()
        db.execute("DELETE FROM asked_ids")
        return removed, int(left), not_found

    def source_records(self, view: str) -> dict[str, tuple]:
        """{video_id: (video_id, status, reason, source_size, source_mtime_ns)}: what an extract plan
        needs of each item of one view, as the rows SQLite hands back (no dataclass, no named tuple:
        building 1M of them cost a 1M-video no-op re-run seconds)."""
        cursor = self._db.execute(
            "SELECT video_id, status, reason, source_size, source_mtime_ns FROM items WHERE view=?", (view,)
        )
        with paused_gc():  # 1M rows: see gcpause.py
            return {row[0]: row for row in cursor}

    def _counts(self, view: str) -> list[tuple]:
        """The view's (status, counted, video stream, audio stream, device, items, rows) groups: kept
        at write time (cache/counts.py), or counted now when the catalog has none to trust (an older
        catalog opened read-only: one pass over the view's items)."""
        if self._counts_usable is None:
            self._counts_usable = counts.usable(self._db)
        return counts.counted(self._db, view) if self._counts_usable else counts.computed(self._db, view)

    def status_counts(self, view: str) -> dict[str, tuple[int, int]]:
        """{status: (items, rows)} of one view, from `_counts` (no scan of `items` on a current catalog)."""
        out: dict[str, tuple[int, int]] = {}
        for status, _, _, _, _, n, rows in self._counts(view):
            had = out.get(status, (0, 0))
            out[status] = (had[0] + int(n), had[1] + int(rows))
        return out

    def stream_counts(self, view: str, key: str) -> dict[str, int]:
        """{stream index as text, "?" when not recorded: done items of `view`} from info_json's `key`
        (video_stream / audio_stream), imported items (no stream read) left out; SQLite's JSON1."""
        cursor = self._db.execute(
            "SELECT coalesce(CAST(json_extract(info_json, ?) AS TEXT), '?'), count(*) FROM items "
            "WHERE view=? AND status=? AND json_extract(info_json, '$.imported_from') IS NULL "
            "AND json_extract(info_json, '$.feature_file') IS NULL GROUP BY 1",
            (f"$.{key}", view, STATUS_DONE),
        )
        return {str(index): int(n) for index, n in cursor}

    def source_counts(self, view: str, key: str) -> tuple[dict[str, int], dict[str, int]]:
        """(`stream_counts(view, key)`, `decode_device_counts(view)`) from `_counts`: `status` of 1M videos
        reads a few rows (a damaged info_json counts as "?" / cpu here)."""
        column = {"video_stream": 2, "audio_stream": 3}[key]
        streams: dict[str, int] = {}
        devices: dict[str, int] = {}
        for row in self._counts(view):
            if row[1]:  # done, made here (not imported)
                streams[row[column]] = streams.get(row[column], 0) + int(row[5])
                devices[row[4]] = devices.get(row[4], 0) + int(row[5])
        return streams, dict(sorted(devices.items()))

    def decode_device_counts(self, view: str) -> dict[str, int]:
        """{decode device ("cpu", "cuda", "cpu (fallback)"): done items of `view`} from info_json's
        `decode_device` / `decode_fallback` (absent: cpu), imported items left out; SQLite's JSON1."""
        cursor = self._db.execute(
            "SELECT coalesce(json_extract(info_json, '$.decode_device'), 'cpu') || "
            "CASE WHEN json_extract(info_json, '$.decode_fallback') THEN ' (fallback)' ELSE '' END, count(*) "
            "FROM items WHERE view=? AND status=? AND json_extract(info_json, '$.imported_from') IS NULL "
            "AND json_extract(info_json, '$.feature_file') IS NULL GROUP BY 1",
            (view, STATUS_DONE),
        )
        return dict(sorted((str(device), int(n)) for device, n in cursor))

    def done_ids(self, view: str) -> list[str]:
        """Ids of the videos whose `view` is done, sorted (read from the items_by_view index)."""
        cursor = self._db.execute(
            "SELECT video_id FROM items WHERE view=? AND status=? ORDER BY video_id", (view, STATUS_DONE)
        )
        return [video_id for (video_id,) in cursor]

    def done_locations(self, view: str) -> Iterator[tuple[str, str, int, int]]:
        """(shard, video_id, row_start, row_count) of the view's done videos in storage order, streamed."""
        yield from self._db.execute(
            "SELECT shard, video_id, row_start, row_count FROM items WHERE view=? AND status=? "
            "ORDER BY shard, row_start",
            (view, STATUS_DONE),
        )

    def done_location_columns(self, view: str) -> list[tuple[str, str, int, int]]:
        """(video_id, shard, row_start, row_count) of the view's done videos by video_id, all at once
        (the items_by_view index gives the order; `locations.view_locations` makes arrays of them)."""
        return self._db.execute(
            "SELECT video_id, shard, row_start, row_count FROM items WHERE view=? AND status=? ORDER BY video_id",
            (view, STATUS_DONE),
        ).fetchall()

    def fingerprint_lines(self, view: str, *, where: bool = True) -> Iterator[str]:
        """The text lines the index fingerprint hashes, one per done video by video_id, formatted by SQLite
        (a million f-strings were seconds of `index build` and of every mining run): what the rows are,
        "id\\0row_count\\0crc\\n", so `compact` moving them keeps a stored index; `where=True`, the first
        form, "id\\0shard\\0start\\0crc\\n", still read to check an index stored before."""
        none = "'None'"  # what Python's f-string writes for NULL
        columns = ("video_id", "shard", "row_start", "checksum") if where else ("video_id", "row_count", "checksum")
        line = " || char(0) || ".join(f"coalesce({c}, {none})" for c in columns)
        for (text,) in self._db.execute(
            f"SELECT {line} || char(10) FROM items WHERE view=? AND status=? ORDER BY video_id", (view, STATUS_DONE)
        ):
            yield text

    def fingerprint_rows(self, view: str) -> Iterator[tuple[str, str, int, int]]:
        """(video_id, shard, row_start, checksum) of the view's done videos by video_id, streamed."""
        yield from self._db.execute(
            "SELECT video_id, shard, row_start, checksum FROM items WHERE view=? AND status=? ORDER BY video_id",
            (view, STATUS_DONE),
        )

    def count(self, table: str) -> int:
        """Rows of `entries`, `runs` or `shards`."""
        if table not in ("entries", "runs", "shards"):
            raise ValueError(f"no table {table!r} to count")
        return int(self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def shard_bytes(self) -> int:
        return int(self._db.execute("SELECT coalesce(sum(bytes), 0) FROM shards").fetchone()[0])

    def items_of(self, view: str, video_ids: Sequence[str], *, status: str | None = None) -> list[Item]:
        """The items of these videos in `view` (those that exist), by primary key in blocks: a search's
        k hits without reading a million items."""
        where = " AND status=?" if status is not None else ""
        query = f"SELECT {_ITEM_COLUMNS} FROM items WHERE view=?{where} AND video_id IN ({{}})"
        return [Item(*row) for row in self._by_ids(query, [view] + ([status] if status is not None else []), video_ids)]

    def item(self, video_id: str, view: str) -> Item | None:
        row = self._db.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE video_id=? AND view=?", (video_id, view)
        ).fetchone()
        return Item(*row) if row else None

    def record_shard(
        self, *, name: str, n_rows: int, n_videos: int, size_bytes: int, run_id: str | None, items: list[Item]
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO shards VALUES(?, ?, ?, ?, ?, ?)",
                (name, now_iso(), n_videos, n_rows, size_bytes, run_id),
            )
            db.executemany(
                f"INSERT OR REPLACE INTO items({_ITEM_COLUMNS}) VALUES({', '.join('?' * 12)})",
                [_stored(i) for i in items],
            )
            fault_point("catalog-commit", self.path)

    def move_items(
        self,
        *,
        name: str,
        n_rows: int,
        n_videos: int,
        size_bytes: int,
        run_id: str | None,
        places: list[tuple[str, str, int, int, int]],
    ) -> None:
        """`record_shard` for done items whose rows were copied, unchanged, into shard `name` (compact):
        in one transaction the shard's record and, per (video_id, view, row_start, row_count, checksum),
        an UPDATE of the item's shard, row_start, checksum and updated_at only. Its status, row count,
        sources and info stay as they are (the rows are the same ones; compact wrote the same values
        into the shard's index). INSERT OR REPLACE of the whole item cost 39-46 us per item (a delete
        and an insert in every index, the count triggers on both rows): 40 s of a 1M-video compact;
        this UPDATE touches one index (items_by_shard), 2.5x less. Raises, recording nothing, unless
        each item is there, done and with that many rows (compact holds the extract lock: never)."""
        stamp = now_iso()
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO shards VALUES(?, ?, ?, ?, ?, ?)",
                (name, stamp, n_videos, n_rows, size_bytes, run_id),
            )
            moved = db.executemany(
                "UPDATE items SET shard=?, row_start=?, checksum=?, updated_at=? "
                "WHERE video_id=? AND view=? AND status=? AND row_count=?",
                [(name, start, crc, stamp, video_id, view, STATUS_DONE, count)
                 for video_id, view, start, count, crc in places],
            ).rowcount  # fmt: skip
            if moved != len(places):
                raise RuntimeError(f"catalog: {len(places) - moved} of {len(places)} moved items changed meanwhile")
            fault_point("catalog-commit", self.path)

    def record_items(self, items: list[Item]) -> None:
        with self.transaction() as db:
            db.executemany(
                f"INSERT OR REPLACE INTO items({_ITEM_COLUMNS}) VALUES({', '.join('?' * 12)})",
                [_stored(i) for i in items],
            )

    def shard_names(self) -> set[str]:
        return {name for (name,) in self._db.execute("SELECT name FROM shards")}

    def shards(self) -> list[dict]:
        cursor = self._db.execute("SELECT name, created_at, n_videos, n_rows, bytes, run_id FROM shards ORDER BY name")
        keys = ("name", "created_at", "n_videos", "n_rows", "bytes", "run_id")
        return [dict(zip(keys, row, strict=True)) for row in cursor]

    def forget_shard(self, name: str) -> list[str]:
        """Drop a shard and mark its items not extracted; return the affected video ids."""
        with self.transaction() as db:
            affected = [v for (v,) in db.execute("SELECT video_id FROM items WHERE shard=?", (name,))]
            db.execute("DELETE FROM items WHERE shard=? AND status=?", (name, STATUS_DONE))
            db.execute("DELETE FROM shards WHERE name=?", (name,))
        return affected

    def forget_items(self, pairs: list[tuple[str, str, str | None]]) -> None:
        """Drop the done records of these (video_id, view, shard): the next extract redoes exactly them
        (their rows stay in the shard, unreachable, until `compact`)."""
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM items WHERE video_id=? AND view=? AND shard IS ? AND status=?",
                [(video_id, view, shard, STATUS_DONE) for video_id, view, shard in pairs],
            )

    # sources: the content hash of each video's file when it was extracted (see cache/sources.py) ----
    def source_digests(self) -> dict[str, tuple[int, int, str]]:
        """{video_id: (size, mtime_ns, digest)}; empty for a catalog made before they were recorded."""
        try:
            rows = self._db.execute("SELECT video_id, size, mtime_ns, digest FROM sources").fetchall()
        except sqlite3.OperationalError:  # no such table: an older catalog opened read-only
            return {}
        return {v: (int(z), int(m), str(d)) for v, z, m, d in rows}

    def record_sources(self, rows: list[tuple[str, int, int, str]]) -> None:
        """Record (video_id, size, mtime_ns, digest) of sources about to be extracted."""
        if rows:
            with self.transaction() as db:
                db.executemany("INSERT OR REPLACE INTO sources VALUES(?, ?, ?, ?)", rows)

    def restamp_sources(self, restamp: dict[str, tuple[int, int, int, str]]) -> None:
        """Sources only `touch`ed, {video_id: (size, old mtime_ns, new mtime_ns, digest)}: the records made
        from the old stamp take the new one, so the next run matches them by size and mtime alone."""
        if not restamp:
            return
        with self.transaction() as db:
            for video_id, (size, old_ns, mtime_ns, digest) in restamp.items():
                db.execute(
                    "UPDATE items SET source_mtime_ns=? WHERE video_id=? AND source_size=? AND source_mtime_ns=?",
                    (mtime_ns, video_id, size, old_ns),
                )
                db.execute("INSERT OR REPLACE INTO sources VALUES(?, ?, ?, ?)", (video_id, size, mtime_ns, digest))

    # runs ----------------------------------------------------------------------------------------
    def start_run(self, run_id: str, *, command: str, config_json: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO runs VALUES(?, ?, NULL, ?, ?, NULL)", (run_id, now_iso(), command, config_json))

    def finish_run(self, run_id: str, summary: dict) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at=?, summary_json=? WHERE run_id=?",
                (now_iso(), json.dumps(summary, sort_keys=True), run_id),
            )

    def runs(self) -> list[dict]:
        cursor = self._db.execute(
            "SELECT run_id, started_at, finished_at, command, config_json, summary_json FROM runs ORDER BY started_at"
        )
        keys = ("run_id", "started_at", "finished_at", "command", "config_json", "summary_json")
        return [dict(zip(keys, row, strict=True)) for row in cursor]
