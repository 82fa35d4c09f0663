"""The contrastive head (seed 003, CVTCL): cross-view positives lift retrieval on a view whose own
instance discrimination learns a nuisance, its losses against a NumPy re-computation from the
formulas, neighbours restricted to train, and its embeddings written back into the cache."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from vidcache import Cache
from vidcache.cache.arrays import write_view_arrays
from vidcache.errors import ConfigError
from vidcache.fields import ParamError
from vidcache.heads import HEADS, TrainConfig
from vidcache.heads.context import HeadContext, build_context
from vidcache.heads.contrastive import random_spans
from vidcache.heads.data import TRAIN, Batch, make_splits
from vidcache.heads.predict import evaluate_run, predict_embeddings, write_embeddings
from vidcache.heads.train import train
from vidcache.index.mining import nearest_videos, write_mined
from vidcache.manifest import VideoEntry

CLASSES = 5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The matrices here are tiny: threads buy nothing, and on a busy 2-core machine two torch
    threads per process oversubscribe the cores and run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def two_view_corpus(seed=0, n=(200, 50, 100)):
    """Per video of class c: view "strong" is 3·e_c plus small noise (its neighbours share the class);
    view "weak" carries the class as a unit vector μ_c in 8 dims, under a per-video nuisance of norm ≈ 4.9
    in 24 other dims that every frame repeats (the easiest way to tell two videos apart) and frame noise."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(CLASSES, 8))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    videos = {}
    for split, count in zip(("train", "val", "test"), n, strict=True):
        for i in range(count):
            c, frames = i % CLASSES, int(rng.integers(6, 17))
            strong = rng.normal(size=16) * 0.7 + rng.normal(size=(frames, 16)) * 0.3
            strong[:, c] += 3.0
            weak = rng.normal(size=(frames, 32)) * 0.3
            weak[:, :8] += mu[c]
            weak[:, 8:] += rng.normal(size=24)
            videos[f"{split}/{i:04d}"] = ({"strong": strong, "weak": weak}, (f"c{c}",), split)
    return videos


def write_cache(path, videos):
    """videos: {video_id: ({view: frames [T, D]}, labels, split)}, one write per view on one cache."""
    entries = [VideoEntry(v, f"/src/{v}.mp4", labels, split) for v, (_, labels, split) in videos.items()]
    for view in next(iter(videos.values()))[0]:
        rows = [
            (v, x[view].astype(np.float32), np.arange(len(x[view]), dtype=float)) for v, (x, _, _) in videos.items()
        ]
        write_view_arrays(path, view=view, rows=rows, entries=entries, identity={"model": view}, dtype="float32")
    return path


def mine_neighbours(cache_dir, view, k=10):
    with Cache(cache_dir) as cache:
        frame, summary = nearest_videos(cache, k=k, view=view)
    write_mined(cache_dir, f"neighbours_{view}", frame, summary, command="")
    return frame


def config(k=0, *, ltcl=True, epochs=40, seed=0, **overrides):
    settings = dict(head="contrastive", view="weak", epochs=epochs, lr=3e-3, batch_size=64, patience=epochs, seed=seed)
    settings.update(overrides)
    options = HEADS.options(
        "contrastive",
        hidden_dim=64,
        projection_dim=32,
        ltcl=ltcl,
        cross_view_k=k,
        cross_view_from="strong" if k else "",
    )
    return TrainConfig(**settings, options=options)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvtcl")
    cache = write_cache(root / "cache", two_view_corpus())
    mined = mine_neighbours(cache, "strong")
    runs = {name: root / name for name in ("k0", "k5", "k5_no_ltcl")}
    summaries = {
        "k0": train(cache, config(0), runs["k0"]),
        "k5": train(cache, config(5), runs["k5"]),
        "k5_no_ltcl": train(cache, config(5, ltcl=False), runs["k5_no_ltcl"]),
    }
    return cache, mined, runs, summaries


def label(video_id: str) -> int:
    return int(video_id.rsplit("/", 1)[1]) % CLASSES


