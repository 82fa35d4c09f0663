"""`vidcache models` against huggingface_hub's own reading of a cache: a fake Hugging Face cache in
the real layout (blobs, snapshots linking to them, refs) under HF_HOME, and a torch hub cache under
TORCH_HOME; every weights file `huggingface_hub.scan_cache_dir` finds is listed as cached, nothing else."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import run_cli_in_process
from huggingface_hub import scan_cache_dir

from vidcache.commands.extract import build_config
from vidcache.commands.models import local_models
from vidcache.extract.views import VIEWS

LAION = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"  # open_clip's ViT-B-32 / laion2b_s34b_b79k tag


def fake_repo(hub: Path, repo_id: str, files: dict[str, bytes], *, kind: str = "models") -> None:
    """One repo as huggingface_hub lays it out: blobs by hash, a snapshot of links to them, refs/main."""
    folder = hub / f"{kind}--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (folder / "blobs").mkdir()
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))


@pytest.fixture
def caches(tmp_path, monkeypatch) -> Path:
    hub = tmp_path / "hf" / "hub"
    fake_repo(hub, "timm/resnet18.a1_in1k", {"model.safetensors": b"r" * 1000, "config.json": b"{}"})
    fake_repo(hub, LAION, {"open_clip_model.safetensors": b"l" * 2000, "open_clip_config.json": b"{}"})
    fake_repo(hub, "someorg/my-clip", {"open_clip_pytorch_model.bin": b"m" * 300, "open_clip_config.json": b"{}"})
    fake_repo(hub, "someorg/readme-only", {"README.md": b"# nothing to load"})
    fake_repo(hub, "someorg/data", {"model.safetensors": b"d" * 10}, kind="datasets")
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "s3d-d76dad2f.pth").write_bytes(b"s" * 500)
    for name in ("HF_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # ~/.cache/clip: empty
    return hub


def test_models_lists_what_the_hub_cache_scan_finds(caches):
    found = local_models()
    entries = [e for view in found["views"].values() for e in view]
    assert found["caches"]["huggingface"] == str(caches)

    # the reference: every weights file of a model repo in huggingface_hub's scan of the cache
    reference = {
        (repo.repo_id, str(f.file_path), f.size_on_disk)
        for repo in scan_cache_dir(caches).repos
        if repo.repo_type == "model"
        for rev in repo.revisions
        for f in rev.files
        if f.file_name.endswith((".safetensors", ".bin"))
    }
    ours = {(e["source"].split(" ", 1)[1], e["path"], e["size_bytes"]) for e in entries
            if e["cached"] and e["source"].startswith("hf-hub ")}  # fmt: skip
    assert ours == reference

    by_key = {(e["view"], e["model"], e["weights"]): e for e in entries}
    assert by_key[("clip", "ViT-B-32", "laion2b_s34b_b79k")]["cached"]
    assert by_key[("clip", "ViT-B-32", "laion2b_s34b_b79k")]["flags"].endswith("--clip-pretrained laion2b_s34b_b79k")
    assert by_key[("clip", "hf-hub:someorg/my-clip", "hub")]["size_bytes"] == 300
    assert not by_key[("clip", "ViT-B-32", "openai")]["cached"]  # the default, not cached: needs --download
    assert by_key[("timm", "resnet18.a1_in1k", "default")]["flags"] == "--views timm --timm-model resnet18.a1_in1k"
    assert not by_key[("timm", "vit_small_patch14_dinov2.lvd142m", "default")]["cached"]
    s3d = by_key[("s3d", "s3d", "kinetics400")]
    assert s3d["cached"] and s3d["size_bytes"] == 500 and s3d["path"].startswith(str(caches.parents[1] / "torch"))
    assert not by_key[("flow", "raft-small", "default")]["cached"]
    assert "frames" in found["no_weights"] and "audio" in found["no_weights"]
    assert found["cached"] == sum(e["cached"] for e in entries) == 5  # 2 tag/hub views of LAION, my-clip, timm, s3d
    assert found["need_download"] == len(entries) - 5

    every = local_models(every_tag=True)  # --all: every open_clip tag, cached or not
    import open_clip

    assert len([e for e in every["views"]["clip"] if e["weights"] != "hub"]) == len(open_clip.list_pretrained())


def test_models_command_json_and_table(caches, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # the table's width: whatever the worker's terminal (or none) says
    code, out, err = run_cli_in_process("models", "--json")
    assert code == 0, err
    assert json.loads(out) == json.loads(json.dumps(local_models(), sort_keys=True))
    code, out, err = run_cli_in_process("models")
    assert code == 0, err
    assert "resnet18.a1_in1k" in out and "needs --download" in out and str(caches) in out


@pytest.mark.parametrize("view", VIEWS.names())
def test_every_listed_weight_is_selected_by_flags_extract_accepts(view, caches):
    """Generated from the view registry: each entry's `flags` build an ExtractConfig that names it."""
    entries = VIEWS.get(view)().local_weights(every_tag=False)
    if entries is None:
        return  # a view without managed weights
    assert entries, view
    for entry in entries:
        words = entry.flags.split()
        values = {flag[2:].replace("-", "_"): value for flag, value in zip(words[::2], words[1::2], strict=True)}
        config = build_config(**values)
        settings = config.views_settings[VIEWS.get(view).section]
        chosen = set(json.dumps(dataclasses.asdict(settings)).split('"'))
        assert {entry.model.removeprefix("raft-"), entry.weights} & chosen, (entry, settings)
