"""Where a view's rows sit, as arrays: one SQL query, no object per video (issue 29).

A million `_Location` dataclasses (plus a checked `Item` each) cost `train` tens of seconds before
it read a single row; these tables hold the same facts in five NumPy arrays, and a split, a block or
a batch turns positions into `_Location`s only for the videos it is about to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .reader import Cache, _damaged_catalog, _Location

MISSING = -1  # shard index of a video without done rows of the view


@dataclass(frozen=True)
class LocationTable:
    """Per video of `video_ids` (in that order): its shard (an index into `shards`, MISSING when it has
    no done rows), first row and row count."""

    video_ids: Sequence[str]
    shards: list[str]  # sorted: shard index order is shard name order
    shard: np.ndarray  # [N] int32
    row_start: np.ndarray  # [N] int64
    row_count: np.ndarray  # [N] int64

    def __len__(self) -> int:
        return len(self.video_ids)

    @property
    def present(self) -> np.ndarray:
        return self.shard != MISSING

    def location(self, i: int) -> _Location | None:
        s = int(self.shard[i])
        if s == MISSING:
            return None
        return _Location(self.video_ids[i], self.shards[s], int(self.row_start[i]), int(self.row_count[i]))

    def locations(self, positions: Sequence[int] | np.ndarray) -> list[_Location | None]:
        return [self.location(int(i)) for i in positions]

    def at(self, positions: Sequence[int] | np.ndarray) -> LocationTable:
        """The table of the videos at `positions`, in that order."""
        index = np.asarray(positions, dtype=np.int64)
        ids = [self.video_ids[int(i)] for i in index]
        return LocationTable(ids, self.shards, self.shard[index], self.row_start[index], self.row_count[index])

    def storage_order(self) -> np.ndarray:
        """Positions sorted by (shard, row_start); videos without rows last, in their own order."""
        shard = np.where(self.present, self.shard, len(self.shards))
        start = np.where(self.present, self.row_start, 0)
        return np.lexsort((np.arange(len(self)), start, shard))


@dataclass(frozen=True)
class ViewLocations:
    """Every done video of one view, sorted by id (`ids` a NumPy unicode array for searchsorted)."""

    view: str
    ids: np.ndarray  # [M] str, sorted
    table: LocationTable

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, video_ids: Sequence[str]) -> LocationTable:
        """The locations of `video_ids` in that order; videos the view lacks are MISSING."""
        want = np.asarray(video_ids, dtype=self.ids.dtype if len(self.ids) else None)
        if not len(self.ids) or not len(want):
            zeros = np.zeros(len(want), np.int64)
            return LocationTable(video_ids, self.table.shards, np.full(len(want), MISSING, np.int32), zeros, zeros)
        at = np.minimum(np.searchsorted(self.ids, want), len(self.ids) - 1)
        found = self.ids[at] == np.asarray(video_ids, dtype=object)  # exact, not numpy's NUL-trimmed compare
        t = self.table
        shard = np.where(found, t.shard[at], MISSING).astype(np.int32)
        starts, counts = np.where(found, t.row_start[at], 0), np.where(found, t.row_count[at], 0)
        return LocationTable(video_ids, t.shards, shard, starts, counts)


def view_locations(cache: Cache, view: str) -> ViewLocations:
    """The done videos of `view` from one SQL query, checked as `_checked_location` checks one item:
    a damaged catalog (an id that is not text, a number that is not a non-negative integer, an empty
    shard name) is the damaged-catalog error, not a wrong read later."""
    rows = cache._catalog.done_location_columns(view)
    ids, shards, starts, counts = (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [])
    path = cache._catalog.path

    def damaged(what: str):
        return _damaged_catalog(path, f"view {view}: {what}")

    if set(map(type, ids)) - {str}:
        raise damaged("a video id that is not text")
    names = sorted(set(shards), key=lambda s: (not isinstance(s, str), str(s)))
    if any(not isinstance(s, str) or not s for s in names):
        raise damaged(f"shard {next(s for s in names if not isinstance(s, str) or not s)!r}")
    if set(map(type, starts)) - {int} or set(map(type, counts)) - {int}:
        raise damaged("a row start or count that is not an integer")
    row_start, row_count = np.array(starts, np.int64), np.array(counts, np.int64)
    if (row_start < 0).any() or (row_count < 0).any():
        raise damaged("a negative row start or count")
    id_array = np.array(ids, dtype=str)
    if len(ids) > 1 and not (id_array[1:] > id_array[:-1]).all():  # SQLite's order is code-point order;
        order = np.argsort(id_array, kind="stable")  # re-sort rather than trust a damaged index
        id_array, row_start, row_count = id_array[order], row_start[order], row_count[order]
        shards = [shards[i] for i in order]
        if len(id_array) > 1 and not (id_array[1:] > id_array[:-1]).all():
            raise damaged("a video id listed twice")
    number = {name: i for i, name in enumerate(names)}
    shard = np.array([number[s] for s in shards], np.int32)
    return ViewLocations(view, id_array, LocationTable(id_array.tolist(), names, shard, row_start, row_count))
