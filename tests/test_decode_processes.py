"""Decode workers as processes (`--decode-in processes`, the default on CUDA): the same cache as decode
threads, row for row, whatever the views; a child stuck inside FFmpeg is killed and a child that dies
fails only its video; the run goes on in both cases and a re-run finishes the work.

The reference for the rows is the threads path, which the rest of the suite checks against plain PyAV
and the models' own code; here the claim is that the process boundary changes nothing."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S, run_cli, tiny_clip_args
from vidcache import Cache
from vidcache.cache.verify import verify_cache
from vidcache.synth import moving_square_frame, write_video

pytestmark = pytest.mark.slow


def make_corpus(root: Path, names: list[str]) -> Path:
    rows = ["path,video_id"]
    for i, name in enumerate(names):
        write_video(
            root / name,
            18 + 6 * i,
            fps=12,
            width=96,
            height=64,
            gop=6,
            tone_hz=330.0 + 40 * i,
            frame_fn=lambda _, t, i=i: moving_square_frame(
                t, colour="red", direction="left" if i % 2 else "right", width=96, height=64
            ),
        )
        rows.append(f"{name},{Path(name).stem}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def extract(manifest: Path, cache: Path, checkpoint: Path, *extra: str, env: dict | None = None):
    result = run_cli(
        "extract", manifest, "--cache", cache, *tiny_clip_args(checkpoint), "--fps", "4", "--json",
        "--device", "cpu", *extra, timeout=HANG_GUARD_S, env=env,
    )  # fmt: skip
    return result, json.loads(result.stdout) if result.stdout.strip() else {}


def test_processes_write_the_same_rows_as_threads(tmp_path, tiny_checkpoint):
    manifest = make_corpus(tmp_path, [f"v{i}.mp4" for i in range(3)])
    views = ("--views", "clip,audio,motion", "--flow-method", "tvl1")
    caches = {}
    for mode in ("threads", "processes"):
        caches[mode] = tmp_path / mode
        result, summary = extract(manifest, caches[mode], tiny_checkpoint, *views, "--decode-in", mode)
        assert result.returncode == 0, result.stderr[-2000:]
        assert summary["decode_in"] == mode and summary["extracted"] == 3
    with Cache(caches["threads"]) as a, Cache(caches["processes"]) as b:
        for view in ("clip", "audio", "motion"):
            assert a.video_ids(view) == b.video_ids(view) == ["v0", "v1", "v2"]
            for video_id in a.video_ids(view):
                rows_a, times_a = a.read(video_id, view)
                rows_b, times_b = b.read(video_id, view)
                assert rows_a.shape == rows_b.shape and len(rows_a) > 0
                np.testing.assert_array_equal(rows_a, rows_b)  # bit-identical
                np.testing.assert_array_equal(times_a, times_b)
    assert not verify_cache(caches["processes"]).broken


def decode_children() -> list[str]:
    done = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if "forkserver" in line and "vidcache" in line]


def test_a_stuck_decode_process_is_killed_and_a_dead_one_fails_only_its_video(tmp_path, tiny_checkpoint):
    manifest = make_corpus(tmp_path, ["a.mp4", "stuck.mp4", "b.mp4", "c.mp4"])
    cache = tmp_path / "c"
    result, summary = extract(
        manifest, cache, tiny_checkpoint, "--decode-in", "processes", "--workers", "2", "--video-timeout-s", "5",
        env={"VIDCACHE_FAULT": "decode-open:hang:1", "VIDCACHE_FAULT_MATCH": "stuck.mp4"},
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert summary["failed"] == 1 and summary["extracted"] == 3, summary
    assert "decode stuck" in summary["failures"]["stuck"]
    # not a hang: the stuck decoder never returns, so finishing at all (within the hang guard) shows it was given up
    assert not verify_cache(cache).broken
    # a decoder that crashes its process (SIGKILL at open, as a segfault would end it)
    cache2 = tmp_path / "c2"
    result, summary = extract(
        manifest, cache2, tiny_checkpoint, "--decode-in", "processes", "--workers", "2",
        env={"VIDCACHE_FAULT": "decode-open:kill", "VIDCACHE_FAULT_MATCH": "stuck.mp4"},
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert summary["failed"] == 1 and summary["extracted"] == 3, summary
    assert "decode process died (killed by SIGKILL)" in summary["failures"]["stuck"]
    # the same command without the fault finishes the work, redoing nothing else
    result, summary = extract(manifest, cache2, tiny_checkpoint, "--decode-in", "processes", "--retry-failed")
    assert result.returncode == 0 and summary["extracted"] == 1 and summary["skipped"] == 3, summary
    with Cache(cache2) as cached:
        assert cached.video_ids("clip") == ["a", "b", "c", "stuck"]
    time.sleep(0.5)
    assert decode_children() == []  # no decode process outlives its run


def test_auto_settings_follow_the_device(tmp_path):
    """--decode-in auto: processes on CUDA (decoding is the bottleneck there), threads on CPU, threads
    when RAFT needs the GPU inside the decode workers (and asking for processes then is an error);
    --workers 0 (auto): 2 on CPU, every core but one on CUDA."""
    import os

    import torch

    from vidcache.config import RunConfig
    from vidcache.device import default_decode_workers
    from vidcache.errors import ConfigError
    from vidcache.extract.config import ExtractConfig
    from vidcache.extract.runner import Extractor
    from vidcache.extract.views.flow import FlowConfig

    assert default_decode_workers(torch.device("cpu")) == 2
    assert default_decode_workers(torch.device("cuda")) == max(1, (os.cpu_count() or 1) - 1)
    extractor = Extractor(tmp_path, ExtractConfig())
    for device, expected in (("cuda", "processes"), ("cpu", "threads")):
        extractor.device = torch.device(device)
        assert extractor._decode_in() == expected
    raft = ExtractConfig.create(views=("clip", "flow"), flow=FlowConfig(method="raft"))
    extractor = Extractor(tmp_path, raft)
    extractor.device = torch.device("cuda")
    assert extractor._decode_in() == "threads"
    import dataclasses

    forced = dataclasses.replace(raft, run=RunConfig(decode_in="processes"))
    extractor = Extractor(tmp_path, forced)
    extractor.device = torch.device("cuda")
    with pytest.raises(ConfigError, match=r"--decode-in processes: not possible here .*RAFT"):
        extractor._decode_in()
    with pytest.raises(ConfigError, match=r"decode_in='fibers': choose one of: auto, threads, processes"):
        RunConfig(decode_in="fibers")  # type: ignore[arg-type]
