"""Every video's k nearest other videos through an IVF index's lists, as a self-join: each list's
members are scored against all the videos that probe that list in one float32 matrix product (BLAS),
a running top-(k + slack) is kept per video, and the kept candidates are re-scored in float64 and
ordered (score desc, row asc) like `knn.search`.

Why: `mine neighbours` / `mine hard-negative-videos` at a million videos searched the IVF-SQ8 index
once per video (a Python step per query, SQ8 codes scanned one vector at a time) and did not finish in
10 minutes; the join does the same comparisons as matrix products on the exact vectors.
With `nprobe == nlist` every video probes every list and the result is exact (`knn.brute_force`, the
twin in tests/test_ivfjoin.py). Exclusions (the video itself, videos sharing a label, its group) are
applied as arrays before ranking, so no candidate list ever runs short.

Two sweeps over the lists: each video against its own list first (every score partitioned), then
against the other lists it probes, where only the members scoring above its worst kept score are
looked at (about 1.5 % of the scores at 1M-like list sizes): the matrix products are then most of
the work (`_join_list`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .knn import rank_block

SCORE_BYTES = 64 << 20  # one block of float32 scores (queries probing a list x its members)
SLACK = 8  # candidates kept beyond k per video, re-ranked in float64 at the end
MERGE_WIDTHS = np.array([8, 32, 128, 512])  # queries with up to 8, 32, ... new candidates are merged apart


@dataclass(frozen=True)
class Exclusions:
    """Which (query, candidate) pairs may not pair, as arrays over the database rows: always the row
    itself; with `label_bits` ([N, W] uint64 bitsets of each video's labels) rows sharing a label; with
    `groups` ([N] int64) rows of the same group."""

    label_bits: np.ndarray | None = None
    groups: np.ndarray | None = None

    @classmethod
    def of(cls, labels: list[list[str]] | None = None, groups: list[str] | None = None) -> Exclusions:
        bits = None
        if labels is not None:
            vocabulary = {name: i for i, name in enumerate(sorted({n for names in labels for n in names}))}
            bits = np.zeros((len(labels), max(1, -(-len(vocabulary) // 64))), np.uint64)
            for row, names in enumerate(labels):
                for name in names:
                    word, bit = divmod(vocabulary[name], 64)
                    bits[row, word] |= np.uint64(1) << np.uint64(bit)
        group_ids = None
        if groups is not None:
            _, group_ids = np.unique(np.asarray(groups, dtype=object), return_inverse=True)
        return cls(bits, group_ids)

    def words(self) -> int:
        return 0 if self.label_bits is None else self.label_bits.shape[1]

    def mask(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """[len(queries), len(candidates)] True where the pair is excluded."""
        out = queries[:, None] == candidates[None, :]
        if self.label_bits is not None:  # word by word: no [queries, candidates, words] temporary
            for word in range(self.label_bits.shape[1]):
                mine, theirs = self.label_bits[queries, word], self.label_bits[candidates, word]
                out |= (mine[:, None] & theirs[None, :]) != 0
        if self.groups is not None:
            out |= self.groups[queries][:, None] == self.groups[candidates][None, :]
        return out

    def pairs(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """[len(queries)] True where the pair (queries[i], candidates[i]) is excluded: `mask` on a list
        of pairs, for the few candidates that beat a query's running top."""
        out = queries == candidates
        if self.label_bits is not None:
            for word in range(self.label_bits.shape[1]):
                out |= (self.label_bits[queries, word] & self.label_bits[candidates, word]) != 0
        if self.groups is not None:
            out |= self.groups[queries] == self.groups[candidates]
        return out


def ivf_of(index):
    """The IVF part of an index (also one loaded memory-mapped), None for flat and HNSW."""
    try:
        import faiss

        return faiss.extract_index_ivf(index)
    except (RuntimeError, AttributeError, TypeError):
        return None


def list_groups(ivf, data: np.ndarray, nprobe: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(members, probing videos) of each list of `ivf`, in list order: a video is a member of its
    nearest list (by `ivf.quantizer`) and probes its `nprobe` nearest lists."""
    n, probes = len(data), max(1, min(int(nprobe), ivf.nlist))
    lists = np.empty((n, probes), np.int64)
    for lo in range(0, n, 65536):
        block = np.ascontiguousarray(data[lo : lo + 65536], np.float32)
        _, lists[lo : lo + 65536] = ivf.quantizer.search(block, probes)
    members = np.argsort(lists[:, 0], kind="stable")
    member_bounds = np.searchsorted(lists[members, 0], np.arange(ivf.nlist + 1))
    probing = np.argsort(lists.ravel(), kind="stable") // probes  # the videos probing each list, by list
    probe_bounds = np.searchsorted(np.sort(lists.ravel()), np.arange(ivf.nlist + 1))
    for lst in range(ivf.nlist):
        yield (
            members[member_bounds[lst] : member_bounds[lst + 1]],
            probing[probe_bounds[lst] : probe_bounds[lst + 1]],
        )


def ivf_join_topk(
    ivf,
    data: np.ndarray,
    k: int,
    *,
    nprobe: int,
    exclusions: Exclusions | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, k] float64, rows [N, k] int64) of each row of `data` (unit vectors, the rows the
    index holds) against the others, padded with (nan, -1): each video is compared with the members
    of its `nprobe` nearest lists (by `ivf.quantizer`); members are grouped by their nearest list."""
    exclusions = exclusions or Exclusions()
    n, keep = len(data), k + SLACK
    best_scores = np.full((n, keep), -np.inf, np.float32)
    best_rows = np.full((n, keep), -1, np.int64)
    groups = list(list_groups(ivf, data, nprobe))
    # each video's own list first (its members: the nearest candidates, most of its top), so that the
    # other lists it probes only add the few members that beat what it holds (`_join_list`)
    for inside, _ in groups:
        if len(inside):
            _join_list(data, inside, inside, inside, exclusions, best_scores, best_rows)
    for inside, queries in groups:
        visitors = np.setdiff1d(queries, inside, assume_unique=True)  # probing from another list
        if len(inside) and len(visitors):
            _join_list(data, inside, visitors, visitors, exclusions, best_scores, best_rows)
        if progress is not None:
            progress(len(inside))
    return _finish(data, np.arange(n), best_rows, k)


def exact_topk(
    data: np.ndarray, query_rows: np.ndarray, k: int, *, exclusions: Exclusions | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The exact twin for a sample of rows: (scores [Q, k], rows [Q, k]) of `data[query_rows]` against
    every row, in blocks of the database (no copy of `data`, which may be a memory-mapped 2 GiB; a
    FAISS flat index of it was one), with the same exclusions and ordering as `ivf_join_topk`."""
    exclusions = exclusions or Exclusions()
    query_rows = np.asarray(query_rows, np.int64)
    best_scores = np.full((len(query_rows), k + SLACK), -np.inf, np.float32)
    best_rows = np.full((len(query_rows), k + SLACK), -1, np.int64)
    positions = np.arange(len(query_rows))
    # database blocks small enough that every query is scored in one product: 78 queries x 65,536 rows
    # at a time ran at 60 % of the GEMM speed of 1,000 x 5,000
    rows = int(np.clip(SCORE_BYTES // (13 * max(1, len(query_rows))), 1024, 65536))
    for lo in range(0, len(data), rows):
        block = np.arange(lo, min(len(data), lo + rows))
        _join_list(data, block, query_rows, positions, exclusions, best_scores, best_rows)
    return _finish(data, query_rows, best_rows, k)


def _join_list(data, inside, queries, positions, exclusions, best_scores, best_rows) -> None:
    """Score the rows `queries` against the rows `inside` and merge each query's best into the running
    top (`best_*[positions]`, unordered, -inf / -1 in empty slots; `positions` distinct).

    A query whose running top is full only takes candidates scoring above its worst kept score: one
    comparison over its scores finds them (a handful of a list's members once a query has seen a list
    or two), and exclusions are checked on those pairs alone. Only queries with empty slots (their
    first list) pay the dense path: exclusion masks and a partition of every score. Each query keeps
    the `keep` best float32 scores either way (ties at the cut aside), and `_finish` re-ranks them."""
    # [members, D] as gathered; `@ base.T` hands BLAS the transpose flag (a transposed copy cost 8 ns a
    # value: 0.27 s per 65,536 rows)
    base = np.asarray(data[inside], np.float32)
    per_query = len(inside) * (4 + 8 + 1)  # float32 scores, one word of label bits, the mask
    step = max(1, SCORE_BYTES // per_query)
    for lo in range(0, len(queries), step):
        chunk, at = queries[lo : lo + step], positions[lo : lo + step]
        scores = _product(np.asarray(data[chunk], np.float32), base.T)
        floor = best_scores[at].min(axis=1)  # the worst kept score; -inf while a slot is empty
        open_ = floor == -np.inf
        if open_.any():
            rows = np.flatnonzero(open_)
            _merge_dense(scores[rows], chunk[rows], at[rows], inside, exclusions, best_scores, best_rows)
        if not open_.all():
            _merge_above(scores, np.where(open_, np.inf, floor), chunk, at, inside, exclusions, best_scores, best_rows)


SMALL_PRODUCT = 1 << 24  # multiply-adds below which one BLAS thread is faster than two
_blas = None


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a @ b`, on one BLAS thread when small: a 98 x 512 x 98 product took 0.15 ms on one thread and
    0.2 ms on two on a quiet machine, 0.8 ms on two beside another process (the second thread waits
    for a core), and the join at 100k videos makes two thousand of them."""
    global _blas
    if a.shape[0] * a.shape[1] * b.shape[1] >= SMALL_PRODUCT:
        return a @ b
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    with _blas.limit(limits=1, user_api="blas"):
        return a @ b


def _merge_dense(scores, chunk, at, inside, exclusions, best_scores, best_rows) -> None:
    """Every score of the block, excluded pairs masked, partitioned to each query's best `keep`."""
    keep = best_scores.shape[1]
    scores[exclusions.mask(chunk, inside)] = -np.inf
    take = min(keep, len(inside))
    cut = len(inside) - take  # the `take` largest sit right of `cut` (no negated copy of the block)
    top = np.argpartition(scores, cut, axis=1)[:, cut:] if take < len(inside) else None
    new_scores = scores if top is None else np.take_along_axis(scores, top, axis=1)
    new_rows = np.broadcast_to(inside, scores.shape) if top is None else inside[top]
    new_rows = np.where(np.isfinite(new_scores), new_rows, -1)
    merged_scores = np.concatenate([best_scores[at], new_scores], axis=1)
    merged_rows = np.concatenate([best_rows[at], new_rows], axis=1)
    pick = np.argpartition(merged_scores, take, axis=1)[:, take:]  # the `keep` largest of keep + take
    best_scores[at] = np.take_along_axis(merged_scores, pick, axis=1)
    best_rows[at] = np.take_along_axis(merged_rows, pick, axis=1)


def _merge_above(scores, floor, chunk, at, inside, exclusions, best_scores, best_rows) -> None:
    """The (query, candidate) pairs scoring above the query's `floor` (its worst kept score; +inf for
    queries left alone), exclusions checked per pair, merged into full running tops."""
    keep = best_scores.shape[1]
    flat = np.flatnonzero(scores > floor[:, None])  # by query (a 2-D nonzero costs five times more)
    qi, ci = np.divmod(flat, scores.shape[1])
    allowed = ~exclusions.pairs(chunk[qi], inside[ci])
    qi, ci = qi[allowed], ci[allowed]
    if len(qi) == 0:
        return
    starts = np.concatenate([[0], np.flatnonzero(np.diff(qi)) + 1])
    counts = np.diff(np.append(starts, len(qi)))
    touched = qi[starts]
    owner = np.repeat(np.arange(len(touched)), counts)  # each pair's index in `touched`
    new_scores, new_rows = scores[qi, ci], inside[ci]
    # per touched query, its `keep` held entries and its new pairs in one row padded with -inf, the
    # best `keep` partitioned out; queries in classes by how many new pairs they have (from one to
    # most of a list's members), so the padding stays within 4x the pairs
    size_class = np.searchsorted(MERGE_WIDTHS, counts)
    for cls in np.unique(size_class):
        part = size_class == cls
        rows = np.flatnonzero(part)
        width = keep + int(counts[rows].max())
        padded_scores = np.full((len(rows), width), -np.inf, np.float32)
        padded_rows = np.full((len(rows), width), -1, np.int64)
        targets = at[touched[rows]]
        padded_scores[:, :keep], padded_rows[:, :keep] = best_scores[targets], best_rows[targets]
        pairs = np.flatnonzero(part[owner])
        line = (np.cumsum(part) - 1)[owner[pairs]]  # the pair's row in the padded block
        column = keep + pairs - starts[owner[pairs]]
        padded_scores[line, column], padded_rows[line, column] = new_scores[pairs], new_rows[pairs]
        pick = np.argpartition(padded_scores, width - keep, axis=1)[:, width - keep :]
        best_scores[targets] = np.take_along_axis(padded_scores, pick, axis=1)
        best_rows[targets] = np.take_along_axis(padded_rows, pick, axis=1)


def _finish(data: np.ndarray, query_rows: np.ndarray, best_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The kept candidates re-scored in float64, ordered (score desc, row asc), cut to k."""
    n = len(best_rows)
    scores_out = np.full((n, k), np.nan)
    rows_out = np.full((n, k), -1, np.int64)
    for lo in range(0, n, 16384):
        found = best_rows[lo : lo + 16384]
        scores, rows = rank_block(data[query_rows[lo : lo + 16384]], data, found)
        scores, rows = scores[:, :k], rows[:, :k]
        valid = rows >= 0
        rows_out[lo : lo + 16384][valid] = rows[valid]
        scores_out[lo : lo + 16384][valid] = scores[valid]
    return scores_out, rows_out
