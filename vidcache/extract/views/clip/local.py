"""`vidcache models` for the clip view: open_clip tags and hf-hub repos on local disk."""

from __future__ import annotations

from ...local_weights import WeightsEntry, _size, hub_repos
from ...weights import HF_WEIGHT_FILES, cached_tag_file, hf_cached


def clip_weights(*, every_tag: bool = False) -> list[WeightsEntry]:
    """open_clip tags with a local file (every known tag with `every_tag`; always the default
    ViT-B-32/openai), then `hf-hub:` open_clip repos of the HF cache."""
    import open_clip

    from .model import register_vidcache_configs
    from .settings import ClipConfig

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
