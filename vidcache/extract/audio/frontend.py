"""VGGish's log-mel front end in torch, one-shot (`log_mel`) and streaming (`LogMelExamples`).

Semantics follow `mel_features.py` / `vggish_input.py` of tensorflow/models research/audioset/vggish
so that ported VGGish weights see the inputs they were trained on: 16 kHz mono; 25 ms frames every
10 ms with no centre padding; periodic Hann window; magnitude (not power) of a 512-point rfft; 64
triangular HTK-mel bands between 125 and 7500 Hz; `log(mel + 0.01)`; examples of 96 frames (0.96 s)
taken without overlap, a partial tail dropped. One deliberate addition: a clip too short for a
single example (but at least one 25 ms window long) is zero-padded to one example, so short clips
still get an embedding instead of none.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .downmix import DOWNMIX

SAMPLE_RATE_HZ = 16000
WINDOW_S = 0.025
HOP_S = 0.010
WINDOW_SAMPLES = round(SAMPLE_RATE_HZ * WINDOW_S)  # 400
HOP_SAMPLES = round(SAMPLE_RATE_HZ * HOP_S)  # 160
FFT_LENGTH = 1 << (WINDOW_SAMPLES - 1).bit_length()  # 512: next power of two of the window, as VGGish
SPECTRUM_BINS = FFT_LENGTH // 2 + 1  # 257
MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96
EXAMPLE_S = 0.96
EXAMPLE_HOP_FRAMES = EXAMPLE_FRAMES  # examples do not overlap
EXAMPLE_HOP_SAMPLES = EXAMPLE_HOP_FRAMES * HOP_SAMPLES  # 15360: example j starts at sample 15360 * j
EXAMPLE_SPAN_SAMPLES = (EXAMPLE_FRAMES - 1) * HOP_SAMPLES + WINDOW_SAMPLES  # 15600 samples feed one example

_MEL_BREAK_HZ = 700.0
_MEL_HIGH_Q = 1127.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, as VGGish: 1127 * ln(1 + hz / 700)."""
    return _MEL_HIGH_Q * np.log(1.0 + np.asarray(hz, dtype=np.float64) / _MEL_BREAK_HZ)


@functools.lru_cache(maxsize=1)
def _mel_matrix_numpy() -> np.ndarray:
    # VGGish's spectrogram_to_mel_matrix, computed in float64 like the original, stored as float32.
    nyquist_hz = SAMPLE_RATE_HZ / 2.0
    bins_mel = hz_to_mel(np.linspace(0.0, nyquist_hz, SPECTRUM_BINS))
    edges_mel = np.linspace(hz_to_mel(MEL_MIN_HZ), hz_to_mel(MEL_MAX_HZ), MEL_BANDS + 2)
    matrix = np.empty((SPECTRUM_BINS, MEL_BANDS))
    for band in range(MEL_BANDS):
        lower, centre, upper = edges_mel[band : band + 3]
        rising = (bins_mel - lower) / (centre - lower)
        falling = (upper - bins_mel) / (upper - centre)
        matrix[:, band] = np.maximum(0.0, np.minimum(rising, falling))
    matrix[0, :] = 0.0  # VGGish zeroes the DC bin's weights
    matrix = matrix.astype(np.float32)
    matrix.setflags(write=False)
    return matrix


def mel_matrix() -> torch.Tensor:
    """[257, 64] float32 weights from rfft magnitudes to mel bands (shared: do not modify in place)."""
    return _mel_matrix_tensor()


@functools.lru_cache(maxsize=1)
def _mel_matrix_tensor() -> torch.Tensor:
    return torch.from_numpy(_mel_matrix_numpy().copy())


@functools.lru_cache(maxsize=1)
def _periodic_hann() -> torch.Tensor:
    n = torch.arange(WINDOW_SAMPLES, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(2.0 * torch.pi * n / WINDOW_SAMPLES)).float()


def num_frames(num_samples: int) -> int:
    """Frames VGGish takes from `num_samples` samples (whole windows only, no padding)."""
    if num_samples < WINDOW_SAMPLES:
        return 0
    return 1 + (num_samples - WINDOW_SAMPLES) // HOP_SAMPLES


