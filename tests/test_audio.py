"""The audio view: VGGish's log-mel front end, its streaming form, the encoders and the decoder,
each checked against an independent NumPy / functional-torch reference or a known signal."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vidcache.extract.audio.decode as audio_decode
from vidcache.errors import ConfigError, MissingWeightsError, VideoFailure, ViewAbsent
from vidcache.extract.audio import LogMelExamples, iter_audio
from vidcache.extract.audio import frontend as fe
from vidcache.extract.views.audio import AudioConfig
from vidcache.extract.views.audio.encoders import AUDIO_ENCODERS, AudioEncoder
from vidcache.synth import write_video

SR = 16000
CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------
# independent NumPy reference of VGGish's mel_features.py (written from its definition, float64)


def ref_mel_filterbank() -> np.ndarray:
    """Triangles evaluated on the HTK mel axis with np.interp: [257, 64]."""

    def mel(hz):
        return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)

    bins_mel = mel(np.arange(257) * (8000.0 / 256))
    edges = mel(125.0) + (mel(7500.0) - mel(125.0)) * np.arange(66) / 65.0
    bank = np.zeros((257, 64))
    for band in range(64):
        bank[:, band] = np.interp(bins_mel, edges[band : band + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0)
    bank[0] = 0.0
    return bank


def ref_log_mel(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    magnitude = np.abs(np.fft.rfft(frames * window, n=512, axis=1))
    return np.log(magnitude @ ref_mel_filterbank() + 0.01)


def chirp_and_noise(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    # 100 Hz → 7.9 kHz linear chirp: sweeps every mel band, plus a little broadband noise
    sweep = 0.5 * np.sin(2 * np.pi * (100 * t + (7800 / (2 * seconds)) * t**2))
    return (sweep + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def test_frontend_constants():
    assert (fe.SAMPLE_RATE_HZ, fe.WINDOW_SAMPLES, fe.HOP_SAMPLES, fe.FFT_LENGTH) == (16000, 400, 160, 512)
    assert (fe.MEL_BANDS, fe.MEL_MIN_HZ, fe.MEL_MAX_HZ, fe.LOG_OFFSET) == (64, 125.0, 7500.0, 0.01)
    assert (fe.EXAMPLE_FRAMES, fe.EXAMPLE_S, fe.EXAMPLE_HOP_SAMPLES, fe.EXAMPLE_SPAN_SAMPLES) == (
        96,
        0.96,
        15360,
        15600,
    )


def test_mel_matrix_matches_independent_filterbank():
    ours = fe.mel_matrix()
    assert ours.shape == (257, 64) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), ref_mel_filterbank(), atol=1e-6)
    # each band peaks near its centre frequency; the bands cover 125 .. 7500 Hz
    bins_hz = np.arange(257) * 8000.0 / 256
    assert bins_hz[np.nonzero(ours.numpy()[:, 0])[0][0]] > 125.0
    assert bins_hz[np.nonzero(ours.numpy()[:, -1])[0][-1]] < 7500.0
    assert fe.mel_matrix() is ours  # cached


def test_log_mel_matches_numpy_reference():
    x = chirp_and_noise(3.0)
    ours = fe.log_mel(torch.from_numpy(x)).numpy()
    ref = ref_log_mel(x)
    assert ours.shape == ref.shape == (1 + (x.size - 400) // 160, 64)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)
    # and in the linear mel domain, relative to the magnitude
    np.testing.assert_allclose(np.exp(ours), np.exp(ref), rtol=1e-4, atol=1e-6)
    assert fe.log_mel(torch.zeros(399)).shape == (0, 64)


def test_log_mel_puts_a_tone_in_its_band():
    x = (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(SR) / SR)).astype(np.float32)
    band = int(fe.log_mel(torch.from_numpy(x)).mean(0).argmax())
    edges_hz = 700.0 * np.expm1(np.linspace(fe.hz_to_mel(125.0), fe.hz_to_mel(7500.0), 66) / 1127.0)
    assert edges_hz[band] < 1000.0 < edges_hz[band + 2]


def one_shot_examples(x: np.ndarray) -> torch.Tensor:
    mel = fe.log_mel(torch.from_numpy(x))
    n = mel.shape[0] // 96
    return mel[: n * 96].reshape(n, 96, 64)


def test_streaming_equals_one_shot_with_random_chunks():
    x = chirp_and_noise(10.3, seed=1)
    rng = np.random.default_rng(2)
    stream = LogMelExamples()
    out, start = [], 0
    while start < x.size:
        size = int(rng.choice([1, 7, 160, 399, 4000, 15359, 15600, 40000]))
        out.append(stream.feed(x[start : start + size]))
        start += size
        assert stream._pending.size < fe.EXAMPLE_SPAN_SAMPLES  # bounded: only what no example covered yet
    out.append(stream.finish())
    streamed = torch.cat(out)
    expected = one_shot_examples(x)
    assert streamed.shape == expected.shape == ((1 + (x.size - 400) // 160) // 96, 96, 64)
    np.testing.assert_allclose(streamed.numpy(), expected.numpy(), atol=1e-5)
    assert stream.examples_emitted == expected.shape[0]
    # example j covers samples [15360 j, 15360 j + 15600)
    for j in (0, 3, expected.shape[0] - 1):
        alone = fe.log_mel(torch.from_numpy(x[15360 * j : 15360 * j + 15600]))
        np.testing.assert_allclose(streamed[j].numpy(), alone.numpy(), atol=1e-5)
    with pytest.raises(RuntimeError):
        stream.feed(x[:10])


@pytest.mark.parametrize("num_samples", [0, 399, 15599, 15600, 15760, 30959, 30960, 31000, 160123])
def test_example_count_drops_the_tail(num_samples):
    x = chirp_and_noise(num_samples / SR + 0.001, seed=3)[:num_samples]
    stream = LogMelExamples()
    got = stream.feed(x).shape[0] + stream.finish().shape[0]
    frames = 1 + (num_samples - 400) // 160 if num_samples >= 400 else 0
    # VGGish's count (tail dropped); a clip with no full example but one window or more gets one padded example
    expected = frames // 96 if frames >= 96 else int(num_samples >= 400)
    assert got == stream.examples_emitted == expected


def test_short_clip_gives_one_zero_padded_example():
    x = chirp_and_noise(0.5, seed=4)
    stream = LogMelExamples()
    assert stream.feed(x[:3000]).shape == (0, 96, 64)
    assert stream.feed(x[3000:]).shape == (0, 96, 64)
    example = stream.finish()
    assert example.shape == (1, 96, 64) and stream.examples_emitted == 1
    padded = np.zeros(15600, np.float32)
    padded[: x.size] = x
    np.testing.assert_allclose(example[0].numpy(), ref_log_mel(padded), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(example[0, :48].numpy(), ref_log_mel(x)[:48], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(example[0, -1].numpy(), np.log(0.01), atol=1e-6)  # all-zero window
    # less than one 25 ms window: nothing
    tiny = LogMelExamples()
    tiny.feed(x[:399])
    assert tiny.finish().shape == (0, 96, 64)


# ------------------------------------------------------------------------------------------------
# encoders


def test_registry_names():
    assert AUDIO_ENCODERS.names() == ["logmel-stats", "vggish"]
    with pytest.raises(ConfigError, match="--audio-encoder"):
        AUDIO_ENCODERS.create("nope", config=AudioConfig(), device=CPU, dtype="float16")


def test_logmel_stats_matches_numpy():
    rng = np.random.default_rng(5)
    examples = rng.normal(-2.0, 1.5, size=(5, 96, 64)).astype(np.float32)
    encoder = AUDIO_ENCODERS.create("logmel-stats", config=AudioConfig(), device=CPU, dtype="float32")
    assert isinstance(encoder, AudioEncoder) and encoder.view == "audio"
    out = encoder.encode(torch.from_numpy(examples))
    assert out.shape == (5, 128) and out.dtype == np.float32 and encoder.feature_dim == 128
    ref = np.concatenate([examples.astype(np.float64).mean(1), examples.astype(np.float64).std(1, ddof=0)], 1)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert encoder.encode(torch.zeros(0, 96, 64)).shape == (0, 128)
    ident = encoder.identity()
    assert ident["encoder"] == "logmel-stats" and ident["dtype"] == encoder.store_dtype == "float32"
    assert ident["frontend"]["mel_bands"] == 64 and ident["frontend"]["log_offset"] == 0.01
    assert ident["frontend"]["fft_length"] == 512 and ident["frontend"]["example_frames"] == 96
    with pytest.raises(ValueError):
        encoder.encode(torch.zeros(2, 95, 64))


# torchvggish's vggish-10086976.pth: names and shapes
VGGISH_SHAPES = {
    "features.0": (64, 1, 3, 3),
    "features.3": (128, 64, 3, 3),
    "features.6": (256, 128, 3, 3),
    "features.8": (256, 256, 3, 3),
    "features.11": (512, 256, 3, 3),
    "features.13": (512, 512, 3, 3),
    "embeddings.0": (4096, 512 * 4 * 6),
    "embeddings.2": (4096, 4096),
    "embeddings.4": (128, 4096),
}


def random_vggish_state(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in VGGISH_SHAPES.items():
        fan_in = math.prod(shape[1:])
        state[f"{name}.weight"] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
        state[f"{name}.bias"] = torch.randn(shape[0], generator=generator) * 0.05
    return state


def reference_vggish(state: dict[str, torch.Tensor], examples: torch.Tensor) -> torch.Tensor:
    """VGGish written with torch.nn.functional straight from the state dict."""
    x = examples.unsqueeze(1)
    for name in ("features.0", "features.3", "features.6", "features.8", "features.11", "features.13"):
        x = F.relu(F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], padding=1))
        if name in ("features.0", "features.3", "features.8", "features.13"):
            x = F.max_pool2d(x, kernel_size=2, stride=2)
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # NHWC flatten, as the TF weights expect
    for name in ("embeddings.0", "embeddings.2", "embeddings.4"):
        x = F.relu(F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"]))
    return x


@pytest.fixture(scope="module")
def vggish_weights(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    state = random_vggish_state()
    path = tmp_path_factory.mktemp("vggish") / "vggish-random.pth"
    torch.save(state, path)
    return state, path


def test_vggish_matches_functional_reference(vggish_weights):
    state, path = vggish_weights
    config = AudioConfig(encoder="vggish", weights=str(path))
    encoder = AUDIO_ENCODERS.create("vggish", config=config, device=CPU, dtype="float16")
    examples = one_shot_examples(chirp_and_noise(3.9, seed=6))  # 4 real log-mel examples
    assert examples.shape[0] == 4
    out = encoder.encode(examples)
    assert out.shape == (4, 128) and out.dtype == np.float32 and encoder.feature_dim == 128
    with torch.inference_mode():
        ref = reference_vggish(state, examples).numpy()
    assert ref.std() > 0.01 and (ref > 0).mean() > 0.2  # a non-degenerate embedding
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(encoder.encode(examples, batch_size=3), out, rtol=1e-4, atol=1e-4)
    ident = encoder.identity()
    assert ident["encoder"] == "vggish" and ident["dtype"] == encoder.store_dtype == "float16"
    assert ident["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ident["weights_path"] == str(path.resolve()) and "PCA" in ident["postprocess"]
    assert ident["frontend"]["mel_min_hz"] == 125.0 and ident["frontend"]["hop_samples"] == 160


def test_vggish_loads_safetensors(vggish_weights, tmp_path):
    from safetensors.torch import save_file

    state, _ = vggish_weights
    path = tmp_path / "vggish.safetensors"
    save_file(state, str(path))
    encoder = AUDIO_ENCODERS.create(
        "vggish", config=AudioConfig(encoder="vggish", weights=str(path)), device=CPU, dtype="float32"
    )
    examples = torch.randn(2, 96, 64)
    with torch.inference_mode():
        np.testing.assert_allclose(encoder.encode(examples), reference_vggish(state, examples), rtol=1e-4, atol=1e-4)


def test_vggish_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match=r"--audio-weights PATH.*logmel-stats"):
        AUDIO_ENCODERS.create("vggish", config=AudioConfig(encoder="vggish"), device=CPU, dtype="float16")
    missing = tmp_path / "nope.pth"
    with pytest.raises(MissingWeightsError, match=r"nope\.pth does not exist"):
        AUDIO_ENCODERS.create(
            "vggish", config=AudioConfig(encoder="vggish", weights=str(missing)), device=CPU, dtype="float16"
        )


class NotWeights:  # a pickled object that weights_only loading must refuse
    pass


def test_vggish_wrong_weights(tmp_path):
    def create(state_or_obj, name="bad.pth"):
        path = tmp_path / name
        torch.save(state_or_obj, path)
        return AUDIO_ENCODERS.create(
            "vggish", config=AudioConfig(encoder="vggish", weights=str(path)), device=CPU, dtype="float16"
        )

    with pytest.raises(ConfigError, match=r"missing \d+: features\.0\.bias.*unexpected 1: classifier\.weight"):
        create({"features.0.weight": torch.zeros(64, 1, 3, 3), "classifier.weight": torch.zeros(3)})
    # right names, one wrong shape (stride-0 expanded zeros: the file stays tiny)
    cheap = {f"{n}.weight": torch.zeros(1).expand(s) for n, s in VGGISH_SHAPES.items()}
    cheap |= {f"{n}.bias": torch.zeros(1).expand(s[0]) for n, s in VGGISH_SHAPES.items()}
    cheap["features.0.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(
        ConfigError, match=r"wrong shape 1: features\.0\.weight \(64, 3, 3, 3\) \(want \(64, 1, 3, 3\)\)"
    ):
        create(cheap)
    with pytest.raises(ConfigError, match="cannot be read as a state dict"):
        create(NotWeights(), "pickle.pth")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="cannot be read"):
        AUDIO_ENCODERS.create(
            "vggish",
            config=AudioConfig(encoder="vggish", weights=str(tmp_path / "garbage.safetensors")),
            device=CPU,
            dtype="float16",
        )


# ------------------------------------------------------------------------------------------------
# decoding


@pytest.fixture(scope="module")
def audio_videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio-videos")
    return {
        "tone16k": write_video(root / "tone16k.mp4", 40, fps=4, tone_hz=440.0, sample_rate=16000),  # 10 s
        "tone44k": write_video(root / "tone44k.mp4", 24, fps=4, tone_hz=1000.0, sample_rate=44100),  # 6 s
        "long": write_video(root / "long.mp4", 30, fps=2, tone_hz=440.0, sample_rate=16000),  # 15 s
        "silent": write_video(root / "silent.mp4", 12, fps=4),
    }


def decode_all(path, **kwargs) -> tuple[list[tuple[float, np.ndarray]], np.ndarray]:
    chunks = list(iter_audio(str(path), **kwargs))
    return chunks, np.concatenate([samples for _, samples in chunks])


def dominant_hz(x: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * SR / x.size)


def sine_at(times_s: np.ndarray, hz: float) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * hz * times_s)  # the tone write_video writes


@pytest.mark.parametrize(("name", "seconds", "hz"), [("tone16k", 10.0, 440.0), ("tone44k", 6.0, 1000.0)])
def test_iter_audio_decodes_the_tone(audio_videos, name, seconds, hz):
    chunks, x = decode_all(audio_videos[name], chunk_s=2.5)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(x.size - seconds * SR) <= 0.01 * seconds * SR
    assert abs(dominant_hz(x) - hz) <= 5.0
    assert abs(chunks[0][0]) < 1e-3  # the stream starts at 0
    assert all(c.size == 40000 for _, c in chunks[:-1]) and 0 < chunks[-1][1].size <= 40000
    starts = [t for t, _ in chunks]
    np.testing.assert_allclose(np.diff(starts), 2.5, atol=1e-9)  # contiguous
    # the samples are the written sine at their timestamps (AAC is lossy; away from the ends)
    times = chunks[0][0] + np.arange(x.size) / SR
    middle = slice(SR // 2, int((seconds - 0.5) * SR))
    assert np.abs(x[middle] - sine_at(times[middle], hz)).max() < 0.05


def test_iter_audio_segment(audio_videos):
    chunks, x = decode_all(audio_videos["tone16k"], start_s=2.0, end_s=5.5, chunk_s=1.0)
    assert abs(x.size - 3.5 * SR) <= 0.01 * 3.5 * SR
    assert abs(chunks[0][0] - 2.0) < 1e-3
    times = chunks[0][0] + np.arange(x.size) / SR
    assert np.abs(x - sine_at(times, 440.0)).max() < 0.05  # the right stretch of the signal
    # open-ended segments
    _, head = decode_all(audio_videos["tone16k"], end_s=1.0)
    assert abs(head.size - SR) <= 0.01 * SR
    tail_chunks, tail = decode_all(audio_videos["tone16k"], start_s=9.0)
    assert abs(tail_chunks[0][0] - 9.0) < 1e-3
    assert SR <= tail.size <= SR + 1024  # AAC decodes its last 1024-sample frame whole (zero padding)
    with pytest.raises(ViewAbsent, match="no samples in the segment"):
        decode_all(audio_videos["tone16k"], start_s=20.0, end_s=21.0)


def test_iter_audio_far_segment_seeks_to_the_same_samples(audio_videos, monkeypatch):
    path = audio_videos["long"]
    chunks, seeked = decode_all(path, start_s=12.0, end_s=14.0)
    assert seeked.size == 2 * SR and abs(chunks[0][0] - 12.0) < 1e-3
    times = chunks[0][0] + np.arange(seeked.size) / SR
    assert np.abs(seeked - sine_at(times, 440.0)).max() < 0.05
    monkeypatch.setattr(audio_decode, "SEEK_PREROLL_S", -1.5)  # a seek that lands past the segment start
    overshot_chunks, overshot = decode_all(path, start_s=12.0, end_s=14.0)  # → decoded from the start instead
    monkeypatch.setattr(audio_decode, "SEEK_MIN_GAP_S", math.inf)  # never seek
    linear_chunks, linear = decode_all(path, start_s=12.0, end_s=14.0)
    for other_chunks, other in ((linear_chunks, linear), (overshot_chunks, overshot)):
        assert other_chunks[0][0] == pytest.approx(chunks[0][0], abs=1e-6)
        np.testing.assert_allclose(seeked, other, atol=1e-5)


def test_iter_audio_stream_starting_late(tmp_path):
    """Times are the container's: an audio-only file whose stream starts at 0.5 s."""
    path = tmp_path / "late.mkv"
    offset = SR // 2
    signal = sine_at((np.arange(3 * SR) + offset) / SR, 440.0).astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=SR)
        stream.layout = "mono"
        for start in range(0, signal.size, 1024):
            frame = av.AudioFrame.from_ndarray(signal[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SR, offset + start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    chunks, x = decode_all(path)
    assert abs(chunks[0][0] - 0.5) < 1e-3
    times = chunks[0][0] + np.arange(x.size) / SR
    assert np.abs(x[SR // 4 : -SR // 4] - sine_at(times, 440.0)[SR // 4 : -SR // 4]).max() < 0.05
    seg_chunks, seg = decode_all(path, start_s=1.5, end_s=2.5)
    assert abs(seg_chunks[0][0] - 1.5) < 1e-3 and seg.size == SR
    assert np.abs(seg - sine_at(1.5 + np.arange(SR) / SR, 440.0)).max() < 0.05


def test_iter_audio_absent_and_failures(audio_videos, tmp_path):
    with pytest.raises(ViewAbsent, match="no audio stream"):
        decode_all(audio_videos["silent"])
    with pytest.raises(VideoFailure, match="file not found"):
        decode_all(tmp_path / "missing.mp4")
    (tmp_path / "notes.mp4").write_text("not a video at all\n" * 20)
    with pytest.raises(VideoFailure, match="not a readable file"):
        decode_all(tmp_path / "notes.mp4")
    with pytest.raises(VideoFailure, match="decode time limit exceeded"):
        decode_all(audio_videos["tone16k"], deadline=0.0)


def test_decode_to_embedding_end_to_end(audio_videos):
    """iter_audio → LogMelExamples → logmel-stats: the 440 Hz tone's band carries the most energy."""
    stream = LogMelExamples()
    parts = [stream.feed(samples) for _, samples in iter_audio(str(audio_videos["tone16k"]), chunk_s=0.7)]
    examples = torch.cat([*parts, stream.finish()])
    assert examples.shape[0] == (1 + (stream.samples_fed - 400) // 160) // 96 >= 10
    encoder = AUDIO_ENCODERS.create("logmel-stats", config=AudioConfig(), device=CPU, dtype="float16")
    features = encoder.encode(examples)
    edges_hz = 700.0 * np.expm1(np.linspace(fe.hz_to_mel(125.0), fe.hz_to_mel(7500.0), 66) / 1127.0)
    for band in features[1:-1, :64].argmax(1):
        assert edges_hz[band] < 440.0 < edges_hz[band + 2]
