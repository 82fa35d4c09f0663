"""Near-duplicate videos: groups of videos whose pooled, L2-normalised embeddings have a cosine
similarity of at least `threshold`, as NeMo Curator's semantic dedup and clip-retrieval's dedup find
them, so that one video per group can be kept.

Candidate pairs come from each video's `max_neighbours` nearest videos (the index `mine neighbours`
uses: a stored one, else Flat up to 50k videos), kept when their float64 cosine is >= threshold;
groups are the connected components of those pairs (scipy.sparse.csgraph). With a Flat index and
groups of at most `max_neighbours + 1` videos this equals the exact all-pairs result. Each group's
representative (the one to keep) is its most central member: the largest summed cosine to the
other members (ties: the smaller video_id).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from ..cache.reader import Cache
from ..errors import ConfigError
from . import knn
from .build import cache_fingerprint
from .mining import MiningSummary, Progress, video_searcher
from .vectors import VideoVectors

COLUMNS = ("group_id", "video_id", "similarity", "representative")


def groups_from_pairs(vectors: np.ndarray, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group of each row, -1 for a row in no pair; representative row of each group id) from the
    duplicate pairs (left[i], right[i]); group ids are numbered by their smallest row."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vectors)
    graph = coo_matrix((np.ones(len(left), np.int8), (left, right)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    paired = np.zeros(n, bool)
    paired[left] = paired[right] = True
    rows = np.flatnonzero(paired)
    # renumber the components that have pairs 0, 1, ... in order of their first row
    _, first, inverse = np.unique(component[rows], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    group = np.full(n, -1, np.int64)
    group[rows] = order[inverse]
    representatives = np.empty(len(first), np.int64)
    members_sorted = rows[np.argsort(group[rows], kind="stable")]
    bounds = np.searchsorted(group[members_sorted], np.arange(len(first) + 1))
    for g in range(len(first)):
        members = members_sorted[bounds[g] : bounds[g + 1]]  # ascending rows = ascending video ids
        block = vectors[members].astype(np.float64)
        centrality = (block @ block.T).sum(axis=1)
        representatives[g] = members[int(np.argmax(centrality))]  # argmax: the first (smallest id) of ties
    return group, representatives


def duplicate_table(vectors: VideoVectors, group: np.ndarray, representatives: np.ndarray) -> pd.DataFrame:
    """One row per video in a group: group_id, video_id, cosine similarity to the group's
    representative (1.0 for the representative itself), representative (bool)."""
    rows = np.flatnonzero(group >= 0)
    rows = rows[np.lexsort((rows, group[rows]))]
    reps = representatives[group[rows]]
    data = vectors.vectors
    similarity = np.einsum("ij,ij->i", data[rows].astype(np.float64), data[reps].astype(np.float64))
    similarity[rows == reps] = 1.0
    ids = np.array(vectors.video_ids, dtype=object)
    return pd.DataFrame(
        {
            "group_id": group[rows].astype(np.int64),
            "video_id": ids[rows],
            "similarity": similarity,
            "representative": rows == reps,
        }
    )


def near_duplicates(
    cache: Cache,
    *,
    view: str,
    threshold: float,
    pooling: str = "mean",
    max_neighbours: int = 32,
    index_type: str = "auto",
    memory_budget_gb: float = 4.0,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, MiningSummary]:
    """Groups of near-duplicate videos of `view` (see the module docstring)."""
    if not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be a cosine similarity in [-1, 1], got {threshold}")
    if max_neighbours < 1:
        raise ConfigError(f"--max-neighbours must be >= 1, got {max_neighbours}")
    started = time.perf_counter()
    fingerprint = cache_fingerprint(cache, view)
    searcher = video_searcher(cache, view, pooling=pooling, index_type=index_type, memory_budget_gb=memory_budget_gb)
    data = searcher.vectors.vectors
    k = min(max_neighbours, max(1, len(data) - 1))
    scores, rows = knn.search(
        searcher.index,
        data,
        data,
        k,
        exclude=lambda query_row, found: found == query_row,
        query_rows=np.arange(len(data)),
        exact=searcher.exact,
        progress=progress,
    )
    close = (rows >= 0) & (scores >= threshold)
    left = np.repeat(np.arange(len(data)), k).reshape(len(data), k)[close]
    group, representatives = groups_from_pairs(data, left, rows[close])
    frame = duplicate_table(searcher.vectors, group, representatives)
    # a video whose every candidate is a duplicate may have more duplicates than were looked at
    saturated = int(close.all(axis=1).sum()) if k else 0
    summary = MiningSummary(
        name="",
        output="",
        videos=len(data),
        rows=len(frame),
        k=k,
        view=view,
        index_type=searcher.index_type,
        exact=searcher.exact,
        short_lists=saturated,
        seconds=time.perf_counter() - started,
        parameters={
            "pooling": pooling,
            "threshold": threshold,
            "max_neighbours": max_neighbours,
            "groups": len(representatives),
            "duplicates": int(len(frame) - len(representatives)),
            "saturated": saturated,
            "fingerprint": fingerprint,
        },
    )
    return frame, summary


def read_duplicates(path: str) -> pd.DataFrame:
    """A duplicates table (`.parquet` or `.csv`) as written by `mine duplicates`, checked."""
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    try:
        frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a bad file
        raise ConfigError(f"--duplicates {path} cannot be read ({type(exc).__name__}: {exc}); "
                          "give the .parquet or .csv `vidcache mine duplicates` wrote") from None  # fmt: skip
    missing = [c for c in ("group_id", "video_id", "representative") if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"--duplicates {path} has no column(s) {', '.join(missing)}; give the table `vidcache mine duplicates` "
            "wrote (group_id, video_id, similarity, representative)"
        )
    frame["representative"] = frame["representative"].astype(str).str.lower().isin(["true", "1"])
    frame["video_id"] = frame["video_id"].astype(str)
    return frame


def videos_to_drop(frame: pd.DataFrame) -> list[str]:
    """Every grouped video but its group's representative (one kept per group)."""
    return sorted(frame.loc[~frame["representative"], "video_id"].tolist())
