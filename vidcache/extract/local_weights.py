"""Which model weights each view can load offline (`vidcache models`): local lookups only, in the same
places extract reads them from (the Hugging Face hub cache, ~/.cache/clip, the torch hub cache), so a
weight listed as cached is one `extract` loads without `--download`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .backbones.weights import HF_WEIGHT_FILES, cached_tag_file, hf_cache_dir, hf_cached


@dataclass(frozen=True)
class WeightsEntry:
    """One set of weights a view can use, and whether it is on local disk."""

    view: str
    model: str
    weights: str  # the tag / entry name extract takes ('openai', 'default', 'kinetics400' ...)
    cached: bool
    path: str  # the local file when cached, else ""
    source: str  # where --download would fetch it from (hub repo or URL)
    size_bytes: int
    flags: str  # the extract flags that select it


def _size(path: str | None) -> int:
    return os.path.getsize(path) if path and os.path.isfile(path) else 0


def hub_repos() -> dict[str, set[str]]:
    """Model repos in the local HF hub cache → the file names of their snapshots (huggingface_hub's
    own scan of the cache layout); {} when there is no cache."""
    from huggingface_hub import scan_cache_dir

    if not os.path.isdir(hf_cache_dir()):
        return {}
    found: dict[str, set[str]] = {}
    for repo in scan_cache_dir(hf_cache_dir()).repos:
        if repo.repo_type == "model":
            found[repo.repo_id] = {f.file_name for rev in repo.revisions for f in rev.files}
    return found


def clip_weights(*, every_tag: bool = False) -> list[WeightsEntry]:
    """open_clip tags with a local file (every known tag with `every_tag`; always the default
    ViT-B-32/openai), then `hf-hub:` open_clip repos of the HF cache."""
    import open_clip

    from .backbones.clip import register_vidcache_configs
    from .views.clip import ClipConfig

    register_vidcache_configs()
    default = ClipConfig()
    out = []
    for model, tag in open_clip.list_pretrained():
        cfg = open_clip.get_pretrained_cfg(model, tag)
        path = cached_tag_file(cfg)
        if path or every_tag or (model, tag) == (default.model, default.pretrained):
            source = f"hf-hub {cfg['hf_hub'].rstrip('/')}" if cfg.get("hf_hub") else cfg.get("url", "")
            out.append(WeightsEntry("clip", model, tag, path is not None, path or "", source, _size(path),
                                    f"--clip-model {model} --clip-pretrained {tag}"))  # fmt: skip
    for repo_id, names in sorted(hub_repos().items()):
        weights = [n for n in HF_WEIGHT_FILES if n in names]
        if "open_clip_config.json" in names and weights:
            file = hf_cached(repo_id, tuple(weights)) or ""
            out.append(WeightsEntry("clip", f"hf-hub:{repo_id}", "hub", bool(file), file,
                                    f"hf-hub {repo_id}", _size(file), f"--clip-model hf-hub:{repo_id}"))  # fmt: skip
    return out


def timm_weights() -> list[WeightsEntry]:
    """timm models whose weights are in the HF cache (repos `timm/...`), and the view's default model."""
    from .views.timm_image import TimmConfig

    default = TimmConfig().model
    out, seen = [], set()
    for repo_id, names in sorted(hub_repos().items()):
        if repo_id.startswith("timm/") and {"model.safetensors", "pytorch_model.bin"} & names:
            model = repo_id.split("/", 1)[1]
            file = hf_cached(repo_id, ("model.safetensors", "pytorch_model.bin")) or ""
            out.append(WeightsEntry("timm", model, "default", bool(file), file, f"hf-hub {repo_id}", _size(file),
                                    f"--views timm --timm-model {model}"))  # fmt: skip
            seen.add(model)
    if default not in seen:
        out.append(WeightsEntry("timm", default, "default", False, "", f"hf-hub timm/{default}", 0,
                                f"--views timm --timm-model {default}"))  # fmt: skip
    return out


def torch_hub_entry(view: str, model: str, weights: str, url: str, flags: str) -> WeightsEntry:
    """A torchvision weights file in the torch hub cache (where `resolve_torchvision_weights` looks)."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    cached = path.is_file()
    return WeightsEntry(view, model, weights, cached, str(path) if cached else "", url, _size(str(path)), flags)


def s3d_weights() -> list[WeightsEntry]:
    from .backbones.s3d import _s3d_module

    url = _s3d_module().S3D_Weights.KINETICS400_V1.url
    return [torch_hub_entry("s3d", "s3d", "kinetics400", url, "--views s3d --s3d-weights kinetics400")]


def flow_weights() -> list[WeightsEntry]:
    from .flow.raft import _torchvision_weights

    out = []
    for size in ("small", "large"):
        flags = f"--views flow --flow-method raft --flow-raft-model {size}"
        out.append(torch_hub_entry("flow", f"raft-{size}", "default", _torchvision_weights(size).url, flags))
    return out
