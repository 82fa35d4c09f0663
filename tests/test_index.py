"""index/ and mining against an independent NumPy brute force recomputed from `Cache.read`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import run_cli
from vidcache import Cache
from vidcache.cache.arrays import write_view_arrays
from vidcache.cache.text import write_text_embeddings
from vidcache.errors import ConfigError
from vidcache.index import (
    brute_force,
    hard_negative_labels,
    load_mined,
    mined_matrix,
    mined_tensor,
    nearest_videos,
    recall_at_k,
)
from vidcache.manifest import VideoEntry

DIM = 32
CLUSTERS, CLASSES_PER_CLUSTER = 5, 3


def clustered_corpus(seed: int = 0, videos_per_class: int = 6):
    """Confusable classes: each cluster holds 3 classes close to each other, far from other clusters."""
    rng = np.random.default_rng(seed)
    cluster_centres = rng.normal(size=(CLUSTERS, DIM)) * 3
    classes, centres, cluster_of = [], [], {}
    for c in range(CLUSTERS):
        for j in range(CLASSES_PER_CLUSTER):
            name = f"c{c}-class{j}"
            classes.append(name)
            centres.append(cluster_centres[c] + rng.normal(size=DIM) * 0.6)
            cluster_of[name] = c
    videos = {}
    for index, name in enumerate(classes):
        for v in range(videos_per_class):
            frames = centres[index] + rng.normal(size=(int(rng.integers(2, 7)), DIM)) * 0.8
            labels = (name,) if v else ()  # the first video of every class is unlabelled
            if v == 1:
                labels = (name, classes[(index + 1) % len(classes)])  # some videos have two labels
            videos[f"{name}/v{v}"] = (frames, labels)
    videos["dup/a"] = (np.tile(centres[0], (3, 1)), (classes[0],))  # exact duplicates: tie-break by id
    videos["dup/b"] = (np.tile(centres[0], (2, 1)), (classes[1],))
    text = np.array(centres) + rng.normal(size=(len(classes), DIM)) * 0.3
    return videos, classes, text, cluster_of


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    videos, classes, text, _ = clustered_corpus()
    path = tmp_path_factory.mktemp("idx") / "cache"
    entries = [VideoEntry(v, f"/x/{v}.mp4", labels) for v, (_, labels) in videos.items()]
    rows = [(v, frames, np.arange(len(frames), dtype=float)) for v, (frames, _) in videos.items()]
    write_view_arrays(path, view="clip", rows=rows, entries=entries, identity={"model": "synthetic"}, dtype="float32")
    audio_rows = [(v, f[:, :16] * -1, np.arange(len(f), dtype=float)) for v, f, _ in rows]
    write_view_arrays(path, view="audio", rows=audio_rows, entries=entries, identity={"model": "x"}, dtype="float16")
    write_text_embeddings(
        path, labels=classes, templates=["{}"], per_template=text[:, None, :], embeddings=text, attrs={}
    )
    return path


def reference_vectors(cache: Cache, view: str):
    """Independent: Cache.read, mean in float64, L2-normalise."""
    ids = sorted(cache.video_ids(view))
    pooled = np.stack([cache.read(v, view)[0].astype(np.float64).mean(axis=0) for v in ids])
    return ids, (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)


def labels_of(cache: Cache) -> dict[str, set[str]]:
    return {row.video_id: set(row.labels) for row in cache.entries().itertuples()}


def hard_negative_mask(ids: list[str], labels: dict[str, set[str]]) -> np.ndarray:
    """[N, N] True where a pair may not be hard negatives: itself, a shared label, the same group."""
    group = [v.rsplit("/", 1)[0] for v in ids]
    return np.array(
        [
            [i == j or bool(labels[a] & labels[b]) or group[i] == group[j] for j, b in enumerate(ids)]
            for i, a in enumerate(ids)
        ]
    )


@pytest.mark.parametrize("view", ["clip", "audio"])
def test_neighbours_equal_numpy_brute_force(cache_dir, view):
    with Cache(cache_dir) as cache:
        frame, summary = nearest_videos(cache, k=5, view=view)
        ids, vectors = reference_vectors(cache, view)
    assert summary.exact and summary.short_lists == 0
    exclude = np.eye(len(ids), dtype=bool)
    scores, rows = brute_force(vectors, vectors, 5, exclude_mask=exclude)
    expected = pd.DataFrame(
        {
            "video_id": np.repeat(ids, 5),
            "rank": np.tile(np.arange(1, 6), len(ids)),
            "neighbour_id": np.array(ids)[rows.ravel()],
            "score": scores.ravel(),
        }
    )
    pd.testing.assert_frame_equal(
        frame[["video_id", "rank", "neighbour_id"]], expected[["video_id", "rank", "neighbour_id"]]
    )
    np.testing.assert_allclose(frame["score"], expected["score"], atol=1e-6)
    dup = frame[frame.video_id == "dup/a"]
    assert dup.iloc[0].neighbour_id == "dup/b" and dup.iloc[0].score == pytest.approx(1.0)


def test_hard_negative_videos_share_no_label_and_skip_the_group(cache_dir):
    with Cache(cache_dir) as cache:
        frame, _ = nearest_videos(cache, k=4, view="clip", exclude_shared_labels=True, exclude_same_group=True)
        ids, vectors = reference_vectors(cache, "clip")
        labels = labels_of(cache)
    group = [v.rsplit("/", 1)[0] for v in ids]
    exclude = hard_negative_mask(ids, labels)
    _, rows = brute_force(vectors, vectors, 4, exclude_mask=exclude)
    got = frame.groupby("video_id")["neighbour_id"].apply(list).to_dict()
    for i, video_id in enumerate(ids):
        assert got[video_id] == [ids[r] for r in rows[i] if r >= 0]
        for other in got[video_id]:
            assert not labels[video_id] & labels[other] and other.rsplit("/", 1)[0] != group[i]


def test_hard_negative_videos_through_an_ivf_index_keep_the_rules_and_the_brute_force_neighbours(cache_dir):
    """An IVF index takes the lists' self-join (ivfjoin.py; exact twin in test_ivfjoin.py): every
    neighbour obeys the exclusions, and the lists hold (nearly) all of the brute force's neighbours."""
    with Cache(cache_dir) as cache:
        frame, summary = nearest_videos(
            cache, k=4, view="clip", exclude_shared_labels=True, exclude_same_group=True, index_type="ivfsq"
        )
        ids, vectors = reference_vectors(cache, "clip")
        labels = labels_of(cache)
    assert not summary.exact and summary.index_type == "ivfsq"
    group = [v.rsplit("/", 1)[0] for v in ids]
    exclude = hard_negative_mask(ids, labels)
    _, rows = brute_force(vectors, vectors, 4, exclude_mask=exclude)
    got = frame.groupby("video_id")["neighbour_id"].apply(list).to_dict()
    overlap = []
    for i, video_id in enumerate(ids):
        want = [ids[r] for r in rows[i] if r >= 0]
        for other in got.get(video_id, []):
            assert not labels[video_id] & labels[other] and other.rsplit("/", 1)[0] != group[i] and other != video_id
        overlap.append(len(set(got.get(video_id, [])) & set(want)) / max(1, len(want)))
    assert np.mean(overlap) > 0.9 and summary.recall_at_k == pytest.approx(np.mean(overlap), abs=0.1)


