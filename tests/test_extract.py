"""End-to-end `vidcache extract` runs (separate processes), checked against independent references."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import av
import h5py
import numpy as np
import open_clip
import pytest
import torch

from tests.conftest import REPO, run_cli, tiny_clip_args
from vidcache import Cache
from vidcache.cache.lock import ExtractLock
from vidcache.synth import write_video


def extract(manifest, cache, checkpoint, *extra, json_out=True):
    args = [
        "extract",
        manifest,
        "--cache",
        cache,
        *tiny_clip_args(checkpoint),
        "--fps",
        "2",
        *extra,
    ]
    result = run_cli(*args, *(["--json"] if json_out else []))
    summary = json.loads(result.stdout.strip().splitlines()[-1]) if json_out and result.stdout.strip() else None
    return result, summary


def shard_state(cache):
    return sorted((p.name, p.stat().st_mtime_ns) for p in (cache / "shards").glob("*"))


@pytest.fixture(scope="module")
def extracted(corpus, tiny_checkpoint, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache") / "c"
    result, summary = extract(corpus / "manifest.csv", cache, tiny_checkpoint)
    assert result.returncode == 0, result.stderr
    return cache, summary


def test_cached_features_match_independent_pyav_and_open_clip(extracted, corpus, tiny_checkpoint):
    cache_dir, summary = extracted
    assert {k: summary[k] for k in ("total", "extracted", "skipped", "failed")} == {
        "total": 8,
        "extracted": 8,
        "skipped": 0,
        "failed": 0,
    }
    assert summary["seconds"] > 0
    model, _, preprocess = open_clip.create_model_and_transforms("vidcache-tiny", pretrained=str(tiny_checkpoint))
    model.eval()
    cache = Cache(cache_dir)
    assert "a/clip.mp4" in cache.video_ids() and "b/clip.mp4" in cache.video_ids()
    for video_id in cache.video_ids():
        features, timestamps = cache.read(video_id, "clip")
        with av.open(str(corpus / video_id)) as container:
            frames = {frame.time: frame.to_image() for frame in container.decode(video=0)}
            duration = float(container.streams.video[0].duration * container.streams.video[0].time_base)
        assert len(timestamps) == int(np.ceil(duration * 2 - 1e-9))
        with torch.no_grad():
            expected = model.encode_image(torch.stack([preprocess(frames[t]) for t in timestamps])).numpy()
        ours = features.astype(np.float32)
        cosine = (ours * expected).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(expected, axis=1)
        assert cosine.min() >= 0.99, (video_id, cosine.min())
    info = cache.view_info("clip")
    assert info["model"] == "vidcache-tiny" and info["dtype"] == "float16" and info["sampling"]["fps"] == 2.0
    text = cache.text_embeddings()
    assert text.labels == ["blue", "green", "left", "red", "right"] and text.embeddings.shape == (5, 64)


def test_second_run_does_no_work(extracted, corpus, tiny_checkpoint):
    cache_dir, _ = extracted
    before = shard_state(cache_dir)
    result, summary = extract(corpus / "manifest.csv", cache_dir, tiny_checkpoint)
    assert result.returncode == 0
    assert (summary["extracted"], summary["skipped"], summary["frames"]) == (0, 8, 0)
    assert shard_state(cache_dir) == before


def test_other_settings_refuse_to_mix_into_a_cache(extracted, corpus, tiny_checkpoint):
    cache_dir, _ = extracted
    result = run_cli(
        "extract",
        corpus / "manifest.csv",
        "--cache",
        cache_dir,
        *tiny_clip_args(tiny_checkpoint),
        "--fps",
        "3",
    )
    assert result.returncode == 2 and "sampling differ" in result.stderr


def test_status_json(extracted):
    cache_dir, _ = extracted
    status = json.loads(run_cli("status", "--cache", cache_dir, "--json", check=True).stdout)
    assert status["views"]["clip"]["done"] == 8 and status["views"]["clip"]["failed"] == 0


def test_broken_inputs_fail_with_reasons_and_the_rest_succeeds(tmp_path, corpus, tiny_checkpoint):
    good = corpus / "a" / "clip.mp4"
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "random.mp4").write_bytes(os.urandom(4096))
    data = good.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 3])
    write_video(tmp_path / "audio_only_src.mp4", 10, tone_hz=440)
    with av.open(str(tmp_path / "audio_only_src.mp4")) as src, av.open(str(tmp_path / "audio.m4a"), "w") as dst:
        out = dst.add_stream_from_template(src.streams.audio[0])
        for packet in src.demux(src.streams.audio[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path\n{good}\nmissing.mp4\nempty.mp4\nrandom.mp4\ntruncated.mp4\naudio.m4a\n")
    cache_dir = tmp_path / "cache"
    result, summary = extract(manifest, cache_dir, tiny_checkpoint)
    assert result.returncode == 1, result.stderr
    assert summary["extracted"] == 1 and summary["failed"] == 5
    reasons = summary["failures"]
    assert reasons["missing.mp4"] == "file not found"
    assert reasons["empty.mp4"].startswith("not a readable video")
    assert reasons["random.mp4"].startswith("not a readable video")
    assert reasons["audio.m4a"].startswith("no video stream")
    assert reasons["truncated.mp4"]
    cache = Cache(cache_dir)
    assert cache.video_ids() == [str(good)] and set(cache.failed("clip")) == set(reasons)
    again, summary2 = extract(manifest, cache_dir, tiny_checkpoint)
    assert again.returncode == 1 and summary2["extracted"] == 0 and summary2["failed"] == 5


def test_locked_cache_exits_3_at_once(tmp_path, corpus, tiny_checkpoint):
    with ExtractLock(tmp_path / "cache"):
        started = time.monotonic()
        result, _ = extract(corpus / "manifest.csv", tmp_path / "cache", tiny_checkpoint, json_out=False)
        assert result.returncode == 3 and "locked by another running extract" in result.stderr
        assert f'"pid": {os.getpid()}' in result.stderr
        assert time.monotonic() - started < 30


def test_missing_weights_exit_2_one_line(tmp_path, corpus):
    env_home = {"HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "vidcache.cli", "extract", str(corpus / "manifest.csv"), "--cache", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        env={**os.environ, **env_home},
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "ViT-B-32/openai are not cached locally" in error_lines[0]


def test_parallel_shards_share_one_cache(tmp_path, corpus, tiny_checkpoint):
    cache_dir = tmp_path / "cache"
    base = [
        sys.executable,
        "-m",
        "vidcache.cli",
        "extract",
        str(corpus / "manifest.csv"),
        "--cache",
        str(cache_dir),
        *tiny_clip_args(str(tiny_checkpoint)),
        "--json",
    ]
    procs = [
        subprocess.Popen(
            [*base, "--shard", f"{k}/2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
        )
        for k in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    totals = [json.loads(out.strip().splitlines()[-1])["total"] for out, _ in outputs]
    assert sum(totals) == 8 and min(totals) > 0
    assert len(Cache(cache_dir).video_ids()) == 8


def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path, tiny_checkpoint):
    root = tmp_path / "videos"
    for i in range(10):
        write_video(root / f"v{i}.mp4", 72, fps=24, width=64, height=48, gop=12)
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + "\n".join(f"v{i}.mp4" for i in range(10)) + "\n")
    (root.parent / "m.csv").replace(root / "m.csv")
    manifest = root / "m.csv"
    args = [
        *tiny_clip_args(str(tiny_checkpoint)),
        "--fps",
        "8",
        "--workers",
        "1",
        "--batch-size",
        "4",
        "--commit-every-s",
        "0.001",
    ]
    killed_cache = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidcache.cli", "extract", str(manifest), "--cache", str(killed_cache), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((killed_cache / "shards").glob("*.h5"))) < 2:
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(killed_cache / "catalog.sqlite") as db:
        done_at_kill = db.execute("SELECT count(*) FROM items WHERE status='done'").fetchone()[0]
    assert 0 < done_at_kill < 10
    assert len(Cache(killed_cache).video_ids()) == done_at_kill  # readable right after the kill

    resumed = run_cli("extract", manifest, "--cache", killed_cache, *args, "--json", check=True)
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["skipped"] >= done_at_kill and summary["extracted"] + summary["skipped"] == 10
    clean_cache = tmp_path / "clean"
    run_cli("extract", manifest, "--cache", clean_cache, *args, check=True)

    killed, clean = Cache(killed_cache), Cache(clean_cache)
    assert killed.video_ids() == clean.video_ids() and len(clean.video_ids()) == 10
    for video_id in clean.video_ids():
        (f1, t1), (f2, t2) = killed.read(video_id, "clip"), clean.read(video_id, "clip")
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_allclose(f1.astype(np.float32), f2.astype(np.float32), atol=2e-3, rtol=2e-3)
    with sqlite3.connect(killed_cache / "catalog.sqlite") as db:
        assert db.execute("SELECT count(*), sum(row_count) FROM items WHERE status='done'").fetchone() == (
            10,
            sum(len(clean.read(v)[1]) for v in clean.video_ids()),
        )
    assert not list((killed_cache / "shards").glob("*.partial"))


def test_verify_quarantines_a_corrupted_shard_and_extract_redoes_it(tmp_path, corpus, tiny_checkpoint):
    cache_dir = tmp_path / "cache"
    args = ("--commit-every-s", "0.001", "--workers", "1")
    result, _ = extract(corpus / "manifest.csv", cache_dir, tiny_checkpoint, *args)
    assert result.returncode == 0
    assert json.loads(run_cli("verify", "--cache", cache_dir, "--json", check=True).stdout)["broken"] == {}
    shards = sorted((cache_dir / "shards").glob("*.h5"))
    victim = shards[0]
    cache = Cache(cache_dir)
    bad_ids = [v for v in cache.video_ids() if cache._catalog.item(v, "clip").shard == victim.stem]
    good_before = {v: cache.read(v)[0] for v in cache.video_ids() if v not in bad_ids}
    cache.close()
    with h5py.File(victim, "r+") as h5:  # silent bit rot in the features
        h5["clip/features"][0] = h5["clip/features"][0] + 1
    checked = run_cli("verify", "--cache", cache_dir, "--json")
    assert checked.returncode == 1 and "checksum mismatch" in json.loads(checked.stdout)["broken"][victim.stem]
    run_cli("verify", "--cache", cache_dir, "--quarantine", check=True)
    assert (cache_dir / "quarantine" / victim.name).exists()
    result, summary = extract(corpus / "manifest.csv", cache_dir, tiny_checkpoint, *args)
    assert result.returncode == 0 and summary["extracted"] == len(bad_ids) and summary["skipped"] == 8 - len(bad_ids)
    cache = Cache(cache_dir)
    for video_id, features in good_before.items():
        np.testing.assert_array_equal(cache.read(video_id)[0], features)  # good shards untouched
