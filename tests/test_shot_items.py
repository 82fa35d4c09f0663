"""`--items shots`: heads trained and scored on shots (issue 26). A generated corpus where every video
is two flat-colour shots of different colours: the video's labels are both colours, the shot-labels
file gives each shot its own. References: the shot labels themselves (a shot-level head must beat a
video-level one on them, which cannot tell its two shots apart), and a NumPy re-computation of each
shot's pooled rows from the cached rows and the cached shot times."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli_in_process
from vidcache.cache.reader import Cache
from vidcache.config import SamplingConfig
from vidcache.errors import ConfigError
from vidcache.extract.api import extract
from vidcache.extract.config import ExtractConfig
from vidcache.extract.views.clip import ClipConfig
from vidcache.extract.views.shots.settings import ShotsConfig
from vidcache.heads import HEADS, api
from vidcache.heads.config import Items, TrainConfig
from vidcache.heads.shot_items import read_shot_items
from vidcache.synth import write_video

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 230)}
FPS, SHOT_FRAMES = 12, 12  # two 1 s shots per video


def _two_shot_video(path: Path, first: str, second: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    jitter = rng.integers(-20, 20, size=2)  # each video its own shades: no two videos are identical

    def frame(index: int, _t: float) -> np.ndarray:
        shot = 0 if index < SHOT_FRAMES else 1
        colour = np.array(COLOURS[(first, second)[shot]]) + jitter[shot]
        return np.broadcast_to(np.clip(colour, 0, 255).astype(np.uint8), (48, 64, 3)).copy()

    write_video(path, 2 * SHOT_FRAMES, fps=FPS, width=64, height=48, frame_fn=frame)


@pytest.fixture(scope="module")
def shot_corpus(tmp_path_factory, tiny_checkpoint):
    """12 videos (every ordered pair of colours twice: 6 train, 3 val, 3 test), clip at 4 fps and shots
    (content) extracted; a shot-labels file naming each shot's colour."""
    root = tmp_path_factory.mktemp("shot_items")
    pairs = list(itertools.permutations(COLOURS, 2))  # 6 ordered pairs
    splits = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    order = pairs + pairs[::2] + pairs[1::2]
    rows, truth = ["path,labels,split"], {}
    for i, ((first, second), split) in enumerate(zip(order, splits, strict=True)):
        name = f"v{i:02d}-{first}-{second}.mp4"
        _two_shot_video(root / name, first, second, seed=i)
        rows.append(f"{name},{first};{second},{split}")
        truth[name] = (first, second)
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    config = ExtractConfig.create(
        views=("clip", "shots"),
        clip=ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint)),
        shots=ShotsConfig(method="content"),
        sampling=SamplingConfig(fps=4.0),
    )
    summary = extract(str(root / "manifest.csv"), str(root / "cache"), config)
    assert summary.failed == 0, summary.failures
    with Cache(root / "cache") as cache:
        by_name = {Path(p).name: v for v, p in zip(cache.entries()["video_id"], cache.entries()["path"], strict=True)}
    labels = [(by_name[name], k, colours[k]) for name, colours in truth.items() for k in (0, 1)]
    pd.DataFrame(labels, columns=["video_id", "shot_index", "labels"]).to_csv(root / "shot_labels.csv", index=False)
    return root, {(v, k): c for v, k, c in labels}


