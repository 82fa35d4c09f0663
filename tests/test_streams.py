"""Default streams are FFmpeg's choice (compared with the `ffmpeg` CLI's own stream mapping, and
with plain PyAV's `streams.best`, which wraps av_find_best_stream), `--video-stream` /
`--audio-stream` choose another, the index used is recorded per video and shown by `status`, and
a cache made before these rules is refused with the reason."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess

import av
import numpy as np
import pytest

from tests.conftest import run_cli
from vidcache.config import SamplingConfig
from vidcache.extract.audio import iter_audio
from vidcache.extract.decode import FrameSampler

# (kind, width or rate, height or layout, default disposition)
LAYOUTS = {
    "late_default": [
        ("v", 320, 180, False),
        ("a", 16000, "mono", False),
        ("a", 16000, "stereo", True),
        ("v", 480, 270, True),
    ],
    "first_default": [
        ("a", 16000, "stereo", True),
        ("v", 480, 270, False),
        ("v", 320, 180, True),
        ("a", 16000, "mono", False),
    ],
}


def write_streams(path, specs, seconds: float = 1.0) -> None:
    with av.open(str(path), "w") as container:
        streams = []
        for kind, a, b, default in specs:
            if kind == "v":
                stream = container.add_stream("libx264", rate=10)
                stream.width, stream.height, stream.pix_fmt = a, b, "yuv420p"
            else:
                stream = container.add_stream("aac", rate=a, layout=b)
            if default:
                stream.disposition = av.stream.Disposition.default
            streams.append(stream)
        for stream, (kind, a, b, _) in zip(streams, specs, strict=True):
            if kind == "v":
                for i in range(round(10 * seconds)):
                    frame = av.VideoFrame.from_ndarray(np.full((b, a, 3), 40 * i % 255, np.uint8), format="rgb24")
                    frame.pts = i
                    container.mux(stream.encode(frame))
            else:
                channels = len(av.AudioLayout(b).channels)
                t = np.arange(round(a * seconds)) / a
                tone = (0.3 * np.sin(2 * np.pi * (200 + 300 * channels) * t)).astype(np.float32)
                for start in range(0, tone.size, 1024):
                    block = np.repeat(tone[None, start : start + 1024], channels, axis=0)
                    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=b)
                    frame.sample_rate, frame.pts = a, start
                    container.mux(stream.encode(frame))
            container.mux(stream.encode(None))


def ffmpeg_mapping(path) -> dict[str, int]:
    """The input streams the ffmpeg CLI maps by default (no -map), from its 'Stream mapping' lines."""
    log = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True
    ).stderr
    mapping = log[log.index("Stream mapping:") :]
    chosen = {}
    for index, codec in re.findall(r"Stream #0:(\d+) -> #0:\d+ \((\w+)", mapping):
        chosen["audio" if codec == "aac" else "video"] = int(index)
    return chosen


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("streams")
    for name, specs in LAYOUTS.items():
        write_streams(root / f"{name}.mkv", specs)
    return root


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_default_streams_are_ffmpegs_choice(files, name):
    path = files / f"{name}.mkv"
    with av.open(str(path)) as container:
        expected = {"video": container.streams.best("video").index, "audio": container.streams.best("audio").index}
    assert shutil.which("ffmpeg"), "the ffmpeg CLI is the reference here: apt-get install ffmpeg (make test does)"
    assert ffmpeg_mapping(path) == expected
    with FrameSampler(str(path), sampling=SamplingConfig(fps=2.0)) as sampler:
        frames = list(sampler)
        assert sampler.info.video_stream == expected["video"] == {"late_default": 3, "first_default": 2}[name]
    width = LAYOUTS[name][expected["video"]][1]
    assert {frame.width for frame, _, _ in frames} == {width}
    facts: dict = {}
    samples = np.concatenate([s for _, s in iter_audio(str(path), facts=facts)])
    assert facts == {"audio_stream": expected["audio"]} and samples.size > 10_000


def extract(manifest, cache, checkpoint, **options):
    """In-process `vidcache extract` (the same Extractor the CLI runs)."""
    from vidcache.commands.extract import build_config
    from vidcache.extract.runner import Extractor
    from vidcache.manifest import read_manifest

    config = build_config(
        views="clip,audio", clip_model="vidcache-tiny", clip_pretrained=str(checkpoint), device="cpu", **options
    )
    return Extractor(cache, config).run(read_manifest(manifest))


def test_stream_options_record_and_status(files, tmp_path, tiny_checkpoint):
    from vidcache.commands.cache import cache_status
    from vidcache.errors import ConfigError

    path = files / "late_default.mkv"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{path}\n")
    assert extract(manifest, tmp_path / "best", tiny_checkpoint).failed == 0
    assert extract(manifest, tmp_path / "chosen", tiny_checkpoint, video_stream=0, audio_stream=1).failed == 0
    for cache, video, audio, width in (("best", 3, 2, 480), ("chosen", 0, 1, 320)):
        with sqlite3.connect(tmp_path / cache / "catalog.sqlite") as db:
            infos = {v: json.loads(i) for v, i in db.execute("SELECT view, info_json FROM items")}
            identities = {v: json.loads(i) for v, i in db.execute("SELECT view, identity_json FROM views")}
        assert (infos["clip"]["video_stream"], infos["clip"]["width"], infos["audio"]["audio_stream"]) == (
            video,
            width,
            audio,
        )
        assert identities["clip"]["video_stream"] == ("ffmpeg-best" if cache == "best" else 0)
        status = cache_status(str(tmp_path / cache))
        assert status["views"]["clip"]["streams"] == {str(video): 1}
        assert status["views"]["audio"]["streams"] == {str(audio): 1}
    table = run_cli("status", "--cache", tmp_path / "best", check=True).stdout
    assert "#3" in table and "#2" in table

    wrong = extract(manifest, tmp_path / "wrong", tiny_checkpoint, video_stream=1)
    assert "--video-stream 1: stream 1 is audio, not video; its video streams are 0, 3" in wrong.failures[str(path)]

    with sqlite3.connect(tmp_path / "best" / "catalog.sqlite") as db:  # as an older vidcache recorded it
        (text,) = db.execute("SELECT identity_json FROM views WHERE view='clip'").fetchone()
        old = {
            k: v for k, v in json.loads(text).items() if k not in ("fidelity", "video_stream", "colour", "pre_shrink")
        }
        db.execute("UPDATE views SET identity_json=? WHERE view='clip'", (json.dumps(old, sort_keys=True),))
    with pytest.raises(ConfigError, match=r"made by an older vidcache \(fidelity 1\).*new --cache"):
        extract(manifest, tmp_path / "best", tiny_checkpoint)