def log_mel(waveform: torch.Tensor) -> torch.Tensor:
    """[S] samples in [-1, 1] at 16 kHz → [F, 64] float32 log-mel, F = num_frames(S)."""
    waveform = torch.as_tensor(waveform).reshape(-1).to(torch.float32)
    if waveform.numel() < WINDOW_SAMPLES:
        return torch.zeros((0, MEL_BANDS), dtype=torch.float32)
    frames = waveform.unfold(0, WINDOW_SAMPLES, HOP_SAMPLES) * _periodic_hann()
    magnitude = torch.fft.rfft(frames, n=FFT_LENGTH, dim=-1).abs()
    return torch.log(magnitude @ _mel_matrix_tensor() + LOG_OFFSET)


def frontend_identity() -> dict:
    """Every constant of the front end, for the cache's identity record."""
    return {
        "name": "vggish-logmel",
        "input": f"mono float32 at {SAMPLE_RATE_HZ} Hz",
        "downmix": DOWNMIX,
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "window_samples": WINDOW_SAMPLES,
        "hop_samples": HOP_SAMPLES,
        "fft_length": FFT_LENGTH,
        "window": "periodic hann",
        "spectrum": "magnitude",
        "mel_scale": "htk 1127*ln(1+hz/700), dc bin zeroed",
        "mel_bands": MEL_BANDS,
        "mel_min_hz": MEL_MIN_HZ,
        "mel_max_hz": MEL_MAX_HZ,
        "log_offset": LOG_OFFSET,
        "example_frames": EXAMPLE_FRAMES,
        "example_hop_frames": EXAMPLE_HOP_FRAMES,
        "example_s": EXAMPLE_S,
        "partial_tail": "dropped",
        "short_clip": "zero-padded to one example when no full example exists",
    }


def _empty_examples() -> torch.Tensor:
    return torch.zeros((0, EXAMPLE_FRAMES, MEL_BANDS), dtype=torch.float32)


class LogMelExamples:
    """Streaming log-mel examples with bounded memory: feed samples as they are decoded.

    Only the samples not yet covered by an emitted example are kept (under one example span plus
    the last chunk fed). Everything `feed` and `finish` return, concatenated, equals the one-shot
    `log_mel` of the whole waveform cut into 96-frame examples. One instance per audio stream; not
    shared between threads.
    """

    def __init__(self) -> None:
        self.examples_emitted = 0
        self.samples_fed = 0
        self._pending = np.zeros(0, np.float32)  # samples from 15360 * examples_emitted on
        self._finished = False

    def _examples(self, samples: np.ndarray, count: int) -> torch.Tensor:
        segment = samples[: (count - 1) * EXAMPLE_HOP_SAMPLES + EXAMPLE_SPAN_SAMPLES]
        if not segment.flags.writeable:  # torch.from_numpy warns on read-only arrays
            segment = segment.copy()
        mel = log_mel(torch.from_numpy(segment))
        return mel[: count * EXAMPLE_FRAMES].reshape(count, EXAMPLE_FRAMES, MEL_BANDS)

    def feed(self, samples: np.ndarray) -> torch.Tensor:
        """Next mono 16 kHz float32 samples → every complete example now available, [n, 96, 64]."""
        if self._finished:
            raise RuntimeError("LogMelExamples.feed after finish")
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"expected 1-D mono samples, got shape {samples.shape}")
        self.samples_fed += samples.size
        pending = np.concatenate([self._pending, samples]) if self._pending.size else samples
        if pending.size < EXAMPLE_SPAN_SAMPLES:
            self._pending = pending.copy() if pending is samples else pending  # never keep the caller's buffer
            return _empty_examples()
        count = 1 + (pending.size - EXAMPLE_SPAN_SAMPLES) // EXAMPLE_HOP_SAMPLES
        examples = self._examples(pending, count)
        self._pending = pending[count * EXAMPLE_HOP_SAMPLES :].copy()  # copy: release the consumed part
        self.examples_emitted += count
        return examples

    def finish(self) -> torch.Tensor:
        """[0 or 1, 96, 64]: one zero-padded example for audio shorter than one example, else none
        (a partial tail after full examples is dropped, as VGGish does)."""
        self._finished = True
        pending, self._pending = self._pending, np.zeros(0, np.float32)
        if self.examples_emitted or self.samples_fed < WINDOW_SAMPLES:
            return _empty_examples()
        padded = np.zeros(EXAMPLE_SPAN_SAMPLES, np.float32)
        padded[: pending.size] = pending
        self.examples_emitted = 1
        return self._examples(padded, 1)
