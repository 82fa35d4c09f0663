"""Per-view item counts kept in the catalog at write time, so `status` of 1M videos reads a few rows
instead of scanning `items` and parsing each info_json (issue 29: status <= 1 s at 1M).

`item_counts` holds one row per (view, status, counted, video stream, audio stream, decode device)
with how many items and rows fall in it; SQLite triggers on `items` keep it exact for every writer
(this vidcache, an older one, a hand-written DELETE), so no Python write path has to remember it.
An `INSERT OR REPLACE` deletes the row it replaces without firing the delete trigger (SQLite fires it
only with recursive_triggers on, which vidcache never sets), so a BEFORE INSERT trigger takes the
replaced row out. Writes to `items` must therefore be plain INSERT, INSERT OR REPLACE, UPDATE or
DELETE (an INSERT OR IGNORE or an upsert would count the kept row out).

A catalog made before the table existed gets it, filled by one GROUP BY over `items`, the first time
a writer opens it (`ensure_counts`, under the write lock); opened read-only it is counted on demand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

TABLE = "item_counts"
KEY = ("view", "status", "counted", "vstream", "astream", "device")


def _key_exprs(r: str) -> list[str]:
    """The group key of row `r` (NEW, OLD or a table alias) as SQL: the same expressions as
    `Catalog.source_counts` computes on demand; json_valid first, so a damaged info_json counts as
    "?" / cpu instead of failing the write."""
    info = f"CASE WHEN json_valid({r}.info_json) THEN {r}.info_json END"
    counted = (
        f"({r}.status = 'done' AND json_extract({info}, '$.imported_from') IS NULL "
        f"AND json_extract({info}, '$.feature_file') IS NULL)"
    )
    stream = "CASE WHEN {c} THEN coalesce(CAST(json_extract({i}, '$.{k}') AS TEXT), '?') ELSE '' END"
    device = (
        f"CASE WHEN {counted} THEN coalesce(json_extract({info}, '$.decode_device'), 'cpu') || "
        f"CASE WHEN json_extract({info}, '$.decode_fallback') THEN ' (fallback)' ELSE '' END ELSE '' END"
    )
    return [
        f"{r}.view",
        f"{r}.status",
        f"CASE WHEN {counted} THEN 1 ELSE 0 END",
        stream.format(c=counted, i=info, k="video_stream"),
        stream.format(c=counted, i=info, k="audio_stream"),
        device,
    ]


def _match(r: str) -> str:
    return " AND ".join(f"{TABLE}.{k} IS {e}" for k, e in zip(KEY, _key_exprs(r), strict=True))


def _add(r: str) -> str:
    keys = ", ".join(_key_exprs(r))
    return (
        f"INSERT INTO {TABLE} VALUES({keys}, 1, coalesce({r}.row_count, 0)) "
        f"ON CONFLICT({', '.join(KEY)}) DO UPDATE SET n = n + 1, rows = rows + excluded.rows;"
    )


def _take(r: str) -> str:
    return f"UPDATE {TABLE} SET n = n - 1, rows = rows - coalesce({r}.row_count, 0) WHERE {_match(r)};"


_REPLACED = "(SELECT * FROM items AS o WHERE o.video_id = NEW.video_id AND o.view = NEW.view)"

# only an UPDATE that sets a column of the key or the row count can move an item between counts: compact's
# moves (shard, row_start, checksum) and restamps (source_mtime_ns) fired it for nothing, 6 s of a 1M compact
_UPDATE_COLUMNS = "view, status, row_count, info_json"
_UPDATE_TRIGGER = (
    f"CREATE TRIGGER IF NOT EXISTS {TABLE}_update AFTER UPDATE OF {_UPDATE_COLUMNS} ON items "
    f"BEGIN {_take('OLD')} {_add('NEW')} END;"
)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE}(
    view TEXT NOT NULL, status TEXT NOT NULL, counted INTEGER NOT NULL, vstream TEXT NOT NULL,
    astream TEXT NOT NULL, device TEXT NOT NULL, n INTEGER NOT NULL, rows INTEGER NOT NULL,
    PRIMARY KEY({", ".join(KEY)}));
CREATE TRIGGER IF NOT EXISTS {TABLE}_replaced BEFORE INSERT ON items BEGIN
    UPDATE {TABLE} SET n = n - 1, rows = rows - coalesce(o.row_count, 0) FROM {_REPLACED} AS o WHERE {_match("o")};
END;
CREATE TRIGGER IF NOT EXISTS {TABLE}_insert AFTER INSERT ON items BEGIN {_add("NEW")} END;
CREATE TRIGGER IF NOT EXISTS {TABLE}_delete AFTER DELETE ON items BEGIN {_take("OLD")} END;
{_UPDATE_TRIGGER}
"""