def reference_label_negatives(cache: Cache, k, *, range_min=0, range_max=None, margin=None, relative=None):
    ids, vectors = reference_vectors(cache, "clip")
    text = cache.text_embeddings()
    t = text.embeddings / np.linalg.norm(text.embeddings, axis=1, keepdims=True)
    labels = labels_of(cache)
    out = {}
    for video_id, vector in zip(ids, vectors, strict=True):
        scores = t.astype(np.float32).astype(np.float64) @ vector.astype(np.float64)
        own = [i for i, lab in enumerate(text.labels) if lab in labels[video_id]]
        candidates = [i for i in range(len(text.labels)) if i not in own]
        if own and margin is not None:
            candidates = [i for i in candidates if scores[i] < scores[own].max() - margin]
        if own and relative is not None:
            candidates = [i for i in candidates if scores[i] < relative * scores[own].max()]
        ranked = sorted(candidates, key=lambda i: (-scores[i], i))[range_min:range_max][:k]
        out[video_id] = [text.labels[i] for i in ranked]
    return out


@pytest.mark.parametrize(
    "options",
    [{}, {"range_min": 2, "range_max": 6}, {"margin": 0.05}, {"relative_margin": 0.9}],
    ids=["top", "range", "margin", "relative-margin"],
)
def test_hard_negative_labels_equal_brute_force(cache_dir, options):
    with Cache(cache_dir) as cache:
        frame, summary = hard_negative_labels(cache, k=3, **options)
        expected = reference_label_negatives(
            cache,
            3,
            range_min=options.get("range_min", 0),
            range_max=options.get("range_max"),
            margin=options.get("margin"),
            relative=options.get("relative_margin"),
        )
        labels = labels_of(cache)
    got = frame.groupby("video_id")["label"].apply(list).to_dict()
    for video_id, want in expected.items():
        assert got.get(video_id, []) == want, video_id
        assert not set(want) & labels[video_id]
    first = frame.groupby("video_id")["rank"].min()
    assert (first == options.get("range_min", 0) + 1).all()  # ranks are 1-based positions in the ranking
    assert summary.rows == len(frame)


