"""Downmix as VGGish's `vggish_input.waveform_to_examples` does it: the plain mean of all channels,
taken at the source sample rate, before any resampling (libswresample's default downmix to mono
would weigh stereo (L+R)/sqrt(2) and 5.1 with its centre/surround gains instead)."""

from __future__ import annotations

import av
import numpy as np

DOWNMIX = "mean of all channels at the source rate (as vggish_input.py), then libswresample to 16 kHz"

# integer sample formats → the divisor that maps them to [-1, 1) as libswresample does; u8 is offset
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def channels_as_float(frame: av.AudioFrame) -> np.ndarray:
    """[channels, samples] float64 in [-1, 1] from a frame of any packed or planar sample format."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # packed: [1, samples * channels], interleaved
        data = data.reshape(-1, channels).T
    base = frame.format.name.rstrip("p")
    values = data.astype(np.float64)
    if base == "u8":
        return (values - 128.0) / _INT_SCALE["u8"]
    if base in _INT_SCALE:
        return values / _INT_SCALE[base]
    return values  # flt, dbl


def channel_mean(frame: av.AudioFrame) -> np.ndarray:
    """The frame's samples averaged over its channels: [samples] float32 (mono passes unchanged)."""
    return channels_as_float(frame).mean(axis=0).astype(np.float32)
