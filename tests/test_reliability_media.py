"""Reliability: a generated corpus of broken and awkward media through `vidcache extract`.

Zero crashes: every manifest row ends done, or failed with a specific reason; the run exits 1
(some failed) without a traceback; the readable awkward files are done with the rows and
timestamps a plain PyAV loop predicts; `vidcache verify` passes; a second run does no work and
leaves the failures failed. Every file is generated here (tiny: a few seconds at small sizes).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S, run_cli, tiny_clip_args
from vidcache import Cache
from vidcache.cache.verify import verify_cache
from vidcache.synth import add_cover_picture, write_video

FPS = 2.0  # clip sampling rate of every run here
AUDIO_EXAMPLE_S = 0.96


def _permissions_apply() -> bool:
    """False where a chmod 000 file is still readable: root (os.geteuid() == 0) with its usual
    CAP_DAC_OVERRIDE. Probed rather than assumed, so root without that capability (e.g. under
    `setpriv --bounding-set=-dac_override,-dac_read_search`) runs the permission case too."""
    import tempfile

    with tempfile.NamedTemporaryFile() as probe:
        os.chmod(probe.name, 0)
        try:
            open(probe.name, "rb").close()
        except PermissionError:
            return True
    return False


PERMISSIONS_APPLY = _permissions_apply()


@dataclass
class Case:
    """One manifest row and what must become of it."""

    name: str  # the video_id: the file name relative to the corpus root, unless `path` is given
    clip: str  # expected clip status: done | failed
    audio: str | tuple[str, ...]  # expected audio status(es): done | absent | failed, or "any"
    reason: tuple[str, ...] = ()  # for a failed clip: words of which at least one must be in the reason
    start_s: float | None = None
    end_s: float | None = None
    path: str | None = None  # another row of the same file (a segment), under its own video_id

    @property
    def file(self) -> str:
        return self.path or self.name


def _encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:
        return False
    return True


def write_audio_only(
    path: Path,
    seconds: float,
    *,
    codec: str = "aac",
    rate: int = 16000,
    layout: str = "mono",
    cover_picture: bool = False,
) -> Path:
    """An audio file with no video stream (a sine tone on every channel), optionally with album art."""
    with av.open(str(path), "w") as container:
        cover = add_cover_picture(container) if cover_picture else []
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        channels = len(stream.layout.channels)
        total = int(seconds * rate)
        samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / rate)).astype(np.float32)
        for start in range(0, total, 1024):
            block = np.repeat(samples[start : start + 1024][None, :], channels, axis=0)
            if codec == "aac":
                frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            else:  # packed 16-bit PCM: [1, samples * channels]
                packed = (block.T.reshape(1, -1) * 32767).astype(np.int16)
                frame = av.AudioFrame.from_ndarray(packed, format="s16", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in [*stream.encode(), *cover]:
            container.mux(packet)
    return path


def build_corpus(root: Path) -> list[Case]:
    """Write every file of the corpus under `root`; return the cases in manifest order."""
    root.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    small = {"width": 64, "height": 48}

    def video(name: str, frames: int, *, clip="done", audio="absent", fps=12.0, **kwargs) -> Path:
        path = write_video(root / name, frames, fps=fps, **{**small, **kwargs})
        cases.append(Case(name, clip, audio))
        return path

    # -- broken: each must fail with a reason that says what is wrong -------------------------------
    cases.append(Case("missing.mp4", "failed", "failed", ("not found", "does not exist", "no such file")))
    if PERMISSIONS_APPLY:  # left out only where a chmod 000 file is readable anyway (root)
        locked = write_video(root / "no-permission.mp4", 12, fps=12, **small)
        locked.chmod(0)
        cases.append(Case("no-permission.mp4", "failed", "failed", ("permission",)))
    (root / "empty.mp4").write_bytes(b"")
    cases.append(Case("empty.mp4", "failed", "failed", ("empty", "0 bytes", "zero")))
    (root / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    cases.append(Case("random.mp4", "failed", "failed", ("not a readable",)))
    (root / "text.mp4").write_text("this is not a video, only text with a video's name\n" * 20)
    cases.append(Case("text.mp4", "failed", "failed", ("not a readable",)))
    (root / "a-directory.mp4").mkdir()
    cases.append(Case("a-directory.mp4", "failed", "failed", ("directory",)))
    (root / "dangling-link.mp4").symlink_to(root / "gone-target.mp4")
    cases.append(Case("dangling-link.mp4", "failed", "failed", ("not found", "does not exist")))
    os.mkfifo(root / "named-pipe.mp4")  # opening it would block until someone writes to it
    cases.append(Case("named-pipe.mp4", "failed", "failed", ("named pipe",)))

    # a container header and no frames at all
    with av.open(str(root / "header-only.mkv"), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()  # writes the header; no packet follows
    cases.append(Case("header-only.mkv", "failed", "failed", ("truncated", "no media data", "before any media")))
    # truncated: MP4 with its index (moov) at the end, cut in half, loses the index
    full = write_video(root / "src-trunc.mp4", 48, fps=12, tone_hz=440.0, **small)
    data = full.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    full.unlink()
    cases.append(Case("truncated.mp4", "failed", "failed", ("not a readable", "moov", "truncated")))
    # truncated with the index in front (faststart): readable up to the cut
    full = write_video(
        root / "src-fast.mp4", 48, fps=12, tone_hz=440.0, container_options={"movflags": "faststart"}, **small
    )
    data = full.read_bytes()
    (root / "truncated-faststart.mp4").write_bytes(data[: len(data) // 2])
    full.unlink()
    cases.append(Case("truncated-faststart.mp4", "done", ("done", "failed")))
    (root / "truncated-early-faststart.mp4").write_bytes(data[: len(data) // 4])  # header: 4 s; frames: ~1 s
    cases.append(Case("truncated-early-faststart.mp4", "done", ("done", "failed", "absent")))
    # truncated Matroska: no index needed, readable up to the cut
    full = write_video(root / "src-trunc.mkv", 48, fps=12, tone_hz=440.0, **small)
    data = full.read_bytes()
    (root / "truncated.mkv").write_bytes(data[: len(data) // 2])
    full.unlink()
    cases.append(Case("truncated.mkv", "done", ("done", "failed")))

    # corruption in the middle of the stream: a block of random bytes over the middle of a valid file
    for name in ("corrupt-middle.mp4", "corrupt-middle.mkv"):
        path = write_video(root / name, 48, fps=12, gop=6, tone_hz=440.0, **small)
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle : middle + 1024] = np.random.default_rng(1).integers(0, 256, 1024, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
        cases.append(Case(name, "done", ("done", "failed")))

    # a codec this FFmpeg has no decoder for: an MPEG-4 AVI whose FourCC is overwritten
    data = write_video(root / "src-fourcc.avi", 12, fps=12, codec="mpeg4", **small).read_bytes()
    for tag in (b"FMP4", b"XVID", b"DIVX", b"mp4v"):
        data = data.replace(tag, b"ZZZZ")
    (root / "src-fourcc.avi").unlink()
    (root / "unknown-codec.avi").write_bytes(data)
    cases.append(Case("unknown-codec.avi", "failed", "absent", ("no decoder",)))

    # -- awkward but readable: each must be done with the rows a plain PyAV loop predicts ----------
    write_audio_only(root / "audio-only.m4a", 2.0)
    cases.append(Case("audio-only.m4a", "failed", "done", ("no video stream",)))
    write_audio_only(root / "audio-only.wav", 1.5, codec="pcm_s16le", rate=44100, layout="stereo")
    cases.append(Case("audio-only.wav", "failed", "done", ("no video stream",)))
    write_audio_only(root / "surround-5.1-48k.m4a", 1.5, rate=48000, layout="5.1")
    cases.append(Case("surround-5.1-48k.m4a", "failed", "done", ("no video stream",)))
    write_audio_only(root / "music-with-cover-art.mp4", 1.5, cover_picture=True)  # a one-frame "video" stream
    cases.append(Case("music-with-cover-art.mp4", "failed", "done", ("cover picture",)))
    video("cover-art-then-video.mp4", 12, cover_picture=True)  # the video is the second video stream
    video("with-audio.mp4", 24, tone_hz=440.0, audio="done")
    video("no-audio.mp4", 24)
    video("single-frame.mp4", 1)
    video("single-frame-audio.mkv", 1, tone_hz=440.0, audio=("done", "absent"))
    video("far-shorter-than-a-window.mp4", 2, fps=30, tone_hz=440.0, audio=("done", "absent"))  # 67 ms
    pts = [float(t) for t in np.cumsum([0.0] + [0.04] * 10 + [0.5] * 3 + [0.02] * 15)]
    video("variable-frame-rate.mkv", len(pts), pts_s=pts)
    video("variable-frame-rate.mp4", len(pts), pts_s=pts)
    video("rotated-90.mp4", 12, rotation_deg=90)
    video("rotated-270.mov", 12, rotation_deg=270)
    video("tiny-2x2-ffv1.mkv", 12, width=2, height=2, codec="ffv1")
    video("portrait-32x480.mp4", 12, width=32, height=480)
    video("odd-97x55-yuv444p.mp4", 12, width=97, height=55, pix_fmt="yuv444p")
    video("odd-97x55-mpeg2.ts", 12, width=97, height=55, codec="mpeg2video")
    video("mjpeg-yuvj420p.mkv", 12, codec="mjpeg", pix_fmt="yuvj420p")
    video("gray-ffv1.mkv", 12, codec="ffv1", pix_fmt="gray")
    video("rgb24-qtrle.mov", 12, codec="qtrle", pix_fmt="rgb24")
    video("gbrp-x264rgb.mkv", 12, codec="libx264rgb", pix_fmt="rgb24")
    video("mpeg4.avi", 24, codec="mpeg4")
    video("h264-aac.mov", 24, tone_hz=440.0, audio="done")
    if _encoder("libvpx"):
        video("vp8.webm", 12, codec="libvpx")
    if _encoder("libvpx-vp9"):
        video("vp9.webm", 12, codec="libvpx-vp9", options={"deadline": "realtime", "cpu-used": "8"})
    # modern and legacy codecs a crawled corpus holds: HEVC 10-bit, AV1, ProRes 4:2:2 10-bit, WMV,
    # FLV, animated GIF (palette), H.263 in 3GP, MPEG-1 program stream
    for name, options in (
        ("hevc-10bit.mp4", {"codec": "libx265", "pix_fmt": "yuv420p10le"}),
        ("hevc-10bit.mkv", {"codec": "libx265", "pix_fmt": "yuv420p10le", "tone_hz": 440.0}),
        ("av1.mkv", {"codec": "libsvtav1", "width": 64, "height": 64}),
        ("av1.mp4", {"codec": "libsvtav1", "width": 64, "height": 64}),
        ("prores-422-10bit.mov", {"codec": "prores_ks", "pix_fmt": "yuv422p10le"}),
        ("wmv2.wmv", {"codec": "wmv2"}),
        ("flv1.flv", {"codec": "flv"}),
        ("animated.gif", {"codec": "gif", "pix_fmt": "rgb8"}),
        ("h263.3gp", {"codec": "h263", "width": 128, "height": 96}),
        ("mpeg1.mpg", {"codec": "mpeg1video", "fps": 25.0}),
    ):
        if _encoder(options["codec"]):
            audio = "done" if "tone_hz" in options else "absent"
            video(name, 12, audio=audio, **{"fps": 12.0, **options})
    # B-frames: reordered decode, and in MP4 an edit list shifting the first frame's timestamp
    video("b-frames-edit-list.mp4", 24, options={"preset": "veryfast", "bf": "3"}, tone_hz=440.0, audio="done")
    video("b-frames.mkv", 24, options={"preset": "veryfast", "bf": "3"})
    video("raw-no-timestamps.h264", 12)
    video("raw-no-timestamps-gop3.h264", 36, gop=3)  # keyframes close enough together to tempt a seek
    start = [5.0 + k / 12 for k in range(12)]
    video("starts-at-5s.mkv", 12, pts_s=start)
    video("starts-at-5s.mp4", 12, pts_s=start)
    video("vidéo ünïcode.mp4", 12)
    video("a b c.mp4", 12)
    video("dir with spaces/クリップ, comma.mp4", 12)
    # a segment that starts after the video ends (a valid manifest row, a per-video failure)
    write_video(root / "segment-src.mp4", 12, fps=12, **small)
    cases.append(Case("segment-src.mp4", "failed", "any", ("segment", "after the video ends"), start_s=100.0))
    # segments: of a stream without timestamps (no seeking by time there), and of a timed one
    cases.append(Case("raw segment", "done", "absent", start_s=1.0, end_s=2.5, path="raw-no-timestamps-gop3.h264"))
    cases.append(Case("mp4 segment", "done", "done", start_s=0.5, end_s=1.7, path="with-audio.mp4"))
    return cases


def write_manifest(path: Path, cases: list[Case]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "video_id", "start_s", "end_s"])
        for case in cases:
            start, end = ("" if value is None else value for value in (case.start_s, case.end_s))
            writer.writerow([case.file, case.name if case.path else "", start, end])
    return path


def extract(
    manifest: Path,
    cache: Path,
    checkpoint: Path,
    *extra: str,
    timeout: float = HANG_GUARD_S,
    env: dict[str, str] | None = None,
):
    result = run_cli(
        "extract",
        manifest,
        "--cache",
        cache,
        *tiny_clip_args(checkpoint),
        "--fps",
        str(FPS),
        "--json",
        *extra,
        timeout=timeout,
        env=env,
    )
    lines = result.stdout.strip().splitlines()
    summary = json.loads(lines[-1]) if lines else None
    return result, summary


def extract_in_process(manifest: Path, cache: Path, checkpoint: Path, capsys, **options) -> tuple[int, dict]:
    """The CLI's own `run_extract` in this process (no interpreter and torch start-up): exit code, summary."""
    from vidcache.commands.extract import run_extract

    capsys.readouterr()
    code = run_extract(
        str(manifest),
        cache_dir=str(cache),
        root=None,
        as_json=True,
        clip_model="vidcache-tiny",
        clip_pretrained=str(checkpoint),
        **{"fps": FPS, **options},
    )
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def items(cache: Path) -> dict[tuple[str, str], tuple[str, str | None, int | None]]:
    with sqlite3.connect(f"file:{cache / 'catalog.sqlite'}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT video_id, view, status, reason, row_count FROM items").fetchall()
    return {(v, view): (status, reason, count) for v, view, status, reason, count in rows}


