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

from tests.conftest import HANG_GUARD_S, REPO, run_cli, tiny_clip_args
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
        result, _ = extract(corpus / "manifest.csv", tmp_path / "cache", tiny_checkpoint, json_out=False)
        assert result.returncode == 3 and "locked by another running extract" in result.stderr
        assert f'"pid": {os.getpid()}' in result.stderr  # it never waited: the lock is held until it returned


def test_missing_weights_exit_2_one_line(tmp_path, corpus):
    env_home = {"HF_HOME": str(tmp_path / "hf"), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "vidcache.cli", "extract", str(corpus / "manifest.csv"), "--cache", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        env={**os.environ, **env_home},
        cwd=REPO,
        timeout=HANG_GUARD_S,
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
    outputs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
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
    deadline = time.monotonic() + HANG_GUARD_S
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


def damage_rows(path, view, first_row, nbytes):
    """Overwrite `nbytes` of an uncompressed view's stored feature bytes from `first_row` on, in the
    file itself (bit rot, not an HDF5 write); return the rows hit."""
    with h5py.File(path, "r") as h5:
        features = h5[view]["features"]
        assert features.compression is None
        row_bytes = features.shape[1] * features.dtype.itemsize
        chunk_rows = features.chunks[0]
        chunk = features.id.get_chunk_info_by_coord((first_row // chunk_rows * chunk_rows, 0))
        offset = chunk.byte_offset + (first_row % chunk_rows) * row_bytes
        assert (first_row % chunk_rows) * row_bytes + nbytes <= chunk.size  # stays inside one chunk
    with open(path, "r+b") as f:
        f.seek(offset)
        data = bytearray(f.read(nbytes))
        f.seek(offset)
        f.write(bytes(b ^ 0x5A for b in data))
    return range(first_row, first_row + -(-nbytes // row_bytes))


def test_verify_quarantines_only_the_damaged_rows_and_extract_redoes_them(tmp_path, corpus, tiny_checkpoint):
    """After `compact` (several shards → one), 4 KiB of damage in the clip rows sets aside the
    (video, clip) pairs whose rows it hits, nothing else (not their frames rows, not the other
    videos); the next extract redoes exactly those, and the rest stays bit for bit."""
    cache_dir = tmp_path / "cache"
    args = ("--views", "clip,frames", "--fps", "4", "--commit-every-s", "0.001", "--workers", "1")
    result, _ = extract(corpus / "manifest.csv", cache_dir, tiny_checkpoint, *args)
    assert result.returncode == 0, result.stderr
    assert len(list((cache_dir / "shards").glob("*.h5"))) > 1
    run_cli("compact", "--cache", cache_dir, check=True)
    (shard,) = (cache_dir / "shards").glob("*.h5")
    cache = Cache(cache_dir)
    views = ("clip", "frames")
    before = {(v, view): cache.read(v, view)[0] for v in cache.video_ids() for view in views}
    where = {v: cache._catalog.item(v, "clip") for v in cache.video_ids()}
    cache.close()
    middle = sorted(where.values(), key=lambda i: i.row_start)[3].row_start + 2
    hit = damage_rows(shard, "clip", middle, 4096)
    expected = sorted(v for v, i in where.items() if set(hit) & set(range(i.row_start, i.row_start + i.row_count)))
    assert 0 < len(expected) < len(where)
    checked = run_cli("verify", "--cache", cache_dir, "--json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 1 and sorted(d["video_id"] for d in report["damaged"]) == expected
    assert {(d["view"], d["problem"]) for d in report["damaged"]} == {("clip", "checksum mismatch")}
    report = json.loads(run_cli("verify", "--cache", cache_dir, "--quarantine", "--json", check=True).stdout)
    assert sorted((d["video_id"], d["view"]) for d in report["quarantined_items"]) == [(v, "clip") for v in expected]
    assert report["quarantined"] == [] and shard.exists()  # the shard stays: its other rows are good
    with Cache(cache_dir) as cache:
        assert sorted(cache.video_ids("clip")) == sorted(set(where) - set(expected))
        assert sorted(cache.video_ids("frames")) == sorted(where)
    logged = [json.loads(line) for line in (cache_dir / "quarantine" / "items.jsonl").read_text().splitlines()]
    assert sorted(r["video_id"] for r in logged) == expected
    result, summary = extract(corpus / "manifest.csv", cache_dir, tiny_checkpoint, *args)
    assert result.returncode == 0, result.stderr
    assert (summary["extracted"], summary["skipped"]) == (len(expected), 8 - len(expected))  # nothing else decoded
    assert json.loads(run_cli("verify", "--cache", cache_dir, "--json", check=True).stdout)["damaged"] == []
    with Cache(cache_dir) as cache:
        for (video_id, view), features in before.items():
            if video_id in expected and view == "clip":
                assert cache._catalog.item(video_id, view).shard != shard.stem  # rewritten in a new shard
                np.testing.assert_allclose(cache.read(video_id, view)[0], features, atol=2e-3)
            else:
                np.testing.assert_array_equal(cache.read(video_id, view)[0], features)
                assert cache._catalog.item(video_id, view).shard == shard.stem  # never rewritten


STALL_S = 600  # the `stall` fault's length (vidcache.errors.fault_point)


def _stop_during_start_up(args, *, marker: str, env: dict[str, str] | None = None, python_flags=()):
    """Start `vidcache ARGS`, send SIGTERM once stderr shows `marker`, and return (exit code,
    seconds from the signal to the exit, stderr, stdout)."""
    process = subprocess.Popen(
        [sys.executable, *python_flags, "-m", "vidcache.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    seen = []
    for line in process.stderr:  # type: ignore[union-attr]
        seen.append(line)
        if marker in line:
            break
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=HANG_GUARD_S)
    return process.returncode, time.monotonic() - signalled, "".join(seen) + err, out


def test_sigterm_while_models_load_exits_143_at_once_and_keeps_finished_work(tmp_path, corpus, tiny_checkpoint):
    """Model loading stuck in a call that holds off signals (the `stall` fault: 120 s with SIGTERM
    masked in the loading thread, as a CUDA initialisation or a cold import would) must not delay a
    SIGTERM: exit 143 long before the stall ends, one line, the first run's videos intact and
    nothing half-written. A SIGTERM before the command even starts (the imports) is exit 143 too."""
    cache_dir = tmp_path / "cache"
    lines = (corpus / "manifest.csv").read_text().splitlines()
    (corpus / "half.csv").write_text("\n".join(lines[:5]) + "\n")
    result, summary = extract(corpus / "half.csv", cache_dir, tiny_checkpoint)
    assert result.returncode == 0 and summary["extracted"] == 4, result.stderr
    with Cache(cache_dir) as cache:
        before = {v: cache.read(v)[0] for v in cache.video_ids()}
    shards = shard_state(cache_dir)
    args = ["extract", corpus / "manifest.csv", "--cache", cache_dir, *tiny_clip_args(tiny_checkpoint), "--fps", "2"]
    code, waited_s, stderr, out = _stop_during_start_up(
        [*args, "--json"], marker="load-models stalls here", env={"VIDCACHE_FAULT": "load-models:stall"}
    )
    assert code == 143, stderr
    assert waited_s < STALL_S / 2, waited_s  # before the fix the signal waited for the whole stall
    assert "interrupted by SIGTERM" in stderr and "Traceback" not in stderr
    assert json.loads(out.strip().splitlines()[-1])["exit_code"] == 143
    assert shard_state(cache_dir) == shards and not list(cache_dir.rglob("*.partial"))
    with Cache(cache_dir) as cache:
        assert sorted(cache.video_ids()) == sorted(before)
        for video_id, features in before.items():
            np.testing.assert_array_equal(cache.read(video_id)[0], features)
    assert json.loads(run_cli("verify", "--cache", cache_dir, "--json", check=True).stdout)["damaged"] == []
    # during the imports (-X importtime names each module as it is imported; click comes right after
    # the handler is installed): no longer the default action's death by signal (-15)
    code, waited_s, stderr, _ = _stop_during_start_up(args, marker="| click", python_flags=("-X", "importtime"))
    assert code == 143 and "Traceback" not in stderr, stderr[-2000:]
    assert "interrupted by SIGTERM" in stderr