def test_pooled_shot_features_are_the_rows_in_each_shot(shot_corpus):
    root, truth = shot_corpus
    with Cache(root / "cache") as cache:
        video_ids = cache.video_ids("clip")
        items = {p: read_shot_items(cache, video_ids, ("clip",), pooling=p) for p in ("mean", "max")}
        for video_id in video_ids:  # the detector found each video's one cut
            assert len(cache.read_shots(video_id)) == 2
        rows_of = {v: cache.read(v, "clip", dtype=np.float32) for v in video_ids}
    mean = items["mean"]
    assert len(mean.ids) == 2 * len(video_ids) and set(zip(mean.video_id, mean.index, strict=True)) == set(truth)
    for i, video_id in enumerate(mean.video_id):
        rows, times = rows_of[video_id]
        inside = (times >= mean.start_s[i] - 1e-9) & (times < mean.end_s[i] - 1e-9)
        assert inside.sum() >= 2  # 1 s shots at 4 fps
        np.testing.assert_allclose(mean.features["clip"][i], rows[inside].mean(axis=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(items["max"].features["clip"][i], rows[inside].max(axis=0), rtol=1e-6)
    # the shot spans are the cut the video was made with: 1 s each
    np.testing.assert_allclose(mean.end_s - mean.start_s, 1.0, atol=1e-6)


def test_shot_labels_past_the_cached_shots_are_refused(shot_corpus, tmp_path):
    root, truth = shot_corpus
    video_id = next(iter(truth))[0]
    bad = tmp_path / "bad.csv"
    bad.write_text(f"video_id,shot_index,labels\n{video_id},2,red\n")
    config = TrainConfig(items="shots", shot_labels=str(bad))
    with pytest.raises(ConfigError, match=f"{video_id!r} has 2 shot\\(s\\) .* no shot 2"):
        api.train(root / "cache", tmp_path / "run", config=config)
    (tmp_path / "cols.csv").write_text("video,shot,labels\n")
    with pytest.raises(ConfigError, match="no video_id, shot_index column"):
        api.train(
            root / "cache", tmp_path / "run2", config=TrainConfig(items="shots", shot_labels=str(tmp_path / "cols.csv"))
        )


def test_a_shot_head_beats_a_video_head_on_shot_labels(shot_corpus, tmp_path):
    root, truth = shot_corpus
    cache = root / "cache"
    # the solved linear probe at a fixed C: one L-BFGS solve, not the val sweep of C (13 s on a loaded machine)
    api.train(cache, tmp_path / "video", config=TrainConfig(device="cpu"), options={"probe_c": 10.0})
    code, out, err = run_cli_in_process(
        "train", "--cache", cache, "--out", tmp_path / "shot", "--items", "shots", "--shot-labels",
        root / "shot_labels.csv", "--probe-c", "10", "--device", "cpu", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["train_videos"] == 12  # 6 training videos' shots
    saved = json.loads((tmp_path / "shot" / "config.json").read_text())["train_config"]
    assert saved["items"] == "shots" and saved["shot_labels"] == str(root / "shot_labels.csv")
    code, out, err = run_cli_in_process(
        "predict", "--run", tmp_path / "shot", "--cache", cache, "--split", "test", "--out", tmp_path / "s.parquet",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["shots"] == 6
    shots = pd.read_parquet(tmp_path / "s.parquet")
    assert list(shots.columns[:5]) == ["video_id", "shot_index", "start_s", "end_s", "predicted"]
    assert sorted(c for c in shots.columns if c.startswith("score_")) == [f"score_{c}" for c in sorted(COLOURS)]
    picked = zip(shots.video_id, shots.shot_index, shots.predicted, strict=True)
    shot_hits = [list(p) == [truth[(v, k)]] for v, k, p in picked]
    videos = api.predict(tmp_path / "video", cache, split="test", device="cpu")
    top = videos.sort_values("score", ascending=False).groupby("video_id").head(1).set_index("video_id")["label"]
    video_hits = [top[v] == truth[(v, k)] for v, k in zip(shots.video_id, shots.shot_index, strict=True)]
    # a video-level label is right for at most one of a video's two shots
    assert np.mean(video_hits) <= 0.5 < np.mean(shot_hits) and np.mean(shot_hits) >= 5 / 6, (shot_hits, video_hits)
    metrics = api.evaluate(tmp_path / "shot", cache, split="test", device="cpu")
    assert metrics["items"] == "shots" and metrics["shots"] == 6 and metrics["videos"] == 3
    assert metrics["top1"] == pytest.approx(np.mean(shot_hits))
    # the video head scored on shots (--items shots): each shot gets the same labels as its video
    scored = api.predict(tmp_path / "video", cache, device="cpu", items="shots")  # every video's shots
    assert len(scored) == 24 and {"score_red", "score_green", "score_blue"} <= set(scored.columns)


def test_a_video_without_shots_is_a_one_line_error(tmp_path, tiny_checkpoint):
    write_video(tmp_path / "a.mp4", 12, fps=FPS, width=64, height=48)
    (tmp_path / "m.csv").write_text("path,labels,split\na.mp4,x,train\n")
    config = ExtractConfig.create(
        views=("clip",),
        clip=ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint)),
        sampling=SamplingConfig(fps=4.0),
    )
    assert extract(str(tmp_path / "m.csv"), str(tmp_path / "cache"), config).failed == 0
    code, out, _ = run_cli_in_process(
        "train", "--cache", tmp_path / "cache", "--out", tmp_path / "run", "--items", "shots", "--json"
    )
    assert code != 0
    message = json.loads(out)["error"]
    assert "\n" not in message and "--views shots" in message and "has no shots" in message, message
    from vidcache.commands.heads import eval_cmd, predict

    for command in (eval_cmd, predict):  # written out there so the CLI starts without torch: the same choices
        option = next(p for p in command.params if p.name == "items")
        assert tuple(option.type.choices) == get_args(Items)
    with pytest.raises(ConfigError, match="needs items='shots'"):
        TrainConfig(shot_labels="labels.csv")
    mined = TrainConfig(head="temporal", items="shots", options=HEADS.options("temporal", hard_negatives=3))
    with pytest.raises(ConfigError, match="lists per video, not per shot"):  # before anything is read
        api.train(tmp_path / "cache", tmp_path / "mined", config=mined)