_FILL = (
    f"INSERT INTO {TABLE} SELECT {', '.join(_key_exprs('items'))}, count(*), coalesce(sum(row_count), 0) "
    "FROM items GROUP BY 1, 2, 3, 4, 5, 6"
)


def has_counts(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone() is not None


def ensure_counts(db: sqlite3.Connection) -> bool:
    """Create and fill the table and its triggers when missing (an older catalog; one pass over the
    items, in the writer's transaction so no write slips between the fill and the triggers), and give a
    catalog whose update trigger fires on every UPDATE the narrow one (the counts stay as they are: both
    keep them exact); True when the table was created now."""
    if has_counts(db) and _narrow_update_trigger(db):
        return False
    with immediate(db):
        created = not has_counts(db)  # another writer may have made it while this one waited
        if created:
            for statement in sql_statements(SCHEMA):  # not executescript: it would COMMIT first
                db.execute(statement)
            db.execute(_FILL)
        elif not _narrow_update_trigger(db):
            db.execute(f"DROP TRIGGER IF EXISTS {TABLE}_update")
            db.execute(_UPDATE_TRIGGER)
    return created


def _narrow_update_trigger(db: sqlite3.Connection) -> bool:
    (sql,) = db.execute(
        "SELECT sql FROM sqlite_master WHERE type='trigger' AND name=?", (f"{TABLE}_update",)
    ).fetchone() or ("",)
    return f"AFTER UPDATE OF {_UPDATE_COLUMNS} ON items" in (sql or "")


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[None]:
    """A write transaction on an autocommit connection: committed, or rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def sql_statements(script: str) -> list[str]:
    """SCHEMA split into statements (a trigger body holds `;`, so on the `END;` / table boundaries)."""
    out, current = [], []
    for line in script.strip().splitlines():
        current.append(line)
        text = "\n".join(current).strip()
        if sqlite3.complete_statement(text):
            out.append(text)
            current = []
    return out


def usable(db: sqlite3.Connection) -> bool:
    """The table exists and agrees with `items` in total (a count(*) of the smallest index, ~0.1 s at
    1M): otherwise (an older catalog opened read-only, a write past the triggers) callers count on demand."""
    if not has_counts(db):
        return False
    (total,) = db.execute(f"SELECT coalesce(sum(n), 0) FROM {TABLE}").fetchone()
    (items,) = db.execute("SELECT count(*) FROM items").fetchone()
    return bool(total == items)


def counted(db: sqlite3.Connection, view: str) -> list[tuple[str, int, str, str, str, int, int]]:
    """The view's count rows (status, counted, vstream, astream, device, n, rows); see `usable`."""
    return db.execute(
        f"SELECT status, counted, vstream, astream, device, n, rows FROM {TABLE} WHERE view=? AND n > 0", (view,)
    ).fetchall()


def computed(db: sqlite3.Connection, view: str) -> list[tuple[str, int, str, str, str, int, int]]:
    """The rows `counted` would give, computed now from `items` (one pass, each info_json parsed once):
    for a catalog without a usable table."""
    keys = _key_exprs("items")[1:]
    return db.execute(
        f"SELECT {', '.join(keys)}, count(*), coalesce(sum(row_count), 0) FROM items WHERE view=? "
        "GROUP BY 1, 2, 3, 4, 5",
        (view,),
    ).fetchall()
