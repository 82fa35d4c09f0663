"""`extract --clip-pretrained FILE` with a file that is not `--clip-model`'s weights (issue 23 item 1):
one line naming the file, what it holds and the fix, exit 2, never open_clip's traceback (exit 70).
What a file holds is checked against open_clip itself: the file loads into the architecture named."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from conftest import run_cli_in_process
from safetensors.torch import save_file

from vidcache.cache.reader import Cache
from vidcache.extract.views.clip.model import register_vidcache_configs
from vidcache.finetune.export import export_backbone
from vidcache.heads.checkpoint import save_checkpoint
from vidcache.synth import write_video


@pytest.fixture(scope="module")
def one_video(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("one")
    write_video(root / "a.mp4", 4, fps=4)
    (root / "m.csv").write_text("path\na.mp4\n")
    return root / "m.csv"


def _extract(manifest: Path, cache: Path, *flags: object) -> tuple[int, str, str]:
    return run_cli_in_process("extract", manifest, "--cache", cache, "--num-frames", "1", "--device", "cpu", *flags)


def _one_line_error(code: int, err: str, *parts: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vidcache: error: --clip-pretrained "), err
    assert "unexpected" not in err and "Traceback" not in err
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def test_a_state_dict_of_another_architecture_is_named(one_video, tiny_checkpoint, tmp_path):
    """The tiny CLIP's state dict with the default --clip-model (ViT-B-32): the error names what the
    file holds (vidcache-tiny, which open_clip confirms by loading it) and the flag that fixes it."""
    register_vidcache_configs()
    open_clip.create_model("vidcache-tiny", pretrained=str(tiny_checkpoint), weights_only=True)  # the reference
    code, out, err = _extract(one_video, tmp_path / "c", "--clip-pretrained", tiny_checkpoint, "--json")
    _one_line_error(code, err, str(tiny_checkpoint), "vidcache-tiny", "--clip-model ViT-B-32",
                    "give --clip-model vidcache-tiny")  # fmt: skip
    assert json.loads(out)["exit_code"] == 2

    # one transformer block more than any known architecture: described by its dimensions
    state = {k: v.contiguous() for k, v in torch.load(tiny_checkpoint, weights_only=True).items()}
    extra = {k.replace("resblocks.1.", "resblocks.2."): v.clone() for k, v in state.items() if ".resblocks.1." in k}
    state.update(extra)
    odd = tmp_path / "odd.safetensors"
    save_file(state, str(odd))
    with pytest.raises(RuntimeError):  # open_clip refuses it too, with a traceback
        open_clip.create_model("vidcache-tiny", pretrained=str(odd), weights_only=True)
    code, _, err = _extract(one_video, tmp_path / "c2", "--clip-model", "vidcache-tiny", "--clip-pretrained", odd)
    _one_line_error(code, err, str(odd), "no known open_clip architecture", "ViT width 64, 3 layers, patch 32")


def test_a_head_checkpoint_is_not_clip_weights(one_video, tmp_path):
    save_checkpoint(tmp_path, "best", model=torch.nn.Linear(64, 3), state={"epoch": 1})
    code, _, err = _extract(one_video, tmp_path / "c", "--clip-model", "vidcache-tiny",
                            "--clip-pretrained", tmp_path / "best.safetensors")  # fmt: skip
    _one_line_error(code, err, "best.safetensors", "a vidcache head checkpoint", "backbone.safetensors")


def test_an_export_names_its_architecture_and_a_contradicting_clip_model_is_refused(one_video, tmp_path):
    """A fine-tuned export records the architecture it came from: --clip-model may be left out (the
    CLI round trip is in test_finetune.py); a different --clip-model is refused in one line."""
    register_vidcache_configs()
    export = tmp_path / "backbone.safetensors"
    record = {"from": {"model": "vidcache-tiny", "pretrained": "none"}, "epoch": 1}
    export_backbone(open_clip.create_model("vidcache-tiny"), export, tag_cfg={}, record=record)
    code, _, err = _extract(one_video, tmp_path / "c", "--clip-model", "ViT-B-32", "--clip-pretrained", export)
    _one_line_error(code, err, str(export), "fine-tuned from vidcache-tiny", "leave --clip-model out")
    hub_export = tmp_path / "hub" / "backbone.safetensors"  # fine-tuned from an hf-hub: model
    hub_export.parent.mkdir()
    export_backbone(open_clip.create_model("vidcache-tiny"), hub_export, tag_cfg={},
                    record={"from": {"model": "hf-hub:org/some-clip"}})  # fmt: skip
    code, _, err = _extract(one_video, tmp_path / "c3", "--clip-pretrained", hub_export)
    _one_line_error(code, err, str(hub_export), "hf-hub:org/some-clip", "would silently use the repo's weights")
    code, out, err = _extract(one_video, tmp_path / "c2", "--clip-pretrained", export, "--json")
    assert code == 0, err
    assert json.loads(out)["extracted"] == 1
    with Cache(tmp_path / "c2") as cache:
        identity = cache.view_info("clip")
    assert identity["model"] == "vidcache-tiny" and identity["fine_tuned"]["epoch"] == 1
