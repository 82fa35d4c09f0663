"""Names and constants of the on-disk cache layout (see docs/cache-format.md)."""

from __future__ import annotations

from pathlib import Path

SCHEMA_VERSION = 1
CATALOG_NAME = "catalog.sqlite"
SHARD_DIR = "shards"
SHARD_SUFFIX = ".h5"
PARTIAL_SUFFIX = ".partial"
TEXT_NAME = "text.h5"
TEXT_MEMO_NAME = "text_memo.sqlite"  # `search --text`: prompts' text-tower embeddings (cache/textmemo.py)
TEXT_TOWER_DIR = "text_towers"  # CLIP text towers exported for NumPy by extract or a first `search --text`
LOCK_DIR = "locks"
TARGET_CHUNK_BYTES = 1 << 20  # about 1 MiB of feature rows per HDF5 chunk

STATUS_DONE = "done"
STATUS_FAILED = "failed"
STATUS_ABSENT = "absent"  # the video has no stream for this view (e.g. no audio)


def catalog_path(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / CATALOG_NAME


def shard_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / SHARD_DIR


def text_memo_path(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / TEXT_MEMO_NAME


def text_tower_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / TEXT_TOWER_DIR / f"{key}.safetensors"


def rows_per_chunk(feature_dim: int, itemsize: int) -> int:
    return max(1, TARGET_CHUNK_BYTES // max(1, feature_dim * itemsize))


def failure_text(reasons: dict[str, str], *, several_views: bool) -> str:
    """One video's failure as `extract --json` and `status --json` report it under `failures`."""
    return "; ".join(f"{view}: {reason}" if several_views else reason for view, reason in reasons.items())


def failed_item(video_id: str, view: str, reason: str) -> dict[str, str]:
    """One failed (video, view) as `failed_items` lists it, in `extract --json` and `status --json`."""
    return {"video_id": video_id, "view": view, "reason": reason}
