"""Small synthetic videos written with PyAV, for the demo, tests and benchmarks (seeded, offline)."""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 70, 220)}
DIRECTIONS = ("left", "right")
TONES_HZ = {"low": 220.0, "high": 880.0}


def index_frame(index: int, *, width: int = 64, height: int = 48) -> np.ndarray:
    """A frame whose content identifies its index: a gradient plus a bar code of the index bits."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (x * 255 // max(width - 1, 1)).astype(np.uint8)
    frame[..., 1] = (y * 255 // max(height - 1, 1)).astype(np.uint8)
    frame[..., 2] = (index * 37) % 256
    bits = [(index >> b) & 1 for b in range(8)]
    cell = max(width // 8, 1)
    for b, bit in enumerate(bits):
        frame[: height // 4, b * cell : (b + 1) * cell] = 255 if bit else 0
    return frame


def moving_square_frame(
    t_s: float, *, colour: str, direction: str, width: int = 96, height: int = 72, speed_px_s: float = 40.0
) -> np.ndarray:
    frame = np.full((height, width, 3), 16, np.uint8)
    side = height // 3
    travel = (t_s * speed_px_s) % (width - side)
    x0 = int(travel) if direction == "right" else int(width - side - travel)
    y0 = (height - side) // 2
    frame[y0 : y0 + side, x0 : x0 + side] = COLOURS[colour]
    return frame


def write_video(
    path: str | Path,
    num_frames: int,
    *,
    fps: float = 30.0,
    frame_fn: Callable[[int, float], np.ndarray] | None = None,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    tone_hz: float | None = None,
    sample_rate: int = 16000,
    pts_s: list[float] | None = None,
    options: dict | None = None,
    rotation_deg: int = 0,
    container_options: dict | None = None,
    cover_picture: bool = False,
) -> Path:
    """Write `num_frames` frames (`frame_fn(index, t_s)`, default `index_frame`) at `fps`, or at the
    explicit presentation times `pts_s` (variable frame rate), with an optional sine tone.
    `container_options` go to the muxer (e.g. `{"movflags": "faststart"}` for MP4);
    `cover_picture` puts album art (an attached-picture stream) first, as music and phone files do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", options=container_options or {}) as container:
        cover = add_cover_picture(container) if cover_picture else []
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        time_base = Fraction(1, 90000) if pts_s is not None else 1 / rate
        stream.codec_context.time_base = time_base
        codec_options = {"preset": "ultrafast"} if codec == "libx264" else {}
        if gop is not None:
            stream.codec_context.gop_size = gop
        codec_options.update(options or {})
        stream.codec_context.options = codec_options
        if rotation_deg:
            stream.set_display_rotation(rotation_deg)  # display matrix, counter-clockwise degrees
        audio = None
        if tone_hz is not None:
            audio = container.add_stream("aac", rate=sample_rate)
            audio.layout = "mono"
        for index in range(num_frames):
            t_s = pts_s[index] if pts_s is not None else index / float(rate)
            image = frame_fn(index, t_s) if frame_fn else index_frame(index, width=width, height=height)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = round(t_s / time_base)
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            duration_s = pts_s[-1] if pts_s else num_frames / float(rate)
            total = int(duration_s * sample_rate)
            samples = (0.3 * np.sin(2 * np.pi * tone_hz * np.arange(total) / sample_rate)).astype(np.float32)
            chunk = 1024
            for start in range(0, total, chunk):
                block = samples[start : start + chunk][None, :]
                aframe = av.AudioFrame.from_ndarray(block, format="fltp", layout="mono")
                aframe.sample_rate = sample_rate
                aframe.pts = start
                for packet in audio.encode(aframe):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
        for packet in cover:
            container.mux(packet)
    return path


