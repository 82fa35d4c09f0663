"""The fusion head (multimodal transformer + class prototypes) on two-view caches with known answers:
a label only both views together determine, videos missing a view, a label only the rows' times
determine, and a checkpoint round trip checked by an independent forward."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vidcache import Cache
from vidcache.cache.arrays import write_view_arrays
from vidcache.errors import ConfigError
from vidcache.heads import HEADS, TrainConfig
from vidcache.heads.data import Batch
from vidcache.heads.predict import evaluate_run, load_run, predict_run
from vidcache.heads.train import build_head, train
from vidcache.manifest import VideoEntry

DIM_A, DIM_B = 12, 8
ROWS_A, STEP_A = 8, 1.0  # frames at 1 fps
ROWS_B, STEP_B = 3, 0.96  # audio-like examples every 0.96 s
SPLITS = (("train", 320), ("val", 80), ("test", 160))
FUSION = {"hidden_dim": 32, "layers": 2, "attention_heads": 4, "dropout": 0.0}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is faster than two and does not fight other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_two_views(path, videos):
    """videos: {video_id: (rows_a [Ta, Da], times_a, rows_b [Tb, Db] or None, times_b, labels, split)};
    a video whose rows_b is None has no rows of view b."""
    entries = [VideoEntry(v, f"/src/{v}.mp4", spec[4], spec[5]) for v, spec in videos.items()]
    for view, column in (("a", 0), ("b", 2)):
        rows = [(v, s[column], s[column + 1]) for v, s in videos.items() if s[column] is not None]
        write_view_arrays(
            path, view=view, rows=rows, entries=entries, identity={"model": f"synthetic-{view}"}, dtype="float32"
        )
    return path


def two_bit_corpus(seed=0, *, b_fraction=1.0):
    """Label = (bit of view a, bit of view b), 4 classes: a's frames lean along +e0 or −e0, b's rows
    along +e0 or −e0 of their own space. Either view alone knows one bit (top-1 ≤ 0.5). With
    `b_fraction` < 1, the other videos have no b rows at all."""
    rng = np.random.default_rng(seed)
    times_a, times_b = np.arange(ROWS_A) * STEP_A, np.arange(ROWS_B) * STEP_B
    videos = {}
    for split, n in SPLITS:
        for i in range(n):
            bit_a, bit_b = rng.integers(2, size=2)
            rows_a = rng.normal(size=(ROWS_A, DIM_A))
            rows_a[:, 0] += 1.2 if bit_a else -1.2
            rows_b = rng.normal(size=(ROWS_B, DIM_B))
            rows_b[:, 0] += 2.0 if bit_b else -2.0
            if rng.random() >= b_fraction:
                rows_b = None
            videos[f"{split}/{i:04d}"] = (rows_a, times_a, rows_b, times_b, (f"{bit_a}{bit_b}",), split)
    return videos


def fusion_config(**overrides):
    options = HEADS.options("fusion", **{**FUSION, **overrides.pop("options", {})})
    base = {"head": "fusion", "views": ("a", "b"), "epochs": 12, "lr": 3e-3, "batch_size": 32, "patience": 12}
    return TrainConfig(**{**base, **overrides, "options": options})


@pytest.fixture(scope="module")
def both_views(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion_both")
    cache = write_two_views(root / "cache", two_bit_corpus(0))
    train(cache, fusion_config(), root / "fusion")
    return cache, root


@pytest.fixture(scope="module")
def missing_b(tmp_path_factory):
    root = tmp_path_factory.mktemp("fusion_missing")
    videos = two_bit_corpus(1, b_fraction=0.7)
    cache = write_two_views(root / "cache", videos)
    summary = train(cache, fusion_config(epochs=15, patience=15), root / "fusion")
    return cache, root / "fusion", videos, summary


def top1_of(frame, ids, vocabulary):
    scores = frame.pivot(index="video_id", columns="label", values="score").loc[ids, vocabulary]
    return [vocabulary[k] for k in scores.to_numpy().argmax(axis=1)]


def test_fusion_needs_both_views_and_beats_each_single_view(both_views):
    cache, root = both_views
    fused = evaluate_run(root / "fusion", cache, split="test")
    single = {}
    for view in ("a", "b"):
        config = TrainConfig(
            head="prototype",
            view=view,
            epochs=10,
            lr=3e-3,
            batch_size=32,
            options=HEADS.options("prototype", hidden_dim=32),
        )
        train(cache, config, root / f"prototype_{view}")
        single[view] = evaluate_run(root / f"prototype_{view}", cache, split="test")["top1"]
    assert fused["top1"] >= 0.9, fused
    assert max(single.values()) <= 0.62, single  # one bit of two: chance on the other
    assert fused["top1"] >= max(single.values()) + 0.3, (fused["top1"], single)


def test_a_missing_view_is_masked_not_dropped(missing_b):
    cache, run_dir, videos, summary = missing_b
    without_b = {v for v, spec in videos.items() if spec[2] is None}
    train_without = [v for v in without_b if v.startswith("train/")]
    assert summary.train_videos == 320 and len(train_without) > 50  # trained on, not dropped
    frame = predict_run(run_dir, cache)  # every video of either view
    assert set(frame.video_id) == set(videos)
    vocabulary = json.loads((run_dir / "vocabulary.json").read_text())
    test_with = sorted(v for v in videos if v.startswith("test/") and v not in without_b)
    test_without = sorted(v for v in without_b if v.startswith("test/"))
    truth = {v: videos[v][4][0] for v in videos}
    predicted = dict(zip(test_with + test_without, top1_of(frame, test_with + test_without, vocabulary), strict=True))
    with_b = np.mean([predicted[v] == truth[v] for v in test_with])
    a_bit = np.mean([predicted[v][0] == truth[v][0] for v in test_without])  # b's bit is unknowable there
    assert with_b >= 0.9 and a_bit >= 0.9, (with_b, a_bit)

    # garbage in the masked b positions of a video without b changes nothing (nor in padded a rows)
    model = load_run(run_dir, device=torch.device("cpu")).model
    rng = np.random.default_rng(5)
    picked = [test_without[0], test_with[0], test_without[1]]

    def batch(fill, fill_time):
        features, masks, times = {}, {}, {}
        for view, column, rows, dim in (("a", 0, ROWS_A + 2, DIM_A), ("b", 2, ROWS_B + 1, DIM_B)):
            x = torch.as_tensor(fill(len(picked), rows, dim), dtype=torch.float32)
            t = torch.as_tensor(fill_time(len(picked), rows), dtype=torch.float32)
            m = torch.zeros(len(picked), rows, dtype=torch.bool)
            for k, v in enumerate(picked):
                if videos[v][column] is not None:
                    n = len(videos[v][column])
                    x[k, :n], t[k, :n], m[k, :n] = (
                        torch.as_tensor(videos[v][column]),
                        torch.as_tensor(videos[v][column + 1]),
                        True,
                    )
            features[view], masks[view], times[view] = x, m, t
        present = {view: masks[view].any(dim=1) for view in masks}
        return Batch(features, masks, times, present, torch.zeros(len(picked), 4), torch.arange(len(picked)), picked)

    with torch.no_grad():
        zeros = model.forward_batch(batch(lambda *s: np.zeros(s), lambda *s: np.zeros(s))).logits
        huge = model.forward_batch(
            batch(lambda *s: rng.normal(size=s) * 1e6, lambda *s: rng.normal(size=s) * 1e6)
        ).logits
        nan = model.forward_batch(batch(lambda *s: np.full(s, np.nan), lambda *s: np.full(s, np.nan))).logits
    assert torch.isfinite(zeros).all()
    torch.testing.assert_close(huge, zeros, rtol=0, atol=0)
    torch.testing.assert_close(nan, zeros, rtol=0, atol=0)


def order_corpus(seed=2):
    """One event row in each view (a: 8 frames at 1 fps, b: 8 examples every 0.96 s), the rest noise;
    label = which view's event comes first. Every video comes with its time-reversed copy (rows in
    reverse order on the same time grid): the same rows, the opposite label. A model blind to the
    rows' times sees the two as one bag of tokens and must get exactly one of each pair wrong."""
    rng = np.random.default_rng(seed)
    rows_b = 8
    times_a, times_b = np.arange(ROWS_A) * STEP_A, np.arange(rows_b) * STEP_B
    videos = {}
    for split, pairs in (("train", 200), ("val", 40), ("test", 80)):
        for i in range(pairs):
            while True:
                event_a, event_b = rng.integers(ROWS_A), rng.integers(rows_b)
                if abs(times_a[event_a] - times_b[event_b]) >= 1.5:
                    break
            a = rng.normal(size=(ROWS_A, DIM_A)) * 0.5
            b = rng.normal(size=(rows_b, DIM_B)) * 0.5
            a[event_a, 0] += 3.0
            b[event_b, 0] += 3.0
            first = "a_first" if times_a[event_a] < times_b[event_b] else "b_first"
            videos[f"{split}/{i:04d}"] = (a, times_a, b, times_b, (first,), split)
            second = "b_first" if first == "a_first" else "a_first"  # reversed: 7 − i vs 6.72 − 0.96 j
            videos[f"{split}/{i:04d}r"] = (a[::-1].copy(), times_a, b[::-1].copy(), times_b, (second,), split)
    return videos