def test_random_sampling_is_seeded_and_stays_in_range(cache_dir):
    with Cache(cache_dir) as cache:
        a, _ = hard_negative_labels(cache, k=2, range_min=1, range_max=7, sampling="random", seed=3)
        b, _ = hard_negative_labels(cache, k=2, range_min=1, range_max=7, sampling="random", seed=3)
        c, _ = hard_negative_labels(cache, k=2, range_min=1, range_max=7, sampling="random", seed=4)
        full = reference_label_negatives(cache, 100)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    for row in a.itertuples():
        assert 2 <= row.rank <= 7 and full[row.video_id][row.rank - 1] == row.label


def test_mined_negatives_come_from_the_query_cluster(cache_dir):
    *_, cluster_of = clustered_corpus()
    with Cache(cache_dir) as cache:
        frame, _ = hard_negative_labels(cache, k=2)
    labelled = frame[~frame.video_id.str.startswith("dup") & ~frame.video_id.str.endswith("/v0")]
    same = [cluster_of[row.label] == cluster_of[row.video_id.split("/")[0]] for row in labelled.itertuples()]
    assert np.mean(same) > 0.9


def test_corpus_smaller_than_k_gives_fewer_rows(cache_dir):
    with Cache(cache_dir) as cache:
        n = len(cache.video_ids("clip"))
        frame, summary = nearest_videos(cache, k=n + 5, view="clip")
        labels_frame, label_summary = hard_negative_labels(cache, k=50)
    assert frame.groupby("video_id").size().max() == n - 1 and summary.short_lists == n
    assert label_summary.short_lists == label_summary.videos
    assert labels_frame.groupby("video_id").size().max() == CLUSTERS * CLASSES_PER_CLUSTER


def test_approximate_index_reports_recall(cache_dir, caplog):
    with Cache(cache_dir) as cache:
        frame, summary = nearest_videos(cache, k=5, view="clip", index_type="hnsw", recall_sample=50)
        exact, _ = nearest_videos(cache, k=5, view="clip")
    assert not summary.exact and summary.recall_sample == 50
    approx_rows = frame.groupby("video_id")["neighbour_id"].apply(list)
    exact_rows = exact.groupby("video_id")["neighbour_id"].apply(list)
    overall = np.mean([len(set(approx_rows[v]) & set(exact_rows[v])) / 5 for v in exact_rows.index])
    assert summary.recall_at_k == pytest.approx(overall, abs=0.15) and summary.recall_at_k > 0.8
    with Cache(cache_dir) as cache:
        nearest_videos(cache, k=5, view="clip", index_type="ivf", min_recall=1.01, recall_sample=20)
    assert "below --min-recall" in caplog.text


