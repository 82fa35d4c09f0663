"""The decode workers' RGB conversions reuse one swscale context per thread (`reformat_to_ndarray`):
every result must equal PyAV's own `frame.to_ndarray(...)` (a fresh context per call), whatever
order sizes, interpolations and source formats come in, and in several threads at once; the
thumbnail's size follows PIL's `Image.thumbnail`; FFmpeg threads per decoder share the CPUs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest
from PIL import Image

from vidcache.cache.thumbnails import thumbnail_size
from vidcache.extract import decode
from vidcache.extract.decode import reformat_to_ndarray, threads_per_decoder
from vidcache.synth import smooth_texture

REQUESTS = [
    {"format": "rgb24"},
    {"format": "rgb24", "width": 160, "height": 90, "interpolation": "AREA"},
    {"format": "rgb24", "width": 48, "height": 27, "interpolation": "BICUBIC"},
    {"format": "rgb24", "width": 97, "height": 61, "interpolation": "BICUBIC"},
    {"format": "gray"},
]


def frames(seed: int) -> list[av.VideoFrame]:
    """Frames of three pixel formats and two sizes, as a decoder would hand them over."""
    out = []
    for k, (fmt, (w, h)) in enumerate([("yuv420p", (320, 180)), ("yuvj444p", (256, 144)), ("nv12", (320, 180))]):
        rgb = smooth_texture(h, w, seed=seed + k)
        out.append(av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt))
    return out


@pytest.mark.parametrize("threads", [1, 4, 0])
def test_cached_context_equals_pyav_to_ndarray_in_any_order(threads):
    rng = np.random.default_rng(threads)
    pairs = [(f, r) for f in frames(1) for r in REQUESTS]
    for i in rng.permutation(len(pairs * 3)):  # sizes and formats interleaved on one context
        frame, request = (pairs * 3)[i]
        expected = frame.to_ndarray(**request)  # PyAV: a fresh context, swscale's own thread count
        got = reformat_to_ndarray(frame, threads=threads, **request)
        np.testing.assert_array_equal(got, expected, err_msg=str(request))


def test_each_thread_keeps_its_own_context():
    work = [(f, r) for f in frames(7) for r in REQUESTS] * 4
    expected = [f.to_ndarray(**r) for f, r in work]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda fr: reformat_to_ndarray(fr[0], **fr[1]), work))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("size", [(320, 240), (240, 320), (1920, 1080), (161, 9), (160, 120), (100, 50), (3, 1000)])
def test_thumbnail_size_matches_pil(size):
    image = Image.new("RGB", size)
    image.thumbnail((160, 160))
    got = thumbnail_size(*size)
    assert max(got) <= 160
    assert abs(got[0] - image.size[0]) <= 1 and abs(got[1] - image.size[1]) <= 1
    if max(size) <= 160:
        assert got == size


def test_threads_per_decoder(monkeypatch):
    monkeypatch.setattr(decode, "usable_cpus", lambda: 16)
    assert threads_per_decoder(0, workers=2) == 8
    assert threads_per_decoder(0, workers=32) == 1
    assert threads_per_decoder(3, workers=2) == 3  # --decode-threads wins
    monkeypatch.setattr(decode, "usable_cpus", lambda: 2)
    assert threads_per_decoder(0, workers=2) == 1
