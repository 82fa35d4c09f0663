"""A view's rows are a function of its own settings only: on a 720p source, the clip view gets the
same frames whichever other views share the decode pass, and those frames equal plain PyAV's
area-filter shrink of the decoded frame to the clip view's own size."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from tests.test_colour import reference_rgb
from vidcache.config import RunConfig, SamplingConfig
from vidcache.extract.consumers import ClipFrames
from vidcache.extract.preprocess import ImagePreprocess
from vidcache.extract.stage import VideoStage
from vidcache.extract.views.flow import FlowConfig
from vidcache.extract.views.flow.consumer import FlowPairs
from vidcache.extract.views.s3d import S3dConfig
from vidcache.extract.views.s3d.consumer import S3dWindows
from vidcache.manifest import VideoEntry
from vidcache.synth import smooth_texture, write_video

WIDTH, HEIGHT = 1280, 720


@pytest.fixture(scope="module", params=["yuv420p", "yuv420p10le"])
def hd_video(request, tmp_path_factory):
    """720p, 8-bit (swscale's conversion) and 10-bit (the exact conversion, made once per frame)."""
    path = tmp_path_factory.mktemp("hd") / f"hd-{request.param}.mkv"
    texture = smooth_texture(HEIGHT, WIDTH + 64, seed=3)
    write_video(
        path,
        6,
        fps=3,
        width=WIDTH,
        height=HEIGHT,
        codec="libx264",
        pix_fmt=request.param,
        frame_fn=lambda i, _t: texture[:, 8 * i : 8 * i + WIDTH],
        tone_hz=440.0,
    )
    return path


class Recording:
    """An encoder stand-in that keeps every RGB frame its consumer is given."""

    def __init__(self, view: str, *, preprocess: ImagePreprocess | None = None, side: int | None = None):
        self.view, self.preprocess, self.max_short_side = view, preprocess, side
        self.frames: list[np.ndarray] = []

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        self.frames.append(rgb.copy())
        return self.preprocess.resize_crop(rgb) if self.preprocess else torch.zeros(1)


class ZeroFlow:
    def compute(self, first, second):
        return np.zeros((len(first), 2, *first.shape[1:3]), np.float32)


CLIP_PREPROCESS = ImagePreprocess(size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def clip_inputs(path, *, with_others: bool) -> tuple[list[np.ndarray], torch.Tensor]:
    sampling = SamplingConfig(fps=2.0)
    clip = Recording("clip", preprocess=CLIP_PREPROCESS)
    consumers = [ClipFrames(clip, sampling, batch_size=64)]
    if with_others:  # s3d needs 256 px, flow 128 px: neither may change what clip sees
        s3d = Recording("s3d", side=256)
        consumers.append(S3dWindows(s3d, S3dConfig(weights="none", clip_len=14, stride=14), batch_frames=28))
        consumers.append(FlowPairs(ZeroFlow(), FlowConfig(), sampling, views=("flow", "motion"), batch=2))
    stage = VideoStage(
        VideoEntry("hd.mp4", str(path)), consumers, run=RunConfig(), audio_view="audio" if with_others else None
    )
    chunks = [c for c in stage if c.view == "clip"]
    assert all(status == "done" for status, _ in stage.outcomes.values()), stage.outcomes
    return clip.frames, torch.cat([c.data for c in chunks])


def test_clip_frames_do_not_depend_on_the_other_views(hd_video):
    alone, alone_inputs = clip_inputs(hd_video, with_others=False)
    shared, shared_inputs = clip_inputs(hd_video, with_others=True)
    assert len(alone) == len(shared) == 4
    for a, b in zip(alone, shared, strict=True):
        np.testing.assert_array_equal(a, b)  # bit-identical, not merely close
    assert torch.equal(alone_inputs, shared_inputs)

    # independent reference: plain PyAV, the frame on screen at 0, 0.5, 1, 1.5 s, area-shrunk to short side 224
    with av.open(str(hd_video)) as container:
        decoded = [(f.time, f) for f in container.decode(video=0)]
        for k, t in enumerate([0.0, 0.5, 1.0, 1.5]):
            frame = [f for time_s, f in decoded if time_s <= t + 1e-9][-1]
            if frame.format.name == "yuv420p":
                expected = frame.to_ndarray(format="rgb24", width=398, height=224, interpolation="AREA")
                np.testing.assert_array_equal(alone[k], expected)
            else:  # the float H.273 conversion of the planes, rounded, then the same area shrink
                exact = np.rint(reference_rgb(frame, "smpte170m", full=False, size=(HEIGHT, WIDTH))).astype(np.uint8)
                rgb = av.VideoFrame.from_ndarray(exact, format="rgb24")
                expected = rgb.to_ndarray(format="rgb24", width=398, height=224, interpolation="AREA")
                assert np.abs(alone[k].astype(int) - expected).max() <= 1