def test_recall_and_mined_matrix_helpers():
    assert recall_at_k(np.array([[1, 2, -1]]), np.array([[2, 3, 1]])) == pytest.approx(2 / 3)
    frame = pd.DataFrame({"video_id": ["b", "a", "a"], "rank": [1, 2, 1], "label": ["x", "z", "y"]})
    matrix = mined_matrix(frame, queries=["a", "b", "c"], column="label", vocabulary=["x", "y", "z"], k=3)
    np.testing.assert_array_equal(matrix, [[1, 2, -1], [0, -1, -1], [-1, -1, -1]])
    tensor = mined_tensor(frame, queries=["a", "b", "c"], column="label", vocabulary=["x", "y", "z"], k=3)
    assert tensor.dtype == torch.int64 and tensor.tolist() == matrix.tolist()


def test_cli_index_build_and_mining_outputs(cache_dir, tmp_path):
    labels = tmp_path / "corpus.txt"
    labels.write_text("alpha\nbeta\ngamma\n")
    npy = tmp_path / "corpus.npy"
    np.save(npy, np.random.default_rng(0).normal(size=(3, DIM)))
    built = run_cli("index", "build", "--cache", cache_dir, "--view", "clip", "--json", check=True)
    info = json.loads(built.stdout)
    assert info["index_type"] == "flat" and (cache_dir / "index" / "clip.faiss").exists()
    out = run_cli("mine", "neighbours", "--cache", cache_dir, "--view", "clip", "--k", "3", "--json", check=True)
    summary = json.loads(out.stdout)
    assert summary["rows"] == 3 * summary["videos"]
    frame = load_mined(cache_dir, "neighbours_clip")
    assert list(frame.columns) == ["video_id", "rank", "neighbour_id", "score"]
    meta = json.loads((cache_dir / "mined" / "neighbours_clip.json").read_text())
    assert meta["command"].startswith("vidcache mine neighbours")
    run_cli(
        "mine", "hard-negatives", "--cache", cache_dir, "--k", "2", "--label-corpus", labels,
        "--text-embeddings", npy, "--json", check=True,
    )  # fmt: skip
    negatives = load_mined(cache_dir, "hard_negatives")
    assert set(negatives.label) <= {"alpha", "beta", "gamma"} and negatives.groupby("video_id").size().max() == 2
    bad = run_cli("mine", "hard-negatives", "--cache", cache_dir, "--k", "2", "--label-corpus", labels)
    assert bad.returncode == 2 and "embed-text" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_bad_requests_are_clear_errors(cache_dir):
    with Cache(cache_dir) as cache:
        with pytest.raises(ConfigError, match="not in cache"):
            nearest_videos(cache, k=2, view="s3d")
        with pytest.raises(ConfigError, match="dimension"):
            hard_negative_labels(cache, k=2, view="audio")
        with pytest.raises(ConfigError, match="not both"):
            hard_negative_labels(cache, k=2, margin=0.1, relative_margin=0.9)


@pytest.mark.parametrize("kind", ["faiss-flat", "scan"])
def test_retries_past_the_candidate_cap_stay_exact(kind):
    import faiss

    from vidcache.index import search
    from vidcache.index.knn import ScanIndex

    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(1500, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[100:140] = vectors[100]  # a block of exact ties
    group = np.arange(len(vectors)) % 2
    index = ScanIndex(vectors) if kind == "scan" else faiss.IndexFlatIP(8)
    if kind != "scan":
        index.add(vectors)

    def same_group(query_row, rows):
        return group[rows] == group[query_row]

    queries = np.arange(0, 1500, 7)
    scores, rows = search(
        index, vectors[queries], vectors, 6, exclude=same_group, query_rows=queries, max_candidates=32
    )
    mask = group[None, :] == group[queries][:, None]
    ref_scores, ref_rows = brute_force(vectors[queries], vectors, 6, exclude_mask=mask)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-9)


