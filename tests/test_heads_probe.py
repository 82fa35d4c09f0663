"""The solved linear probe (`--head linear`, default `--solver lbfgs`) against scikit-learn's
LogisticRegression on features pooled here with NumPy. Task seeds 700-799 belong to these tests;
benchmarks/bench_heads_quality.py uses others."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from tests.test_heads import write_cache
from vidcache.heads import HEADS, TrainConfig
from vidcache.heads.predict import evaluate_run, predict_run
from vidcache.heads.train import train

SPLITS = (("train", 300), ("val", 100), ("test", 200))  # probe_task; other tests name their own sizes
C_GRID = [10.0**e for e in range(-4, 5)]  # the reference's grid (decades; vidcache sweeps half decades)


def probe_task(seed: int, *, dim: int, frames: int, classes: int, multi_label: bool, noise: float, density: float):
    """Co-occurring, correlated classes (a shared direction plus each class's own), frames with
    per-frame noise; labels visible in every frame at a random strength."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=dim)
    centres = 0.6 * shared + rng.normal(size=(classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    videos = {}
    for split, count in SPLITS:
        for i in range(count):
            if multi_label:
                on = rng.random(classes) < density
            else:
                on = np.eye(classes, dtype=bool)[rng.integers(classes)]
            strength = rng.uniform(0.5, 1.5, size=(frames, 1))
            x = strength * (on @ centres) + noise * rng.normal(size=(frames, dim)) / np.sqrt(dim) * 4
            videos[f"{split}/{i:04d}"] = (x.astype(np.float32), tuple(f"c{c}" for c in np.flatnonzero(on)), split)
    return videos


def arrays(videos, split, vocabulary):
    ids = sorted(v for v in videos if v.startswith(split + "/"))
    x = np.stack([videos[v][0].mean(axis=0) for v in ids])
    y = np.array([[name in videos[v][1] for name in vocabulary] for v in ids], dtype=int)
    return x, y


def sklearn_probe(videos, vocabulary, *, multi_label: bool) -> float:
    """StandardScaler + LogisticRegression, C chosen on val, fitted on train; test mAP / top-1."""
    (xt, yt), (xv, yv), (xs, ys) = (arrays(videos, s, vocabulary) for s, _ in SPLITS)
    scaler = StandardScaler().fit(xt)

    def metric(y, scores):
        if multi_label:
            return np.mean([average_precision_score(y[:, c], scores[:, c]) for c in range(y.shape[1]) if y[:, c].any()])
        return float((y.argmax(1) == scores.argmax(1)).mean())

    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=2000)
        model = OneVsRestClassifier(model) if multi_label else model
        model.fit(scaler.transform(xt), yt if multi_label else yt.argmax(1))
        value = metric(yv, model.predict_proba(scaler.transform(xv)))
        if best is None or value > best[0]:
            best = (value, model)
    return metric(ys, best[1].predict_proba(scaler.transform(xs)))


FAMILY = [
    dict(seed=701, dim=64, frames=8, classes=6, multi_label=True, noise=5.0, density=0.3),
    dict(seed=702, dim=128, frames=4, classes=5, multi_label=False, noise=1.5, density=0.0),
    dict(seed=703, dim=256, frames=16, classes=8, multi_label=True, noise=10.0, density=0.5),
    dict(seed=704, dim=64, frames=32, classes=10, multi_label=False, noise=3.0, density=0.0),
]


@pytest.mark.parametrize("task", FAMILY, ids=lambda t: f"seed{t['seed']}")
def test_solved_probe_is_within_001_of_sklearn_with_c_chosen_on_val(task, tmp_path):
    videos = probe_task(**task)
    cache = write_cache(tmp_path / "cache", videos)
    summary = train(cache, TrainConfig(head="linear"), tmp_path / "run")
    multi = task["multi_label"]
    assert summary.task == ("multi-label" if multi else "single-label")
    ours = evaluate_run(tmp_path / "run", cache, split="test")["map_macro" if multi else "top1"]
    vocabulary = json.loads((tmp_path / "run" / "vocabulary.json").read_text())
    reference = sklearn_probe(videos, vocabulary, multi_label=multi)
    assert ours >= reference - 0.01, (ours, reference, summary.report)
    assert summary.report["solver"] == "lbfgs" and summary.report["converged"]


@pytest.mark.parametrize("multi_label", [True, False])
def test_fixed_c_solution_equals_sklearn_probabilities(multi_label, tmp_path):
    task = dict(seed=711 + multi_label, dim=32, frames=6, classes=4, noise=1.0, density=0.4)
    videos = probe_task(multi_label=multi_label, **task)
    cache = write_cache(tmp_path / "cache", videos)
    options = HEADS.options("linear", probe_c=0.3, probe_refit="train")
    train(cache, TrainConfig(head="linear", options=options), tmp_path / "run")
    vocabulary = json.loads((tmp_path / "run" / "vocabulary.json").read_text())
    (xt, yt), _, (xs, _) = (arrays(videos, s, vocabulary) for s, _ in SPLITS)
    scaler = StandardScaler().fit(xt)
    model = LogisticRegression(C=0.3, max_iter=10000, tol=1e-8)
    model = OneVsRestClassifier(model) if multi_label else model
    model.fit(scaler.transform(xt), yt if multi_label else yt.argmax(1))
    expected = model.predict_proba(scaler.transform(xs))
    frame = predict_run(tmp_path / "run", cache, split="test")
    got = frame.pivot(index="video_id", columns="label", values="score")[vocabulary].to_numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_a_val_split_too_small_to_choose_keeps_c_1_and_says_so(tmp_path):
    videos = probe_task(721, dim=16, frames=3, classes=4, multi_label=True, noise=1.0, density=0.3)
    kept = [v for v in videos if v.startswith("val/")][:3]  # three val videos: < 2 positives per class
    videos = {v: item for v, item in videos.items() if not v.startswith("val/") or v in kept}
    cache = write_cache(tmp_path / "cache", videos)
    summary = train(cache, TrainConfig(head="linear"), tmp_path / "run")
    assert summary.report["c"] == 1.0 and summary.report["c_from"] == "default"
    assert any("too small to choose" in w for w in summary.warnings), summary.warnings
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved["warnings"] == summary.warnings


def test_lr_and_weight_decay_are_chosen_on_val_and_every_trial_is_recorded(tmp_path):
    import pandas as pd

    from tests.test_heads import sparse_instance_corpus
    from vidcache.heads.search import LR_GRID, WD_GRID

    cache = write_cache(tmp_path / "cache", sparse_instance_corpus(seed=731, n_train=60, n_val=30, n_test=10))
    summary = train(cache, TrainConfig(head="pool", epochs=3, batch_size=32), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "search" / "search.json").read_text())
    assert summary.search == record and len(record["trials"]) == len(LR_GRID) + len(WD_GRID) - 1
    best_of = {}  # recomputed from each trial's own history.csv
    for trial in record["trials"]:
        history = pd.read_csv(
            tmp_path / "run" / "search" / f"lr{trial['lr']:g}-wd{trial['weight_decay']:g}" / "history.csv"
        )
        best_of[(trial["lr"], trial["weight_decay"])] = history["val_map_macro"].max()
    by_lr = {lr: best_of[(lr, WD_GRID[0])] for lr in LR_GRID}
    best_lr = max(LR_GRID, key=lambda lr: (by_lr[lr], -lr))
    expected = max(((best_lr, wd) for wd in WD_GRID), key=lambda k: (best_of[k], -k[1]))
    assert (record["chosen"]["lr"], record["chosen"]["weight_decay"]) == expected
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["train_config"]
    assert (resolved["lr"], resolved["weight_decay"]) == expected and resolved["options"]["hidden_dim"] == 0


def test_search_trials_use_a_seeded_sample_of_each_split_and_the_run_uses_every_video(tmp_path):
    """--search-videos N: each trial trains and validates on N videos per split (a seeded sample, the
    same for every trial), its history has N val videos' metric; the chosen values train on all."""
    from tests.test_heads import sparse_instance_corpus

    cache = write_cache(tmp_path / "cache", sparse_instance_corpus(seed=733, n_train=60, n_val=30, n_test=10))
    config = TrainConfig(head="prototype", epochs=3, batch_size=16, search_videos=20)
    summary = train(cache, config, tmp_path / "run")
    assert summary.search["trial_videos"] == 20 and summary.search["trials"]
    samples = set()
    for trial in summary.search["trials"]:
        trial_dir = tmp_path / "run" / "search" / f"lr{trial['lr']:g}-wd{trial['weight_decay']:g}"
        saved = json.loads((trial_dir / "config.json").read_text())
        assert saved["train_config"]["split_sample"] == 20
        trained = json.loads((trial_dir / "summary.json").read_text())
        assert (trained["train_videos"], trained["val_videos"]) == (20, 20)
        samples.add(saved["splits_sha1"])
        # a trial is judged by its epochs' best val metric: no probe branch solved, no plots drawn
        assert saved["train_config"]["search_trial"] is True and "probe_mix" not in trained["report"]
        assert not list(trial_dir.glob("*.png"))
        history = pd.read_csv(trial_dir / "history.csv")
        assert trial["value"] == pytest.approx(history[f"val_{trained['best_metric']}"].max())
    assert len(samples) == 1  # every trial saw the same videos
    final = json.loads((tmp_path / "run" / "config.json").read_text())
    assert final["train_config"]["split_sample"] is None and final["train_config"]["search_videos"] == 20
    assert final["train_config"]["search_trial"] is False and "probe_mix" in summary.report
    assert (summary.train_videos, summary.val_videos) == (60, 30)
    from vidcache import Cache
    from vidcache.heads.data import TRAIN, VAL, make_splits, sample_splits

    with Cache(cache) as opened:
        splits = make_splits(opened, ("clip",), task="auto", val_fraction=0.1)
    sampled = sample_splits(splits, 20, seed=0)
    assert len(sampled.ids[TRAIN]) == 20 and len(sampled.ids[VAL]) == 20 and len(splits.ids[TRAIN]) == 60
    assert set(sampled.ids[TRAIN]) <= set(splits.ids[TRAIN]) and sampled.ids[TRAIN] == sorted(sampled.ids[TRAIN])
    assert sampled.vocabulary == splits.vocabulary and sample_splits(splits, 20, seed=0) == sampled
    assert sample_splits(splits, 100, seed=0) == splits  # fewer videos than N: every one
    with pytest.raises(Exception, match="search_videos"):
        TrainConfig(search_videos=-1)


def test_pool_at_its_defaults_finds_labels_seen_in_few_frames(tmp_path):
    """A label visible in 2-4 of 32 frames: the pool head at its defaults (hidden width, lr and weight decay from
    the search) reaches 0.9 of the oracle (frames scored with the true class directions, max over
    frames) and beats scikit-learn's probe on mean-pooled frames by 0.15."""
    rng = np.random.default_rng(741)
    dim, frames, classes = 32, 32, 4
    directions = rng.normal(size=(classes, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    videos, oracle = {}, {}
    for split, count in (("train", 160), ("val", 60), ("test", 120)):
        for i in range(count):
            on = rng.random(classes) < 0.3
            x = rng.normal(size=(frames, dim))
            for c in np.flatnonzero(on):
                x[rng.choice(frames, size=int(rng.integers(2, 5)), replace=False)] += 3.0 * directions[c]
            videos[f"{split}/{i:04d}"] = (x.astype(np.float32), tuple(f"c{c}" for c in np.flatnonzero(on)), split)
            oracle[f"{split}/{i:04d}"] = (x @ directions.T).max(axis=0)
    cache = write_cache(tmp_path / "cache", videos)
    train(cache, TrainConfig(head="pool", epochs=40, batch_size=32), tmp_path / "run")  # fewer epochs: fast
    pool = evaluate_run(tmp_path / "run", cache, split="test")["map_macro"]
    vocabulary = [f"c{c}" for c in range(classes)]
    _, truth = arrays(videos, "test", vocabulary)
    test_ids = sorted(v for v in videos if v.startswith("test/"))
    best = np.mean([average_precision_score(truth[:, c], [oracle[v][c] for v in test_ids]) for c in range(classes)])
    reference = sklearn_probe(videos, vocabulary, multi_label=True)
    assert pool >= 0.9 * best and pool >= reference + 0.15, (pool, best, reference)


@pytest.mark.parametrize("head", ["prototype", "mlp"])
def test_heads_with_a_probe_branch_keep_up_with_sklearn_on_fine_grained_labels(head, tmp_path):
    """Confusable, co-occurring classes where a linear probe is the right model: the blended head
    (β chosen on val) stays within 0.01 of scikit-learn's probe with C chosen on val."""
    videos = probe_task(751, dim=64, frames=16, classes=8, multi_label=True, noise=6.0, density=0.35)
    cache = write_cache(tmp_path / "cache", videos)
    summary = train(cache, TrainConfig(head=head, epochs=8, lr=3e-3, weight_decay=1e-4), tmp_path / "run")
    ours = evaluate_run(tmp_path / "run", cache, split="test")["map_macro"]
    vocabulary = json.loads((tmp_path / "run" / "vocabulary.json").read_text())
    reference = sklearn_probe(videos, vocabulary, multi_label=True)
    assert ours >= reference - 0.01, (ours, reference, summary.report)
    assert 0 <= summary.report["probe_mix"] <= 1 and len(summary.report["blend_val"]) == 11
