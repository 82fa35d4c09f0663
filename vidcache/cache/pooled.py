"""Video-level mean rows ("pooled vectors") of a view, read shard by shard in storage order.

Shards written since issue 29 carry `/<view>/pooled_mean` (each video's mean row, float64 sums of the
stored values, saved as float32), so a million videos' vectors are one sequential read per shard, not
eight million rows. Shards written earlier (and shards another tool wrote) do not: their means are
computed here from the rows, one shard at a time, in a single large read per shard (never all rows
in memory). Both give the same numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import h5py
import numpy as np

from .locations import MISSING, LocationTable
from .reader import Cache
from .shard import POOLED_DATASET

_ROWS_PER_READ = 1 << 16  # rows of one fallback read: 64 MiB at 512 float16 values


def _located(cache: Cache, view: str) -> Iterator[tuple[str, list[tuple[str, int, int]]]]:
    """(shard, [(video_id, row_start, row_count)]) of the view's done videos, in storage order,
    straight from SQLite (no Item object per video)."""
    cursor = cache._catalog.done_locations(view)
    for shard, rows in itertools.groupby(cursor, key=lambda r: r[0]):
        yield shard, [(video_id, start, count) for _, video_id, start, count in rows]


def _stored_means(group: h5py.Group, starts: np.ndarray) -> np.ndarray | None:
    """The shard's pooled means of the videos starting at `starts`, None when it has none for them
    (an older shard) or its index does not line up with the catalog."""
    if POOLED_DATASET not in group:
        return None
    index_starts = group["row_start"][()]
    position = np.searchsorted(index_starts, starts)
    if (position >= len(index_starts)).any() or not np.array_equal(index_starts[position], starts):
        return None
    pooled = group[POOLED_DATASET]
    if pooled.shape[0] != len(index_starts):
        return None
    lo, hi = int(position.min(initial=0)), int(position.max(initial=-1)) + 1  # a block: read its span only
    if hi <= lo:
        return np.zeros((0, pooled.shape[1]), np.float32)
    span = pooled[lo:hi]
    in_order = len(position) == hi - lo and bool((np.diff(position) == 1).all())  # every video, in order
    return span if in_order else span[position - lo]


def _computed_means(group: h5py.Group, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Means of the rows themselves, read in large contiguous blocks of the shard."""
    features = group["features"]
    out = np.zeros((len(starts), features.shape[1]), np.float32)
    i = 0
    while i < len(starts):
        j = i + 1  # the videos whose rows fit one read
        while j < len(starts) and starts[j] + counts[j] - starts[i] <= _ROWS_PER_READ:
            j += 1
        lo, hi = int(starts[i]), int(starts[j - 1] + counts[j - 1])
        block = features[lo:hi].astype(np.float64)
        for v in range(i, j):
            if counts[v]:
                a = starts[v] - lo
                out[v] = block[a : a + counts[v]].sum(axis=0) / counts[v]
        i = j
    return out


def _shard_means(cache: Cache, shard: str, view: str, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean rows of the videos at `starts` in one shard: stored beside the rows, or computed from them."""
    group = cache._files.get(shard)[view]
    try:
        means = _stored_means(group, starts)
        return means if means is not None else _computed_means(group, starts, counts)
    except Exception as exc:  # h5py's many error types for a damaged shard
        raise cache._files._damaged(shard, view, int(starts[0]), int((starts + counts).max()), repr(exc)) from None


def iter_pooled(cache: Cache, view: str) -> Iterator[tuple[list[str], np.ndarray]]:
    """(video_ids, mean rows [n, D] float32) per shard of `view`, in storage order."""
    for shard, located in _located(cache, view):
        ids = [video_id for video_id, _, _ in located]
        starts = np.array([start for _, start, _ in located], np.int64)
        counts = np.array([count for _, _, count in located], np.int64)
        yield ids, _shard_means(cache, shard, view, starts, counts)


def pooled_means(cache: Cache, view: str, video_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean rows [len(video_ids), D] float32 of the given videos, in that order, and a bool mask of
    the ones that have rows of `view` (the others are zeros)."""
    from .locations import view_locations

    return pooled_means_at(cache, view, view_locations(cache, view).take(video_ids))


def pooled_means_at(cache: Cache, view: str, table: LocationTable) -> tuple[np.ndarray, np.ndarray]:
    """`pooled_means` for videos already located (`locations.view_locations(...).take(ids)`): no
    catalog query and no dict of ids; one read of each touched shard's means."""
    found = table.present.copy()
    out: np.ndarray | None = None
    order = np.lexsort((table.row_start, table.shard))  # by shard, then row: the fallback reads in order
    order = order[table.shard[order] != MISSING]
    bounds = np.flatnonzero(np.diff(table.shard[order])) + 1
    for chunk in np.split(order, bounds) if len(order) else []:
        shard = table.shards[int(table.shard[chunk[0]])]
        starts, counts = table.row_start[chunk], table.row_count[chunk]
        means = _shard_means(cache, shard, view, starts, counts)
        if out is None:
            out = np.zeros((len(table), means.shape[1]), np.float32)
        out[chunk] = means
    return (out if out is not None else np.zeros((len(table), 0), np.float32)), found
