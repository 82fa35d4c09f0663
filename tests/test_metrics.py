"""vidcache.heads.metrics against scikit-learn and independent plain-Python references."""

from __future__ import annotations

import heapq
import json
import math
import random
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, top_k_accuracy_score

from vidcache.heads import metrics
from vidcache.heads.metrics import (
    average_precision,
    evaluate,
    f1_scores,
    gap_at_k,
    map_macro,
    map_micro,
    per_class_ap,
    retrieval_recall_at_k,
    topk_accuracy,
    tune_thresholds,
)


def _multilabel(rng: np.random.Generator, n: int, c: int, *, ties: bool, empty: tuple[int, ...] = ()):
    """Random multi-hot labels with some all-negative classes, and scores correlated with them."""
    y = (rng.random((n, c)) < 0.3).astype(np.int64)
    y[:, list(empty)] = 0
    s = np.clip(0.35 * y + rng.random((n, c)) * 0.7, 0.0, 1.0)
    return y, (np.round(s, 1) if ties else s)


@pytest.fixture(params=[False, True], ids=["continuous", "ties"])
def ties(request) -> bool:
    return request.param


# ------------------------------------------------------------------------------------------ average precision


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_matches_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    y, s = _multilabel(rng, 60, 1, ties=ties)
    y[0, 0] = 1
    assert average_precision(y[:, 0], s[:, 0]) == pytest.approx(average_precision_score(y[:, 0], s[:, 0]), abs=1e-12)
    # float32 scores rank the same way
    s32 = s[:, 0].astype(np.float32)
    assert average_precision(y[:, 0], s32) == pytest.approx(average_precision_score(y[:, 0], s32), abs=1e-12)


def test_average_precision_all_tied_and_edge_cases():
    y = np.array([1, 0, 1, 0, 0])
    assert average_precision(y, np.full(5, 0.3)) == pytest.approx(0.4)  # one group: precision 2/5, recall 1
    assert average_precision(y, np.full(5, 0.3)) == pytest.approx(average_precision_score(y, np.full(5, 0.3)))
    assert math.isnan(average_precision(np.zeros(4, dtype=int), np.arange(4.0)))
    assert average_precision(np.array([1]), np.array([0.2])) == 1.0  # a single sample
    assert math.isnan(average_precision(np.array([0]), np.array([0.2])))
    with pytest.raises(ValueError):
        average_precision(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError):
        average_precision(np.array([0, 1]), np.array([0.1, np.nan]))


@pytest.mark.parametrize("seed", range(3))
def test_per_class_and_map_match_sklearn(seed, ties, monkeypatch):
    rng = np.random.default_rng(seed)
    y, s = _multilabel(rng, 50, 9, ties=ties, empty=(2, 7))
    expected = np.array([average_precision_score(y[:, c], s[:, c]) if y[:, c].any() else np.nan for c in range(9)])
    got = per_class_ap(y, s)
    assert np.isnan(got[[2, 7]]).all()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12, equal_nan=True)
    assert map_macro(y, s) == pytest.approx(np.nanmean(expected), abs=1e-12)
    assert map_micro(y, s) == pytest.approx(average_precision_score(y, s, average="micro"), abs=1e-12)
    # column blocking gives the same numbers
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 7)
    np.testing.assert_array_equal(per_class_ap(y, s), got)


def test_map_single_sample_and_no_positive():
    y, s = np.array([[1, 0, 1]]), np.array([[0.2, 0.9, 0.2]])
    np.testing.assert_array_equal(per_class_ap(y, s), [1.0, np.nan, 1.0])
    assert map_macro(y, s) == 1.0
    assert map_micro(y, s) == pytest.approx(average_precision_score(y.ravel(), s.ravel()))
    z = np.zeros((3, 2), dtype=int)
    assert math.isnan(map_macro(z, np.ones((3, 2)))) and math.isnan(map_micro(z, np.ones((3, 2))))


# --------------------------------------------------------------------------------------------------------- GAP