# 1. cross-view positives ------------------------------------------------------------------------
def test_cross_view_positives_lift_the_weak_views_retrieval(trained):
    cache, mined, runs, summaries = trained
    top5 = mined[mined["rank"] <= 5]
    assert (top5.video_id.map(label) == top5.neighbour_id.map(label)).mean() > 0.95  # "strong" knows the class
    with Cache(cache) as opened:  # the weak view alone: its nearest video is one with the same nuisance
        ids = sorted(opened.video_ids("weak"))
        raw = np.stack([opened.read(v, "weak", dtype=np.float32)[0].mean(axis=0) for v in ids])
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    train_rows = [i for i, v in enumerate(ids) if v.startswith("train/")]
    test_rows = [i for i, v in enumerate(ids) if v.startswith("test/")]
    nearest = np.array(train_rows)[(raw[test_rows] @ raw[train_rows].T).argmax(axis=1)]
    raw_r1 = np.mean([label(ids[q]) == label(ids[g]) for q, g in zip(test_rows, nearest, strict=True)])
    r1 = {name: evaluate_run(run, cache, split="test")["recall_at_1"] for name, run in runs.items()}
    assert raw_r1 < 0.45 and r1["k0"] < 0.55, (raw_r1, r1)  # instance discrimination learns the nuisance
    assert r1["k5"] >= 0.8 and r1["k5"] >= r1["k0"] + 0.3, r1
    assert r1["k5_no_ltcl"] >= 0.8 and r1["k5_no_ltcl"] >= r1["k0"] + 0.3, r1
    for summary in summaries.values():
        assert summary.skipped_steps == 0 and summary.best_metric == "recall_at_1"
        assert summary.report == {} and summary.train_videos == 200