def test_search_without_a_stored_index_scans_exactly_and_builds_nothing(cache_dir, monkeypatch):
    """A search (one query) with no stored index reads the vectors once: no index is built, whatever
    N (here `auto` would have chosen IVF for any N), and the hits are the NumPy brute force's."""
    from vidcache.index import build, mining
    from vidcache.search import search_video

    def no_build(*args, **kwargs):
        raise AssertionError("a search without a stored index built one")

    monkeypatch.setattr(build, "FLAT_MAX_VECTORS", 0)
    monkeypatch.setattr(mining, "build_index", no_build)
    monkeypatch.setattr(mining, "load_index", lambda *args, **kwargs: None)  # as before `index build`
    cache = Cache(cache_dir)
    ids, vectors = reference_vectors(cache, "clip")
    for query in (ids[0], "dup/a", ids[-1]):
        row = ids.index(query)
        mask = np.zeros((1, len(ids)), bool)
        mask[0, row] = True
        ref_scores, ref_rows = brute_force(vectors[row : row + 1], vectors, 7, exclude_mask=mask)
        hits = search_video(cache, query, view="clip", k=7)
        assert [h.video_id for h in hits] == [ids[r] for r in ref_rows[0]]
        np.testing.assert_allclose([h.score for h in hits], ref_scores[0], atol=1e-6)


def test_a_stored_index_is_used_only_while_it_matches_the_cache(cache_dir, tmp_path):
    import shutil

    from vidcache.index import load_index

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    run_cli("index", "build", "--cache", copy, "--view", "audio", check=True)
    with Cache(copy) as cache:
        assert load_index(cache, "audio", pooling="mean") is not None
        assert load_index(cache, "audio", pooling="max") is None
    (copy / "index" / "audio.json").unlink()  # as a crash between the files would leave it
    with Cache(copy) as cache:
        assert load_index(cache, "audio", pooling="mean") is None
    run_cli("index", "build", "--cache", copy, "--view", "audio", check=True)
    write_view_arrays(
        copy,
        view="audio",
        rows=[("new/video", np.ones((2, 16)), np.arange(2.0))],
        entries=[VideoEntry("new/video", "/x/new.mp4", ())],
        identity={"model": "x"},
        dtype="float16",
    )
    with Cache(copy) as cache:
        assert load_index(cache, "audio", pooling="mean") is None  # a video was added since the build


def test_the_catalog_state_spares_the_fingerprint_and_any_item_write_changes_it(cache_dir, tmp_path, monkeypatch):
    """A stored index is trusted by a one-row token (the catalog's id and its view's write counter,
    kept by SQLite triggers) instead of hashing every item (2 s at 1M videos); the full fingerprint
    stays the reference whenever the token differs or the catalog keeps none."""
    import shutil
    import sqlite3

    from vidcache.cache.catalog import Catalog
    from vidcache.index import build as index_build
    from vidcache.index import load_index

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    Catalog.open(copy, create=True).close()  # a writer's open gives the copy its counter
    run_cli("index", "build", "--cache", copy, "--view", "audio", check=True)
    meta = json.loads((copy / "index" / "audio.json").read_text())
    assert meta["catalog_state"], meta

    def fingerprint_not_needed(cache, view, **kwargs):
        raise AssertionError("the full fingerprint was computed")

    with monkeypatch.context() as patched:
        patched.setattr(index_build, "cache_fingerprint", fingerprint_not_needed)
        with Cache(copy) as cache:
            assert load_index(cache, "audio", pooling="mean") is not None
        # a write to another view leaves this view's token as it was
        write_view_arrays(
            copy, view="clip", rows=[("new/clip", np.ones((2, DIM)), np.arange(2.0))],
            entries=[VideoEntry("new/clip", "/x/new.mp4", ())], identity={"model": "synthetic"}, dtype="float32",
        )  # fmt: skip
        with Cache(copy) as cache:
            assert load_index(cache, "audio", pooling="mean") is not None
        run_cli("remove", "--cache", copy, "dup/a", check=True)  # an audio item deleted: a new token
        with Cache(copy) as cache, pytest.raises(AssertionError, match="full fingerprint"):
            load_index(cache, "audio", pooling="mean")
    with Cache(copy) as cache:  # and the fingerprint, the reference, says the index is stale
        assert load_index(cache, "audio", pooling="mean") is None

    # an older catalog (no counter) is checked by the full fingerprint, and a writer's open adds the
    # counter under a new catalog id, so the old token never matches by chance
    run_cli("index", "build", "--cache", copy, "--view", "audio", check=True)
    old_state = json.loads((copy / "index" / "audio.json").read_text())["catalog_state"]
    db = sqlite3.connect(copy / "catalog.sqlite")
    for trigger in ("insert", "update", "delete"):
        db.execute(f"DROP TRIGGER view_changes_{trigger}")
    db.execute("DROP TABLE view_changes")
    db.execute("DELETE FROM meta WHERE key='catalog_id'")
    db.commit()
    db.close()
    with Cache(copy) as cache:
        assert cache._catalog.view_state("audio") is None
        assert load_index(cache, "audio", pooling="mean") is not None  # the fingerprint still matches
    Catalog.open(copy, create=True).close()
    with Cache(copy) as cache:
        state = cache._catalog.view_state("audio")
        assert state is not None and state != old_state and state.endswith(":0")
        assert load_index(cache, "audio", pooling="mean") is not None


