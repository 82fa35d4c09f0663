"""CLIP text embeddings of a label vocabulary with prompt templates, stored as `text.h5`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import h5py
import numpy as np

from ..cache.layout import TEXT_NAME
from ..cache.shard import STR_DTYPE, plain_attrs

DEFAULT_TEMPLATES = ("a video of {}.", "This is a video about {}")


def prompt_embeddings(encode_text, labels: list[str], templates: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(per_template [L, P, D], class embeddings [L, D]): the usual CLIP zero-shot ensemble, i.e. the
    mean of L2-normalised per-template embeddings, normalised again."""
    prompts = [template.format(label) for label in labels for template in templates]
    flat = encode_text(prompts)
    per_template = flat.reshape(len(labels), len(templates), -1).astype(np.float32)
    unit = per_template / np.linalg.norm(per_template, axis=-1, keepdims=True).clip(1e-12)
    mean = unit.mean(axis=1)
    return per_template, mean / np.linalg.norm(mean, axis=-1, keepdims=True).clip(1e-12)


def write_text_embeddings(
    cache_dir: str | Path,
    *,
    labels: list[str],
    templates: list[str],
    per_template: np.ndarray,
    embeddings: np.ndarray,
    attrs: dict,
) -> Path:
    """Atomically replace the cache's text.h5."""
    final = Path(cache_dir) / TEXT_NAME
    partial = final.with_name(f"{final.name}.{os.getpid()}.{secrets.token_hex(3)}.partial")  # shards may race
    with h5py.File(partial, "w") as h5:
        h5.create_dataset("labels", data=np.array(labels, dtype=object), dtype=STR_DTYPE)
        h5.create_dataset("templates", data=np.array(templates, dtype=object), dtype=STR_DTYPE)
        h5.create_dataset("per_template", data=per_template)
        h5.create_dataset("embeddings", data=embeddings)
        h5.attrs.update(plain_attrs(attrs))
    fd = os.open(partial, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.replace(partial, final)
    fd = os.open(final.parent, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    return final


def clip_for_identity(identity: dict, *, device, allow_download: bool = False, cache_dir: str | Path = ""):
    """The CLIP encoder (text tower included) that made a view, from the view's recorded identity:
    the same architecture and weights file (or random-init seed); other weights are refused."""
    from ..config import ClipConfig
    from ..errors import CacheError
    from .backbones import create_backbone

    pretrained = identity.get("weights_path") or identity["pretrained"]
    encoder = create_backbone(
        "clip",
        config=ClipConfig(model=identity["model"], pretrained=pretrained, seed=identity.get("random_init_seed") or 0),
        device=device,
        allow_download=allow_download,
    )
    if identity.get("weights_sha256") and encoder.weights_sha256 != identity["weights_sha256"]:
        raise CacheError(f"weights {pretrained} differ from those that made cache {cache_dir} (sha256 mismatch)")
    return encoder


def read_labels_file(path: str | Path) -> list[str]:
    """One label per line; blank lines and `#` comments ignored; order kept, duplicates dropped."""
    seen: dict[str, None] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        label = line.strip()
        if label and not label.startswith("#"):
            seen.setdefault(label, None)
    return list(seen)
