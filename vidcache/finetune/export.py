"""RUN/backbone.safetensors: the whole fine-tuned open_clip model (image tower as trained, text tower
as it came), loadable by `vidcache extract --clip-pretrained RUN/backbone.safetensors` (the architecture
is read from the metadata; `--clip-model` may be left out). Not written when the tower did not change.

The file's metadata carries what a bare path would lose: the pretrained cfg of the weights it was
fine-tuned from (quick_gelu, mean/std: openai ViT-B-32 needs quick_gelu to compute the same
features) and where it came from; extract records the latter in the view identity as `fine_tuned`."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..extract.weights import EXPORT_CFG_KEY, EXPORT_PROVENANCE_KEY

BACKBONE_FILE = "backbone.safetensors"
_CFG_KEYS = ("quick_gelu", "mean", "std", "interpolation", "resize_mode")


def provenance(source_identity: dict, run_dir: Path, *, run_id: str, best_epoch: int) -> dict:
    """What the exported weights are: fine-tuned from which weights, by which run."""
    source = {
        k: source_identity.get(k) for k in ("model", "pretrained", "weights_kind", "weights_sha256", "random_init_seed")
    }
    made_from = f"{source['model']}/{source['pretrained']} (weights sha256 {str(source['weights_sha256'])[:12]})"
    return {
        "description": f"fine-tuned from {made_from} by run {run_dir} ({run_id}), epoch {best_epoch}",
        "from": source,
        "run_dir": str(run_dir),
        "run_id": run_id,
        "epoch": best_epoch,
    }


def export_backbone(clip_model: torch.nn.Module, path: Path, *, tag_cfg: dict, record: dict) -> Path:
    """Write the model's state dict (safetensors, atomically) with the cfg and provenance metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous().clone()
               for k, v in clip_model.state_dict().items()}  # fmt: skip
    cfg = {k: tag_cfg[k] for k in _CFG_KEYS if tag_cfg.get(k) is not None}
    metadata = {
        "format": "pt",
        EXPORT_CFG_KEY: json.dumps(cfg, sort_keys=True, default=list),
        EXPORT_PROVENANCE_KEY: json.dumps(record, sort_keys=True, default=str),
    }
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    partial.replace(path)
    return path