def test_compact_keeps_a_stored_index_and_an_index_stored_before_is_upgraded(cache_dir, tmp_path, monkeypatch):
    """The index fingerprint is what the rows are (ids, row counts, CRC32s), not where they lie: `compact`
    moving every row keeps the stored index (found by the fingerprint once, then by the catalog's token
    again), whose vectors still equal a re-computation from the moved rows; an index stored with the first
    fingerprint form (with the places) is still trusted while nothing moved, and upgraded."""
    import shutil

    from vidcache.index import build as index_build
    from vidcache.index import load_index

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    run_cli("remove", "--cache", copy, "dup/a", check=True)  # dead rows in the shards: compact moves the rest
    run_cli("index", "build", "--cache", copy, "--view", "audio", check=True)

    def places(cache):
        return {v: (i.shard, i.row_start) for v in cache.video_ids("audio") for i in [cache._catalog.item(v, "audio")]}

    with Cache(copy) as cache:
        before = places(cache)
    run_cli("compact", "--cache", copy, check=True)
    with Cache(copy) as cache:
        moved = places(cache)
        assert moved.keys() == before.keys() and all(moved[v] != before[v] for v in moved)
        loaded = load_index(cache, "audio", pooling="mean")
        assert loaded is not None
        ids, reference = reference_vectors(cache, "audio")
        assert loaded[1].video_ids == ids and np.allclose(loaded[1].vectors, reference, atol=1e-3)

    def fingerprint_not_needed(cache, view, **kwargs):
        raise AssertionError("the full fingerprint was computed")

    with monkeypatch.context() as patched, Cache(copy) as cache:  # the token was recorded at the match
        patched.setattr(index_build, "cache_fingerprint", fingerprint_not_needed)
        assert load_index(cache, "audio", pooling="mean") is not None

    meta_path = copy / "index" / "audio.json"
    with Cache(copy) as cache:
        first_form = index_build.cache_fingerprint(cache, "audio", places=True)
    old = {**json.loads(meta_path.read_text()), "fingerprint": first_form, "catalog_state": None}
    meta_path.write_text(json.dumps(old))
    with Cache(copy) as cache:
        assert load_index(cache, "audio", pooling="mean") is not None
        upgraded = json.loads(meta_path.read_text())
        assert upgraded["fingerprint"] == index_build.cache_fingerprint(cache, "audio")
        assert upgraded["fingerprint"].startswith("rows:") and upgraded["catalog_state"]
    old["fingerprint"] = first_form.replace(first_form[0], "0" if first_form[0] != "0" else "1", 1)
    meta_path.write_text(json.dumps(old))  # a first-form fingerprint that no longer matches: stale
    with Cache(copy) as cache:
        assert load_index(cache, "audio", pooling="mean") is None


def test_search_hit_labels_equal_the_manifest_entries(cache_dir):
    """`search --video` reads the labels of its hits by key; the reference is the whole entries table."""
    from vidcache.search import search_video

    with Cache(cache_dir) as cache:
        expected = labels_of(cache)
        hits = search_video(cache, "dup/a", view="clip", k=8)
        assert len(hits) == 8
        for hit in hits:
            assert set(hit.labels) == expected[hit.video_id], hit
        assert cache.labels_of(["dup/a", "nope", "dup/a"]) == {"dup/a": sorted(expected["dup/a"])}