def test_time_embedding_solves_what_a_bag_of_tokens_cannot(tmp_path):
    videos = order_corpus()
    cache = write_two_views(tmp_path / "cache", videos)
    summary = train(cache, fusion_config(epochs=30), tmp_path / "run")
    fused = evaluate_run(tmp_path / "run", cache, split="test")
    assert fused["top1"] >= 0.9, (fused, summary.best_value)
    # the same trained model with its time embedding switched off: each video and its reversed copy
    # get the same scores, so exactly half of the (balanced, paired) test split is wrong
    run = load_run(tmp_path / "run", device=torch.device("cpu"))
    with torch.no_grad():
        run.model.encoder.time.weight.zero_()
        run.model.encoder.time.bias.zero_()
    ids = sorted(v for v in videos if v.startswith("test/"))
    batch = Batch(
        {"a": torch.tensor(np.stack([videos[v][0] for v in ids]), dtype=torch.float32),
         "b": torch.tensor(np.stack([videos[v][2] for v in ids]), dtype=torch.float32)},
        {"a": torch.ones(len(ids), ROWS_A, dtype=torch.bool), "b": torch.ones(len(ids), 8, dtype=torch.bool)},
        {"a": torch.tensor(np.tile(videos[ids[0]][1], (len(ids), 1)), dtype=torch.float32),
         "b": torch.tensor(np.tile(videos[ids[0]][3], (len(ids), 1)), dtype=torch.float32)},
        {"a": torch.ones(len(ids), dtype=torch.bool), "b": torch.ones(len(ids), dtype=torch.bool)},
        torch.zeros(len(ids), 2),
        torch.arange(len(ids)),
        ids,
    )  # fmt: skip
    with torch.no_grad():
        blind = run.model.forward_batch(batch).logits
    originals = [k for k, v in enumerate(ids) if not v.endswith("r")]
    torch.testing.assert_close(blind[originals], blind[[k + 1 for k in originals]], atol=1e-5, rtol=1e-5)
    truth = [run.vocabulary.index(videos[v][4][0]) for v in ids]
    assert (blind.argmax(dim=1) == torch.tensor(truth)).float().mean() == pytest.approx(0.5, abs=0.07)


