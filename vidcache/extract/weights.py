"""Finding model weights on local disk, offline, and naming exactly how to provide missing ones."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import ConfigError, MissingWeightsError

HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
WeightsKind = Literal["random", "file", "tag", "hf-hub"]


@dataclass(frozen=True)
class ResolvedWeights:
    kind: WeightsKind
    path: str | None  # local file holding the weights (None for random init)
    tag_cfg: dict  # open_clip's pretrained cfg for a tag (quick_gelu, mean/std ...), else {}
    provenance: dict = field(default_factory=dict)  # a fine-tuned export's "made from" record, else {}


# metadata keys of a `vidcache finetune` export (RUN/backbone.safetensors): the pretrained cfg of the
# weights it was fine-tuned from (quick_gelu, mean/std: a file path alone would lose them) and its origin
EXPORT_CFG_KEY = "vidcache_open_clip_cfg"
EXPORT_PROVENANCE_KEY = "vidcache_provenance"


def file_metadata(path: str) -> tuple[dict, dict]:
    """(pretrained cfg, provenance) recorded in a safetensors weights file by `vidcache finetune`;
    ({}, {}) for any other file."""
    if not str(path).endswith(".safetensors"):
        return {}, {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    return json.loads(meta.get(EXPORT_CFG_KEY, "{}")), json.loads(meta.get(EXPORT_PROVENANCE_KEY, "{}"))


def sha256_file(path: str | os.PathLike, *, block_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


def hf_cache_dir() -> str:
    """The Hugging Face hub cache as the environment names it now (huggingface_hub reads HF_HOME once,
    at import): HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def hf_cached(repo_id: str, filenames: tuple[str, ...]) -> str | None:
    """The first of `filenames` of hub repo `repo_id` in the local cache (a local lookup, never the network)."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo_id.partition("@")
    for filename in filenames:
        found = try_to_load_from_cache(repo_id=repo_id, filename=filename, cache_dir=hf_cache_dir(),
                                       revision=revision or None)  # fmt: skip
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def _reachable(url: str, timeout_s: float = 5.0) -> str | None:
    """None when `url`'s host answers on its port, else why not (checked before a download, which would
    otherwise retry for a minute with a traceback). Skipped behind a proxy: only the proxy knows."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "", parts.port or 443), timeout=timeout_s).close()
    except OSError as exc:
        return f"cannot reach {parts.hostname}: {exc.strerror or exc}"
    return None


def download(url: str, what: str, fetch, *args, **kwargs):
    """`fetch(*args, **kwargs)` (a download of `what` from `url`), with a failure as one line (exit 2):
    no network is an expected condition, not a traceback."""
    why = _reachable(url)
    if why is None:
        try:
            return fetch(*args, **kwargs)
        except Exception as exc:  # requests, huggingface_hub and urllib each raise their own
            lines = str(exc).strip().splitlines()
            why = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
    raise MissingWeightsError(
        f"--download: could not download {what} from {url} ({why}); check the network, or fetch the weights "
        "where there is internet and pass their local file"
    )


def _safe_alternatives(filename: str) -> tuple[str, ...]:
    if filename.endswith((".bin", ".pth", ".pt")):
        return (filename.rsplit(".", 1)[0] + ".safetensors", filename)
    return (filename,)


def cached_tag_file(tag_cfg: dict) -> str | None:
    """The local file of an open_clip pretrained tag (its cfg): the HF cache, ~/.cache/clip or its own
    `file`; None when none is on disk. A local lookup only."""
    hf_hub, url = tag_cfg.get("hf_hub", ""), tag_cfg.get("url", "")
    path = None
    if hf_hub:
        repo_id, filename = os.path.split(hf_hub.rstrip("/")) if not hf_hub.endswith("/") else (hf_hub[:-1], "")
        path = hf_cached(repo_id, _safe_alternatives(filename) if filename else HF_WEIGHT_FILES)
    if path is None and url:
        candidate = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        path = str(candidate) if candidate.is_file() else None
    if path is None and tag_cfg.get("file"):
        path = tag_cfg["file"] if os.path.isfile(tag_cfg["file"]) else None
    return path


