"""Checkpoints as safetensors (tensors) plus JSON (everything else): nothing is ever unpickled.

`best`/`last` each hold the model, and `last` also the optimizer and scheduler state so training can
resume exactly where it stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(
    directory: Path, name: str, *, model: torch.nn.Module, optimizer=None, scheduler=None, state: dict | None = None
) -> Path:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta: dict = {"state": state or {}}
    if optimizer is not None:
        optim = optimizer.state_dict()
        for param_id, values in optim["state"].items():
            for key, value in values.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{param_id}.{key}"] = value.detach().cpu().contiguous()
                else:
                    meta.setdefault("optim_scalars", {})[f"{param_id}.{key}"] = value
        meta["param_groups"] = optim["param_groups"]
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    path = directory / f"{name}.safetensors"
    text = json.dumps(meta, indent=2, sort_keys=True, default=str)
    # the state travels inside the tensor file (one atomic rename); NAME.json is a readable copy
    _atomic(path, lambda p: save_file(tensors, str(p), metadata={"format": "pt", "vidcache": text}))
    _atomic(directory / f"{name}.json", lambda p: p.write_text(text))
    return path


def load_checkpoint(directory: Path, name: str, *, model: torch.nn.Module, optimizer=None, scheduler=None) -> dict:
    """Restore into the given objects; return the saved `state` dict."""
    path = directory / f"{name}.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads((handle.metadata() or {}).get("vidcache") or (directory / f"{name}.json").read_text())
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    if optimizer is not None and "param_groups" in meta:
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, param_id, name_ = key.split(".", 2)
                state.setdefault(int(param_id), {})[name_] = value
        for key, value in meta.get("optim_scalars", {}).items():
            param_id, name_ = key.split(".", 1)
            state.setdefault(int(param_id), {})[name_] = value
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(meta["scheduler"])
    return meta.get("state", {})