def _yt8m_gap(predictions: np.ndarray, actuals: np.ndarray, top_k: int = 20) -> float:
    """Plain-Python port of google/youtube-8m eval_util.calculate_gap (top_k_by_class / top_k_triplets,
    flatten) feeding AveragePrecisionCalculator() (accumulate into a heap, peek_ap_at_n -> ap_at_n, n=None,
    seeded shuffle, stable reverse sort)."""
    num_classes = predictions.shape[1]
    k = min(top_k, num_classes)
    triplets = []
    for video in range(predictions.shape[0]):
        indices = np.argpartition(predictions[video], -k)[-k:]
        triplets.extend((i, predictions[video][i], actuals[video][i]) for i in indices)
    by_class_p = [[] for _ in range(num_classes)]
    by_class_l = [[] for _ in range(num_classes)]
    for cls, p, lab in triplets:
        by_class_p[cls].append(p)
        by_class_l[cls].append(lab)
    num_positives = sum(np.sum(actuals[:, i]) for i in range(num_classes))
    flat_p = [x for sub in by_class_p for x in sub]
    flat_l = [x for sub in by_class_l for x in sub]
    heap: list = []
    for p, lab in zip(flat_p, flat_l, strict=True):
        heapq.heappush(heap, (p, lab))
    if not heap:
        return 0.0
    preds, acts = np.array(list(zip(*heap, strict=True)))
    shuffled = random.Random(0).sample(range(len(preds)), len(preds))
    preds, acts = preds[shuffled], acts[shuffled]
    order = sorted(range(len(preds)), key=lambda i: preds[i], reverse=True)
    if num_positives == 0:
        return 0.0
    ap, poscount, delta_recall = 0.0, 0.0, 1.0 / num_positives
    for i in range(len(order)):
        if acts[order[i]] > 0:
            poscount += 1
            ap += poscount / (i + 1) * delta_recall
    return ap


def _documented_order_gap(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The same pooling with the documented deterministic order: per video the k best by (score desc, class
    asc), pooled video by video with classes ascending, then Python's stable sorted(reverse=True)."""
    pool = []
    for video in range(scores.shape[0]):
        kept = sorted(range(scores.shape[1]), key=lambda c, v=video: (-scores[v, c], c))[:k]
        pool.extend((scores[video, c], labels[video, c]) for c in sorted(kept))
    pool = sorted(pool, key=lambda pair: pair[0], reverse=True)
    total, hits, ap = int(labels.sum()), 0, 0.0
    for i, (_, lab) in enumerate(pool):
        if lab:
            hits += 1
            ap += hits / (i + 1) / total
    return ap


def test_gap_hand_example():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]])
    labels = np.array([[1, 1, 0], [0, 0, 1]])
    # k=2 keeps 0.9(+) 0.5(-) | 0.8(-) 0.7(+); pooled 0.9+ 0.8- 0.7+ 0.5-; 3 positives in all (one not kept)
    assert gap_at_k(labels, scores, k=2) == pytest.approx((1 / 1 + 2 / 3) / 3)
    # k >= C keeps everything: the plain AP of the flattened arrays
    assert gap_at_k(labels, scores, k=20) == pytest.approx(average_precision_score(labels.ravel(), scores.ravel()))
    # documented tie order: equal scores rank by video index, so a positive in a later video ranks second
    tied = np.array([[0.5], [0.5]])
    assert gap_at_k(np.array([[0], [1]]), tied, k=1) == pytest.approx(0.5)
    assert gap_at_k(np.array([[1], [0]]), tied, k=1) == pytest.approx(1.0)
    # a tie at the k-th score keeps the lower class index
    assert gap_at_k(np.array([[0, 1]]), np.array([[0.4, 0.4]]), k=1) == 0.0
    assert gap_at_k(np.array([[1, 0]]), np.array([[0.4, 0.4]]), k=1) == 1.0
    assert math.isnan(gap_at_k(np.zeros((2, 3)), scores, k=2))
    with pytest.raises(ValueError):
        gap_at_k(labels, scores, k=0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 3, 20])
