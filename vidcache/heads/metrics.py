"""Evaluation metrics for the heads, in NumPy only (scikit-learn is used by the tests, never here).

Conventions shared by every function:

* ``y_true`` is a ``{0, 1}`` (or bool) multi-hot matrix ``[N, C]``; ``scores`` a real matrix of the same shape
  (higher = more confident). NaN scores raise ``ValueError``.
* A class without any positive has no defined average precision: it is reported as NaN by the per-class
  functions and left out of every mean. An overall metric is NaN only when nothing is left to average
  (no positive anywhere / no labelled query).
* Ties are never broken at random: each function states its order. Ranking functions that match
  scikit-learn group tied scores the way scikit-learn does.
* Work is done in blocks of rows or columns of about ``2**22`` elements, so memory stays bounded for large
  ``N x C`` inputs (except ``map_micro``, which ranks the flattened ``N * C`` scores at once).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np

__all__ = [
    "average_precision",
    "confused_pairs",
    "evaluate",
    "f1_scores",
    "gap_at_k",
    "map_macro",
    "map_micro",
    "per_class_ap",
    "retrieval_recall_at_k",
    "topk_accuracy",
    "tune_thresholds",
    "tune_thresholds_with_evidence",
]

_BLOCK_ELEMENTS = 1 << 22  # elements per working block for the column/row-blocked computations
_RETRIEVAL_BLOCK_ELEMENTS = 1 << 24  # query x gallery similarities held at once (64 MiB at float32)
DEFAULT_THRESHOLD = 0.5
# a class's threshold is tuned on val only with this many val positives and negatives; below it, one or
# two videos decide the threshold (an F1 peak at one positive's score) and predictions are nonsense
MIN_TUNING_POSITIVES = 3
MIN_TUNING_NEGATIVES = 3


# ----------------------------------------------------------------------------------------------- input checks


def _binary(y: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind not in "iuf":
        raise ValueError(f"{name} must hold 0/1 values, got dtype {a.dtype}")
    if a.size and not ((a == 0) | (a == 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return a.astype(np.bool_)


def _real(s: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(s)
    if a.dtype.kind in "biu":
        return a.astype(np.float64)
    if a.dtype.kind != "f":
        raise ValueError(f"{name} must be real numbers, got dtype {a.dtype}")
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN")
    return a


def _pair_2d(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = _binary(y_true, "y_true")
    s = _real(scores, "scores")
    if y.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"y_true and scores must both be [N, C]; got {y.shape} and {s.shape}")
    return y, s


def _column_blocks(n_rows: int, n_cols: int) -> Iterable[slice]:
    step = max(1, _BLOCK_ELEMENTS // max(n_rows, 1))
    for start in range(0, n_cols, step):
        yield slice(start, min(start + step, n_cols))


def _row_blocks(n_rows: int, n_cols: int) -> Iterable[slice]:
    step = max(1, _BLOCK_ELEMENTS // max(n_cols, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _sort_classes_desc(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns of ``[N, c]`` inputs as contiguous rows ``[c, N]`` sorted by score descending, with the mask of
    the last position of every group of tied scores. The order *inside* a tie group is unspecified: the
    callers only read values at group ends."""
    s_t = np.ascontiguousarray(s.T)
    order = np.argsort(-s_t, axis=1)
    ss = np.take_along_axis(s_t, order, axis=1)
    ys = np.take_along_axis(np.ascontiguousarray(y.T), order, axis=1)
    is_last = np.ones(ss.shape, dtype=np.bool_)
    is_last[:, :-1] = ss[:, :-1] != ss[:, 1:]
    return ss, ys, is_last


# --------------------------------------------------------------------------------------- average precision


