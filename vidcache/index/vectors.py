"""One L2-normalised vector per video of a view: the unit every index and miner works on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..cache.reader import Cache
from ..config import check_choice
from ..errors import ConfigError

Pooling = Literal["mean", "max", "first", "middle"]
# float64 scratch per normalised block: 1 MiB stays in cache (256 rows at D = 512: 7x faster than
# 65,536 rows, 4.8 s -> ~1 s at 1M; the same operations on each row, so the same bits)
_NORMALISE_BYTES = 1 << 20


@dataclass
class VideoVectors:
    """`vectors[i]` is the unit vector of `video_ids[i]`; ids are sorted, so row order (the
    tie-break of every ranking) is the order of video ids."""

    video_ids: list[str]
    vectors: np.ndarray  # [N, D] float32, unit L2 norm (zero vectors stay zero)
    view: str
    pooling: str

    def __len__(self) -> int:
        return len(self.video_ids)


def pool_rows(rows: np.ndarray, pooling: str) -> np.ndarray:
    """Rows [T, D] of one video → [D] float64 (`mean`, `max`, `first` or `middle` row)."""
    rows = np.asarray(rows, dtype=np.float64)
    if pooling == "mean":
        return rows.mean(axis=0)
    if pooling == "max":
        return rows.max(axis=0)
    if pooling == "first":
        return rows[0]
    return rows[(len(rows) - 1) // 2]


def normalise(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise in float64, return float32; an all-zero vector stays zero (scores 0 with all)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def check_embedding_view(cache: Cache, view: str) -> None:
    """A one-line error unless `view` is in the cache and holds embeddings (not fields)."""
    if view not in cache.views():
        raise ConfigError(f"view {view!r} is not in cache {cache.path}; views: {', '.join(cache.views()) or 'none'}")
    if cache.view_info(view).get("row_shape"):  # rows are arrays (flow fields), not embeddings
        raise ConfigError(
            f"the {view!r} view holds fields (rows of shape {cache.view_info(view)['row_shape']}), not embeddings; "
            "index an embedding or descriptor view instead (e.g. motion for flow)"
        )


def _normalise_in_place(pooled: np.ndarray) -> np.ndarray:
    """`normalise` of float32 `pooled`, written over it in blocks (no float64 copy of every vector)."""
    block = max(1, _NORMALISE_BYTES // max(1, pooled.shape[1] * 8))
    for lo in range(0, len(pooled), block):
        pooled[lo : lo + block] = normalise(pooled[lo : lo + block])
    return pooled


def iter_unit_means(cache: Cache, view: str) -> Iterator[tuple[list[str], np.ndarray]]:
    """(video ids, unit mean vectors float32) per shard of `view`, in storage order: for each video the
    numbers `video_vectors(pooling="mean")` gives it, without every video's vector in memory at once."""
    from ..cache.pooled import iter_pooled

    check_embedding_view(cache, view)
    for ids, means in iter_pooled(cache, view):
        yield ids, _normalise_in_place(np.require(means, np.float32, ["C", "W"]))


def video_vectors(
    cache: Cache, view: str, *, pooling: str = "mean", video_ids: list[str] | None = None, batch_size: int = 1024
) -> VideoVectors:
    """Pool each video's rows of `view` and L2-normalise; streams the cache in batches."""
    check_choice("--pooling", pooling, Pooling)
    check_embedding_view(cache, view)
    ids = sorted(cache.video_ids(view)) if video_ids is None else list(video_ids)
    if not ids:
        raise ConfigError(f"cache {cache.path} has no extracted {view!r} rows to index")
    if pooling == "mean":  # the shards' stored means: one read per shard, never every row in memory
        from ..cache.pooled import pooled_means

        pooled, found = pooled_means(cache, view, ids)
        if not found.all():
            missing = ids[int(np.flatnonzero(~found)[0])]
            raise KeyError(f"{missing!r} has no extracted {view!r} rows in {cache.path}")
        return VideoVectors(ids, _normalise_in_place(pooled), view, pooling)
    out: list[np.ndarray] = []
    for batch in cache.iter_batches(view, batch_size=batch_size, video_ids=ids):
        out.extend(pool_rows(rows, pooling) if len(rows) else None for rows in batch.features)  # type: ignore[misc]
    dim = next((len(v) for v in out if v is not None), 0)
    pooled = np.stack([v if v is not None else np.zeros(dim) for v in out])
    return VideoVectors(ids, normalise(pooled), view, pooling)