def resolve_clip_weights(model: str, pretrained: str, *, allow_download: bool = False) -> ResolvedWeights:
    """Resolve `--clip-pretrained` to a local file without touching the network unless allowed."""
    import open_clip

    if model.startswith("hf-hub:"):
        repo_id = model[len("hf-hub:") :]
        if os.path.isfile(pretrained):  # would be ignored: the hub repo's own weights would load instead
            raise ConfigError(
                f"--clip-pretrained {pretrained}: extract cannot load a weights file into an hf-hub: architecture "
                f"({model}; it reads the hub cache), and would silently use the repo's weights; use a named open_clip "
                "architecture (see docs/finetune.md)"
            )
        path = hf_cached(repo_id, HF_WEIGHT_FILES)
        if path is None:
            if not allow_download:
                raise MissingWeightsError(
                    f"CLIP weights for {model} are not in the local Hugging Face cache "
                    f"({hf_cache_dir()}); fetch them with "
                    f"`hf download {repo_id}` where there is internet, or add --download"
                )
            from open_clip.pretrained import download_pretrained_from_hf

            url = f"https://huggingface.co/{repo_id}"
            download(url, f"CLIP {model}", download_pretrained_from_hf, repo_id, filename="open_clip_config.json")
            path = download(url, f"CLIP {model}", download_pretrained_from_hf, repo_id)
        return ResolvedWeights("hf-hub", path, {})

    if model.replace("/", "-") not in open_clip.list_models():
        raise ConfigError(
            f'--clip-model {model!r} is not an open_clip architecture; see `python -c "import open_clip; '
            'print(open_clip.list_models())"` or use hf-hub:org/repo'
        )
    if pretrained == "none":
        return ResolvedWeights("random", None, {})
    if os.path.isfile(pretrained):
        tag_cfg, provenance = file_metadata(pretrained)
        return ResolvedWeights("file", os.path.abspath(pretrained), tag_cfg, provenance)

    tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not tag_cfg:
        if os.sep in pretrained or Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors"):
            raise MissingWeightsError(
                f"--clip-pretrained file {pretrained} does not exist; {_unexported_hint(pretrained)}"
            )
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none known"
        raise ConfigError(
            f"--clip-pretrained {pretrained!r} is neither a file nor a tag of {model} (tags: {tags}); "
            "use 'none' for random weights"
        )

    hf_hub, url = tag_cfg.get("hf_hub", ""), tag_cfg.get("url", "")
    path = cached_tag_file(tag_cfg)
    if path is None:
        if not allow_download:
            where = f"`hf download {hf_hub.rstrip('/')}`" if hf_hub else f"downloading {url} to ~/.cache/clip/"
            raise MissingWeightsError(
                f"CLIP weights {model}/{pretrained} are not cached locally; get them with {where} where there "
                f"is internet (HF cache: {hf_cache_dir()}), pass "
                "--clip-pretrained /path/to/weights.safetensors, or add --download"
            )
        from open_clip.pretrained import download_pretrained

        source = f"https://huggingface.co/{hf_hub.rstrip('/')}" if hf_hub else url
        path = download(source, f"CLIP weights {model}/{pretrained}", download_pretrained, tag_cfg)
    return ResolvedWeights("tag", path, tag_cfg)


def _unexported_hint(path: str) -> str:
    """The fix for a missing weights file: a fine-tune that did not improve exports none (its
    summary.json names the base weights), anything else needs the path of a local checkpoint."""
    summary = Path(path).parent / "summary.json"
    try:
        made = json.loads(summary.read_text()) if summary.is_file() else {}
    except (OSError, ValueError):
        made = {}
    if made.get("backbone_improved") is False:
        return (
            f"fine-tuning run {summary.parent} did not improve on its base weights (best epoch "
            f"{made.get('best_epoch')}) and exported "
            f"none; extract with those instead: {made.get('base_weights', '')}"
        )
    return "give the path of a local checkpoint"


def load_state_dict_file(path: str) -> dict:
    """A state dict from safetensors or a torch file, never unpickling arbitrary objects."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # common training-checkpoint wrapper
    return state


def state_dict_sha256(model) -> str:
    """sha256 over a model's parameters in name order: identifies random-init weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def resolve_torchvision_weights(
    url: str, *, option: str, what: str, alternatives: str, allow_download: bool = False
) -> str:
    """The local file of a torchvision weights entry (torch hub cache), offline unless allowed;
    its sha256 must start with the digits in its name, as torchvision checks on download."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if not path.is_file():
        if not allow_download:
            raise MissingWeightsError(
                f"{what} weights {path.name} are not in the torch hub cache ({path.parent}); download {url} "
                f"into that folder where there is internet, add --download, pass {option} PATH, {alternatives}"
            )
        download(
            url, f"{what} weights", torch.hub.load_state_dict_from_url, url, map_location="cpu", weights_only=True,
            check_hash=True,
        )  # fmt: skip
    expected = torch.hub.HASH_REGEX.search(path.name)
    if expected and not sha256_file(path).startswith(expected.group(1)):
        raise MissingWeightsError(
            f"{path} is corrupt (its sha256 does not match its name); delete it and fetch it again with --download"
        )
    return str(path)


@contextlib.contextmanager
def hf_offline(enabled: bool):
    """Keep open_clip/huggingface_hub off the network unless downloading was asked for."""
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import: the variable alone, set now, changes nothing
    # (timm then retried huggingface.co for a minute); its constant is what every request checks
    saved, saved_constant = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_constant
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved
