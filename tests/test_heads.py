"""Heads trained on caches with known answers built here, checked against independent references."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import average_precision_score

from tests.conftest import run_cli
from vidcache.cache.arrays import write_view_arrays
from vidcache.errors import ConfigError
from vidcache.heads import HEADS, TrainConfig
from vidcache.heads.context import LabelTexts
from vidcache.heads.data import Batch, SplitError
from vidcache.heads.predict import evaluate_run, predict_run
from vidcache.heads.train import TrainingError, build_head, train
from vidcache.manifest import VideoEntry

DIM = 16


def write_cache(path, videos, *, view="clip", identity=None):
    """videos: {video_id: (frames [T, D], labels, split)}."""
    entries = [VideoEntry(v, f"/src/{v}.mp4", labels, split) for v, (_, labels, split) in videos.items()]
    rows = [(v, frames, np.arange(len(frames), dtype=float)) for v, (frames, _, _) in videos.items()]
    write_view_arrays(
        path, view=view, rows=rows, entries=entries, identity=identity or {"model": "synthetic"}, dtype="float32"
    )
    return path


def sparse_instance_corpus(seed=0, n_train=240, n_val=60, n_test=120, frames=20):
    """Per class c: positive bags have 2 frames with a strong signal along e_c; 'decoy' negatives have
    a weak signal in every frame, so their mean equals a positive's mean: mean pooling cannot tell
    them apart, a pooling that looks at single frames can."""
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    videos = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(n):
            x = rng.normal(size=(frames, DIM)) * 0.5
            labels = []
            for c, name in enumerate(classes):
                kind = rng.integers(3)  # 0 positive, 1 plain negative, 2 decoy negative
                if kind == 0:
                    x[rng.choice(frames, 2, replace=False), c] += 4.0
                    labels.append(name)
                elif kind == 2:
                    x[:, c] += 0.4  # same mean as a positive: 2 * 4.0 / 20
            videos[f"{split}/{i:04d}"] = (x, tuple(labels), split)
    return videos


@pytest.fixture(scope="module")
def bag_cache(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("bags") / "cache", sparse_instance_corpus())


def fast(head, **overrides):
    options = HEADS.options_from(head, overrides.pop("options", {}))  # one settings dict, every head
    epochs, lr = overrides.pop("epochs", 40), overrides.pop("lr", 1e-2)
    return TrainConfig(head=head, epochs=epochs, lr=lr, batch_size=32, options=options, **overrides)


def test_learnable_pooling_solves_sparse_instances_mean_pooling_cannot(bag_cache, tmp_path):
    learnable = train(bag_cache, fast("pool", options={"hidden_dim": 0}), tmp_path / "pool")
    mean_probe = train(bag_cache, fast("linear"), tmp_path / "linear")
    learnable_test = evaluate_run(tmp_path / "pool", bag_cache, split="test")
    mean_test = evaluate_run(tmp_path / "linear", bag_cache, split="test")
    assert learnable_test["map_macro"] >= 0.9, learnable_test
    assert learnable_test["map_macro"] >= mean_test["map_macro"] + 0.2, (learnable_test, mean_test)
    exponents = json.loads((tmp_path / "pool" / "learned.json").read_text())["pooling_exponents"]
    assert len(exponents) == 3 and min(exponents) > 2.0  # learned towards max pooling (started at 2)
    assert learnable.report["pooling_exponents"] == exponents and mean_probe.task == "multi-label"
    for name in ("config.json", "history.csv", "summary.json", "thresholds.json", "loss.png", "per_class_ap.png"):
        assert (tmp_path / "pool" / name).exists(), name


@pytest.mark.parametrize("head", HEADS.names())
def test_every_head_overfits_a_tiny_set(head, tmp_path):
    rng = np.random.default_rng(1)
    videos = {}
    for i in range(9):
        frames = rng.normal(size=(int(rng.integers(2, 6)), DIM))
        label = ("xyz"[i % 3],)
        videos[f"train/{i}"] = (frames, label, "train")
        videos[f"val/{i}"] = (frames, label, "val")  # val = train: the best checkpoint is the best fit
    cache = write_cache(tmp_path / "cache", videos)
    options = {"pool_mode": "mean"}  # (only the pool head has it)
    if HEADS.needs(head, LabelTexts):  # label texts: a corpus file and its embeddings
        (tmp_path / "labels.txt").write_text("x\ny\nz\n")
        np.save(tmp_path / "text.npy", rng.normal(size=(3, DIM)).astype(np.float32))
        options.update(label_corpus=str(tmp_path / "labels.txt"), text_embeddings=str(tmp_path / "text.npy"))
    config = fast(head, epochs=60, lr=3e-2, patience=60, options=options)
    summary = train(cache, config, tmp_path / "run")
    assert summary.task == "single-label"
    if HEADS.get(head).kind == "embed":  # no classifier: each val copy must retrieve its train twin
        assert evaluate_run(tmp_path / "run", cache, split="val")["recall_at_1"] == 1.0, head
        return
    metrics = evaluate_run(tmp_path / "run", cache, split="train")
    assert metrics["top1"] == 1.0, (head, metrics)


def test_checkpoint_predict_round_trip_and_eval_agree_with_sklearn(bag_cache, tmp_path):
    config = fast("prototype", epochs=8)
    train(bag_cache, config, tmp_path / "run")
    frame = predict_run(tmp_path / "run", bag_cache, split="test")
    assert list(frame.columns) == ["video_id", "label", "score", "predicted"]
    # independent forward: the safetensors file loaded directly, features read with Cache.read
    from vidcache import Cache

    resolved = json.loads((tmp_path / "run" / "config.json").read_text())
    model = build_head(config, input_dim=DIM, num_classes=3, multi_label=True)
    state = load_file(str(tmp_path / "run" / "best.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    with Cache(bag_cache) as cache:
        ids = sorted(v for v in cache.video_ids("clip") if v.startswith("test/"))
        features = torch.from_numpy(np.stack([cache.read(v, "clip", dtype=np.float32)[0] for v in ids]))
        labels = {row.video_id: set(row.labels) for row in cache.entries().itertuples()}
    with torch.no_grad():
        expected = torch.sigmoid(model(features, torch.ones(features.shape[:2], dtype=torch.bool)).logits).numpy()
    got = frame.pivot(index="video_id", columns="label", values="score").loc[ids, resolved["vocabulary"]]
    np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-6)
    truth = np.array([[name in labels[v] for name in resolved["vocabulary"]] for v in ids], dtype=int)
    metrics = evaluate_run(tmp_path / "run", bag_cache, split="test")
    sk = np.mean([average_precision_score(truth[:, c], got.to_numpy()[:, c]) for c in range(3)])
    assert metrics["map_macro"] == pytest.approx(sk, abs=1e-9)
    assert {"recall_at_1", "recall_at_5", "recall_at_10", "gap_at_20", "f1_micro_tuned"} <= set(metrics)
    # fewer test videos than the retrieval cap: every one is a query, as with no cap at all
    assert metrics["retrieval_queries"] == len(ids)
    assert evaluate_run(tmp_path / "run", bag_cache, split="test", retrieval_queries=0) == metrics
    sampled = evaluate_run(tmp_path / "run", bag_cache, split="test", retrieval_queries=3)
    assert sampled["retrieval_queries"] == 3 and sampled["map_macro"] == metrics["map_macro"]


def test_retrieval_sample_is_seeded_and_its_recall_equals_sklearn_neighbours_on_those_queries():
    """eval's retrieval R@k above the cap: a fixed sample of queries, each ranked against the whole
    gallery; the reference is scikit-learn's exact cosine neighbours on the same queries."""
    from sklearn.neighbors import NearestNeighbors

    from vidcache.heads.metrics import retrieval_recall_at_k
    from vidcache.heads.predict import retrieval_sample

    asked = retrieval_sample(5000, 300)
    assert len(asked) == 300 and len(set(asked.tolist())) == 300 and (np.diff(asked) > 0).all()
    assert asked.min() >= 0 and asked.max() < 5000 and (retrieval_sample(5000, 300) == asked).all()
    assert (retrieval_sample(200, 300) == np.arange(200)).all() and (retrieval_sample(5000, 0) == np.arange(5000)).all()

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(6, 16))
    gallery_classes, query_classes = rng.integers(0, 6, 2000), rng.integers(0, 6, 5000)
    gallery = centres[gallery_classes] + rng.normal(size=(2000, 16)) * 1.2
    queries = centres[query_classes] + rng.normal(size=(5000, 16)) * 1.2
    got = retrieval_recall_at_k(queries[asked], query_classes[asked], gallery, gallery_classes, ks=(1, 5))
    neighbours = NearestNeighbors(n_neighbors=5, metric="cosine", algorithm="brute").fit(gallery)
    _, found = neighbours.kneighbors(queries[asked])
    for k in (1, 5):
        hits = (gallery_classes[found[:, :k]] == query_classes[asked][:, None]).any(axis=1)
        assert got[f"recall_at_{k}"] == pytest.approx(hits.mean(), abs=1e-12)


