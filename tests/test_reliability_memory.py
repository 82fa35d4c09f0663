"""Bounded memory: the peak RSS of `vidcache extract`, measured from the process (`os.wait4`
rusage of the child), does not grow with the video's length or resolution.

Bound (docs/reliability.md): peak RSS <= RSS once the models are loaded + 512 MiB (at the default
--batch-size 64 and --workers 2; both numbers are in every run's summary). Relative checks on top:
for the same settings, peak RSS of a run over a long video is within 15 % (+32 MiB of allocator
noise) of a run over a 10-second video of the same size, and a 4K (3840×2160) video adds at most
160 MiB over a 64×48 one: frames are converted to the model's input size in the decode worker, and
only a bounded queue of them is ever held."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, tiny_clip_args
from vidcache.synth import write_video

LENGTH_RATIO = 1.15
LENGTH_SLACK_MIB = 32
RESOLUTION_EXTRA_MIB = 160
VIDEO_MEMORY_MIB = 512  # the documented bound over the RSS once the models are loaded


def _noise_frame(width: int, height: int):
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, size=(8, height, width, 3), dtype=np.uint8)  # real content, cheap to make
    return lambda index, _t: tiles[index % 8]


def _peak_rss_mib(video, cache_dir, tiny_checkpoint, *views: str) -> float:
    manifest = video.parent / f"{video.stem}.csv"
    manifest.write_text(f"path\n{video.name}\n")
    argv = [
        sys.executable, "-m", "vidcache.cli", "extract", str(manifest), "--cache", str(cache_dir),
        *tiny_clip_args(tiny_checkpoint), "--fps", "2",
        "--views", ",".join(views or ("clip", "audio")), "--workers", "1", "--json",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the test process's
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, (out, err)
    peak_mib = usage.ru_maxrss / 1024  # KiB on Linux
    summary = json.loads(out.strip().splitlines()[-1])
    assert abs(summary["peak_rss_mib"] - peak_mib) <= 16, (summary, peak_mib)  # the summary reports it truly
    assert summary["peak_rss_mib"] - summary["models_rss_mib"] <= VIDEO_MEMORY_MIB, summary
    return peak_mib


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    small = _noise_frame(64, 48)
    return {
        "short": write_video(root / "short.mp4", 100, fps=10, frame_fn=small, tone_hz=440, gop=20),
        # 10 minutes: 60x more frames, audio samples and rows than the short one
        "long": write_video(root / "long.mp4", 6000, fps=10, frame_fn=small, tone_hz=440, gop=100),
        "4k": write_video(
            root / "4k.mp4", 12, fps=2, width=3840, height=2160, frame_fn=_noise_frame(3840, 2160), tone_hz=440
        ),
    }


@pytest.fixture(scope="module")
def short_peak_mib(videos, tiny_checkpoint, tmp_path_factory) -> float:
    return _peak_rss_mib(videos["short"], tmp_path_factory.mktemp("short-cache"), tiny_checkpoint)


def test_peak_rss_does_not_grow_with_length(videos, short_peak_mib, tiny_checkpoint, tmp_path):
    long = _peak_rss_mib(videos["long"], tmp_path / "cache", tiny_checkpoint)
    assert long <= short_peak_mib * LENGTH_RATIO + LENGTH_SLACK_MIB, (short_peak_mib, long)


def test_peak_rss_of_4k_stays_within_a_fixed_extra(videos, short_peak_mib, tiny_checkpoint, tmp_path):
    huge = _peak_rss_mib(videos["4k"], tmp_path / "cache", tiny_checkpoint)
    assert huge <= short_peak_mib + RESOLUTION_EXTRA_MIB, (short_peak_mib, huge)
