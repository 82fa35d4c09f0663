"""--decode-device (issue 28): the decisions (pure functions), the stream facts they read (against
ffprobe), NVDEC's frame choice (against the CPU sampler), the option, its record and its identity."""

from __future__ import annotations

import json
import subprocess
import sys

import av
import numpy as np
import pytest

import vidcache
from vidcache.cache.catalog import Catalog
from vidcache.commands.cache import cache_status
from vidcache.config import RunConfig, SamplingConfig
from vidcache.errors import ConfigError
from vidcache.extract import runner
from vidcache.extract.config import ExtractConfig
from vidcache.extract.decode import FrameSampler
from vidcache.extract.nvdec import (
    demuxed_pts,
    frames_on_screen,
    resolve_decode_device,
    sample_indices,
    stream_facts,
    video_decode_device,
    why_no_nvdec,
)
from vidcache.extract.views.clip import ClipConfig
from vidcache.synth import write_video

NO_NVDEC = why_no_nvdec(extra=False, cuda_available=False, driver_decoder=False)

# (wanted, extra present, cuda available, driver decoder, codec, bit depth, pixel format) → device, reason part
CASES = [
    ("cpu", True, True, True, "h264", 8, "yuv420p", "cpu", None),
    ("auto", False, True, True, "h264", 8, "yuv420p", "cpu", None),
    ("auto", True, False, True, "h264", 8, "yuv420p", "cpu", None),
    ("auto", True, True, False, "h264", 8, "yuv420p", "cpu", None),
    ("auto", True, True, True, "h264", 8, "yuv420p", "cuda", None),
    ("cuda", True, True, True, "hevc", 10, "yuv420p10le", "cuda", None),
    ("cuda", True, True, True, "av1", 10, "yuv420p10le", "cuda", None),
    ("cuda", True, True, True, "vp9", 8, "yuv420p", "cuda", None),
    ("cuda", True, True, True, "h264", 10, "yuv420p10le", "cpu", "10-bit h264 is not decoded by NVDEC"),
    ("cuda", True, True, True, "mpeg4", 8, "yuv420p", "cpu", "codec mpeg4 is not decoded by NVDEC"),
    ("cuda", True, True, True, "prores", 10, "yuv422p10le", "cpu", "codec prores"),
    ("cuda", True, True, True, "h264", 8, "yuv444p", "cpu", "pixel format yuv444p"),
    ("cuda", True, True, True, "hevc", 12, "yuv420p12le", "cpu", "12-bit hevc"),
    ("cuda", True, True, True, None, None, None, "cpu", "codec unknown"),
]


@pytest.mark.parametrize(("wanted", "extra", "cuda", "driver", "codec", "depth", "pix_fmt", "device", "reason"), CASES)
def test_decode_device_decisions(wanted, extra, cuda, driver, codec, depth, pix_fmt, device, reason):
    missing = why_no_nvdec(extra=extra, cuda_available=cuda, driver_decoder=driver)
    run_device = resolve_decode_device(wanted, missing=missing)
    choice = video_decode_device(run_device, source="video", codec=codec, bit_depth=depth, pix_fmt=pix_fmt)
    assert choice.device == device
    assert (choice.reason is None) == (reason is None) and reason in (choice.reason or "") if reason else True
    # audio is decoded by FFmpeg whatever the run's device, and that is no fallback
    audio = video_decode_device(run_device, source="audio", codec="aac", bit_depth=None, pix_fmt=None)
    assert (audio.device, audio.reason) == ("cpu", None)


def test_broken_stream_falls_back_with_its_reason():
    choice = video_decode_device("cuda", source="video", codec="h264", bit_depth=8, pix_fmt="yuv420p", broken=True)
    assert (choice.device, choice.reason) == ("cpu", "NVDEC failed on this stream")


@pytest.mark.parametrize(("extra", "cuda", "driver"), [(False, True, True), (True, False, True), (True, True, False)])
def test_cuda_without_nvdec_names_what_is_missing(extra, cuda, driver):
    missing = why_no_nvdec(extra=extra, cuda_available=cuda, driver_decoder=driver)
    with pytest.raises(ConfigError) as raised:
        resolve_decode_device("cuda", missing=missing)
    text = str(raised.value)
    assert "\n" not in text and text.startswith("--decode-device cuda")
    assert ("vidcache[gpu-decode]" in text) == (not extra) and ("libnvcuvid" in text) == (not driver)
    assert ("CUDA GPU" in text) == (not cuda)