def decoded(container, stream):
    """Every frame of a plain PyAV loop that survives the decoder (corrupt packets dropped)."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue


def expected_clip_times(
    path: Path, start_s: float | None = None, end_s: float | None = None, *, num_frames: int | None = None
) -> list[float]:
    """Independent reference for the clip rows' timestamps, from every frame of a plain PyAV loop.
    `--fps`: sample k at origin + k/FPS while the stream still shows a frame (last pts + its
    duration) and before the end. `--num-frames N`: the centres of N equal parts of [origin, end),
    always N rows (past the last frame, that frame). A sample shows the last frame presented at or
    before it (the first frame before that)."""
    with av.open(str(path)) as container:
        # the first stream that is not album art (an attached picture is not the video)
        stream = next(v for v in container.streams.video if not v.disposition & av.stream.Disposition.attached_pic)
        tb = stream.time_base
        frames, clock = [], 0.0
        for frame in decoded(container, stream):
            duration = float(frame.duration * tb) if frame.duration else None
            if frame.time is None:  # raw stream without timestamps: its frame durations from 0 s
                frames.append((clock, duration))
                clock += duration
            else:
                frames.append((frame.time, duration))
        header_start = float(stream.start_time * tb) if stream.start_time is not None else None
        if stream.duration is not None:
            header_end = header_start + float(stream.duration * tb)
        elif container.duration is not None and container.format.name.startswith("matroska"):
            header_end = container.duration / av.time_base  # Matroska's Duration counts from timestamp 0
        elif container.duration is not None:
            header_end = (header_start or 0.0) + container.duration / av.time_base
        else:
            header_end = None
        rate = stream.average_rate or stream.guessed_rate
    times = np.array([t for t, _ in frames])
    last_t, last_dt = frames[-1]
    last_end = last_t + (last_dt or 1 / float(rate))
    origin = start_s if start_s is not None else header_start if header_start is not None else frames[0][0]
    end = end_s if end_s is not None else header_end

    def shown(target: float) -> float:
        return float(times[max(np.searchsorted(times, target + 1e-9, side="right") - 1, 0)])

    if num_frames is not None:
        end = end if end is not None else last_end  # no header duration: the packets' end
        return [shown(origin + (i + 0.5) * (end - origin) / num_frames) for i in range(num_frames)]
    count = max(1, math.ceil((end - origin) * FPS - 1e-9)) if end is not None else 10**6
    out = []
    for k in range(count):
        target = origin + k / FPS
        if target >= last_end - 1e-9 or (end is not None and target >= end):
            break
        out.append(shown(target))
    return out


@pytest.fixture(scope="module")
def corpus_cases(tmp_path_factory) -> tuple[Path, list[Case]]:
    root = tmp_path_factory.mktemp("awkward media")
    cases = build_corpus(root)
    return write_manifest(root / "manifest.csv", cases), cases


@pytest.fixture(scope="module")
def first_run(corpus_cases, tiny_checkpoint, tmp_path_factory):
    manifest, _ = corpus_cases
    cache = tmp_path_factory.mktemp("cache") / "c"
    result, summary = extract(manifest, cache, tiny_checkpoint, "--views", "clip,audio")
    return cache, result, summary


def test_run_exits_1_without_traceback_and_accounts_for_every_row(first_run, corpus_cases):
    cache, result, summary = first_run
    _, cases = corpus_cases
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "unexpected" not in result.stdout, result.stderr
    assert summary["total"] == len(cases)
    failed = {c.name for c in cases if c.clip == "failed"}
    assert set(summary["failures"]) == failed, summary["failures"]
    assert summary["extracted"] == len(cases) - len(failed)
    recorded = items(cache)
    for case in cases:
        for view in ("clip", "audio"):
            assert (case.name, view) in recorded, (case.name, view)
            status, reason, _ = recorded[case.name, view]
            assert status in ("done", "failed", "absent"), (case.name, view, status)
            if status != "done":
                assert reason and reason.strip() and "\n" not in reason, (case.name, view, reason)
                assert "unexpected" not in reason, (case.name, view, reason)  # a crash caught, not a reason


def test_broken_files_fail_with_specific_reasons(first_run, corpus_cases):
    cache, _, summary = first_run
    _, cases = corpus_cases
    recorded = items(cache)
    for case in cases:
        status, reason, _ = recorded[case.name, "clip"]
        assert status == case.clip, (case.name, status, reason)
        if case.clip == "failed":
            assert any(word in reason.lower() for word in case.reason), (case.name, reason)
            assert case.name in summary["failures"]
        if case.audio != "any":
            allowed = (case.audio,) if isinstance(case.audio, str) else case.audio
            assert recorded[case.name, "audio"][0] in allowed, (case.name, recorded[case.name, "audio"])


@pytest.mark.skipif(not PERMISSIONS_APPLY, reason="running as root: a chmod 000 file is readable anyway")
def test_unreadable_file_fails_naming_the_permission(first_run):
    cache, _, summary = first_run
    status, reason, _ = items(cache)["no-permission.mp4", "clip"]
    assert status == "failed" and "permission denied" in reason and "no-permission.mp4" in summary["failures"]


def test_readable_awkward_files_have_the_reference_rows_and_sane_timestamps(first_run, corpus_cases):
    cache_dir, _, _ = first_run
    manifest, cases = corpus_cases
    root = manifest.parent
    cache = Cache(cache_dir)
    for case in cases:
        if case.clip != "done":
            continue
        features, timestamps = cache.read(case.name, "clip")
        info = cache.video_info(case.name, "clip")
        assert np.isfinite(features.astype(np.float32)).all(), case.name
        assert len(timestamps) >= 1 and np.all(np.diff(timestamps) >= 0), (case.name, timestamps)
        start = info["stream_start_s"] if info["stream_start_s"] is not None else timestamps[0]
        if info["duration_s"] is not None:
            assert timestamps[-1] < start + info["duration_s"] + 1e-6, (case.name, timestamps, info)
        assert info["estimated_times"] == case.file.endswith(".h264"), case.name
        expected = expected_clip_times(root / case.file, case.start_s, case.end_s)
        np.testing.assert_allclose(timestamps, expected, atol=1e-9, err_msg=case.name)
    truncated = ("truncated-faststart.mp4", "truncated-early-faststart.mp4", "truncated.mkv")
    for name in truncated:  # fewer rows than the header promises, and a note saying why
        assert any("truncated" in note for note in cache.video_info(name)["notes"]), cache.video_info(name)
    for name in ("with-audio.mp4", "variable-frame-rate.mkv", "starts-at-5s.mkv", "starts-at-5s.mp4"):
        assert not any("truncated" in note for note in cache.video_info(name)["notes"]), name
    rotated = cache.video_info("rotated-90.mp4")
    assert rotated["rotation_deg"] in (90, 270) and (rotated["width"], rotated["height"]) == (64, 48)
    for name in ("starts-at-5s.mkv", "starts-at-5s.mp4"):  # 12 frames from 5 s: the header's end is 6 s
        info = cache.video_info(name)
        assert info["stream_start_s"] + info["duration_s"] == pytest.approx(6.0, abs=0.01), (name, info)
    assert cache.read("starts-at-5s.mkv")[1][0] == pytest.approx(5.0, abs=1e-3)
    for case in cases:  # audio rows: one every 0.96 s from the first sample
        if cache.status(case.name).get("audio") == "done":
            _, starts = cache.read(case.name, "audio")
            assert len(starts) >= 1 and np.allclose(np.diff(starts), AUDIO_EXAMPLE_S), case.name
    assert cache.read("mp4 segment", "audio")[1][0] == pytest.approx(0.5)  # audio of a segment starts at start_s
    cache.close()


def test_verify_passes(first_run):
    cache, _, _ = first_run
    checked = run_cli("verify", "--cache", cache, "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["broken"] == {} and report["unrecorded"] == [] and report["videos_checked"] > 0


def test_second_run_does_no_work_and_failures_stay_failed(first_run, corpus_cases, tiny_checkpoint):
    cache, _, summary = first_run
    manifest, cases = corpus_cases
    before_items = items(cache)
    before_shards = sorted((p.name, p.stat().st_mtime_ns) for p in (cache / "shards").iterdir())
    result, again = extract(manifest, cache, tiny_checkpoint, "--views", "clip,audio")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert (again["extracted"], again["frames"]) == (0, 0)
    assert again["failed"] == summary["failed"] and set(again["failures"]) == set(summary["failures"])
    assert again["skipped"] == len(cases) - summary["failed"]
    after = items(cache)
    assert after == before_items
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (cache / "shards").iterdir()) == before_shards


def test_num_frames_gives_n_rows_of_the_reference_frames(corpus_cases, tiny_checkpoint, tmp_path, capsys):
    """--num-frames 1: the frame at the centre of each readable file, one row even where the header
    promises more than the file holds (the centre lies past the last frame: that frame)."""
    manifest, cases = corpus_cases
    code, summary = extract_in_process(manifest, tmp_path / "c", tiny_checkpoint, capsys, fps=None, num_frames=1)
    assert code == 1 and set(summary["failures"]) == {c.name for c in cases if c.clip == "failed"}
    with Cache(tmp_path / "c") as cache:
        for case in cases:
            if case.clip != "done":
                continue
            _, timestamps = cache.read(case.name, "clip")
            expected = expected_clip_times(manifest.parent / case.file, case.start_s, case.end_s, num_frames=1)
            np.testing.assert_allclose(timestamps, expected, atol=1e-9, err_msg=case.name)
    assert not verify_cache(tmp_path / "c").broken


def test_motion_view_on_the_same_corpus(corpus_cases, tiny_checkpoint, tmp_path, capsys):
    """--views clip,audio,motion (TV-L1 flow at a small resolution, in process to save the start-up)."""
    manifest, cases = corpus_cases
    cache = tmp_path / "c"
    code, _ = extract_in_process(
        manifest, cache, tiny_checkpoint, capsys, views="clip,audio,motion", flow_short_side=32, motion_grid=2
    )
    assert code == 1
    recorded = items(cache)
    for case in cases:
        status, reason, _ = recorded[case.name, "motion"]
        if case.clip == "failed":
            assert status == "failed" and reason, (case.name, status, reason)
        else:
            assert status in ("done", "absent"), (case.name, status, reason)
            assert status == "done" or reason, case.name
    for name in ("single-frame.mp4", "single-frame-audio.mkv"):  # one frame: no pair
        assert recorded[name, "motion"][0] == "absent", (name, recorded[name, "motion"])
    with Cache(cache) as cached:
        for name in ("no-audio.mp4", "raw-no-timestamps-gop3.h264", "rotated-90.mp4", "far-shorter-than-a-window.mp4"):
            assert recorded[name, "motion"][0] == "done", name
            spans = cached.spans(name, "motion")  # [T, 2]: each pair is two consecutive frames
            frame_s = 1 / 30 if name.startswith("far") else 1 / 12
            np.testing.assert_allclose(spans[:, 1] - spans[:, 0], frame_s, atol=1e-3, err_msg=name)
    assert not verify_cache(cache).broken


def test_time_limit_fails_a_stuck_decode_with_a_reason(tmp_path, tiny_checkpoint, capsys):
    """A decode that outlives --video-timeout-s (here 1 ms against a 10 s video) fails with a reason
    naming the limit, for the video and the audio pass alike; the run goes on and exits 1."""
    write_video(tmp_path / "long.mp4", 240, fps=24, width=64, height=48, tone_hz=440.0)
    manifest = write_manifest(tmp_path / "m.csv", [Case("long.mp4", "failed", "failed")])
    code, summary = extract_in_process(
        manifest, tmp_path / "c", tiny_checkpoint, capsys, views="clip,audio", video_timeout_s=0.001
    )
    assert code == 1 and summary["failed"] == 1
    recorded = items(tmp_path / "c")
    for view in ("clip", "audio"):
        status, reason, _ = recorded["long.mp4", view]
        assert status == "failed" and "time limit" in reason and "--video-timeout-s" in reason, (view, reason)
    assert not verify_cache(tmp_path / "c").broken


def test_the_default_time_limit_grows_with_the_video_and_a_given_one_is_kept(tmp_path):
    """An hour of 4K must not fail for being long: the default limit (600 s) becomes 2 s of decoding
    per second of video once the sampler knows the duration; --video-timeout-s is kept as given."""
    from vidcache.extract.decode import Deadline, FrameSampler

    for given, duration_s, expected_s in ((None, 10.0, 600.0), (None, 3600.0, 7200.0), (5.0, 3600.0, 5.0)):
        deadline = Deadline(given)
        deadline.fit_to(duration_s)
        assert deadline.seconds == expected_s and not deadline.passed()
    path = write_video(tmp_path / "ten-minutes.mp4", 400, fps=2 / 3, width=64, height=48)  # 600 s header
    deadline = Deadline(None)
    with FrameSampler(str(path), targets_fn=lambda origin_s, end_s: np.array([origin_s]), deadline=deadline):
        assert abs(deadline.seconds - 2 * 600) < 2.0, deadline.seconds


def test_a_decoder_stuck_inside_one_ffmpeg_call_is_given_up_and_the_run_goes_on(tmp_path, tiny_checkpoint):
    """Python cannot interrupt a thread inside one FFmpeg call (a hung network mount, a decoder
    looping on a packet), so the per-video limit alone would let one file hang the night's run. Here
    the second open blocks forever (the VIDCACHE_FAULT hook): the watchdog fails that video after
    --video-timeout-s plus its grace, a fresh worker takes the rest, the run exits 1 with every other
    row equal to the reference, and a re-run with --retry-failed extracts the given-up video."""
    names = [f"v{i}.mp4" for i in range(4)]
    for name in names:
        write_video(tmp_path / name, 12, fps=12, width=64, height=48)
    manifest = write_manifest(tmp_path / "m.csv", [Case(name, "done", "absent") for name in names])
    cache = tmp_path / "c"
    result, summary = extract(
        manifest, cache, tiny_checkpoint, "--video-timeout-s", "5", "--workers", "2",
        env={"VIDCACHE_FAULT": "decode-open:hang:2"},
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    recorded = items(cache)
    stuck = [name for name in names if recorded[name, "clip"][0] == "failed"]
    assert len(stuck) == 1 and "decode stuck" in recorded[stuck[0], "clip"][1], recorded
    assert summary["failed"] == 1 and summary["extracted"] == 3
    # not a hang: the stuck decoder never returns, so finishing at all (within the hang guard) shows it was given up
    with Cache(cache) as cached:
        for name in set(names) - set(stuck):
            np.testing.assert_allclose(cached.read(name, "clip")[1], expected_clip_times(tmp_path / name), atol=1e-6)
    assert not verify_cache(cache).broken
    result, summary = extract(manifest, cache, tiny_checkpoint, "--retry-failed")
    assert result.returncode == 0 and summary["extracted"] == 1 and summary["skipped"] == 3, summary
    assert {recorded_status for recorded_status, _, _ in items(cache).values()} == {"done"}


def test_permission_denied_is_named_even_where_chmod_does_not_apply(tmp_path, monkeypatch):
    """The corpus' chmod 000 file is left out when the tests run as root (root reads it anyway), so
    the mapping of the OS error to the reason is also checked with av.open refusing one path."""
    from vidcache.errors import VideoFailure
    from vidcache.extract.audio import iter_audio
    from vidcache.extract.decode import open_container

    path = write_video(tmp_path / "locked.mp4", 6, fps=12, width=64, height=48, tone_hz=440.0)
    real_open = av.open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(path):
            raise av.error.PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(av, "open", refusing_open)
    for attempt in (lambda: open_container(str(path)), lambda: list(iter_audio(str(path)))):
        with pytest.raises(VideoFailure, match="permission denied"):
            attempt()
