"""The s3d, audio, flow and motion views end to end: one decode pass, per-view status, and each
view checked against an independent reference (torchvision's S3D, OpenCV's TV-L1, known motion)."""

from __future__ import annotations

import importlib
import json

import av
import cv2
import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from tests.conftest import run_cli, tiny_clip_args
from vidcache import Cache
from vidcache.extract.views.flow import FlowConfig
from vidcache.extract.views.flow.consumer import FlowPairs
from vidcache.extract.views.s3d import S3dConfig
from vidcache.extract.views.s3d.consumer import S3dWindows
from vidcache.synth import shifting_texture, smooth_texture, write_video


def clip_windows(num_frames: int, *, clip_len: int, clip_stride: int) -> list[tuple[int, int]]:
    """The windows S3D should get, written out independently of the consumer: one every `clip_stride`
    frames, `clip_len` long; a video shorter than one window gives one window."""
    if num_frames <= 0:
        return []
    if num_frames <= clip_len:
        return [(0, num_frames)]
    return [(s, s + clip_len) for s in range(0, num_frames - clip_len + 1, clip_stride)]


FPS = 30
WIDTH, HEIGHT = 160, 96  # flow at short side 128 scales motion by 128/96
DX_PX_PER_FRAME = 3


@pytest.fixture(scope="module")
def views_corpus(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("views")
    texture = smooth_texture(HEIGHT, WIDTH, seed=1)
    moving = shifting_texture(texture, dx_px_per_frame=DX_PX_PER_FRAME)
    write_video(root / "tone.mp4", 60, fps=FPS, frame_fn=moving, width=WIDTH, height=HEIGHT, tone_hz=440.0)
    write_video(root / "silent.mp4", 45, fps=FPS, frame_fn=moving, width=WIDTH, height=HEIGHT)
    (root / "manifest.csv").write_text("path\ntone.mp4\nsilent.mp4\n")
    s3d_weights = root / "s3d.pt"
    torch.manual_seed(7)
    torch.save(importlib.import_module("torchvision.models.video.s3d").s3d().state_dict(), s3d_weights)
    return root, s3d_weights


def extract(root, cache, checkpoint, s3d_weights, views, *extra):
    args = [
        "extract",
        root / "manifest.csv",
        "--cache",
        cache,
        "--views",
        views,
        *tiny_clip_args(checkpoint),
        "--s3d-weights",
        s3d_weights,
        "--s3d-clip-len",
        "16",
        "--s3d-stride",
        "8",
        "--fps",
        "2",
        "--device",
        "cpu",
        "--json",
        *extra,
    ]
    result = run_cli(*map(str, args))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def all_views(views_corpus, tiny_checkpoint, tmp_path_factory):
    root, s3d_weights = views_corpus
    cache = tmp_path_factory.mktemp("cache") / "c"
    summary = extract(root, cache, tiny_checkpoint, s3d_weights, "audio,flow,clip,s3d")
    return root, s3d_weights, cache, summary


def decode_at(path, times_s):
    """Plain PyAV: the RGB frame on screen at each time (the last frame with pts <= t)."""
    frames, stamps = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            stamps.append(frame.time)
    stamps = np.array(stamps)
    picks = [max(0, int(np.searchsorted(stamps, t + 1e-9, side="right")) - 1) for t in times_s]
    return [frames[i] for i in picks], stamps[picks]


def test_per_view_status_and_timestamps_within_duration(all_views):
    _, _, cache_dir, summary = all_views
    assert summary["failed"] == 0 and summary["extracted"] == 2
    assert summary["absent"] == {"audio": 1}
    assert not list((cache_dir / "tmp").glob("*"))  # flow rows waited on disk, then were cleaned up
    with Cache(cache_dir) as cache:
        assert cache.views() == ["audio", "clip", "flow", "motion", "s3d"]
        assert cache.status("silent.mp4") == {
            "audio": "absent",
            "clip": "done",
            "flow": "done",
            "motion": "done",
            "s3d": "done",
        }
        assert cache.absent("audio") == {"silent.mp4": "no audio stream"}
        assert cache.video_ids() == ["silent.mp4", "tone.mp4"]  # absent audio does not exclude a video
        for video_id, duration_s in (("tone.mp4", 2.0), ("silent.mp4", 1.5)):
            for view in cache.views():
                if cache.status(video_id)[view] != "done":
                    continue
                spans = cache.spans(video_id, view)
                assert len(spans) > 0
                assert (spans[:, 0] >= 0).all() and (spans[:, 1] <= duration_s + 1e-6).all(), (video_id, view)
                assert (np.diff(spans[:, 0]) >= 0).all() and (spans[:, 1] >= spans[:, 0]).all()
        audio, stamps = cache.read("tone.mp4", "audio")
        assert audio.shape == (2, 128)  # 2.0 s of audio → two 0.96 s examples (logmel-stats)
        np.testing.assert_allclose(stamps, [0.0, 0.96], atol=0.03)


def test_s3d_matches_torchvision_on_the_same_clip(all_views):
    root, s3d_weights, cache_dir, _ = all_views
    module = importlib.import_module("torchvision.models.video.s3d")
    model = module.s3d()
    model.load_state_dict(torch.load(s3d_weights, weights_only=True))
    model.eval()
    transforms = module.S3D_Weights.KINETICS400_V1.transforms()
    with Cache(cache_dir) as cache:
        embeddings, _ = cache.read("tone.mp4", "s3d", dtype=np.float32)
        spans = cache.spans("tone.mp4", "s3d")
    # 2 s at 15 fps = 30 grid frames; windows of 16 every 8 frames start at frames 0 and 8
    assert len(embeddings) == len(clip_windows(30, clip_len=16, clip_stride=8)) == 2
    np.testing.assert_allclose(spans[:, 0], [0.0, 8 / 15], atol=1e-6)
    np.testing.assert_allclose(spans[:, 1], [16 / 15, 24 / 15], atol=1e-6)
    for row, start in enumerate((0, 8)):
        frames, _ = decode_at(root / "tone.mp4", [(start + i) / 15 for i in range(16)])
        video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # T, C, H, W uint8
        with torch.inference_mode():
            logits = model(transforms(video)[None])[0]
            ours = torch.from_numpy(embeddings[row])
            conv = model.classifier[1]
            our_logits = conv.weight[:, :, 0, 0, 0] @ ours + conv.bias  # the classifier is 1x1x1
        cosine = torch.nn.functional.cosine_similarity(logits, our_logits, dim=0)
        assert cosine > 0.99, cosine


def test_flow_of_known_motion_and_tvl1_equals_opencv(all_views):
    root, _, cache_dir, _ = all_views
    expected_dx = DX_PX_PER_FRAME * 128 / HEIGHT  # pixels of the stored (short side 128) resolution
    with Cache(cache_dir) as cache:
        flow, stamps = cache.read("tone.mp4", "flow")
        raw, _ = cache.read("tone.mp4", "flow", raw=True)
        motion, _ = cache.read("tone.mp4", "motion")
        info = cache.view_info("flow")
    assert flow.shape == (4, 2, 128, 128) and raw.dtype == np.uint8 and info["bound_px"] == 20.0
    mean_dx = flow[:, 0, 8:-8, 8:-8].mean()
    assert abs(mean_dx - expected_dx) <= 0.15 * expected_dx, mean_dx
    assert abs(flow[:, 1, 8:-8, 8:-8].mean()) < 0.15
    # descriptor: 4x4 cells of [static, 8 orientations x 4 magnitude bins from edges (0.25, 1, 3, 8)];
    # 4 px rightwards is orientation 0, magnitude bin 2 ([3, 8)): 1 + 0 * 4 + 2
    cells = motion.reshape(len(motion), 16, 33)
    assert (cells.argmax(axis=2) == 1 + 0 * 4 + 2).mean() > 0.9
    np.testing.assert_allclose(cells.astype(np.float64).sum(axis=2), 1.0, atol=5e-3)  # stored float16

    # TV-L1 inside vidcache vs OpenCV called directly on the same decoded, resized pair
    first_times = stamps
    firsts, _ = decode_at(root / "tone.mp4", first_times)
    seconds, _ = decode_at(root / "tone.mp4", first_times + 1 / FPS)

    def small_gray(rgb):
        image = torch.from_numpy(rgb).permute(2, 0, 1)
        image = TF.resize(image, 128, interpolation=InterpolationMode.BILINEAR, antialias=True)
        return cv2.cvtColor(image.permute(1, 2, 0).contiguous().numpy(), cv2.COLOR_RGB2GRAY)

    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    for k in range(len(stamps)):
        direct = tvl1.calc(small_gray(firsts[k]), small_gray(seconds[k]), None)  # H, W, 2
        height, width = direct.shape[:2]
        top, left = (height - 128) // 2, (width - 128) // 2
        square = np.clip(direct[top : top + 128, left : left + 128].transpose(2, 0, 1), -20, 20)
        assert np.abs(flow[k] - square).max() <= 20 / 127 + 1e-5


def test_adding_a_view_later_keeps_the_others(views_corpus, tiny_checkpoint, tmp_path):
    root, s3d_weights = views_corpus
    cache_dir = tmp_path / "c"
    extract(root, cache_dir, tiny_checkpoint, s3d_weights, "clip")
    with Cache(cache_dir) as cache:
        before, _ = cache.read("tone.mp4", "clip")
    shards_before = {p.name: p.stat().st_mtime_ns for p in (cache_dir / "shards").glob("*.h5")}
    summary = extract(root, cache_dir, tiny_checkpoint, s3d_weights, "audio")
    assert summary["rows"] == {"audio": 2} and summary["absent"] == {"audio": 1}
    shards_after = {p.name: p.stat().st_mtime_ns for p in (cache_dir / "shards").glob("*.h5")}
    assert {k: shards_after[k] for k in shards_before} == shards_before  # clip shards untouched
    with Cache(cache_dir) as cache:
        after, _ = cache.read("tone.mp4", "clip")
        np.testing.assert_array_equal(before, after)
        assert cache.status("tone.mp4") == {"audio": "done", "clip": "done"}
    again = extract(root, cache_dir, tiny_checkpoint, s3d_weights, "clip,audio")
    assert again["skipped"] == 2 and again["extracted"] == 0  # absent audio counts as finished


def test_audio_only_file_gets_audio_rows_and_a_failed_video_view(tmp_path, tiny_checkpoint):
    with av.open(str(tmp_path / "voice.m4a"), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        t = np.arange(16000 * 2) / 16000
        samples = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    (tmp_path / "manifest.csv").write_text("path\nvoice.m4a\n")
    args = ["extract", tmp_path / "manifest.csv", "--cache", tmp_path / "c", "--views", "clip,audio"]
    args += [*tiny_clip_args(tiny_checkpoint), "--json"]
    result = run_cli(*map(str, args))
    assert result.returncode == 1  # the clip view failed
    with Cache(tmp_path / "c") as cache:
        assert cache.status("voice.m4a") == {"audio": "done", "clip": "failed"}
        assert "no video stream" in cache.failed("clip")["voice.m4a"]
        assert len(cache.read("voice.m4a", "audio")[0]) == 2


def test_raft_with_random_weights_runs_in_extract(views_corpus, tiny_checkpoint, tmp_path):
    root, s3d_weights = views_corpus
    summary = extract(
        root, tmp_path / "c", tiny_checkpoint, s3d_weights, "motion", "--flow-method", "raft", "--flow-weights", "none"
    )
    assert summary["rows"] == {"motion": 7}
    with Cache(tmp_path / "c") as cache:
        assert cache.views() == ["motion"]  # flow computed, only the descriptor stored
        assert cache.view_info("motion")["flow"]["method"] == "raft"


def test_consumers_hold_at_most_one_window():
    """Memory stays bounded: S3D keeps under one window of frames, flow under one batch of pairs,
    however long the video (here a 10-minute grid)."""

    class FakeS3d:
        view, max_short_side = "s3d", 256

        def prepare(self, rgb):
            return torch.zeros(1)

    windows = S3dWindows(FakeS3d(), S3dConfig(weights="none", fps=15, clip_len=32, stride=16), batch_frames=64)
    grid = windows.targets_s(0.0, 600.0, 1 / 30)
    emitted, peak = 0, 0
    for index in range(len(grid)):
        for chunk in windows.feed(np.zeros((2, 2, 3), np.uint8), float(grid[index]), np.array([index])):
            emitted += len(chunk)
        peak = max(peak, len(windows._frames) + sum(len(p[2]) for p in windows._pending))
    emitted += sum(len(c) for c in windows.finish())
    assert emitted == len(clip_windows(len(grid), clip_len=32, clip_stride=16))
    assert peak <= 32 + 2 * 32  # one partial window plus the windows of one chunk

    class ZeroFlow:
        def compute(self, first, second):
            return np.zeros((len(first), 2, *first.shape[1:3]), np.float32)

    from vidcache.config import SamplingConfig

    pairs = FlowPairs(ZeroFlow(), FlowConfig(short_side=16), SamplingConfig(fps=1.0), views=("flow",), batch=4)
    targets = pairs.targets_s(0.0, 600.0, 1 / 30)
    rows, peak = 0, 0
    for index in range(len(targets)):
        for chunk in pairs.feed(np.zeros((16, 20, 3), np.uint8), float(targets[index]), np.array([index])):
            rows += len(chunk)
        peak = max(peak, len(pairs._pairs) + len(pairs._ready))
    rows += sum(len(c) for c in pairs.finish())
    assert rows == 600 and peak <= 4 + 1


def test_flow_pairs_aim_at_frame_centres_and_num_frames_keeps_n_rows():
    from vidcache.config import SamplingConfig
    from vidcache.extract.consumers import ClipFrames

    pairs = FlowPairs(None, FlowConfig(fps=3.0), SamplingConfig(fps=1.0), views=("flow",), batch=4)
    targets = pairs.targets_s(0.0, 2.0, 1 / 30, frame_origin_s=0.0).reshape(-1, 2)
    # frames shown at t are at k/30 (within ±0.5 ms when stored in a 1/1000 time base); both targets
    # sit mid-interval, so the pair is always frame k and frame k + 1
    np.testing.assert_allclose(targets[:, 1] - targets[:, 0], 1 / 30)
    np.testing.assert_allclose((targets * 30) % 1, 0.5, atol=1e-9)

    class Encoder:
        view = "clip"

        def prepare(self, rgb):
            return torch.zeros(1)

    frames = ClipFrames(Encoder(), SamplingConfig(fps=None, num_frames=8), batch_size=2)
    frames.targets_s(0.0, 8.0, 1 / 30)
    chunks = [c for k in range(4) for c in frames.feed(np.zeros((2, 2, 3), np.uint8), float(k), np.array([k]))]
    chunks += frames.finish()  # the stream ended after 4 frames, the header said 8 s: still 8 rows
    assert sum(int(c.repeats.sum()) for c in chunks) == 8


def test_time_spent_downstream_does_not_count_against_the_decode_limit(views_corpus):
    import time as _time

    from vidcache.config import RunConfig
    from vidcache.extract.consumers import Consumer
    from vidcache.extract.stage import VideoStage
    from vidcache.manifest import VideoEntry

    class Slow(Consumer):
        view_names, max_short_side = ("clip",), 64

        def targets_s(self, origin_s, end_s, nominal_dt_s, *, frame_origin_s=None):
            return np.arange(origin_s, end_s, 0.25)

        def feed(self, rgb, time_s, indices):
            _time.sleep(0.2)  # a slow model downstream: 8 frames x 0.2 s > the 1 s limit
            return []

    root, _ = views_corpus
    entry = VideoEntry("tone.mp4", str(root / "tone.mp4"))
    stage = VideoStage(entry, [Slow()], run=RunConfig(video_timeout_s=1.0))
    assert list(stage) == [] and stage.outcomes == {"clip": ("done", None)}


def test_an_unexpected_error_in_the_video_pass_fails_only_the_video_views(views_corpus):
    """A bug or an odd file that raises something no check foresaw fails the views of that pass with
    a one-line reason; the audio pass still runs and its rows are kept."""
    from vidcache.config import RunConfig
    from vidcache.extract.consumers import Consumer
    from vidcache.extract.stage import VideoStage
    from vidcache.manifest import VideoEntry

    class Broken(Consumer):
        view_names, max_short_side = ("clip",), 64

        def targets_s(self, origin_s, end_s, nominal_dt_s, *, frame_origin_s=None):
            return np.arange(origin_s, end_s, 0.5)

        def feed(self, rgb, time_s, indices):
            raise RuntimeError("boom\nsecond line")

    root, _ = views_corpus
    stage = VideoStage(VideoEntry("tone.mp4", str(root / "tone.mp4")), [Broken()], run=RunConfig(), audio_view="audio")
    chunks = list(stage)
    assert stage.outcomes["clip"] == ("failed", "unexpected RuntimeError: boom")
    assert stage.outcomes["audio"] == ("done", None) and {c.view for c in chunks} == {"audio"}