def _ap_columns(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    n = y.shape[0]
    if n == 0:
        return np.full(y.shape[1], np.nan)
    _, ys, is_last = _sort_classes_desc(y, s)
    tp = np.cumsum(ys, axis=1, dtype=np.int64)
    # position of the last item of each item's tie group = smallest group end at or after it
    ends = np.minimum.accumulate(np.where(is_last, np.arange(n), n)[:, ::-1], axis=1)[:, ::-1]
    precision_at_group_end = np.take_along_axis(tp, ends, axis=1) / (ends + 1)
    n_pos = tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(ys, precision_at_group_end, 0.0).sum(axis=1) / n_pos
    ap[n_pos == 0] = np.nan
    return ap


def per_class_ap(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision of every class (column) of ``y_true [N, C]`` / ``scores [N, C]``, as a float64 ``[C]``.

    Per class: ``AP = sum_t (R_t - R_{t-1}) * P_t`` over the *distinct* score values ``t`` taken as
    thresholds in descending order (``P_t``, ``R_t``: precision and recall of ``score >= t``, ``R_0 = 0``),
    i.e. ``sklearn.metrics.average_precision_score``: tied scores form one group, so their internal order
    never matters. NaN for a class without any positive (scikit-learn would warn and return 0 instead).
    """
    y, s = _pair_2d(y_true, scores)
    out = np.empty(y.shape[1], dtype=np.float64)
    for cols in _column_blocks(*y.shape):
        out[cols] = _ap_columns(y[:, cols], s[:, cols])
    return out


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one class: ``y_true [N]`` in ``{0, 1}``, ``scores [N]``.

    Same definition, tie grouping and empty-class rule as :func:`per_class_ap` (equal to
    ``sklearn.metrics.average_precision_score``); NaN when ``y_true`` has no positive.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"y_true and scores must both be [N]; got {y.shape} and {s.shape}")
    return float(per_class_ap(y.reshape(-1, 1), s.reshape(-1, 1))[0])


def map_macro(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Mean of :func:`per_class_ap` over the classes with at least one positive (classes without positives
    are left out, not counted as 0). NaN when no class has a positive."""
    ap = per_class_ap(y_true, scores)
    valid = ~np.isnan(ap)
    return float(ap[valid].mean()) if valid.any() else float("nan")


def map_micro(y_true: np.ndarray, scores: np.ndarray) -> float:
    """:func:`average_precision` of the flattened ``[N * C]`` arrays (every (sample, class) pair is one
    ranked item; = ``average_precision_score(..., average="micro")``). NaN when there is no positive."""
    y, s = _pair_2d(y_true, scores)
    return float(_ap_columns(y.reshape(-1, 1), s.reshape(-1, 1))[0])


# ---------------------------------------------------------------------------------------------- YouTube-8M GAP


def _top_k_mask(s: np.ndarray, k: int) -> np.ndarray:
    """Per row, the k highest scores; ties at the boundary go to the lowest class indices."""
    n_classes = s.shape[1]
    if k >= n_classes:
        return np.ones(s.shape, dtype=np.bool_)
    kth = np.partition(s, n_classes - k, axis=1)[:, n_classes - k : n_classes - k + 1]  # k-th largest
    above = s > kth
    equal = s == kth
    need = k - above.sum(axis=1, keepdims=True)
    return above | (equal & (np.cumsum(equal, axis=1) <= need))


def gap_at_k(y_true: np.ndarray, scores: np.ndarray, *, k: int = 20) -> float:
    """Global Average Precision (YouTube-8M ``eval_util.calculate_gap`` with
    ``AveragePrecisionCalculator.ap_at_n``, ``n=None``).

    Every video (row) keeps its ``min(k, C)`` highest-scored classes; all kept ``(score, label)`` pairs of all
    videos are pooled and ranked by score descending; ``GAP = sum_i precision@i * label_i / P`` where
    ``precision@i`` is the fraction of positives among the first ``i`` pooled pairs and ``P`` is the number
    of positive labels over *all* videos and classes (kept or not), so positives outside a video's top k
    cap the score below 1.

    Ties (a deterministic order; the reference breaks them by a heap plus a ``random.seed(0)`` shuffle,
    which this does not reproduce, so with tied scores of different labels the two may differ):
    * within a video, a tie at the k-th score keeps the lowest class indices;
    * the pooled ranking is by ``(score desc, video index asc, class index asc)``: a stable sort of the
      pairs laid out video by video, classes ascending within a video.

    NaN when ``y_true`` has no positive at all (the reference returns 0 there).
    """
    y, s = _pair_2d(y_true, scores)
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    total_positives = int(y.sum())
    if total_positives == 0:
        return float("nan")
    k = min(int(k), y.shape[1])
    kept_scores, kept_labels = [], []
    for rows in _row_blocks(*y.shape):
        keep = _top_k_mask(s[rows], k)
        kept_scores.append(s[rows][keep])  # row-major: video ascending, then class ascending
        kept_labels.append(y[rows][keep])
    pooled_scores = np.concatenate(kept_scores)
    pooled_labels = np.concatenate(kept_labels)[np.argsort(-pooled_scores, kind="stable")]
    hits = np.cumsum(pooled_labels, dtype=np.int64)
    precision = hits / np.arange(1, len(hits) + 1)
    return float(precision[pooled_labels].sum() / total_positives)


# ---------------------------------------------------------------------------------------------------------- F1


def _f1_from_counts(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> dict[str, float]:
    denom_micro = 2 * int(tp.sum()) + int(fp.sum()) + int(fn.sum())
    micro = 2 * int(tp.sum()) / denom_micro if denom_micro else 0.0
    denom = 2 * tp + fp + fn
    included = denom > 0  # class has >= 1 positive or >= 1 predicted positive
    macro = float((2 * tp[included] / denom[included]).mean()) if included.any() else float("nan")
    return {"f1_micro": float(micro), "f1_macro": macro}


def _counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = (y & p).sum(axis=0, dtype=np.int64)
    fp = p.sum(axis=0, dtype=np.int64) - tp
    fn = y.sum(axis=0, dtype=np.int64) - tp
    return tp, fp, fn


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Micro and macro F1 of binary predictions ``y_pred [N, C]`` against ``y_true [N, C]`` (both ``{0, 1}``;
    ``[N]`` is read as one class).

    * ``f1_micro = 2 TP / (2 TP + FP + FN)`` with counts summed over all classes; 0 when the denominator is 0
      (nothing true, nothing predicted), as scikit-learn's ``zero_division=0``.
    * ``f1_macro``: mean of the per-class ``2 TP / (2 TP + FP + FN)`` over the classes with at least one
      positive *or* at least one predicted positive; classes with neither (F1 undefined) are left out instead
      of counting as 0. Equals ``f1_score(average="macro", zero_division=0)`` restricted to those classes (for
      single-label one-hot inputs: exactly scikit-learn's multiclass macro F1, which uses the labels present
      in ``y_true`` or ``y_pred``). NaN when no class qualifies.
    """
    y = _binary(y_true, "y_true")
    p = _binary(y_pred, "y_pred")
    if y.ndim == 1 and p.ndim == 1:
        y, p = y.reshape(-1, 1), p.reshape(-1, 1)
    if y.ndim != 2 or p.shape != y.shape:
        raise ValueError(f"y_true and y_pred must both be [N, C]; got {y.shape} and {p.shape}")
    return _f1_from_counts(*_counts(y, p))


def tune_thresholds(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per class, the threshold maximising that class's F1 on the given (validation) data; float64 ``[C]``.

    Predictions are ``scores >= threshold``. The candidates are the class's distinct scores (any other
    threshold predicts the same set as one of them, or nothing). Among thresholds of equal F1 the higher
    one wins. A class without any positive gets :data:`DEFAULT_THRESHOLD` (0.5), as does every class when
    ``N == 0``. Since the prediction set of ``scores >= 0.5`` is also reached by a candidate (or is empty),
    each class's tuned F1 is >= its F1 at 0.5 on the same data.
    """
    y, s = _pair_2d(y_true, scores)
    n, n_classes = y.shape
    out = np.full(n_classes, DEFAULT_THRESHOLD, dtype=np.float64)
    if n == 0:
        return out
    for cols in _column_blocks(n, n_classes):
        ss, ys, is_last = _sort_classes_desc(y[:, cols], s[:, cols])
        tp = np.cumsum(ys, axis=1, dtype=np.int64)
        n_pos = tp[:, -1]
        predicted = np.arange(1, n + 1)
        # F1 = 2 TP / (P + predicted): one correctly rounded division of exact integers, so equal F1 compare equal
        f1 = np.where(is_last, 2 * tp / (n_pos[:, None] + predicted), -1.0)
        best = np.argmax(f1, axis=1)  # first maximum in descending score order = highest threshold
        thresholds = ss[np.arange(ss.shape[0]), best].astype(np.float64)
        out[cols] = np.where(n_pos > 0, thresholds, DEFAULT_THRESHOLD)
    return out


def tune_thresholds_with_evidence(
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    min_positives: int = MIN_TUNING_POSITIVES,
    min_negatives: int = MIN_TUNING_NEGATIVES,
) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds [C], fell_back [C] bool): :func:`tune_thresholds` for the classes with at least
    `min_positives` positives and `min_negatives` negatives in the given (validation) data; the others
    keep :data:`DEFAULT_THRESHOLD`, the decision point of a sigmoid probability, and are flagged."""
    y, s = _pair_2d(y_true, scores)
    positives = y.sum(axis=0)
    enough = (positives >= min_positives) & (len(y) - positives >= min_negatives)
    thresholds = np.where(enough, tune_thresholds(y, s), DEFAULT_THRESHOLD)
    return thresholds.astype(np.float64), ~enough


# ---------------------------------------------------------------------------------------------- single-label


def _single_labels(labels: np.ndarray, n_classes: int) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 1-D integer array, got shape {lab.shape} dtype {lab.dtype}")
    if lab.size and (lab.min() < 0 or lab.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes})")
    return lab.astype(np.int64)


def _true_class_rank(labels: np.ndarray, s: np.ndarray) -> np.ndarray:
    """0-based rank of each row's true class when classes are ordered by (score desc, class index desc)."""
    ranks = np.empty(len(labels), dtype=np.int64)
    classes = np.arange(s.shape[1])
    for rows in _row_blocks(*s.shape):
        block, lab = s[rows], labels[rows]
        true_score = block[np.arange(len(lab)), lab][:, None]
        ranks[rows] = (block > true_score).sum(axis=1) + ((block == true_score) & (classes > lab[:, None])).sum(axis=1)
    return ranks


def topk_accuracy(labels: np.ndarray, scores: np.ndarray, *, k: int = 1) -> float:
    """Fraction of samples whose true class ``labels [N]`` (ints in ``[0, C)``) is among the ``k`` best of
    ``scores [N, C]``.

    Ties as ``sklearn.metrics.top_k_accuracy_score`` (stable ascending argsort, reversed): among equal
    scores the *higher* class index ranks first. ``k >= C`` gives 1.0. NaN for ``N == 0``.
    """
    s = _real(scores, "scores")
    if s.ndim != 2:
        raise ValueError(f"scores must be [N, C], got {s.shape}")
    lab = _single_labels(labels, s.shape[1])
    if len(lab) != s.shape[0]:
        raise ValueError(f"labels has {len(lab)} rows, scores {s.shape[0]}")
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if len(lab) == 0:
        return float("nan")
    return float((_true_class_rank(lab, s) < k).mean())


def _top1_prediction(s: np.ndarray) -> np.ndarray:
    """Best class per row under the topk_accuracy order (ties -> highest class index)."""
    return s.shape[1] - 1 - np.argmax(s[:, ::-1], axis=1)


# ------------------------------------------------------------------------------------------------- retrieval

LabelsLike = np.ndarray | Sequence[Iterable[Hashable] | Hashable | None]


def _label_sets(labels: LabelsLike, n: int, name: str) -> list[frozenset] | np.ndarray:
    if isinstance(labels, np.ndarray) and labels.ndim == 2:
        if labels.shape[0] != n:
            raise ValueError(f"{name} has {labels.shape[0]} rows, embeddings {n}")
        return _binary(labels, name)
    items = list(labels)
    if len(items) != n:
        raise ValueError(f"{name} has {len(items)} entries, embeddings {n}")
    out = []
    for item in items:
        if item is None:
            out.append(frozenset())
        elif isinstance(item, (str, bytes)) or not isinstance(item, Iterable):
            out.append(frozenset([item.item() if isinstance(item, np.generic) else item]))
        else:
            out.append(frozenset(x.item() if isinstance(x, np.generic) else x for x in item))
    return out


def _multi_hot(q_labels, g_labels) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(q_labels, np.ndarray) != isinstance(g_labels, np.ndarray):
        raise ValueError("query_labels and gallery_labels must both be multi-hot matrices or both label lists")
    if isinstance(q_labels, np.ndarray):
        if q_labels.shape[1] != g_labels.shape[1]:
            raise ValueError(f"multi-hot widths differ: {q_labels.shape[1]} vs {g_labels.shape[1]}")
        return q_labels, g_labels
    vocab: dict[Hashable, int] = {}
    for group in (q_labels, g_labels):
        for labels in group:
            for lab in labels:
                vocab.setdefault(lab, len(vocab))
    mats = []
    for group in (q_labels, g_labels):
        m = np.zeros((len(group), len(vocab)), dtype=np.bool_)
        for i, labels in enumerate(group):
            m[i, [vocab[lab] for lab in labels]] = True
        mats.append(m)
    return mats[0], mats[1]


def _unit_rows(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    x = x.astype(dtype, copy=False)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1)


def retrieval_recall_at_k(
    query_embeddings: np.ndarray,
    query_labels: LabelsLike,
    gallery_embeddings: np.ndarray,
    gallery_labels: LabelsLike,
    *,
    ks: Sequence[int] = (1, 5, 10),
    block_size: int = 1024,
) -> dict[str, float]:
    """Nearest-neighbour retrieval recall@k (CoCLR protocol): each query (test video) ranks the gallery
    (training videos) by cosine similarity; a query scores a hit at k when any of its k nearest gallery items
    shares at least one class with it. Returns ``{"recall_at_<k>": fraction of hits}`` for every k in ``ks``.

    * Labels: multi-hot ``[Q, C]`` / ``[G, C]`` matrices, or per-item label collections (a set/list of
      hashable labels, a single hashable label, or None for no label); both sides in the same form.
    * Queries without any label are skipped (left out of numerator and denominator); all recalls are NaN
      when no query has a label. Unlabelled gallery items still take ranks, but never count as hits.
    * Ordering: score descending, ties by gallery index ascending. Cosine similarity is the dot product of
      L2-normalised rows (float32, or float64 if an input is float64); an all-zero embedding has similarity 0
      to everything.
    * Memory: queries are processed in blocks of at most ``block_size`` rows and the gallery in tiles, so a
      product stays within ``2**24`` entries; each query keeps its running top ``max(ks)`` items, so the
      gallery is read once per block of queries (not once per few queries: that grew as G² at 1M videos).
    """
    q = _real(query_embeddings, "query_embeddings")
    g = _real(gallery_embeddings, "gallery_embeddings")
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"embeddings must be [Q, D] and [G, D]; got {q.shape} and {g.shape}")
    ks = [int(k) for k in ks]
    if any(k <= 0 for k in ks):
        raise ValueError(f"ks must be positive, got {ks}")
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    lq, lg = _multi_hot(
        _label_sets(query_labels, q.shape[0], "query_labels"), _label_sets(gallery_labels, g.shape[0], "gallery_labels")
    )
    labelled = np.flatnonzero(lq.any(axis=1))
    if len(labelled) == 0:
        return {f"recall_at_{k}": float("nan") for k in ks}
    n_gallery = g.shape[0]
    if n_gallery == 0:
        return {f"recall_at_{k}": 0.0 for k in ks}
    dtype = np.result_type(q.dtype, g.dtype, np.float32)
    gn = _unit_rows(g, dtype)
    lg_padded = np.concatenate([lg, np.zeros((1, lg.shape[1]), np.bool_)])  # row n_gallery: "no item"
    top = min(max(ks), n_gallery)
    step = max(1, min(block_size, _RETRIEVAL_BLOCK_ELEMENTS // max(top, 1)))
    tile = max(top, _RETRIEVAL_BLOCK_ELEMENTS // step)  # gallery items per product: the gallery is read once a block
    tile = -(-n_gallery // -(-n_gallery // tile))  # tiles of equal width: no product of a few items, which BLAS
    # computes with another kernel (a vector product rounds differently, so an exact duplicate could outrank)
    hits = dict.fromkeys(ks, 0)
    for start in range(0, len(labelled), step):
        rows = labelled[start : start + step]
        queries = _unit_rows(q[rows], dtype)
        best_scores = np.full((len(rows), top), -np.inf, dtype)
        best_items = np.full((len(rows), top), n_gallery, np.int64)
        for lo in range(0, n_gallery, tile):
            sims = queries @ gn[lo : lo + tile].T
            best_scores, best_items = _merge_top(best_scores, best_items, sims, lo, top)
        query_labels = lq[rows]
        relevant = np.stack([(query_labels & lg_padded[items]).any(axis=1) for items in best_items.T], axis=1)
        rank = np.where(relevant.any(axis=1), np.argmax(relevant, axis=1), n_gallery + max(ks))  # first relevant
        for k in ks:
            hits[k] += int((rank < k).sum())
    return {f"recall_at_{k}": hits[k] / len(labelled) for k in ks}


def _merge_top(
    best_scores: np.ndarray, best_items: np.ndarray, sims: np.ndarray, offset: int, top: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's `top` gallery items by (score descending, item ascending) once the items `offset...` of
    `sims` [b, n] join its running list. When every list is full, only items scoring above a list's last
    score can enter (an equal score has a higher item number, so it ranks after); before, each row's own
    exact top of the tile enters."""
    if np.isfinite(best_scores[:, -1]).all():
        rows, columns = np.nonzero(sims > best_scores[:, -1][:, None])
    else:
        rows, columns = _tile_top(sims, top)
    row = np.concatenate([np.repeat(np.arange(len(best_scores)), top), rows])
    score = np.concatenate([best_scores.reshape(-1), sims[rows, columns]])
    item = np.concatenate([best_items.reshape(-1), offset + columns])
    order = np.lexsort((item, -score, row))
    row, score, item = row[order], score[order], item[order]
    first = np.searchsorted(row, np.arange(len(best_scores)))
    keep = (np.arange(len(row)) - first[row]) < top
    return score[keep].reshape(-1, top), item[keep].reshape(-1, top)


def _tile_top(sims: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of each row's first min(top, n) columns of `sims` [b, n] by (score descending, column
    ascending): a partition, then, for a row whose cut falls inside a run of equal scores, the lowest
    columns of that run (a row of equal scores does not send its whole tile to the sort)."""
    t = min(top, sims.shape[1])
    part = np.argpartition(-sims, t - 1, axis=1)[:, :t]
    cut = np.take_along_axis(sims, part, axis=1).min(axis=1)
    above = np.count_nonzero(sims > cut[:, None], axis=1)
    for row in np.flatnonzero(np.count_nonzero(sims == cut[:, None], axis=1) > t - above):
        part[row] = np.concatenate(
            [np.flatnonzero(sims[row] > cut[row]), np.flatnonzero(sims[row] == cut[row])[: t - above[row]]]
        )
    return np.repeat(np.arange(len(sims)), t), part.reshape(-1)


# --------------------------------------------------------------------------------------------------- evaluate


def evaluate(
    y_true: np.ndarray, scores: np.ndarray, *, multi_label: bool, thresholds: np.ndarray | None = None
) -> dict[str, float]:
    """The metrics ``eval --json`` reports, as plain Python floats.

    * ``multi_label=True`` (``y_true [N, C]`` multi-hot, ``scores [N, C]`` probabilities): ``map_macro``,
      ``map_micro``, ``gap_at_20``, and ``f1_micro`` / ``f1_macro`` of ``scores >= 0.5``; with
      ``thresholds [C]`` (e.g. from :func:`tune_thresholds` on validation data) also ``f1_micro_tuned`` /
      ``f1_macro_tuned`` of ``scores >= thresholds``.
    * ``multi_label=False`` (``y_true`` either class indices ``[N]`` or one-hot ``[N, C]``): ``top1``,
      ``top5`` (1.0 when C <= 5), ``map_macro`` / ``map_micro`` of the one-hot labels, and ``f1_micro`` /
      ``f1_macro`` of the single best class per sample (ties -> highest class index, the same order as
      ``top1``, so ``f1_micro == top1``). ``thresholds`` must be None.

    No value is NaN when at least one class has a positive (see the individual functions for the rest).
    """
    s = _real(scores, "scores")
    if s.ndim != 2:
        raise ValueError(f"scores must be [N, C], got {s.shape}")
    if multi_label:
        y, s = _pair_2d(y_true, s)
        out = {
            "map_macro": map_macro(y, s),
            "map_micro": map_micro(y, s),
            "gap_at_20": gap_at_k(y, s, k=20),
            **f1_scores(y, s >= DEFAULT_THRESHOLD),
        }
        if thresholds is not None:
            t = _real(thresholds, "thresholds")
            if t.shape != (s.shape[1],):
                raise ValueError(f"thresholds must be [{s.shape[1]}], got {t.shape}")
            tuned = f1_scores(y, s >= t[None, :])
            out["f1_micro_tuned"] = tuned["f1_micro"]
            out["f1_macro_tuned"] = tuned["f1_macro"]
        return {key: float(v) for key, v in out.items()}

    if thresholds is not None:
        raise ValueError("thresholds apply only to multi-label evaluation")
    n, n_classes = s.shape
    y = np.asarray(y_true)
    if y.ndim == 2:
        y = _binary(y, "y_true")
        if y.shape != s.shape or not (y.sum(axis=1) == 1).all():
            raise ValueError("single-label y_true [N, C] must be one-hot with the shape of scores")
        labels = np.argmax(y, axis=1)
    else:
        labels = _single_labels(y, n_classes)
        if len(labels) != n:
            raise ValueError(f"y_true has {len(labels)} rows, scores {n}")
    one_hot = np.zeros((n, n_classes), dtype=np.bool_)
    one_hot[np.arange(n), labels] = True
    pred = np.zeros_like(one_hot)
    pred[np.arange(n), _top1_prediction(s)] = True
    out = {
        "top1": topk_accuracy(labels, s, k=1),
        "top5": topk_accuracy(labels, s, k=5),
        "map_macro": map_macro(one_hot, s),
        "map_micro": map_micro(one_hot, s),
        **f1_scores(one_hot, pred),
    }
    return {key: float(v) for key, v in out.items()}


# ----------------------------------------------------------------------------------------------- confusions
def confused_pairs(
    y_true: np.ndarray,
    scores: np.ndarray,
    *,
    multi_label: bool,
    thresholds: np.ndarray | None = None,
    vocabulary: Sequence[str],
    top: int = 20,
) -> list[dict]:
    """The most frequent (true class, wrongly predicted class) pairs, most frequent first (ties by
    class order). Single-label: the top-1 prediction against the true class. Multi-label: every
    class predicted (``scores >= thresholds``, default 0.5) that the video does not have, against
    each class it has. ``share`` = count / videos of the true class."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 2 or y.shape[1] != len(vocabulary):
        raise ValueError(f"y_true {y.shape}, scores {s.shape} and vocabulary ({len(vocabulary)}) must agree")
    n_classes = y.shape[1]
    counts = np.zeros((n_classes, n_classes), np.int64)
    if multi_label:
        limit = np.full(n_classes, DEFAULT_THRESHOLD) if thresholds is None else np.asarray(thresholds, np.float64)
        wrong = (s >= limit) & ~y
        counts += y.T.astype(np.int64) @ wrong.astype(np.int64)
    else:
        predicted = s.argmax(axis=1)
        for true_class in range(n_classes):
            rows = y[:, true_class]
            np.add.at(counts[true_class], predicted[rows], 1)
        np.fill_diagonal(counts, 0)
    support = y.sum(axis=0)
    pairs = np.argwhere(counts > 0)
    order = sorted(pairs.tolist(), key=lambda p: (-counts[p[0], p[1]], p[0], p[1]))[:top]
    return [
        {
            "true": vocabulary[a],
            "predicted": vocabulary[b],
            "count": int(counts[a, b]),
            "share": float(counts[a, b] / support[a]) if support[a] else float("nan"),
        }
        for a, b in order
    ]
