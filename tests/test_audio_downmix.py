"""Stereo and 5.1 audio reach the log-mel step as the plain channel mean, as VGGish's
`vggish_input.py` computes it (`np.mean(data, axis=1)` before resampling), checked against a NumPy
reference on the decoded planes of AAC files this test writes."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.test_audio import ref_log_mel
from vidcache.extract.audio import LogMelExamples, iter_audio
from vidcache.extract.audio.frontend import frontend_identity

SECONDS = 2.5


def channel_signals(count: int, rate: int) -> np.ndarray:
    """[count, samples]: one chirp at a different gain per channel, plus its own tone each, so the
    channel mean differs clearly from any weighted downmix."""
    t = np.arange(round(SECONDS * rate)) / rate
    chirp = np.sin(2 * np.pi * (200 * t + 1500 * t**2))
    gains = np.linspace(0.5, 0.15, count)
    tones = [0.1 * np.sin(2 * np.pi * (300 + 450 * c) * t) for c in range(count)]
    return np.stack([g * chirp + tone for g, tone in zip(gains, tones, strict=True)]).astype(np.float32)


def write_aac(path: Path, layout: str, rate: int) -> None:
    count = len(av.AudioLayout(layout).channels)
    signals = channel_signals(count, rate)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        stream.bit_rate = 96_000 * count
        for start in range(0, signals.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(signals[:, start : start + 1024]), format="fltp", layout=layout
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def decoded_planes(path: Path) -> tuple[np.ndarray, int]:
    """Plain PyAV: the decoded AAC planes (float32 planar), concatenated: [channels, samples]."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        planes = [frame.to_ndarray() for frame in container.decode(stream)]
        return np.concatenate(planes, axis=1).astype(np.float64), stream.sample_rate


def resample_mono(mono: np.ndarray, rate: int) -> np.ndarray:
    """Only the rate change (mono in, mono out) with PyAV's resampler; the identity at 16 kHz."""
    if rate == 16000:
        return mono.astype(np.float32)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
    frame = av.AudioFrame.from_ndarray(mono.astype(np.float32)[None, :], format="flt", layout="mono")
    frame.sample_rate = rate
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame) + resampler.resample(None)]
    return np.concatenate(out)


def vidcache_examples(path: Path) -> np.ndarray:
    frontend = LogMelExamples()
    parts = [frontend.feed(samples) for _, samples in iter_audio(str(path))]
    return torch.cat([*parts, frontend.finish()]).numpy()


@pytest.mark.parametrize(("layout", "rate"), [("stereo", 16000), ("5.1", 16000), ("stereo", 48000), ("5.1", 44100)])
def test_downmix_is_the_channel_mean(tmp_path, layout, rate):
    path = tmp_path / f"{layout}.m4a"
    write_aac(path, layout, rate)
    planes, got_rate = decoded_planes(path)
    assert got_rate == rate and planes.shape[0] == len(av.AudioLayout(layout).channels)
    reference = resample_mono(planes.mean(axis=0), rate)  # vggish_input.py: np.mean over channels first

    ours = vidcache_examples(path)
    n = ours.shape[0]
    expected = ref_log_mel(reference)[: n * 96].reshape(n, 96, 64)
    assert n == len(ref_log_mel(reference)) // 96 >= 2
    assert np.abs(ours - expected).max() < 1e-3
    # libswresample's own downmix would be louder: (L+R)/sqrt(2) for stereo, centre and surround gains for 5.1
    louder = np.log(np.exp(expected) * np.sqrt(2) + 0.01)
    assert np.abs(ours - louder).mean() > 0.1


def test_mono_passes_unchanged(tmp_path):
    path = tmp_path / "mono.m4a"
    write_aac(path, "mono", 16000)
    planes, _ = decoded_planes(path)
    samples = np.concatenate([s for _, s in iter_audio(str(path))])
    np.testing.assert_array_equal(samples, planes[0].astype(np.float32))


def test_identity_records_the_downmix():
    assert "mean of all channels" in frontend_identity()["downmix"]