def test_resume_continues_exactly(bag_cache, tmp_path):
    config = fast("mlp", epochs=4, deterministic=True)
    straight = train(bag_cache, config, tmp_path / "a")

    def interrupt(epoch, _row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(bag_cache, config, tmp_path / "b", progress=interrupt)
    assert len(pd.read_csv(tmp_path / "b" / "history.csv")) == 2
    with pytest.raises(ConfigError, match="not empty"):
        train(bag_cache, config, tmp_path / "b")
    with pytest.raises(ConfigError, match="other options"):
        train(bag_cache, fast("mlp", epochs=5, deterministic=True), tmp_path / "b", resume=True)
    # a run started before a field existed recorded no value for it: the field's default, not "other options"
    recorded = json.loads((tmp_path / "b" / "config.json").read_text())
    del recorded["train_config"]["search_trial"]
    (tmp_path / "b" / "config.json").write_text(json.dumps(recorded))
    resumed = train(bag_cache, config, tmp_path / "b", resume=True)
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "b" / "history.csv"), pd.read_csv(tmp_path / "a" / "history.csv")
    )
    assert resumed.best_value == straight.best_value and resumed.epochs_run == 4


def test_split_hygiene_fails_loudly(tmp_path):
    rng = np.random.default_rng(2)

    def video(labels, split):
        return (rng.normal(size=(3, DIM)), labels, split)

    leak = {"a": video(("x",), "train"), "b": video(("y",), "train"), "c": video(("x",), "test")}
    cache = write_cache(tmp_path / "leak", leak)
    from vidcache.cache.catalog import Catalog

    catalog = Catalog.open(cache, create=True)
    catalog.upsert_entries([VideoEntry("c", "/src/a.mp4", ("x",), "test")])  # same source as a train video
    catalog.close()
    with pytest.raises(SplitError, match="in two splits"):
        train(cache, fast("linear", epochs=1), tmp_path / "r1")
    unseen = {"a": video(("x",), "train"), "b": video(("x",), "val"), "c": video(("z",), "test")}
    with pytest.raises(SplitError, match="not in train"):
        train(write_cache(tmp_path / "unseen", unseen), fast("linear", epochs=1), tmp_path / "r2")
    no_train = {"a": video(("x",), "test"), "b": video(("x",), "val")}
    with pytest.raises(SplitError, match="train split is empty"):
        train(write_cache(tmp_path / "notrain", no_train), fast("linear", epochs=1), tmp_path / "r3")


