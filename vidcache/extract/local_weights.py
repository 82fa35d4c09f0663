"""What each view's `local_weights` hook reports (`vidcache models`), and the lookups views share: local
lookups only, in the same
places extract reads them from (the Hugging Face hub cache, ~/.cache/clip, the torch hub cache), so a
weight listed as cached is one `extract` loads without `--download`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .weights import hf_cache_dir


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


def torch_hub_entry(view: str, model: str, weights: str, url: str, flags: str) -> WeightsEntry:
    """A torchvision weights file in the torch hub cache (where `resolve_torchvision_weights` looks)."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    cached = path.is_file()
    return WeightsEntry(view, model, weights, cached, str(path) if cached else "", url, _size(str(path)), flags)