def test_auto_index_is_exact_when_small_and_ivf_sq8_when_large():
    from vidcache.index.build import IVFSQ_MAX_LISTS, choose_index

    budget = 4 * 2**30
    assert choose_index(50_000, 512, memory_budget_bytes=budget).factory == "Flat"
    large = choose_index(1_000_000, 512, memory_budget_bytes=budget)
    assert (large.kind, large.factory) == ("ivfsq", f"IVF{IVFSQ_MAX_LISTS},SQ8")
    assert choose_index(60_000, 512, memory_budget_bytes=budget).factory == f"IVF{round(4 * 60_000**0.5)},SQ8"
    assert choose_index(1_000_000, 512, memory_budget_bytes=0.25 * 2**30).kind == "ivfpq"  # 8-bit codes too big


def test_ivf_sq8_recall_against_numpy_brute_force():
    """The auto path for large N (IVF-SQ8, sampled training, batched add, nprobe calibrated to recall
    ≥ 0.95) on 6,000 clustered vectors: recall@10 of knn.search against the float64 NumPy brute force."""
    import faiss

    from vidcache.index import knn
    from vidcache.index.build import ADD_BATCH, NPROBES, build_index, choose_index

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(60, DIM))
    vectors = centres[rng.integers(0, 60, 6000)] + rng.normal(size=(6000, DIM)) * 0.7
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    choice = choose_index(len(vectors), DIM, memory_budget_bytes=2**30, requested="ivfsq")
    calibration: dict = {}
    index = build_index(vectors, choice, use_gpu=False, calibration=calibration)
    assert index.ntotal == len(vectors) > 0 and len(vectors) % ADD_BATCH == len(vectors)  # one batch here
    ivf = faiss.extract_index_ivf(index)
    assert calibration["nprobe"] == ivf.nprobe and ivf.nprobe in NPROBES and calibration["recall_at_10"] >= 0.95
    queries = vectors[::30]
    _, approx = knn.search(index, queries, vectors, 10, exact=False)
    _, exact = brute_force(queries, vectors, 10)
    assert recall_at_k(approx, exact) >= 0.95


def test_index_build_records_recall_and_nprobe(cache_dir, tmp_path):
    import shutil

    import faiss

    from vidcache.index import api, knn, load_index

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    built = api.index_view(copy, view="clip", index_type="ivfsq")
    parameters = built.provenance.parameters
    assert built.provenance.factory.endswith(",SQ8") and 0 < parameters["recall_at_10"] <= 1
    with Cache(copy) as cache:
        index, vectors, meta = load_index(cache, "clip", pooling="mean")
        # the stored index searches with the calibrated nprobe; its recall is recomputed with NumPy
        assert faiss.extract_index_ivf(index).nprobe == meta["parameters"]["nprobe"]
        queries = np.asarray(vectors.vectors)
        own = np.arange(len(queries))
        _, exact = brute_force(queries, queries, 10, exclude_mask=np.eye(len(queries), dtype=bool))
        _, found = knn.search(index, queries, queries, 10, exact=False, exclude=lambda q, r: r == q, query_rows=own)
    recall = recall_at_k(found, exact)
    assert meta["parameters"]["recall_at_10"] == pytest.approx(recall, abs=0.05)
    flat = api.index_view(copy, view="clip")  # small: auto stays exact
    assert flat.provenance.index_type == "flat" and flat.provenance.parameters["recall_at_10"] == 1.0


