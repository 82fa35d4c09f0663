"""A per-view change counter kept by SQLite triggers on `items`, so "has this view changed since the
index was built?" is one row read instead of a hash over every item (issue 29: `search` with a stored
index at 1M videos; the full fingerprint took 2.2 s of it).

Every INSERT, UPDATE or DELETE of an item, by any writer (this vidcache, an older one, a hand-written
statement), adds one to its view's `generation`. A state token is the catalog's own random id (so a
catalog moved away and extracted again never repeats a token) with that count; equal tokens mean no
item of the view was written in between. A catalog made before the table existed gets it (and its id)
the first time a writer opens it; until then `state` is None and callers compare full fingerprints.
"""

from __future__ import annotations

import sqlite3
import uuid

from .counts import immediate, sql_statements

TABLE = "view_changes"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE}(view TEXT PRIMARY KEY, generation INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS {TABLE}_insert AFTER INSERT ON items BEGIN
    INSERT INTO {TABLE} VALUES(NEW.view, 1) ON CONFLICT(view) DO UPDATE SET generation = generation + 1;
END;
CREATE TRIGGER IF NOT EXISTS {TABLE}_update AFTER UPDATE ON items BEGIN
    INSERT INTO {TABLE} VALUES(NEW.view, 1) ON CONFLICT(view) DO UPDATE SET generation = generation + 1;
    INSERT INTO {TABLE} VALUES(OLD.view, 1) ON CONFLICT(view) DO UPDATE SET generation = generation + 1;
END;
CREATE TRIGGER IF NOT EXISTS {TABLE}_delete AFTER DELETE ON items BEGIN
    INSERT INTO {TABLE} VALUES(OLD.view, 1) ON CONFLICT(view) DO UPDATE SET generation = generation + 1;
END;
"""


def ensure_changes(db: sqlite3.Connection) -> None:
    """Create the table, its triggers and the catalog's id when missing (a writer's open; idempotent).
    The id goes in with the triggers in one transaction, so a token never predates its counting."""
    if _has_table(db):
        return
    with immediate(db):
        if not _has_table(db):  # another writer may have made it while this one waited
            db.execute("INSERT OR REPLACE INTO meta VALUES('catalog_id', ?)", (uuid.uuid4().hex,))
            for statement in sql_statements(SCHEMA):  # not executescript: it would COMMIT first
                db.execute(statement)


def state(db: sqlite3.Connection, view: str) -> str | None:
    """ "CATALOG_ID:GENERATION" of one view (one indexed read), None for a catalog without the counter."""
    if not _has_table(db):
        return None
    row = db.execute("SELECT value FROM meta WHERE key='catalog_id'").fetchone()
    if row is None:
        return None
    (generation,) = db.execute(f"SELECT coalesce(max(generation), 0) FROM {TABLE} WHERE view=?", (view,)).fetchone()
    return f"{row[0]}:{generation}"


def _has_table(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone() is not None
