"""The typed Python API: `vidcache.extract(manifest, cache, config)` writes what the CLI writes, and its
errors name the Python parameter and the allowed values (the CLI's name the flag)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import vidcache
from tests.conftest import run_cli, tiny_clip_args
from vidcache.config import RunConfig, SamplingConfig
from vidcache.errors import ConfigError
from vidcache.extract.views import sections
from vidcache.extract.views.clip import ClipConfig


def test_import_is_light():
    import subprocess

    code = "import sys, vidcache; vidcache.ExtractConfig; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_extract_api_equals_the_cli(corpus, tmp_path, tiny_checkpoint):
    config = vidcache.ExtractConfig.create(
        views=("clip",),
        sampling=SamplingConfig(fps=2.0),
        clip=ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint)),
        run=RunConfig(device="cpu"),
    )
    summary = vidcache.extract(corpus / "manifest.csv", tmp_path / "api", config)
    assert summary.extracted == 8 and summary.failed == 0
    again = vidcache.extract(corpus / "manifest.csv", tmp_path / "api", config)
    assert again.skipped == 8 and again.extracted == 0
    result = run_cli(
        "extract",
        corpus / "manifest.csv",
        "--cache",
        tmp_path / "cli",
        *tiny_clip_args(tiny_checkpoint),
        "--fps",
        "2",
        "--device",
        "cpu",
        "--json",
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1])["extracted"] == 8
    api, cli = vidcache.Cache(tmp_path / "api"), vidcache.Cache(tmp_path / "cli")
    assert api.video_ids("clip") == cli.video_ids("clip")
    for video in api.video_ids("clip"):
        a, b = api.read(video, "clip", raw=True), cli.read(video, "clip", raw=True)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_errors_name_the_parameter_and_list_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"extract\.config='clip': must be an ExtractConfig, not str"):
        vidcache.extract(tmp_path / "m.csv", tmp_path / "c", "clip")
    with pytest.raises(ConfigError, match=r"RunConfig\.device='tpu': choose one of: auto, cpu, cuda"):
        RunConfig(device="tpu")
    with pytest.raises(ConfigError, match=r"ExtractConfig\.dtype='int8': choose one of: float16, float32"):
        vidcache.ExtractConfig(dtype="int8")
    every_section = ", ".join(sorted(sections()))  # from the registry: a new view adds its own
    with pytest.raises(ConfigError, match=rf"views_settings.*unknown section; choose from: {every_section}$"):
        vidcache.ExtractConfig.create(views=("clip",), bogus=ClipConfig())