def _one_video_twin(scores, positives, *, video_id, k, range_min, range_max, margin, relative, sampling, seed):
    """The per-video ranking `hard_negative_labels` made before it ranked blocks: (ranks, label columns)."""
    import zlib

    keep = np.ones(len(scores), bool)
    keep[positives] = False
    if positives and (margin is not None or relative is not None):
        s_pos = scores[positives].max()
        keep &= scores < (s_pos - margin if margin is not None else s_pos - (1 - relative) * abs(s_pos))
    candidates = np.flatnonzero(keep)
    window = candidates[np.lexsort((candidates, -scores[candidates]))][range_min:range_max]
    if sampling == "random" and len(window) > k:
        picked = np.sort(
            np.random.default_rng([seed, zlib.crc32(video_id.encode())]).choice(len(window), k, replace=False)
        )
        return list(range_min + picked + 1), list(window[picked])
    return list(range_min + np.arange(len(window[:k])) + 1), list(window[:k])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_ranking_label_blocks_equals_the_per_video_twin(seed):
    """The block ranking of hard-negative labels against the per-video loop it replaced, on a family of
    blocks with tied scores (scores rounded to a few values), videos with no, one or every label as their
    own, margins, windows past the kept labels, and both samplings."""
    from vidcache.index.mining import _pick_ranks, _rank_labels

    rng = np.random.default_rng(seed)
    videos, n_labels = int(rng.integers(1, 60)), int(rng.integers(1, 40))
    scores = np.round(rng.uniform(-1, 1, (videos, n_labels)), int(rng.integers(1, 3)))  # many ties
    positive = rng.random((videos, n_labels)) < rng.choice([0.0, 0.1, 0.5])
    positive[0] = n_labels > 1  # one video owns every label
    ids = [f"v{seed}-{i}" for i in range(videos)]
    for case in range(8):
        k = int(rng.integers(1, 6))
        range_min = int(rng.integers(0, 4))
        range_max = None if rng.random() < 0.4 else range_min + int(rng.integers(1, 12))
        margin = relative = None
        if case % 3 == 1:
            margin = float(rng.uniform(0, 0.3))
        elif case % 3 == 2:
            relative = float(rng.choice([0.5, 0.9, 1.0, 1.2]))
        sampling = "random" if case % 2 else "top"
        order, count = _rank_labels(scores, positive, margin=margin, relative_margin=relative)
        rows, ranks, chosen = _pick_ranks(
            order, count, ids, k=k, range_min=range_min, range_max=range_max, sampling=sampling, seed=seed
        )
        for row, video_id in enumerate(ids):
            want = _one_video_twin(
                scores[row], list(np.flatnonzero(positive[row])), video_id=video_id, k=k, range_min=range_min,
                range_max=range_max, margin=margin, relative=relative, sampling=sampling, seed=seed,
            )  # fmt: skip
            mine = rows == row
            assert (list(ranks[mine]), list(chosen[mine])) == want, (case, row)
        assert np.all(np.diff(rows) >= 0)  # every video's picks together, in video order


def test_label_mining_streams_shards_to_the_frame_of_one_shard(tmp_path):
    """Mean pooling reads the stored means shard by shard: a cache whose videos are spread over three
    shards out of id order gives the frame (ids, ranks, labels, scores) of the same videos in one shard,
    and the labels of the independent brute force."""
    videos, classes, text, _ = clustered_corpus(seed=3)
    ids = list(videos)
    rng = np.random.default_rng(1)
    rng.shuffle(ids)
    entries = [VideoEntry(v, f"/x/{v}.mp4", videos[v][1]) for v in ids]
    frames = {v: (v, videos[v][0], np.arange(len(videos[v][0]), dtype=float)) for v in ids}
    caches = {"one": [ids], "three": [ids[:20], ids[20:50], ids[50:]]}
    mined = {}
    for name, parts in caches.items():
        path = tmp_path / name
        for part in parts:
            write_view_arrays(
                path, view="clip", rows=[frames[v] for v in part], entries=entries, identity={"m": 1}, dtype="float16"
            )
        write_text_embeddings(
            path, labels=classes, templates=["{}"], per_template=text[:, None, :], embeddings=text, attrs={}
        )
        with Cache(path) as cache:
            assert len(list((path / "shards").glob("*.h5"))) == len(parts)
            mined[name], _ = hard_negative_labels(cache, k=4, margin=0.01, block_videos=7)
            expected = reference_label_negatives(cache, 4, margin=0.01)
    pd.testing.assert_frame_equal(mined["one"], mined["three"])
    assert list(mined["three"]["video_id"].drop_duplicates()) == sorted(ids)
    assert mined["three"].groupby("video_id")["label"].apply(list).to_dict() == expected