def test_eval_refuses_a_cache_from_another_extractor(bag_cache, tmp_path):
    train(bag_cache, fast("linear", epochs=2), tmp_path / "run")
    other = write_cache(
        tmp_path / "other", sparse_instance_corpus(n_train=30, n_val=10, n_test=10), identity={"model": "B"}
    )
    with pytest.raises(ConfigError, match="other settings"):
        evaluate_run(tmp_path / "run", other)
    result = run_cli("eval", "--run", tmp_path / "run", "--cache", other)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


def test_non_finite_features_stop_training_with_a_clear_error(tmp_path):
    rng = np.random.default_rng(3)
    videos = {f"v{i}": (np.full((2, DIM), np.nan), ("x" if i % 2 else "y",), "train") for i in range(8)}
    videos.update({f"w{i}": (rng.normal(size=(2, DIM)), ("x" if i % 2 else "y",), "val") for i in range(4)})
    cache = write_cache(tmp_path / "nan", videos)
    with pytest.raises(TrainingError, match="not finite"):
        train(cache, fast("linear", epochs=50, max_bad_steps=3), tmp_path / "run")


def test_cli_train_eval_predict(bag_cache, tmp_path):
    out = run_cli(
        "train", "--cache", bag_cache, "--head", "pool", "--out", tmp_path / "run", "--epochs", "3",
        "--pos-weight", "--json", check=True,
    )  # fmt: skip
    summary = json.loads(out.stdout)
    assert summary["epochs_run"] == 3 and summary["task"] == "multi-label"
    metrics = json.loads(run_cli("eval", "--run", tmp_path / "run", "--cache", bag_cache, "--json", check=True).stdout)
    assert set(metrics) >= {"map_macro", "map_micro", "gap_at_20", "f1_micro", "f1_macro"}
    run_cli("predict", "--run", tmp_path / "run", "--cache", bag_cache, "--out", tmp_path / "p.parquet", check=True)
    frame = pd.read_parquet(tmp_path / "p.parquet")
    assert frame.video_id.nunique() == 420 and set(frame.label) == {"a", "b", "c"}


