"""Near-duplicate videos: groups of videos whose pooled, L2-normalised embeddings have a cosine
similarity of at least `threshold`, as NeMo Curator's semantic dedup and clip-retrieval's dedup find
them, so that one video per group can be kept.

Candidate pairs come from each video's `max_neighbours` nearest videos (the index `mine neighbours`
uses: a stored one, else Flat up to 50k videos; an IVF index as a self-join of its lists), kept
when their float64 cosine is >= threshold (`duplicate_pairs`);
groups are the connected components of those pairs (scipy.sparse.csgraph). With a Flat index and
groups of at most `max_neighbours + 1` videos this equals the exact all-pairs result. Each group's
representative (the one to keep) is its most central member: the largest summed cosine to the
other members (ties: the smaller video_id).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from ..cache.reader import Cache
from ..errors import ConfigError
from . import knn
from .build import cache_fingerprint
from .ivfjoin import ivf_of, list_groups
from .mining import MiningSummary, Progress, video_searcher
from .vectors import VideoVectors

if TYPE_CHECKING:  # pandas costs 0.6 s to import: only the functions that build frames load it
    import pandas as pd

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
    import pandas as pd

    return pd.DataFrame(
        {
            "group_id": group[rows].astype(np.int64),
            "video_id": ids[rows],
            "similarity": similarity,
            "representative": rows == reps,
        }
    )


DUPLICATE_PROBES = 2  # IVF lists each video is compared with: its own and the next nearest
QUERY_BLOCK = 8192  # videos searched at once through a non-IVF index
MARGIN_QUERIES = 1024  # videos of the first block whose every candidate is re-scored to measure the margin
GEMM_MARGIN = 1e-4  # float32 products of unit vectors are within this of the float64 cosine (D ≤ 4096)
SCORE_BYTES = 64 << 20  # float32 similarity block of one IVF list


def _rescore(data: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """float64 cosine of each pair of unit rows, gathered in chunks (never a [pairs, D] float64 copy of all)."""
    out = np.empty(len(left), np.float64)
    step = max(1, (32 << 20) // (16 * max(1, data.shape[1])))
    for lo in range(0, len(left), step):
        a = np.asarray(data[left[lo : lo + step]], np.float64)
        b = np.asarray(data[right[lo : lo + step]], np.float64)
        out[lo : lo + step] = np.einsum("ij,ij->i", a, b)
    return out


def _top_k_per_video(left: np.ndarray, right: np.ndarray, score: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Mask of the pairs kept: each left video's k best (score desc, right asc), and how many left
    videos had k or more (saturated: they may have more duplicates than were kept)."""
    order = np.lexsort((right, -score, left))
    first = np.searchsorted(left[order], left[order], side="left")
    rank = np.arange(len(order)) - first
    keep = np.zeros(len(left), bool)
    keep[order[rank < k]] = True
    return keep, int((np.bincount(left, minlength=1) >= k).sum()) if len(left) else 0


def _ivf_join_pairs(ivf, data: np.ndarray, k: int, threshold: float, progress: Progress | None):
    """Pairs by an IVF self-join: each video against the members of its `DUPLICATE_PROBES` nearest
    lists, one float32 matrix product per list (BLAS), candidates within `GEMM_MARGIN` re-scored in
    float64. Both directions of a pair are looked for, so a pair split across two lists is found
    when either video probes the other's list."""
    lefts, rights = [], []
    for inside, queries in list_groups(ivf, data, DUPLICATE_PROBES):
        if not len(inside) or not len(queries):
            continue
        base = np.asarray(data[inside], np.float32)
        step = max(1, SCORE_BYTES // (4 * len(inside)))
        for lo in range(0, len(queries), step):
            chunk = queries[lo : lo + step]
            scores = np.asarray(data[chunk], np.float32) @ base.T
            q, c = np.nonzero(scores >= threshold - GEMM_MARGIN)
            other = chunk[q] != inside[c]
            lefts.append(chunk[q][other])
            rights.append(inside[c][other])
        if progress is not None:
            progress(len(inside))
    left = np.concatenate(lefts) if lefts else np.zeros(0, np.int64)
    right = np.concatenate(rights) if rights else np.zeros(0, np.int64)
    return left, right


def _index_pairs(index, data: np.ndarray, k: int, threshold: float, progress: Progress | None):
    """Pairs from each video's k nearest other videos by `index` (flat, HNSW): only candidates whose
    index score is within a measured margin of the threshold are re-scored (4 × the largest
    |index score − float64 cosine| over every candidate of the first `MARGIN_QUERIES` videos, at
    least `knn.TIE_EPS`)."""
    n = len(data)
    lefts, rights, margin = [], [], None
    for lo in range(0, n, QUERY_BLOCK):
        rows = np.arange(lo, min(n, lo + QUERY_BLOCK))
        approx, found = index.search(np.ascontiguousarray(data[rows], dtype=np.float32), min(n, k + 1))
        other = (found >= 0) & (found != rows[:, None])
        other &= np.cumsum(other, axis=1) <= k  # the index's k + 1 nearest less the video itself
        if margin is None:
            sample = other[:MARGIN_QUERIES]
            q = np.nonzero(sample)[0]
            error = np.abs(approx[:MARGIN_QUERIES][sample] - _rescore(data, rows[q], found[:MARGIN_QUERIES][sample]))
            margin = max(knn.TIE_EPS, 4 * float(error.max(initial=0.0)))
        q, c = np.nonzero(other & (approx >= threshold - margin))
        lefts.append(rows[q])
        rights.append(found[q, c])
        if progress is not None:
            progress(len(rows))
    concat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    return concat(lefts), concat(rights)


def duplicate_pairs(
    index, data: np.ndarray, k: int, threshold: float, *, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """(left rows, right rows, saturated videos): for each video, its (at most k) nearest other
    videos with a float64 cosine >= threshold. An IVF index (auto above 50k videos) is used as a
    self-join of its lists (`_ivf_join_pairs`): at a million videos, a search per video through the
    lists that recall@10 needs took longer than the 10 minutes `mine duplicates` may take; other
    indexes are searched (`_index_pairs`). A video with k or more is "saturated" (it may have more)."""
    ivf = ivf_of(index)  # flat and HNSW have no lists
    find = _ivf_join_pairs if ivf is not None else _index_pairs
    left, right = find(ivf if ivf is not None else index, data, k, threshold, progress)
    exact = _rescore(data, left, right)
    close = exact >= threshold
    left, right, exact = left[close], right[close], exact[close]
    keep, saturated = _top_k_per_video(left, right, exact, k)
    return left[keep], right[keep], saturated


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
    left, right, saturated = duplicate_pairs(searcher.index, data, k, threshold, progress=progress)
    group, representatives = groups_from_pairs(data, left, right)
    frame = duplicate_table(searcher.vectors, group, representatives)
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

    import pandas as pd

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