# 2. losses against NumPy --------------------------------------------------------------------------
def unit(rng, *shape):
    x = rng.normal(size=shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_nce(crops, ids, neighbours, tau):
    """crops [M, 2, E]; straight from the formula: for each of the 2M anchors, the mean over its
    positives of −log(exp(s_ap) / Σ_{k≠a} exp(s_ak))."""
    m = len(ids)
    z = crops.reshape(2 * m, -1)
    video = [i // 2 for i in range(2 * m)]

    def related(i, j):
        return i == j or ids[j] in neighbours.get(ids[i], []) or ids[i] in neighbours.get(ids[j], [])

    losses = []
    for a in range(2 * m):
        denominator = sum(math.exp(z[a] @ z[k] / tau) for k in range(2 * m) if k != a)
        positives = [p for p in range(2 * m) if p != a and related(video[a], video[p])]
        losses.append(np.mean([-math.log(math.exp(z[a] @ z[p] / tau) / denominator) for p in positives]))
    return float(np.mean(losses))


def reference_ltcl(segments, augmented, ids, neighbours, tau):
    """segments, augmented: {video index: [4, E]} for the videos with ≥ 4 frames."""

    def nce(anchor, positive, negatives):
        top = math.exp(anchor @ positive / tau)
        return -math.log(top / (top + sum(math.exp(anchor @ n / tau) for n in negatives)))

    def related(i, j):
        return ids[j] in neighbours.get(ids[i], []) or ids[i] in neighbours.get(ids[j], [])

    local, lt = [], []
    for v, segs in segments.items():
        for k in range(4):
            anchor, siblings = segs[k], [segs[j] for j in range(4) if j != k]
            others = [s for u, us in segments.items() if u != v and not related(v, u) for s in us]
            local.append(np.mean([nce(anchor, p, others) for p in [augmented[v][k], *siblings]]))
            lt.append(nce(anchor, augmented[v][k], siblings))
    return float(np.mean(local)), float(np.mean(lt))


def make_head(neighbours=None, **options):
    context = HeadContext(["x", "y"], neighbours=dict(neighbours or {}))
    return HEADS.create(
        "contrastive",
        input_dim=6,
        num_classes=2,
        multi_label=False,
        options=HEADS.options("contrastive", hidden_dim=8, projection_dim=4, **options),
        context=context,
    )


def make_batch(frame_counts, ids, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    steps = max(frame_counts)
    features = torch.zeros(len(ids), steps, dim)
    mask = torch.zeros(len(ids), steps, dtype=torch.bool)
    for row, count in enumerate(frame_counts):
        features[row, :count] = torch.from_numpy(rng.normal(size=(count, dim))).float()
        mask[row, :count] = True
    n = len(ids)
    return Batch(
        {"v": features},
        {"v": mask},
        {"v": torch.zeros(n, steps)},
        {"v": torch.ones(n, dtype=torch.bool)},
        torch.zeros(n, 2),
        torch.arange(n),
        list(ids),
    )


def test_multi_positive_infonce_and_ltcl_match_a_numpy_recomputation():
    rng = np.random.default_rng(7)
    ids = ["a", "b", "c", "d", "e"]
    # a↔b mined (one direction only: the relation is symmetric), c↔e; "zz" is not in the batch
    neighbours = {"a": ["b", "zz"], "e": ["c"]}
    tau, beta = 0.3, 0.7
    crops = unit(rng, 5, 2, 4)
    segmented = np.array([True, True, False, True, True])  # c has < 4 frames: no segments
    segments, augmented = unit(rng, 4, 4, 4), unit(rng, 4, 4, 4)
    head = make_head(neighbours, temperature=tau, ltcl_weight=beta)
    extras = {
        "crops": torch.from_numpy(crops),
        "segmented": torch.from_numpy(segmented),
        "segments": torch.from_numpy(segments),
        "augmented": torch.from_numpy(augmented),
    }
    output = type("Output", (), {"extras": extras})()
    total, parts = head.loss(output, make_batch([1] * 5, ids))
    nce = reference_nce(crops, ids, neighbours, tau)
    keep = np.flatnonzero(segmented)
    local, lt = reference_ltcl(
        dict(zip(keep, segments, strict=True)), dict(zip(keep, augmented, strict=True)), ids, neighbours, tau
    )
    assert parts["nce"] == pytest.approx(nce, rel=1e-9)
    assert parts["local"] == pytest.approx(local, rel=1e-9) and parts["lt"] == pytest.approx(lt, rel=1e-9)
    assert float(total) == pytest.approx(nce + beta * (local + lt), rel=1e-9)
    # without neighbours the positive is only the other crop: plain NT-Xent
    plain, parts = make_head(temperature=tau, ltcl=False).loss(output, make_batch([1] * 5, ids))
    assert float(plain) == pytest.approx(reference_nce(crops, ids, {}, tau), rel=1e-9) and set(parts) == {"nce"}


def test_crops_and_segments_stay_inside_the_valid_frames():
    lengths = torch.arange(1, 41).repeat(50)
    start, span = random_spans(lengths, 0.5, generator=torch.Generator().manual_seed(0))
    assert (span >= torch.ceil(0.5 * lengths)).all() and (span >= 1).all()
    assert (start >= 0).all() and (start + span <= lengths).all()
    assert set(span[lengths == 10].tolist()) == {5, 6, 7, 8, 9, 10}  # every allowed length is drawn
    head = make_head(crop_fraction=0.5)
    head.train()
    batch = make_batch([1, 3, 4, 9, 13], list("abcde"))
    views = head.training_views(batch.feature, batch.mask)
    assert views["crops"].shape == (5, 2, 4) and views["segmented"].tolist() == [False, False, True, True, True]
    assert views["segments"].shape == (3, 4, 4) and views["augmented"].shape == (3, 4, 4)
    assert torch.allclose(views["segments"].norm(dim=-1), torch.ones(3, 4))


# 3. neighbours restricted to train, missing file ---------------------------------------------------
def test_neighbours_outside_train_are_never_positives(trained):
    cache, mined, _, _ = trained
    k = 5
    with Cache(cache) as opened:
        splits = make_splits(opened, "weak")
        cfg = config(k)
        context = build_context(
            opened,
            HEADS.get("contrastive").inputs(cfg.options),
            vocabulary=splits.vocabulary,
            views=("weak",),
            input_dims={"weak": 32},
            video_ids=splits.ids[TRAIN],
            seed=0,
            head="contrastive",
        )
    train_ids = set(splits.ids[TRAIN])
    leaking = mined[mined.video_id.isin(train_ids) & ~mined.neighbour_id.isin(train_ids) & (mined["rank"] <= k)]
    assert len(leaking) > 20  # the mined file does name val/test videos among train videos' top K
    assert set(context.neighbours) <= train_ids and len(context.neighbours) == len(train_ids)
    ranked = mined.sort_values(["video_id", "rank"])
    for video_id, listed in context.neighbours.items():
        allowed = [n for n in ranked[ranked.video_id == video_id].neighbour_id if n in train_ids]
        assert listed == allowed[:k]
    head = make_head(context.neighbours)
    row = leaking.iloc[0]
    batch_ids = [row.video_id, row.neighbour_id, *context.neighbours[row.video_id][:1]]
    related = head.related(batch_ids)
    assert not related[0, 1] and related[0, 2]  # the test/val neighbour is a negative, the train one a positive
    generator = torch.Generator().manual_seed(0)
    for start in range(0, 200, 40):
        companions = head.companions(splits.ids[TRAIN][start : start + 40], generator)
        assert set(companions) <= train_ids and not set(companions) & set(splits.ids[TRAIN][start : start + 40])
        assert len(companions) == len(set(companions)) > 0


def test_cross_view_k_without_mined_neighbours_names_the_command(tmp_path):
    cache = write_cache(tmp_path / "cache", two_view_corpus(n=(10, 5, 0)))
    with pytest.raises(ConfigError, match="vidcache mine neighbours"):
        train(cache, config(5, epochs=1), tmp_path / "run")
    with pytest.raises(ParamError, match=r"ContrastiveOptions.cross_view_k=5: needs cross_view_from"):
        HEADS.options("contrastive", cross_view_k=5)


# 4. write-back -----------------------------------------------------------------------------------
def test_embeddings_written_back_are_a_view_that_mines_like_numpy(trained):
    cache, _, runs, _ = trained
    ids, embeddings, _ = predict_embeddings(runs["k5"], cache)
    assert write_embeddings(runs["k5"], cache, view_name="weak_cvtcl") == len(ids) == 350
    with Cache(cache) as opened:
        stored = np.stack([opened.read(v, "weak_cvtcl")[0] for v in ids])
        assert stored.shape == (350, 1, 32)
        np.testing.assert_array_equal(stored[:, 0], embeddings)
        frame, summary = nearest_videos(opened, k=1, view="weak_cvtcl")
    assert summary.exact
    vectors = stored[:, 0].astype(np.float64)
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32).astype(np.float64)
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    expected = pd.Series(np.array(ids)[scores.argmax(axis=1)], index=ids)
    got = frame.set_index("video_id")["neighbour_id"]
    assert got.loc[ids].tolist() == expected.tolist()
    assert write_embeddings(runs["k5"], cache, view_name="weak_cvtcl") == 350  # the same run again: replaced
    with pytest.raises(ConfigError, match="other settings"):
        write_embeddings(runs["k0"], cache, view_name="weak_cvtcl")


# 5. LTCL robustness ------------------------------------------------------------------------------
def test_ltcl_survives_videos_with_fewer_than_four_frames():
    ids = ["a", "b", "c", "d", "e"]
    for counts in ([1, 2, 3, 5, 9], [1, 2, 3, 3, 1], [4, 1, 1, 1, 1]):
        head = make_head({"a": ["d"]}, dropout=0.2)
        head.train()
        batch = make_batch(counts, ids)
        total, parts = head.loss(head.forward_batch(batch), batch)
        total.backward()
        assert math.isfinite(float(total.detach())) and all(math.isfinite(v) for v in parts.values()), (counts, parts)
        assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
        if max(counts) < 4 or sum(c >= 4 for c in counts) == 1:  # nothing to contrast across videos
            assert parts["local"] == 0.0
        if max(counts) < 4:
            assert parts["lt"] == 0.0
    head.eval()
    with torch.no_grad():
        output = head.forward_batch(batch)
    assert output.logits.shape == (5, 2) and not output.logits.any() and output.extras == {}
    assert torch.allclose(output.embedding.norm(dim=1), torch.ones(5))


@pytest.mark.parametrize("ltcl", [True, False])
def test_training_with_short_videos_keeps_finite_losses(tmp_path, ltcl):
    rng = np.random.default_rng(5)
    videos = {}
    for split, count in (("train", 24), ("val", 6)):
        for i in range(count):
            frames = rng.normal(size=(int(rng.integers(1, 9)), 8))
            videos[f"{split}/{i:02d}"] = ({"weak": frames}, (f"c{i % 2}",), split)
    cache = write_cache(tmp_path / "cache", videos)
    summary = train(cache, config(ltcl=ltcl, epochs=3, batch_size=8), tmp_path / "run")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert summary.skipped_steps == 0 and summary.epochs_run == 3
    assert np.isfinite(history["train_loss"]).all() and np.isfinite(history["val_recall_at_1"]).all()