def test_gap_matches_youtube8m_reference(seed, k, monkeypatch):
    rng = np.random.default_rng(seed)
    labels, scores = _multilabel(rng, 40, 12, ties=False, empty=(5,))
    expected = _yt8m_gap(scores, labels, top_k=k)  # no ties: the reference's shuffle cannot matter
    assert gap_at_k(labels, scores, k=k) == pytest.approx(expected, abs=1e-12)
    assert gap_at_k(labels, scores, k=k) == pytest.approx(_documented_order_gap(scores, labels, k), abs=1e-12)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 25)  # row blocks of 2 videos
    assert gap_at_k(labels, scores, k=k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 4])
def test_gap_with_ties_follows_documented_order(seed, k):
    rng = np.random.default_rng(seed)
    labels, scores = _multilabel(rng, 30, 6, ties=True)
    assert gap_at_k(labels, scores, k=k) == pytest.approx(_documented_order_gap(scores, labels, k), abs=1e-12)
    assert gap_at_k(labels[:1], scores[:1], k=k) == pytest.approx(
        _documented_order_gap(scores[:1], labels[:1], k), abs=1e-12
    )


# ---------------------------------------------------------------------------------------------------------- F1


@pytest.mark.parametrize("seed", range(4))
def test_f1_scores_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((30, 8)) < 0.3).astype(int)
    p = (rng.random((30, 8)) < 0.3).astype(int)
    y[:, [1, 6]] = 0
    p[:, 6] = 0  # class 6: no positive, nothing predicted -> left out of macro
    p[:, 3] = 0  # class 3: positives, nothing predicted -> F1 0, included
    got = f1_scores(y, p)
    assert got["f1_micro"] == pytest.approx(f1_score(y, p, average="micro", zero_division=0), abs=1e-12)
    included = [c for c in range(8) if y[:, c].any() or p[:, c].any()]
    assert 6 not in included and (1 in included) == bool(p[:, 1].any())
    assert got["f1_macro"] == pytest.approx(
        f1_score(y[:, included], p[:, included], average="macro", zero_division=0), abs=1e-12
    )


def test_f1_edge_cases():
    assert f1_scores(np.array([[1, 0]]), np.array([[1, 0]])) == {"f1_micro": 1.0, "f1_macro": 1.0}
    nothing = f1_scores(np.zeros((3, 2)), np.zeros((3, 2)))
    assert nothing["f1_micro"] == 0.0 and math.isnan(nothing["f1_macro"])
    one_class = f1_scores(np.array([1, 0, 1]), np.array([1, 1, 0]))
    assert one_class["f1_micro"] == pytest.approx(f1_score([1, 0, 1], [1, 1, 0]))


# ---------------------------------------------------------------------------------------------------- thresholds


def _f1_exact(y: np.ndarray, pred: np.ndarray) -> Fraction:
    tp = int((y & pred).sum())
    denom = int(y.sum()) + int(pred.sum())
    return Fraction(2 * tp, denom) if denom else Fraction(0)


@pytest.mark.parametrize("seed", range(4))
def test_tune_thresholds_is_the_brute_force_best(seed, ties):
    rng = np.random.default_rng(seed)
    y, s = _multilabel(rng, 40, 7, ties=ties, empty=(4,))
    y = y.astype(bool)
    thresholds = tune_thresholds(y, s)
    assert thresholds.shape == (7,) and thresholds.dtype == np.float64
    assert thresholds[4] == 0.5
    for c in range(7):
        if c == 4:
            continue
        candidates = np.unique(s[:, c])
        best_f1, best_t = max((_f1_exact(y[:, c], s[:, c] >= t), t) for t in candidates)  # ties -> higher t
        assert thresholds[c] == best_t
        tuned_pred = s[:, c] >= thresholds[c]
        assert f1_score(y[:, c], tuned_pred, zero_division=0) == pytest.approx(float(best_f1), abs=1e-12)
        assert best_f1 >= _f1_exact(y[:, c], s[:, c] >= 0.5)
    tuned = f1_scores(y, s >= thresholds)
    at_half = f1_scores(y, s >= 0.5)
    assert tuned["f1_macro"] >= at_half["f1_macro"] - 1e-12


