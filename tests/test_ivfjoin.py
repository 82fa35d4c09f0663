"""The IVF self-join behind `mine neighbours` / `mine hard-negative-videos` at scale, against its
brute-force twin (`knn.brute_force`: float64, the whole matrix) and against scikit-learn's exact
cosine neighbours: exact when every list is probed, with exclusions (itself, shared labels, group)
applied as arrays; at the calibrated nprobe, as good as the index's own search."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from vidcache.index import knn
from vidcache.index.ivfjoin import Exclusions, exact_topk, ivf_join_topk


def _corpus(n: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, dim))
    classes = rng.integers(0, 12, n)
    data = centres[classes] + rng.normal(size=(n, dim)) * 0.9
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    return data.astype(np.float32), classes


def _ivf(data: np.ndarray, nlist: int):
    quantizer = faiss.IndexFlatIP(data.shape[1])  # the wrapper keeps a reference to it
    ivf = faiss.IndexIVFFlat(quantizer, data.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(data)
    ivf.add(data)
    return ivf


@pytest.mark.parametrize("seed", [0, 1])
def test_probing_every_list_equals_the_brute_force_twin_with_exclusions(seed):
    data, classes = _corpus(1500, 24, seed)
    rng = np.random.default_rng(seed + 10)
    labels = [[f"c{c}"] + ([f"c{(c + 1) % 12}"] if rng.random() < 0.3 else []) for c in classes]
    labels = [names if rng.random() > 0.1 else [] for names in labels]  # some unlabelled videos
    groups = [f"g{i % 40}" for i in range(len(data))]
    ivf = _ivf(data, 16)
    cases = {
        "itself": (Exclusions(), np.eye(len(data), dtype=bool)),
        "labels+groups": (
            Exclusions.of(labels, groups),
            np.eye(len(data), dtype=bool)
            | np.array([[bool(set(a) & set(b)) for b in labels] for a in labels])
            | (np.array(groups)[:, None] == np.array(groups)[None, :]),
        ),
    }
    for name, (exclusions, mask) in cases.items():
        scores, rows = ivf_join_topk(ivf, data, 10, nprobe=ivf.nlist, exclusions=exclusions)
        want_scores, want_rows = knn.brute_force(data, data, 10, exclude_mask=mask)
        assert (rows == want_rows).all(), name
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-12)
        sample = np.array([0, 7, 500, 1499])  # the exact twin recall is measured with, on a sample
        sample_scores, sample_rows = exact_topk(data, sample, 10, exclusions=exclusions)
        assert (sample_rows == want_rows[sample]).all(), name
        np.testing.assert_allclose(sample_scores, want_scores[sample], rtol=0, atol=1e-12)


def test_more_labels_than_one_word_and_short_lists():
    """130 labels (three 64-bit words), and videos allowed fewer than k candidates (padding -1, nan)."""
    data, _ = _corpus(300, 8, 5)
    labels = [[f"l{i % 130}", f"l{(i * 7) % 130}"] for i in range(len(data))]
    labels[:290] = [["shared", *names] for names in labels[:290]]  # 290 videos share one label
    exclusions = Exclusions.of(labels)
    assert exclusions.words() == 3
    mask = np.eye(len(data), dtype=bool) | np.array([[bool(set(a) & set(b)) for b in labels] for a in labels])
    scores, rows = ivf_join_topk(_ivf(data, 4), data, 20, nprobe=4, exclusions=exclusions)
    want_scores, want_rows = knn.brute_force(data, data, 20, exclude_mask=mask)
    assert (rows == want_rows).all() and (rows[:290] == -1).any()
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-12)  # nan where both are padding


def test_at_a_few_probes_recall_matches_sklearn_neighbours():
    from sklearn.neighbors import NearestNeighbors

    data, _ = _corpus(6000, 32, 3)
    ivf = _ivf(data, 64)
    _, rows = ivf_join_topk(ivf, data, 10, nprobe=8)
    exact = NearestNeighbors(n_neighbors=11, metric="cosine", algorithm="brute").fit(data)
    _, found = exact.kneighbors(data)
    truth = np.array([[r for r in row if r != i][:10] for i, row in enumerate(found)])
    recall = knn.recall_at_k(rows, truth)
    ivf.nprobe = 8  # the index's own search at the same nprobe, the level the join must reach
    _, searched = ivf.search(data, 11)
    own = knn.recall_at_k(np.array([[r for r in row if r != i][:10] for i, row in enumerate(searched)]), truth)
    assert recall >= own - 1e-9 and recall > 0.9, (recall, own)


@pytest.mark.parametrize("widths", [[1], [1, 2, 4, 8], [10_000]])
def test_merge_classes_and_blocks_do_not_change_the_result(monkeypatch, widths):
    """The threshold merge (`_merge_above`) puts queries in classes by how many new candidates beat
    their worst kept score; any classes, and database blocks of the exact twin as small as it allows,
    give the brute force."""
    from vidcache.index import ivfjoin

    monkeypatch.setattr(ivfjoin, "MERGE_WIDTHS", np.array(widths))
    monkeypatch.setattr(ivfjoin, "SCORE_BYTES", 1 << 16)  # blocks of 1,024 rows in exact_topk, small chunks
    data, classes = _corpus(2500, 16, 7)
    labels = [[f"c{c}"] for c in classes]
    exclusions = Exclusions.of(labels)
    mask = np.eye(len(data), dtype=bool) | (classes[:, None] == classes[None, :])
    ivf = _ivf(data, 20)
    scores, rows = ivf_join_topk(ivf, data, 10, nprobe=ivf.nlist, exclusions=exclusions)
    want_scores, want_rows = knn.brute_force(data, data, 10, exclude_mask=mask)
    assert (rows == want_rows).all()
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-12)
    sample = np.arange(0, len(data), 97)
    sample_scores, sample_rows = exact_topk(data, sample, 10, exclusions=exclusions)
    assert (sample_rows == want_rows[sample]).all()
    np.testing.assert_allclose(sample_scores, want_scores[sample], rtol=0, atol=1e-12)
