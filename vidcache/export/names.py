"""File names and keys made from video ids: never a path separator, never `..`, never a clash."""

from __future__ import annotations

import hashlib
import re

_MAX_STEM = 120  # long ids are cut (the hash keeps them apart): file systems allow 255 bytes per name


def _digest(video_id: str) -> str:
    return hashlib.sha1(video_id.encode()).hexdigest()[:10]


def safe_stem(video_id: str) -> str:
    """A file name stem for `video_id`: the id itself where it is a plain name (`clip01` → `clip01`),
    else its safe characters plus a hash of the whole id (`a/clip.mp4` → `a_clip.mp4-<hash>`), so
    `../x` cannot leave the folder and two ids never share a file."""
    stem = re.sub(r"[^\w.\-]", "_", video_id).lstrip(".")[:_MAX_STEM]
    return stem if stem == video_id and stem else f"{stem}-{_digest(video_id)}"


def webdataset_key(video_id: str) -> str:
    """A webdataset sample key: webdataset splits a member name at its first dot and at `/`, so a key
    holds neither (`a/clip.mp4` → `a_clip_mp4-<hash>`)."""
    key = re.sub(r"[^\w\-]", "_", video_id)[:_MAX_STEM]
    return key if key == video_id and key else f"{key}-{_digest(video_id)}"
