"""Sampled frames and timestamps against a plain PyAV loop over every frame."""

from __future__ import annotations

import numpy as np
import pytest

from vidcache.config import SamplingConfig
from vidcache.errors import VideoFailure
from vidcache.extract.decode import FrameSampler, frame_to_rgb
from vidcache.extract.sampling import sample_times
from vidcache.synth import reference_frames, write_video


def shown_at(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Reference rule: the last frame whose presentation time is <= t (the first one before it)."""
    return np.maximum(np.searchsorted(times, targets + 1e-9, side="right") - 1, 0)


def sampled(path, **kwargs) -> list[tuple[float, np.ndarray]]:
    out = []
    with FrameSampler(str(path), **kwargs) as sampler:
        for frame, time_s, repeats in sampler:
            assert time_s == frame.time
            out += [(time_s, frame_to_rgb(frame))] * repeats
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "v.mp4", 150, fps=25, gop=10)


def test_sample_time_formulas():
    np.testing.assert_allclose(sample_times(SamplingConfig(fps=2.0), start_s=1.0, end_s=3.0), [1, 1.5, 2, 2.5])
    np.testing.assert_allclose(sample_times(SamplingConfig(fps=None, num_frames=4), start_s=0, end_s=8), [1, 3, 5, 7])


@pytest.mark.parametrize("seek", ["never", "auto", "always"])
@pytest.mark.parametrize(
    "sampling",
    [
        SamplingConfig(fps=1.0),
        SamplingConfig(fps=7.3),
        SamplingConfig(fps=None, num_frames=16),
        SamplingConfig(fps=None, num_frames=500),
    ],
)
def test_frames_and_times_match_plain_pyav(video, seek, sampling):
    reference = reference_frames(video)
    times = np.array([t for t, _ in reference])
    targets = sample_times(sampling, start_s=0.0, end_s=6.0)
    got = sampled(video, sampling=sampling, seek=seek)
    expected = shown_at(times, targets)
    assert len(got) == len(targets)  # N-frame sampling gives exactly N rows, fps gives ceil(duration*fps)
    for (t, rgb), index in zip(got, expected, strict=True):
        assert t == reference[index][0]
        np.testing.assert_array_equal(rgb, reference[index][1])


def test_segment_and_seek_far_into_video(tmp_path):
    path = write_video(tmp_path / "long.mp4", 600, fps=30, gop=15)
    reference = reference_frames(path)
    times = np.array([t for t, _ in reference])
    got = sampled(path, sampling=SamplingConfig(fps=2.0), start_s=15.0, end_s=17.5, seek="auto")
    targets = np.array([15.0, 15.5, 16.0, 16.5, 17.0])
    assert [t for t, _ in got] == [reference[i][0] for i in shown_at(times, targets)]


def test_variable_frame_rate_uses_timestamps(tmp_path):
    pts = list(np.cumsum([0.0] + [0.04] * 20 + [0.2] * 10 + [0.04] * 20))
    path = write_video(tmp_path / "vfr.mkv", len(pts), pts_s=pts)
    reference = reference_frames(path)
    times = np.array([t for t, _ in reference])
    np.testing.assert_allclose(times, pts, atol=1e-3)
    got = sampled(path, sampling=SamplingConfig(fps=10.0), seek="never")
    targets = np.arange(0, pts[-1] + 0.04, 0.1)
    assert [t for t, _ in got] == [reference[i][0] for i in shown_at(times, targets)[: len(got)]]
    assert len(got) == len(targets)


def test_short_clip_repeats_last_frame_for_n_frames(tmp_path):
    path = write_video(tmp_path / "three.mp4", 3, fps=10)
    got = sampled(path, sampling=SamplingConfig(fps=None, num_frames=8))
    assert len(got) == 8 and len({t for t, _ in got}) == 3


@pytest.mark.parametrize(
    "content,reason",
    [(None, "file not found"), (b"", "not a readable video"), (bytes(range(256)) * 40, "not a readable video")],
)
def test_unreadable_inputs_fail_with_reason(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoFailure, match=reason):
        sampled(path, sampling=SamplingConfig(fps=1.0))


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    path = write_video(tmp_path / "rot.mp4", 5, fps=5, width=64, height=48, rotation_deg=rotation)
    reference = reference_frames(path)  # raw, unrotated
    got = sampled(path, sampling=SamplingConfig(fps=5.0))
    assert len(got) == 5
    for (_, rgb), (_, raw) in zip(got, reference, strict=True):
        np.testing.assert_array_equal(rgb, np.rot90(raw, k=rotation // 90))  # counter-clockwise, as displayed


def test_stream_without_timestamps_gets_estimated_times(tmp_path):
    path = write_video(tmp_path / "raw.h264", 20, fps=10)
    with FrameSampler(str(path), sampling=SamplingConfig(fps=None, num_frames=4)) as sampler:
        got = [(t, n) for _, t, n in sampler]
        assert sampler.stats.estimated_times or all(t is not None for t, _ in got)
    times = [t for t, n in got for _ in range(n)]
    assert len(times) == 4 and all(np.isfinite(times)) and times == sorted(times)


def test_segments_outside_the_video_fail_and_fps_does_not_pad(tmp_path):
    path = write_video(tmp_path / "v.mp4", 20, fps=10)  # 0 .. 2 s
    with pytest.raises(VideoFailure, match="after the video ends"):
        sampled(path, sampling=SamplingConfig(fps=None, num_frames=3), start_s=5.0, end_s=6.0)
    got = sampled(path, sampling=SamplingConfig(fps=4.0), start_s=1.0, end_s=9.0)
    assert [t for t, _ in got] == [1.0, 1.2, 1.5, 1.7]  # nothing past the last frame (1.9 s, on screen to 2.0)
