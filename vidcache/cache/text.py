"""CLIP text embeddings of a label vocabulary with prompt templates, stored as `text.h5`."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import h5py
import numpy as np

from .layout import TEXT_NAME
from .shard import STR_DTYPE, plain_attrs

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


def read_labels_file(path: str | Path) -> list[str]:
    """One label per line; blank lines and `#` comments ignored; order kept, duplicates dropped."""
    seen: dict[str, None] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        label = line.strip()
        if label and not label.startswith("#"):
            seen.setdefault(label, None)
    return list(seen)


MADE_FROM_MANIFEST = "manifest labels"  # text.h5's `made_from`: the cached manifest's vocabulary
MADE_FROM_FILE = "labels file"  # `embed-text --labels-file`: a label corpus, a superset of the manifest's


def text_labels(cache_dir: str | Path) -> tuple[list[str], str] | None:
    """(labels, made_from) of the cache's text.h5, None when there is none (or it cannot be read)."""
    path = Path(cache_dir) / TEXT_NAME
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as h5:
            labels = [v.decode() if isinstance(v, bytes) else str(v) for v in h5["labels"][()]]
            made_from = h5.attrs.get("made_from", MADE_FROM_MANIFEST)
    except Exception:
        return None
    return labels, made_from.decode() if isinstance(made_from, bytes) else str(made_from)


def stale_text_message(cache_dir: str | Path, vocabulary: list[str]) -> str | None:
    """Why the cache's text embeddings no longer match the manifest's labels (`vocabulary`, as the
    catalog holds them now), with the command that refreshes them; None when they match. Text made
    from the manifest must hold exactly its labels; text made from a labels file at least them."""
    found = text_labels(cache_dir)
    if found is None or not vocabulary:
        return None
    labels, made_from = found
    new = sorted(set(vocabulary) - set(labels))
    gone = sorted(set(labels) - set(vocabulary)) if made_from == MADE_FROM_MANIFEST else []
    if not new and not gone:
        return None
    what = "; ".join(
        part
        for part in (
            f"not embedded: {', '.join(new[:5])}{' ...' if len(new) > 5 else ''}" if new else "",
            f"no longer in the manifest: {', '.join(gone[:5])}{' ...' if len(gone) > 5 else ''}" if gone else "",
        )
        if part
    )
    again = "" if made_from == MADE_FROM_MANIFEST else " --labels-file FILE (a file that has the new labels)"
    return (
        f"the text embeddings of cache {cache_dir} ({TEXT_NAME}, from the {made_from}) are older than the "
        f"manifest's labels ({what}); refresh them with `vidcache embed-text --cache {cache_dir}{again}`"
    )