def test_tune_thresholds_ties_prefer_higher_threshold():
    # thresholds 0.9 -> F1 2/3 (1 of 2 positives, 1 predicted); 0.2 -> 2*2/(2+4) = 2/3 as well: keep 0.9
    y = np.array([[1], [1], [0], [0]])
    s = np.array([[0.9], [0.2], [0.2], [0.2]])
    assert tune_thresholds(y, s)[0] == 0.9
    assert tune_thresholds(np.array([[1]]), np.array([[0.1]]))[0] == 0.1  # a single sample
    np.testing.assert_array_equal(tune_thresholds(np.zeros((0, 3)), np.zeros((0, 3))), [0.5, 0.5, 0.5])


# ------------------------------------------------------------------------------------------------ top-k accuracy


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [1, 2, 5])
def test_topk_accuracy_matches_sklearn(seed, k, ties):
    rng = np.random.default_rng(seed)
    n, c = 50, 6
    labels = rng.integers(0, c, n)
    scores = rng.random((n, c))
    scores[np.arange(n), labels] += 0.2
    if ties:
        scores = np.round(scores, 1)
    expected = top_k_accuracy_score(labels, scores, k=k, labels=np.arange(c))
    assert topk_accuracy(labels, scores, k=k) == pytest.approx(expected, abs=1e-12)


def test_topk_accuracy_edge_cases():
    # sklearn's tie order: the higher class index ranks first
    tied = np.array([[0.5, 0.5, 0.1]])
    assert topk_accuracy(np.array([1]), tied, k=1) == 1.0
    assert topk_accuracy(np.array([0]), tied, k=1) == 0.0
    assert top_k_accuracy_score([0], tied, k=1, labels=[0, 1, 2]) == 0.0
    assert topk_accuracy(np.array([2]), tied, k=3) == 1.0  # k >= C
    assert topk_accuracy(np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]), k=1) == 0.5  # two classes
    assert math.isnan(topk_accuracy(np.zeros(0, dtype=int), np.zeros((0, 3)), k=1))
    with pytest.raises(ValueError):
        topk_accuracy(np.array([3]), tied, k=1)


# ----------------------------------------------------------------------------------------------------- retrieval


def _brute_force_recall(q, q_labels, g, g_labels, ks):
    hits = dict.fromkeys(ks, 0)
    counted = 0
    for i in range(len(q)):
        if not q_labels[i]:
            continue
        counted += 1
        sims = [float(np.dot(q[i], g[j]) / (np.linalg.norm(q[i]) * np.linalg.norm(g[j]))) for j in range(len(g))]
        order = sorted(range(len(g)), key=lambda j: (-sims[j], j))
        for k in ks:
            hits[k] += any(q_labels[i] & g_labels[j] for j in order[:k])
    return {f"recall_at_{k}": hits[k] / counted for k in ks}


def test_retrieval_known_answer():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    gallery_labels = [{"a"}, {"b"}, {"b"}, {"a", "c"}]
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    query_labels = [{"b"}, {"a"}, {"a"}, set(), {"d"}]
    # q0: order g0 g2 g1 g3 (g0/g2 tie -> lower index first): first "b" at rank 2 -> miss@1, hit@5
    # q1: order g1 g0 g2 g3: first "a" (g0) at rank 2 -> miss@1, hit@5;  q2: g0 first -> hit@1
    # q3: no label -> skipped;  q4: "d" is nowhere in the gallery -> miss everywhere
    expected = {"recall_at_1": 1 / 4, "recall_at_5": 3 / 4, "recall_at_10": 3 / 4}
    assert retrieval_recall_at_k(queries, query_labels, gallery, gallery_labels) == expected
    assert _brute_force_recall(queries, query_labels, gallery, gallery_labels, (1, 5, 10)) == expected
    vocab = ["a", "b", "c", "d"]
    hot_q = np.array([[lab in labs for lab in vocab] for labs in query_labels], dtype=int)
    hot_g = np.array([[lab in labs for lab in vocab] for labs in gallery_labels], dtype=int)
    assert retrieval_recall_at_k(queries, hot_q, gallery, hot_g) == expected
    assert retrieval_recall_at_k(queries, query_labels, gallery, gallery_labels, ks=(2,)) == {"recall_at_2": 3 / 4}
    none = retrieval_recall_at_k(queries, [set()] * 5, gallery, gallery_labels)
    assert all(math.isnan(v) for v in none.values())