def add_cover_picture(container, *, side: int = 64) -> list:
    """One JPEG as an attached-picture stream (cover art): a "video" stream that is not video. Add
    it before the other streams; mux the packets it returns after theirs (the header needs them all)."""
    picture = container.add_stream("mjpeg")
    picture.width, picture.height, picture.pix_fmt = side, side, "yuvj420p"
    picture.disposition = av.stream.Disposition.attached_pic
    image = np.full((side, side, 3), 200, np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuvj420p")
    return [*picture.encode(frame), *picture.encode(None)]


def reference_frames(path: str | Path) -> list[tuple[float, np.ndarray]]:
    """Every frame as (presentation time s, RGB) from a plain PyAV loop: the tests' reference."""
    with av.open(str(path)) as container:
        return [(frame.time, frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def smooth_texture(height: int, width: int, *, seed: int = 0, blur: float = 400.0) -> np.ndarray:
    """A smooth, periodic RGB texture (Gaussian-blurred noise via FFT): optical flow can track it
    everywhere, and np.roll shifts it without a seam."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height, width, 3))
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :]
    kernel = np.exp(-(fy**2 + fx**2) * blur)
    smooth = np.stack([np.real(np.fft.ifft2(np.fft.fft2(noise[..., c]) * kernel)) for c in range(3)], axis=-1)
    smooth = (smooth - smooth.min()) / max(smooth.max() - smooth.min(), 1e-12)
    return (smooth * 255).astype(np.uint8)


def shifting_texture(texture: np.ndarray, *, dx_px_per_frame: int, dy_px_per_frame: int = 0):
    """A frame_fn for `write_video` whose content moves a known number of pixels per frame."""

    def frame_fn(index: int, _t_s: float) -> np.ndarray:
        return np.roll(texture, (dy_px_per_frame * index, dx_px_per_frame * index), axis=(0, 1))

    return frame_fn


def shots_video(path: str | Path, *, fps: float = 25.0, width: int = 96, height: int = 54, shot_frames: int = 20):
    """A video with known shot boundaries: seven sources (tinted smooth textures moving different
    ways, a moving square) joined by hard cuts, one 1 s dissolve and one 2-frame white flash inside
    a shot (not a cut). Returns (path, hard cut frames: the first frame of each new shot,
    (first, last + 1) frame of the dissolve)."""
    tints = [(1.0, 0.3, 0.2), (0.2, 0.9, 0.3), (0.9, 0.9, 0.9), None, (0.3, 0.3, 1.0), (1.0, 0.8, 0.1), (0.5, 0.1, 0.6)]
    moves = [(1, 0), (0, 1), (-1, 0), None, (0, -1), (1, 1), (-1, 1)]  # slow: content scores stay low
    sources: list[Callable[[int, float], np.ndarray]] = []
    for seed, (tint, move) in enumerate(zip(tints, moves, strict=True)):
        if tint is None:
            sources.append(
                lambda i, t: moving_square_frame(t, colour="red", direction="right", width=width, height=height)
            )
            continue
        texture = (smooth_texture(height, width, seed=seed, blur=60.0) * np.array(tint)).astype(np.uint8)
        sources.append(shifting_texture(texture, dx_px_per_frame=move[0], dy_px_per_frame=move[1]))
    dissolve = round(fps)  # from source 4 into source 5
    plan, cuts, start = [], [], 0
    for k in range(len(sources)):
        if k and k != 5:
            cuts.append(start)
        plan.append(start)
        start += shot_frames + (dissolve if k == 4 else 0)
    flash = (plan[1] + shot_frames // 2, plan[1] + shot_frames // 2 + 1)

    def frame_fn(index: int, t_s: float) -> np.ndarray:
        k = max(i for i, s in enumerate(plan) if s <= index)
        frame = sources[k](index - plan[k], t_s).astype(np.float32)
        if k == 4 and index - plan[4] >= shot_frames:  # the dissolve into source 5
            alpha = (index - plan[4] - shot_frames + 1) / (dissolve + 1)
            frame = (1 - alpha) * frame + alpha * sources[5](0, t_s).astype(np.float32)
        if index in flash:
            frame = np.full_like(frame, 255.0)
        return frame.astype(np.uint8)

    write_video(path, start, fps=fps, width=width, height=height, frame_fn=frame_fn)
    return Path(path), cuts, (plan[4] + shot_frames, plan[5])
