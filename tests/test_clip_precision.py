"""--clip-precision and --compile (issue 28): parsed from the CLI into the saved config, recorded in the
clip view's identity, and the rows they give against the fp32 rows (a NumPy cosine)."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
import torch

from vidcache.commands.extract import build_config, extract_options
from vidcache.config import to_json
from vidcache.extract.views.clip.model import ClipEncoder
from vidcache.extract.views.clip.settings import ClipConfig
from vidcache.fields import ParamError


def _parse(*args: str):
    command = click.Command("extract", params=[o.option for o in extract_options()])
    return build_config(**command.make_context("extract", list(args)).params)


def test_flags_parse_into_the_saved_config():
    config = _parse("--clip-precision", "bf16-weights", "--compile", "--decode-device", "auto")
    saved = json.loads(to_json(config))
    clip = saved["views_settings"]["clip"]
    assert (clip["precision"], clip["compile"], saved["run"]["decode_device"]) == ("bf16-weights", True, "auto")
    default = json.loads(to_json(_parse()))
    assert default["views_settings"]["clip"]["precision"] == "autocast" and default["run"]["decode_device"] == "cpu"
    with pytest.raises(click.BadParameter):
        _parse("--clip-precision", "fp16")
    with pytest.raises(ParamError, match="precision"):
        ClipConfig(precision="fp16")


@pytest.fixture(scope="module")
def frames() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (4, 3, 224, 224), dtype=np.uint8))


def _encoder(**options) -> ClipEncoder:
    config = ClipConfig(model="vidcache-tiny", pretrained="none", **options)
    return ClipEncoder(config=config, device=torch.device("cpu"))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_precisions_rows_and_identities(frames):
    fp32, autocast, bf16 = _encoder(precision="fp32"), _encoder(), _encoder(precision="bf16-weights")
    rows = {name: enc.encode(frames) for name, enc in (("fp32", fp32), ("autocast", autocast), ("bf16", bf16))}
    # on CPU autocast is what vidcache always did there: fp32, the same rows
    np.testing.assert_array_equal(rows["autocast"], rows["fp32"])
    assert _cosine(rows["bf16"], rows["fp32"]).min() >= 0.999  # bf16 weights: 8 mantissa bits
    assert not np.array_equal(rows["bf16"], rows["fp32"])
    ids = {name: enc.identity() for name, enc in (("fp32", fp32), ("autocast", autocast), ("bf16", bf16))}
    assert "precision" not in ids["autocast"] and "compile" not in ids["autocast"]  # caches made before: unchanged
    assert ids["fp32"]["precision"] == "fp32" and ids["bf16"]["precision"] == "bf16-weights"
    assert len({json.dumps(i, sort_keys=True) for i in ids.values()}) == 3


def test_compile_is_recorded():
    # torch.compile is lazy: building the encoder compiles nothing (inductor takes minutes on this CPU)
    compiled = _encoder(compile=True)
    assert compiled.identity()["compile"] is True and compiled.image_tower is not compiled.model.encode_image
    assert {k: v for k, v in compiled.identity().items() if k != "compile"} == _encoder().identity()