def _exact_directions(rng: np.random.Generator, n: int, d: int = 6) -> np.ndarray:
    """Rows with one +-1 or four +-1 entries: unit-normalised values are exact dyadics, so every cosine is
    computed exactly whatever the summation order, and ties are real ties."""
    out = np.zeros((n, d))
    for row in out:
        picked = rng.choice(d, size=rng.choice([1, 4]), replace=False)
        row[picked] = rng.choice([-1.0, 1.0], size=len(picked))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_retrieval_matches_brute_force(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n_classes = 5
    g = _exact_directions(rng, 60)
    q = _exact_directions(rng, 25)
    g_labels = [set(rng.choice(n_classes, size=rng.integers(0, 3), replace=False).tolist()) for _ in range(60)]
    q_labels = [set(rng.choice(n_classes, size=rng.integers(0, 3), replace=False).tolist()) for _ in range(25)]
    ks = (1, 3, 5, 10)
    expected = _brute_force_recall(q, q_labels, g, g_labels, ks)
    assert retrieval_recall_at_k(q, q_labels, g, g_labels, ks=ks) == expected
    assert retrieval_recall_at_k(q, q_labels, g, g_labels, ks=ks, block_size=4) == expected
    assert retrieval_recall_at_k(q.astype(np.float32), q_labels, g.astype(np.float32), g_labels, ks=ks) == expected
    monkeypatch.setattr(metrics, "_RETRIEVAL_BLOCK_ELEMENTS", 130)  # gallery of 60 -> 2 queries per block
    assert retrieval_recall_at_k(q, q_labels, g, g_labels, ks=ks) == expected
    # continuous embeddings, single labels given as plain ints
    gq, gg = rng.normal(size=(20, 8)), rng.normal(size=(50, 8))
    lq, lg = rng.integers(0, 4, 20), rng.integers(0, 4, 50)
    got = retrieval_recall_at_k(gq, list(lq), gg, list(lg), ks=ks)
    assert got == _brute_force_recall(gq, [{x} for x in lq.tolist()], gg, [{x} for x in lg.tolist()], ks)


# ------------------------------------------------------------------------------------------------------ evaluate


def test_evaluate_multi_label():
    rng = np.random.default_rng(7)
    y, s = _multilabel(rng, 40, 6, ties=True, empty=(3,))
    thresholds = tune_thresholds(y, s)
    out = evaluate(y, s, multi_label=True, thresholds=thresholds)
    assert list(out) == [
        "map_macro",
        "map_micro",
        "gap_at_20",
        "f1_micro",
        "f1_macro",
        "f1_micro_tuned",
        "f1_macro_tuned",
    ]
    assert all(type(v) is float and not math.isnan(v) for v in out.values())
    json.dumps(out)
    assert out["map_macro"] == map_macro(y, s) and out["gap_at_20"] == gap_at_k(y, s, k=20)
    assert out["f1_macro"] == f1_scores(y, s >= 0.5)["f1_macro"]
    assert out["f1_macro_tuned"] >= out["f1_macro"]
    assert "f1_micro_tuned" not in evaluate(y, s, multi_label=True)


def test_evaluate_single_label():
    rng = np.random.default_rng(3)
    n, c = 40, 7
    labels = rng.integers(0, c, n)
    scores = np.round(rng.random((n, c)), 1)
    out = evaluate(labels, scores, multi_label=False)
    assert list(out) == ["top1", "top5", "map_macro", "map_micro", "f1_micro", "f1_macro"]
    assert all(type(v) is float for v in out.values())
    json.dumps(out)
    assert out["top1"] == pytest.approx(top_k_accuracy_score(labels, scores, k=1, labels=np.arange(c)))
    assert out["top5"] == pytest.approx(top_k_accuracy_score(labels, scores, k=5, labels=np.arange(c)))
    assert out["f1_micro"] == out["top1"]
    pred = c - 1 - np.argmax(scores[:, ::-1], axis=1)  # ties -> highest index, as top1
    assert out["f1_macro"] == pytest.approx(f1_score(labels, pred, average="macro", zero_division=0), abs=1e-12)
    one_hot = np.eye(c, dtype=int)[labels]
    assert evaluate(one_hot, scores, multi_label=False) == out
    assert out["map_micro"] == pytest.approx(average_precision_score(one_hot, scores, average="micro"))
    small = evaluate(np.array([0, 1]), np.array([[0.9, 0.1, 0.0], [0.3, 0.6, 0.1]]), multi_label=False)
    assert small["top1"] == 1.0 and small["top5"] == 1.0
    with pytest.raises(ValueError):
        evaluate(labels, scores, multi_label=False, thresholds=np.full(c, 0.5))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("elements", [7, 40, 1 << 24])
def test_retrieval_over_gallery_tiles_matches_brute_force(seed, elements, monkeypatch):
    """The gallery read in tiles with a running top max(k) per query (tiles of a few items here, so every
    merge path runs: lists not yet full, ties at the list's last score across tiles, a gallery smaller
    than k, multi-label and single-label galleries) against the brute force."""
    monkeypatch.setattr(metrics, "_RETRIEVAL_BLOCK_ELEMENTS", elements)
    rng = np.random.default_rng(100 + seed)
    n_gallery = int(rng.choice([3, 9, 47]))
    g, q = _exact_directions(rng, n_gallery), _exact_directions(rng, 30)
    multi = seed % 2 == 0
    sizes = (0, 3) if multi else (0, 2)
    g_labels = [set(rng.choice(4, size=rng.integers(*sizes), replace=False).tolist()) for _ in range(n_gallery)]
    q_labels = [set(rng.choice(4, size=rng.integers(0, 3), replace=False).tolist()) for _ in range(30)]
    ks = (1, 2, 5, 10)
    expected = _brute_force_recall(q, q_labels, g, g_labels, ks)
    assert retrieval_recall_at_k(q, q_labels, g, g_labels, ks=ks, block_size=int(rng.integers(1, 8))) == expected


@pytest.mark.parametrize("n_gallery", [16385, 16387, 32770])
def test_retrieval_an_exact_duplicate_later_in_the_gallery_never_outranks(n_gallery):
    """A gallery item's exact duplicate at the end of a big gallery (one item past a tile): the two score
    the same for every query, so the earlier one ranks first. A tile of one item went through another BLAS
    kernel and rounded the duplicate above it (recall@1 0.55 instead of 1)."""
    rng = np.random.default_rng(7)
    g = rng.standard_normal((n_gallery, 512)).astype(np.float32)
    g[-1] = g[0]
    q = g[0] + 0.01 * rng.standard_normal((64, 512)).astype(np.float32)
    query_labels, gallery_labels = np.ones((64, 1), bool), np.zeros((n_gallery, 1), bool)
    gallery_labels[0] = True
    assert retrieval_recall_at_k(q, query_labels, g, gallery_labels, ks=(1,)) == {"recall_at_1": 1.0}
    zero = retrieval_recall_at_k(np.zeros((8, 512)), query_labels[:8], g, gallery_labels, ks=(1, 5))
    assert zero == {"recall_at_1": 1.0, "recall_at_5": 1.0}  # every score 0: the lowest item, item 0, first