def test_predict_matches_an_independent_forward_from_the_checkpoint(missing_b):
    cache, run_dir, _, _ = missing_b
    resolved = json.loads((run_dir / "config.json").read_text())
    vocabulary = resolved["vocabulary"]
    frame = predict_run(run_dir, cache, split="test")
    options = HEADS.options("fusion", **resolved["train_config"]["options"])  # saved verbatim
    model = HEADS.create(
        "fusion",
        input_dim=DIM_A,
        num_classes=len(vocabulary),
        multi_label=False,
        options=options,
        input_dims={"a": DIM_A, "b": DIM_B},
    )
    state = load_file(str(run_dir / "best.safetensors"))
    model.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
    model.eval()
    with Cache(cache) as handle:
        ids = sorted(v for v in handle.video_ids("a") if v.startswith("test/"))
        have_b = set(handle.video_ids("b"))
        read = {
            view: [handle.read(v, view, dtype=np.float32) if view == "a" or v in have_b else None for v in ids]
            for view in ("a", "b")
        }
    features, masks, times = {}, {}, {}
    for view, dim in (("a", DIM_A), ("b", DIM_B)):
        length = max(len(r[0]) for r in read[view] if r is not None) + 3  # longer than predict's padding
        features[view] = torch.full((len(ids), length, dim), 7.0)  # masked: any value
        masks[view] = torch.zeros(len(ids), length, dtype=torch.bool)
        times[view] = torch.full((len(ids), length), -5.0)
        for k, got in enumerate(read[view]):
            if got is not None:
                n = len(got[0])
                features[view][k, :n], times[view][k, :n] = torch.from_numpy(got[0]), torch.from_numpy(got[1])
                masks[view][k, :n] = True
    present = {view: masks[view].any(dim=1) for view in masks}
    batch = Batch(features, masks, times, present, torch.zeros(len(ids), 4), torch.arange(len(ids)), ids)
    with torch.no_grad():
        expected = torch.softmax(model.forward_batch(batch).logits, dim=1).numpy()
    got = frame.pivot(index="video_id", columns="label", values="score").loc[ids, vocabulary].to_numpy()
    assert not present["b"].all() and len(ids) == 160
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_several_views_need_a_multi_view_head():
    with pytest.raises(ConfigError, match="fusion"):
        build_head(TrainConfig(head="prototype", views=("a", "b")), input_dim=DIM_A, num_classes=4, multi_label=False)
    assert HEADS.get("fusion").multi_view and not HEADS.get("prototype").multi_view
