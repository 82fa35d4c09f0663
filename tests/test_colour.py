"""High-bit-depth YUV → RGB against an exact float conversion of the decoded planes, written here
from ITU-T H.273 (matrix and range from the stream's tags), on h264 / h265 files of 10 and 12 bits,
4:2:0 / 4:2:2 / 4:4:4, limited and full range, BT.601 / 709 / 2020; and against ffmpeg's own
rgb24 output on the same files (when the ffmpeg CLI is installed)."""

from __future__ import annotations

import shutil
import subprocess

import av
import numpy as np
import pytest

from vidcache.extract.decode import frame_to_rgb
from vidcache.synth import smooth_texture

W, H = 192, 108
KR_KB = {"bt709": (0.2126, 0.0722), "smpte170m": (0.299, 0.114), "bt2020nc": (0.2627, 0.0593)}


def picture(seed: int) -> np.ndarray:
    image = smooth_texture(H, W, seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(8):  # saturated blocks: sharp chroma edges
        x, y = int(rng.integers(0, W - 30)), int(rng.integers(0, H - 30))
        image[y : y + int(rng.integers(6, 30)), x : x + int(rng.integers(6, 30))] = rng.integers(0, 256, 3)
    return image


AVCOL_SPC = {"bt709": 1, "smpte170m": 6, "bt2020nc": 9}


def write(path, codec: str, pix_fmt: str, matrix: str, full: bool) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=5)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        stream.codec_context.colorspace, stream.codec_context.color_range = AVCOL_SPC[matrix], 2 if full else 1
        # no B-frames: x265 leaves its B-frame delay time uninitialised when a stream ends before
        # bframe-delay + 1 frames (x265 issue #781, fixed in PR #936), so our 2 frames got a garbage DTS
        # now and then (heap leftovers; 17 of 300 files under load) and the muxer refused it (EINVAL)
        x265 = {"x265-params": "log-level=error:pools=none:frame-threads=1:bframes=0"}
        stream.options = {"crf": "18", **(x265 if codec == "libx265" else {})}
        for index in range(2):
            frame = av.VideoFrame.from_ndarray(picture(index), format="rgb24").reformat(format=pix_fmt)
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def reference_rgb(frame: av.VideoFrame, matrix: str, full: bool, *, size: tuple[int, int] = (H, W)) -> np.ndarray:
    """H.273 in float64 on the planes as decoded; subsampled chroma repeated over its luma samples."""
    height, width = size
    bits = frame.format.components[0].bits
    planes = []
    for plane in frame.planes[:3]:
        values = np.frombuffer(plane, "<u2").reshape(plane.height, -1)[:, : plane.width].astype(np.float64)
        planes.append(values)
    y, u, v = planes
    u = np.repeat(np.repeat(u, height // u.shape[0], axis=0), width // u.shape[1], axis=1)
    v = np.repeat(np.repeat(v, height // v.shape[0], axis=0), width // v.shape[1], axis=1)
    n = 2.0 ** (bits - 8)
    if full:
        peak = 2.0**bits - 1
        ey, eb, er = y / peak, (u - 2.0 ** (bits - 1)) / peak, (v - 2.0 ** (bits - 1)) / peak
    else:
        ey, eb, er = (y - 16 * n) / (219 * n), (u - 128 * n) / (224 * n), (v - 128 * n) / (224 * n)
    kr, kb = KR_KB[matrix]
    r, b = ey + 2 * (1 - kr) * er, ey + 2 * (1 - kb) * eb
    g = (ey - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 1) * 255


def ffmpeg_rgb(path) -> np.ndarray:
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(out, np.uint8).reshape(H, W, 3).astype(np.float64)


CASES = [
    ("libx264", "yuv420p10le", "bt709", False),
    ("libx265", "yuv420p10le", "bt709", False),
    ("libx265", "yuv420p10le", "bt2020nc", True),
    ("libx264", "yuv422p10le", "smpte170m", True),
    ("libx265", "yuv422p12le", "bt2020nc", False),
    ("libx265", "yuv444p12le", "smpte170m", False),
    ("libx264", "yuv444p10le", "bt709", True),
]


@pytest.mark.parametrize(("codec", "pix_fmt", "matrix", "full"), CASES)
def test_high_bit_depth_equals_an_exact_conversion(tmp_path, codec, pix_fmt, matrix, full):
    path = tmp_path / f"{pix_fmt}.mkv"
    write(path, codec, pix_fmt, matrix, full)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert (frame.format.name, int(frame.colorspace), int(frame.color_range) == 2) == (
            pix_fmt,
            AVCOL_SPC[matrix],
            full,
        )
        reference = reference_rgb(frame, matrix, full)
        ours = frame_to_rgb(frame).astype(np.float64)
        swscale = frame.to_ndarray(format="rgb24").astype(np.float64)  # what was used before
    error = np.abs(ours - reference)
    assert error.mean() <= 0.5 and error.max() <= 1.0, (error.mean(), error.max())  # rounding only
    assert error.mean() < np.abs(swscale - reference).mean()
    # never further from the exact conversion than ffmpeg itself (make test installs ffmpeg)
    assert shutil.which("ffmpeg"), "the ffmpeg CLI is the reference here: apt-get install ffmpeg (make test does)"
    ffmpeg_error = np.abs(ffmpeg_rgb(path) - reference)
    assert error.mean() <= ffmpeg_error.mean() and error.max() <= ffmpeg_error.max()


def test_pre_shrink_of_a_deep_frame_follows_the_exact_conversion(tmp_path):
    path = tmp_path / "big.mkv"
    write(path, "libx265", "yuv420p10le", "bt709", False)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        exact = frame_to_rgb(frame)
        small = frame_to_rgb(frame, max_short_side=32)
    expected = av.VideoFrame.from_ndarray(exact, format="rgb24").to_ndarray(
        format="rgb24", width=57, height=32, interpolation="AREA"
    )
    np.testing.assert_array_equal(small, expected)