def test_leak_check_survives_segment_columns_and_single_label_skips_unlabelled(tmp_path):
    from vidcache.cache.catalog import Catalog
    from vidcache.heads.data import make_splits

    rng = np.random.default_rng(4)
    videos = {f"v{i}": (rng.normal(size=(2, DIM)), ("xy"[i % 2],), "train") for i in range(6)}
    videos["u0"] = (rng.normal(size=(2, DIM)), (), "train")  # unlabelled
    videos["t0"] = (rng.normal(size=(2, DIM)), ("x",), "val")
    cache_dir = write_cache(tmp_path / "c", videos)
    from vidcache import Cache

    with Cache(cache_dir) as cache:
        splits = make_splits(cache, "clip")
    assert not splits.multi_label and "u0" not in splits.ids["train"]  # no target: not trained as class 0
    catalog = Catalog.open(cache_dir, create=True)
    catalog.upsert_entries(
        [
            VideoEntry("t0", "/src/v0.mp4", ("x",), "val"),  # the source of a train video: a leak
            VideoEntry("v5", "/src/v5.mp4", ("y",), "train", start_s=1.0, end_s=2.0),  # a segment column
        ]
    )
    catalog.close()
    with Cache(cache_dir) as cache, pytest.raises(SplitError, match="in two splits"):
        make_splits(cache, "clip")


def test_a_video_without_rows_never_makes_nan():
    from vidcache.heads.data import pad

    features, mask = pad([np.zeros((0, 4), np.float32), np.ones((3, 4), np.float32)], 8, 4)
    assert mask[0].tolist() == [True, False, False] and features[0].abs().sum() == 0
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    for name in [n for n in HEADS.names() if HEADS.get(n).kind == "classify" and not HEADS.needs(n, LabelTexts)]:
        for mode in ("learnable", "attention", "max"):
            head = HEADS.create(
                name,
                input_dim=4,
                num_classes=2,
                multi_label=True,
                options=HEADS.options_from(name, {"hidden_dim": 8, "pool_mode": mode, "frame_pooling": "max"}),
            )
            batch = Batch(
                {"clip": features},
                {"clip": mask},
                {"clip": torch.zeros(mask.shape)},
                {"clip": torch.ones(2, dtype=torch.bool)},
                targets,
                torch.arange(2),
                ["a", "b"],
            )
            loss, _ = head.loss(head.forward_batch(batch), batch)
            loss.backward()
            assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None), (name, mode)
