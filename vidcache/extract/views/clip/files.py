"""What a `--clip-pretrained` weights file holds, read from its tensor names and shapes (no model is
built): which open_clip architecture(s) it fits, or what else it is (a head checkpoint, a fine-tuned
export that names its own architecture). A file that does not fit `--clip-model` is a one-line error
naming the file, what it holds and the fix, before open_clip would fail deep inside with a traceback."""

from __future__ import annotations

import json
import math
import re

from ....errors import ConfigError
from ...weights import EXPORT_PROVENANCE_KEY, load_state_dict_file

_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.")


def tensor_shapes(path: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """(name → shape, safetensors metadata) of a weights file; a safetensors file is not read in full."""
    if str(path).endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}, dict(handle.metadata() or {})
    state = load_state_dict_file(path)
    if not isinstance(state, dict):
        return {}, {}
    return {str(k): tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}, {}


def recorded_model(metadata: dict[str, str]) -> str | None:
    """The architecture a `vidcache finetune` export was fine-tuned from (its provenance metadata)."""
    made = json.loads(metadata.get(EXPORT_PROVENANCE_KEY, "{}") or "{}")
    return (made.get("from") or {}).get("model") or None


def architecture_of(path: str) -> str | None:
    """The architecture a fine-tuned export names, for `--clip-pretrained FILE` without `--clip-model`;
    None for anything else (a tag, a missing file, a plain state dict: the default model applies)."""
    import os

    if not (str(path).endswith(".safetensors") and os.path.isfile(path)):
        return None
    try:
        return recorded_model(tensor_shapes(path)[1])
    except Exception:  # not a readable safetensors file: loading it later says so in one line
        return None


def file_signature(shapes: dict[str, tuple[int, ...]]) -> dict | None:
    """The dimensions that tell open_clip ViT CLIPs apart, from a state dict's shapes; None when the
    file is not an open_clip ViT CLIP state dict (a `module.` prefix, as DDP saves, is ignored)."""
    shapes = {k.removeprefix("module."): v for k, v in shapes.items()}
    needed = ("visual.conv1.weight", "visual.positional_embedding", "token_embedding.weight", "positional_embedding")
    if not all(k in shapes for k in needed) or len(shapes["visual.conv1.weight"]) != 4:
        return None
    blocks = {"visual": set(), "text": set()}
    for name in shapes:
        found = _BLOCK.match(name)
        if found:
            blocks["visual" if found.group(1) else "text"].add(int(found.group(2)))
    width, _, patch, _ = shapes["visual.conv1.weight"]
    grid = math.isqrt(max(shapes["visual.positional_embedding"][0] - 1, 0))
    projection = shapes.get("text_projection") or shapes.get("visual.proj") or (0, 0)
    return {
        "embed_dim": projection[-1],
        "vision": (width, len(blocks["visual"]), patch, grid * patch),
        "text": (shapes["token_embedding.weight"][1], len(blocks["text"]), shapes["positional_embedding"][0]),
    }


def model_signature(model: str) -> dict | None:
    """The same dimensions from open_clip's config of `model`; None for non-ViT towers (ResNet, timm)."""
    import open_clip

    config = open_clip.get_model_config(model)
    if not config:
        return None
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    defaults_v, defaults_t = open_clip.model.CLIPVisionCfg(), open_clip.model.CLIPTextCfg()
    layers = vision.get("layers", defaults_v.layers)
    if not isinstance(layers, int) or vision.get("timm_model_name") or text.get("hf_model_name"):
        return None
    size = vision.get("image_size", defaults_v.image_size)
    patch = vision.get("patch_size", defaults_v.patch_size)
    return {
        "embed_dim": config.get("embed_dim"),
        "vision": (vision.get("width", defaults_v.width), layers, patch, size if isinstance(size, int) else size[0]),
        "text": (
            text.get("width", defaults_t.width),
            text.get("layers", defaults_t.layers),
            text.get("context_length", defaults_t.context_length),
        ),
    }


def matching_architectures(signature: dict) -> list[str]:
    """The open_clip architectures whose dimensions equal a file's (shortest names first)."""
    import open_clip

    found = [name for name in open_clip.list_models() if model_signature(name) == signature]
    return sorted(found, key=lambda n: (len(n), n))


def describe(shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]) -> tuple[str, list[str]]:
    """(what the file holds, in words; the architectures it fits)."""
    if "vidcache" in metadata:
        return "a vidcache head checkpoint (a train/finetune run's best or last)", []
    signature = file_signature(shapes)
    if signature is None:
        sample = ", ".join(sorted(shapes)[:3]) or "no tensors"
        return f"not an open_clip CLIP state dict (tensors: {sample}...)", []
    fits = matching_architectures(signature)
    width, layers, patch, size = signature["vision"]
    dims = f"ViT width {width}, {layers} layers, patch {patch}, {size} px, embed {signature['embed_dim']}"
    if not fits:
        return f"a CLIP state dict of no known open_clip architecture ({dims})", []
    shown = " or ".join(fits[:3]) + (" ..." if len(fits) > 3 else "")
    return f"a CLIP state dict of {shown} ({dims})", fits


def check_clip_file(path: str, model: str) -> None:
    """Refuse, in one line, a weights file that does not hold `model`'s weights: a fine-tuned export
    made from another architecture, a head checkpoint, any state dict of other dimensions."""
    shapes, metadata = tensor_shapes(path)
    recorded = recorded_model(metadata)
    if recorded is not None and recorded != model:
        raise ConfigError(
            f"--clip-pretrained {path} was fine-tuned from {recorded}, but --clip-model is {model}; "
            f"leave --clip-model out (the file names its architecture) or give --clip-model {recorded}"
        )
    if recorded is not None:
        return
    expected, signature = model_signature(model), file_signature(shapes)
    if signature == expected and signature is not None:
        return
    if expected is None and signature is None and "vidcache" not in metadata:
        return  # a ResNet or timm tower: this module cannot read its dimensions; open_clip checks them
    what, fits = describe(shapes, metadata)
    if "vidcache" in metadata:
        fix = f"give a `vidcache finetune` run's backbone.safetensors or a CLIP weights file of {model}"
    elif fits:
        fix = f"give --clip-model {fits[0]}"
    else:
        fix = f"give a weights file of {model} (or an open_clip tag, or 'none')"
    raise ConfigError(f"--clip-pretrained {path} holds {what}, not weights of --clip-model {model}; {fix}")
