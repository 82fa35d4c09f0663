"""YUV → RGB for decoded frames of more than 8 bits per sample (10-, 12-, 16-bit; 4:2:0, 4:2:2,
4:4:4; limited and full range; BT.601 / 709 / 2020 ...): an exact float conversion of the decoded
planes, rounded once to uint8. swscale's path from those formats to rgb24 dithers and rounds in
fixed point, which put frames ~4 levels (up to 169) off an exact conversion, ffmpeg's own output
1.2-1.8. 8-bit frames keep swscale's conversion (PyAV `to_ndarray("rgb24")`), unchanged.

The conversion follows ITU-T H.273: limited range Y = (219 E'y + 16)·2^(n-8), C = (224 E'c + 128)·2^(n-8);
full range Y = E'y·(2^n − 1), C = E'c·(2^n − 1) + 2^(n-1); R = Y + 2(1−Kr)Cr, B = Y + 2(1−Kb)Cb,
G = (Y − Kr R − Kb B)/Kg. The matrix comes from the frame's colorspace tag, unspecified meaning
BT.601 and the range tag unspecified meaning limited, as swscale and ffmpeg assume. Subsampled
chroma is repeated over the luma samples it covers (nearest, as swscale's unscaled path does).
"""

from __future__ import annotations

import av
import numpy as np

COLOUR_RULE = (
    "8-bit YUV: swscale to rgb24 (PyAV to_ndarray, the frame's matrix); more than 8 bits: exact float "
    "conversion of the decoded planes (ITU-T H.273; matrix from the colorspace tag, unspecified = BT.601; "
    "range tag, unspecified = limited; chroma repeated over its luma samples), rounded once to uint8"
)

# AVColorSpace → (Kr, Kb)
_BT601 = (0.299, 0.114)
_MATRIX = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: _BT601,  # BT.470BG
    6: _BT601,  # SMPTE 170M
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
    10: (0.2627, 0.0593),  # BT.2020 constant luminance: converted as non-constant
}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def needs_exact(frame: av.VideoFrame) -> bool:
    """True for planar YUV, gray and GBR formats of more than 8 bits per sample."""
    fmt = frame.format
    if not fmt.components or fmt.components[0].bits <= 8 or not fmt.is_planar:
        return False
    name = fmt.name
    return name.startswith(("yuv", "gray", "gbr"))


def _plane(frame: av.VideoFrame, index: int, bits: int) -> np.ndarray:
    plane = frame.planes[index]
    dtype = np.dtype(">u2" if frame.format.name.endswith("be") else "<u2") if bits > 8 else np.dtype(np.uint8)
    rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
    return rows[:, : plane.width].astype(np.float32)


def _full_size(chroma: np.ndarray, height: int, width: int) -> np.ndarray:
    step_y, step_x = -(-height // chroma.shape[0]), -(-width // chroma.shape[1])
    if step_y > 1:
        chroma = np.repeat(chroma, step_y, axis=0)
    if step_x > 1:
        chroma = np.repeat(chroma, step_x, axis=1)
    return chroma[:height, :width]


def exact_rgb(frame: av.VideoFrame) -> np.ndarray:
    """HxWx3 uint8 RGB of a frame for which `needs_exact` is True (rotation not applied)."""
    fmt = frame.format
    bits = fmt.components[0].bits
    peak = float((1 << bits) - 1)
    name = fmt.name
    if name.startswith("gbr"):  # planes G, B, R: scale only
        g, b, r = (_plane(frame, i, bits) for i in range(3))
        return np.rint(np.stack([r, g, b], axis=-1) * (255.0 / peak)).astype(np.uint8)
    luma = _plane(frame, 0, bits)
    full = int(frame.color_range) == _FULL_RANGE
    scale = float(1 << (bits - 8))
    y = luma / peak if full else (luma - 16.0 * scale) / (219.0 * scale)
    if name.startswith("gray"):
        value = np.rint(np.clip(y, 0.0, 1.0) * 255.0).astype(np.uint8)
        return np.repeat(value[:, :, None], 3, axis=2)
    height, width = luma.shape
    offset, span = (float(1 << (bits - 1)), peak) if full else (128.0 * scale, 224.0 * scale)
    cb = (_full_size(_plane(frame, 1, bits), height, width) - offset) / span
    cr = (_full_size(_plane(frame, 2, bits), height, width) - offset) / span
    kr, kb = _MATRIX.get(int(frame.colorspace), _BT601)
    kg = 1.0 - kr - kb
    red = y + 2.0 * (1.0 - kr) * cr
    blue = y + 2.0 * (1.0 - kb) * cb
    green = (y - kr * red - kb * blue) / kg
    rgb = np.stack([red, green, blue], axis=-1)
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
