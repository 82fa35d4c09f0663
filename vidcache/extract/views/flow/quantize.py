"""uint8 storage of flow fields: ±bound_px mapped linearly onto 1..255 with 0 px at 128.

The code is symmetric (255 levels, 128 ± 127) so zero motion is stored exactly and +d / -d round to
mirrored codes; 0 is never written. The round-trip error for |flow| <= bound is at most bound / 254.
"""

from __future__ import annotations

import numpy as np

ZERO_CODE = 128
HALF_RANGE = 127


def quantize_flow(flow: np.ndarray, bound_px: float) -> np.ndarray:
    """round(clip(flow, -b, b) / b * 127) + 128 as uint8, same shape; values beyond ±b saturate."""
    if not bound_px > 0:
        raise ValueError(f"bound_px must be > 0, got {bound_px}")
    flow = np.asarray(flow, dtype=np.float32)
    # NaN would cast to an arbitrary byte and be stored as plausible motion; refuse it instead.
    if np.isnan(flow).any():
        raise ValueError("flow contains NaN")
    scaled = np.clip(flow, -bound_px, bound_px) * np.float32(HALF_RANGE / bound_px)
    return (np.rint(scaled) + ZERO_CODE).astype(np.uint8)


def dequantize_flow(q: np.ndarray, bound_px: float) -> np.ndarray:
    """(q - 128) * b / 127 as float32 pixels."""
    if not bound_px > 0:
        raise ValueError(f"bound_px must be > 0, got {bound_px}")
    return (np.asarray(q).astype(np.float32) - ZERO_CODE) * np.float32(bound_px / HALF_RANGE)
