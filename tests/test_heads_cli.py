"""The seed-paper heads as a cron job would run them: mine → train → eval → predict → write a view →
mine again, each a separate `vidcache` process, checked against the Python API and the cache."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from tests.conftest import run_cli
from vidcache import Cache
from vidcache.cache.arrays import write_view_arrays
from vidcache.manifest import VideoEntry

CLASSES = ["jump", "run", "swim", "climb"]


def _corpus(path, seed=0):
    """View `rgb` (8 rows, class centre + noise) and `sound` (3 rows, another class centre + noise);
    label texts are the rgb class centres."""
    rng = np.random.default_rng(seed)
    rgb_centres = rng.normal(size=(4, 16))
    sound_centres = rng.normal(size=(4, 8))
    entries, rgb, sound = [], [], []
    for i in range(160):
        split = "train" if i < 100 else ("val" if i < 130 else "test")
        c = i % 4
        video_id = f"{split}/{i:03d}"
        entries.append(VideoEntry(video_id, f"/src/{video_id}.mp4", (CLASSES[c],), split))
        rgb.append((video_id, rgb_centres[c] + 0.8 * rng.normal(size=(8, 16)), np.arange(8.0)))
        if i % 5:  # every fifth video has no sound rows: the fusion head must mask, not drop, it
            sound.append((video_id, sound_centres[c] + 0.8 * rng.normal(size=(3, 8)), np.arange(3) * 0.96))
    write_view_arrays(path, view="rgb", rows=rgb, entries=entries, identity={"model": "rgb"}, dtype="float32")
    write_view_arrays(path, view="sound", rows=sound, entries=entries, identity={"model": "sound"}, dtype="float32")
    (path.parent / "labels.txt").write_text("\n".join([*CLASSES, "dance"]) + "\n")
    texts = np.vstack([rgb_centres, rng.normal(size=(1, 16))])
    np.save(path.parent / "text.npy", texts / np.linalg.norm(texts, axis=1, keepdims=True))
    return path


def test_cli_temporal_fusion_contrastive_and_write_back(tmp_path):
    cache = _corpus(tmp_path / "cache")
    text = ["--label-corpus", tmp_path / "labels.txt", "--text-embeddings", tmp_path / "text.npy"]
    common = ["--epochs", "4", "--batch-size", "16", "--lr", "3e-3", "--json"]
    run_cli("mine", "hard-negatives", "--cache", cache, "--view", "rgb", "--k", "4", *text, "--json", check=True)

    temporal = json.loads(
        run_cli(
            "train", "--cache", cache, "--head", "temporal", "--view", "rgb", "--hard-negatives", "2",
            "--hard-negatives-from", "top", "--out", tmp_path / "temporal", *text, *common, check=True,
        ).stdout
    )  # fmt: skip
    recorded = json.loads((tmp_path / "temporal" / "config.json").read_text())
    assert recorded["train_config"]["options"]["hard_negatives"] == 2  # the temporal head's own option
    assert recorded["context"]["text_labels"][-1] == "dance"
    assert temporal["val_metrics"]["top1"] >= 0.9, temporal

    fusion = json.loads(
        run_cli(
            "train", "--cache", cache, "--head", "fusion", "--views", "rgb,sound", "--hidden-dim", "32",
            "--out", tmp_path / "fusion", *common, check=True,
        ).stdout
    )  # fmt: skip
    assert fusion["train_videos"] == 100  # videos without sound rows are trained on too
    predicted = tmp_path / "fusion.parquet"
    run_cli(
        "predict", "--run", tmp_path / "fusion", "--cache", cache, "--split", "test", "--out", predicted, check=True
    )
    assert pd.read_parquet(predicted).video_id.nunique() == 30

    run_cli("mine", "neighbours", "--cache", cache, "--view", "rgb", "--k", "3", "--json", check=True)
    run_cli(
        "train", "--cache", cache, "--head", "contrastive", "--view", "sound", "--cross-view-k", "3",
        "--cross-view-from", "rgb", "--hidden-dim", "32", "--projection-dim", "16",
        "--out", tmp_path / "contrastive", *common, check=True,
    )  # fmt: skip
    metrics = json.loads(
        run_cli("eval", "--run", tmp_path / "contrastive", "--cache", cache, "--json", check=True).stdout
    )
    assert {"recall_at_1", "recall_at_5", "recall_at_10"} <= set(metrics) and "top1" not in metrics
    embeddings = tmp_path / "emb.parquet"
    out = run_cli(
        "predict", "--run", tmp_path / "contrastive", "--cache", cache, "--write-view", "sound_cvtcl",
        "--out", embeddings, check=True,
    )  # fmt: skip
    assert "→ view 'sound_cvtcl'" in out.stdout
    frame = pd.read_parquet(embeddings)
    with Cache(cache) as reader:
        assert sorted(reader.video_ids("sound_cvtcl")) == sorted(frame.video_id)  # only videos with sound rows
        for video_id, vector in zip(frame.video_id[:10], frame.embedding[:10], strict=True):
            rows, _ = reader.read(video_id, "sound_cvtcl")
            np.testing.assert_allclose(rows[0], vector, rtol=1e-6)
            assert abs(np.linalg.norm(rows[0]) - 1) < 1e-5
    run_cli("mine", "neighbours", "--cache", cache, "--view", "sound_cvtcl", "--k", "3", "--json", check=True)
    assert (cache / "mined" / "neighbours_sound_cvtcl.parquet").exists()

    # a classifier's predict refuses --write-view names an extractor owns, with a one-line error
    bad = run_cli("predict", "--run", tmp_path / "fusion", "--cache", cache, "--write-view", "clip")
    assert bad.returncode == 2 and "extractor's view name" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_cli(
        "train", "--cache", cache, "--head", "contrastive", "--view", "sound", "--cross-view-k", "3",
        "--cross-view-from", "nowhere", "--out", tmp_path / "x", "--json",
    )  # fmt: skip
    assert missing.returncode == 2 and "vidcache mine neighbours" in missing.stderr
