"""Sources on object storage and web servers (`s3://`, `gs://`, `http(s)://`...) read through fsspec.

A manifest row may name a URL instead of a local path. Its identity for resume is what the server
says about the object (size, and its ETag, else its last-modified time), so a re-run skips it while the
object is unchanged and redoes it when it is replaced. The decode worker copies the object to a local
temporary file (streamed, never held in memory) and decodes that: FFmpeg seeks freely, any server works
(also one without HTTP range requests), and the file is deleted as soon as the video is done.
fsspec needs its protocol's package: aiohttp for http(s), s3fs for s3 (`pip install vidcache[remote]`).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import PurePosixPath
from urllib.parse import urlsplit

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
PACKAGE_OF = {"http": "aiohttp", "https": "aiohttp", "s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}


def is_url(path: object) -> bool:
    """True for `scheme://...` other than `file://` (a local path, however spelled)."""
    text = str(path)
    return bool(_SCHEME.match(text)) and not text.lower().startswith("file://")


def _filesystem(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        scheme = urlsplit(url).scheme.lower()
        package = PACKAGE_OF.get(scheme, f"the fsspec implementation of {scheme}://")
        raise RuntimeError(f"reading {scheme}:// needs {package} (pip install {package}): {exc}") from None


def url_identity(url: str) -> tuple[int, int] | None:
    """(size, a 56-bit number from the object's ETag or last-modified time) or None when it cannot be
    stat'ed now (missing, unreachable, its package not installed)."""
    try:
        fs, path = _filesystem(url)
        info = fs.info(path)
    except Exception:
        return None
    size = info.get("size")
    keys = ("ETag", "etag", "LastModified", "Last-Modified", "mtime", "updated")
    tag = next((info[k] for k in keys if info.get(k)), "")
    stamp = int.from_bytes(hashlib.sha1(str(tag).encode()).digest()[:7], "big") if tag else 0
    return (int(size) if size is not None else -1), stamp


def fetch_to_temp(url: str) -> str:
    """Copy the object to a local temporary file (same suffix, for FFmpeg's format probing); return its
    path. The caller deletes it. Failures raise OSError/RuntimeError with a one-line reason."""
    fs, path = _filesystem(url)
    suffix = PurePosixPath(urlsplit(url).path).suffix[:16]
    fd, local = tempfile.mkstemp(prefix="vidcache-src-", suffix=suffix, dir=os.environ.get("VIDCACHE_TMPDIR"))
    os.close(fd)
    try:
        fs.get_file(path, local)
    except BaseException:
        os.unlink(local)
        raise
    return local
