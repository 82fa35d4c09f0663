"""The text-query embedding memo, `CACHE/text_memo.sqlite`: the text tower's raw embedding of each prompt a
`search --text` has already sent through it, so a repeated query needs no model (and no torch).

A row is one prompt's raw `encode_text` output (float32, before any normalisation) under a `context`: an
opaque key the caller derives from everything that decides the numbers (the view's identity, the device
and precision the tower ran in, the library versions, the whole batch of prompts of that model call).
A memo hit is then the very array a fresh model call gives. Rows are only added (`INSERT OR IGNORE`, one
transaction, so two searches may write at once); beyond `MEMO_ROWS` the oldest are dropped. A memo that
cannot be read is a miss, one that cannot be written (a read-only cache) is skipped: it is only ever a
shortcut, never the only copy of anything.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from .layout import text_memo_path

__all__ = ["MEMO_ROWS", "read_text_memo", "write_text_memo"]
MEMO_ROWS = 100_000  # prompts kept (~200 MiB at D=512 in the worst case); the oldest go first
_SCHEMA = """
CREATE TABLE IF NOT EXISTS memo (
    seq INTEGER PRIMARY KEY,  -- insertion order: eviction drops the lowest
    context TEXT NOT NULL,
    prompt TEXT NOT NULL,
    vector BLOB NOT NULL,  -- float32 little-endian, the raw embedding
    UNIQUE (context, prompt)
)
"""


def read_text_memo(cache_dir: str | Path, context: str, prompts: list[str]) -> np.ndarray | None:
    """[P, D] float32 raw embeddings of `prompts` (in their order) under `context`, or None unless every
    one of them is memoised (or when the memo is missing or cannot be read)."""
    path = text_memo_path(cache_dir)
    if not prompts or not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10, isolation_level=None)
        try:
            marks = ",".join("?" * len(set(prompts)))
            found = dict(
                db.execute(
                    f"SELECT prompt, vector FROM memo WHERE context = ? AND prompt IN ({marks})",
                    (context, *set(prompts)),
                ).fetchall()
            )
        finally:
            db.close()
    except sqlite3.Error:
        return None
    if len(found) != len(set(prompts)):
        return None
    vectors = [np.frombuffer(found[p], dtype="<f4") for p in prompts]
    if len({len(v) for v in vectors}) != 1 or not len(vectors[0]):
        return None
    return np.stack(vectors).astype(np.float32)


def write_text_memo(
    cache_dir: str | Path, context: str, prompts: list[str], vectors: np.ndarray, *, max_rows: int = MEMO_ROWS
) -> bool:
    """Memoise the raw embeddings `vectors` [P, D] of `prompts` under `context` (rows already there kept),
    then drop the oldest rows beyond `max_rows`; False (and nothing written) where the cache cannot be
    written (a read-only directory or file, a full disk, a damaged memo)."""
    path = text_memo_path(cache_dir)
    rows = [
        (context, prompt, np.ascontiguousarray(vector, dtype="<f4").tobytes())
        for prompt, vector in zip(prompts, vectors, strict=True)
    ]
    try:
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            db.execute(_SCHEMA)
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR IGNORE INTO memo (context, prompt, vector) VALUES (?, ?, ?)", rows)
                db.execute("DELETE FROM memo WHERE seq <= (SELECT max(seq) FROM memo) - ?", (max_rows,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.close()
    except (sqlite3.Error, OSError):
        return False
    return True