def _ffprobe(path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "stream=codec_name,pix_fmt,bits_per_raw_sample", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(out)["streams"][0]


@pytest.mark.parametrize(("codec", "pix_fmt"), [("libx264", "yuv420p"), ("libx264", "yuv420p10le")])
def test_stream_facts_match_ffprobe(tmp_path, codec, pix_fmt):
    path = tmp_path / f"{pix_fmt}.mp4"
    write_video(path, 6, fps=6, width=64, height=48, codec=codec, pix_fmt=pix_fmt)
    facts, probe = stream_facts(str(path)), _ffprobe(path)
    assert (facts["codec"], facts["pix_fmt"]) == (probe["codec_name"], probe["pix_fmt"])
    assert facts["bit_depth"] == int(probe.get("bits_per_raw_sample") or 8)
    wanted = video_decode_device("cuda", source="video", **{k: facts[k] for k in ("codec", "bit_depth", "pix_fmt")})
    assert wanted.device == ("cuda" if pix_fmt == "yuv420p" else "cpu")


def test_frames_on_screen_rule():
    pts = np.array([0.0, 0.1, 0.25, 0.4])  # variable frame durations
    targets = np.array([-0.05, 0.0, 0.09, 0.1, 0.3, 0.39, 5.0])
    assert frames_on_screen(pts, targets).tolist() == [0, 0, 0, 1, 2, 2, 3]


@pytest.mark.parametrize("sampling", [SamplingConfig(fps=2.0), SamplingConfig(num_frames=5)])
def test_nvdec_frame_choice_matches_the_cpu_sampler(corpus, sampling):
    """NVDEC decodes the frames picked from the demuxed timestamps; they are the frames PyAV's sampler
    (the CPU path) picks, at the same presentation times."""
    path = str(corpus / "b" / "green-right-1.mp4")
    with FrameSampler(path, sampling=sampling) as sampler:
        cpu_times = [time_s for _, time_s, _ in sampler]
    pts, _ = demuxed_pts(path)
    with av.open(path) as container:  # the reference: every decoded frame's time, in order
        decoded = [frame.time for frame in container.decode(video=0)]
    np.testing.assert_allclose(pts, decoded)
    _, times = sample_indices(pts, sampling)
    np.testing.assert_allclose(times, cpu_times)


def test_option_parses_and_is_checked():
    assert RunConfig().decode_device == "cpu"
    with pytest.raises(ConfigError, match="decode_device"):
        RunConfig(decode_device="gpu")
    with pytest.raises(ConfigError, match="needs engine local"):
        RunConfig(decode_device="cuda", engine="ray")


def _main(capsys, *args) -> tuple[int, str, str]:
    """`vidcache ARGS` through the CLI's entry point in this process: its exit code, stdout, stderr."""
    from vidcache.cli import main

    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


def test_cli_cuda_without_nvdec_is_one_line_exit_2(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "nvdec_missing", lambda: NO_NVDEC)  # a machine without the extra, GPU or driver
    args = ("extract", corpus / "manifest.csv", "--cache", tmp_path / "c", "--clip-model", "vidcache-tiny",
            "--clip-pretrained", "none", "--decode-device", "cuda")  # fmt: skip
    code, out, err = _main(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "vidcache[gpu-decode]" in lines[0] and "driver" in lines[0] and "--decode-device" in lines[0]
    code, out, err = _main(capsys, *args, "--json")
    assert code == 2 and json.loads(out) == {"error": lines[0].removeprefix("vidcache: error: "), "exit_code": 2}
    assert not (tmp_path / "c" / "catalog.sqlite").exists()


@pytest.fixture(scope="module")
def one_video(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    (root / "m.csv").write_text(f"path,labels\n{corpus / 'a' / 'clip.mp4'},red\n")
    return root / "m.csv"


def test_auto_resolves_to_cpu_is_recorded_and_a_cuda_run_is_refused(one_video, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "nvdec_missing", lambda: NO_NVDEC)
    cache = tmp_path / "c"
    clip = ClipConfig(model="vidcache-tiny", pretrained="none")

    def config(device: str) -> ExtractConfig:
        return ExtractConfig.create(views=("clip",), clip=clip, run=RunConfig(device="cpu", decode_device=device))

    summary = vidcache.extract(one_video, cache, config("auto"))
    assert summary.extracted == 1 and summary.decode_device == "cpu"
    catalog = Catalog.open(cache)
    try:
        recorded = json.loads(catalog._db.execute("SELECT config_json FROM runs").fetchone()[0])
        identity = catalog.view_identity("clip")
    finally:
        catalog.close()
    assert recorded["run"]["decode_device"] == "cpu" and "decode" not in identity
    assert cache_status(str(cache))["views"]["clip"]["decode_devices"] == {"cpu": 1}  # per video, in status
    # a machine with NVDEC: the rows would come from other pixels, so the cache refuses them
    monkeypatch.setattr(runner, "nvdec_missing", lambda: None)
    with pytest.raises(ConfigError, match=r"decode\.device cpu vs cuda"):
        vidcache.extract(one_video, cache, config("cuda"))


def test_decode_device_is_in_the_key_of_video_views_only():
    from vidcache.extract.plan import settings_key
    from vidcache.extract.viewset import decode_identity

    cuda = ExtractConfig.create(views=("clip", "audio"), run=RunConfig(decode_device="cuda"))
    cpu = ExtractConfig.create(views=("clip", "audio"))
    assert decode_identity("clip", cuda) == {"decode": {"device": "cuda"}} and decode_identity("audio", cuda) == {}
    assert decode_identity("clip", cpu) == {}
    assert settings_key(cuda) != settings_key(cpu)
    assert "PyNvVideoCodec" not in sys.modules  # nothing imported the extra on the way


def _stage_run(path, *, decode_device: str, start_s=None):
    """One video through the extractor's decode stage with a clip consumer: (times, prepared frames, details)."""
    from vidcache.extract.consumers import ClipFrames
    from vidcache.extract.preprocess import ImagePreprocess
    from vidcache.extract.stage import VideoStage
    from vidcache.manifest import VideoEntry

    class Prepare:  # the clip view's prepare (open_clip's eval resize and crop), no model needed
        view, preprocess = "clip", ImagePreprocess(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        max_short_side = None

        def prepare(self, rgb):
            return self.preprocess.resize_crop(rgb)

    entry = VideoEntry(video_id="v", path=str(path), start_s=start_s)
    stage = VideoStage(entry, [ClipFrames(Prepare(), SamplingConfig(fps=2.0), batch_size=64)],
                       run=RunConfig(decode_device=decode_device))  # fmt: skip
    chunks = list(stage)
    assert stage.outcomes["clip"][0] == "done", stage.outcomes
    return np.concatenate([c.times_s for c in chunks]), np.concatenate([c.data.numpy() for c in chunks]), stage.details


@pytest.mark.parametrize(
    ("codec", "start_s", "reason"),
    [("mpeg4", None, "codec mpeg4 is not decoded by NVDEC"), ("libx264", 0.5, "segments decode on the CPU")],
)
def test_a_video_nvdec_cannot_take_is_decoded_on_the_cpu_and_recorded(tmp_path, codec, start_s, reason):
    """In a cuda run such a video goes to the CPU path: the same sampled frames as a cpu run, byte for byte,
    and the device and the reason in its details (the catalog's info)."""
    path = tmp_path / f"{codec}.mp4"
    write_video(path, 18, fps=6, width=64, height=48, codec=codec)
    cpu_times, cpu_frames, cpu_details = _stage_run(path, decode_device="cpu", start_s=start_s)
    times, frames, details = _stage_run(path, decode_device="cuda", start_s=start_s)
    np.testing.assert_array_equal(times, cpu_times)
    np.testing.assert_array_equal(frames, cpu_frames)
    assert (details["decode_device"], details["decode_fallback"]) == ("cpu", reason)
    assert "decode_device" not in cpu_details  # a cpu run records nothing (rows and info as before)
