"""Sources on web servers and object storage (`http(s)://`, `s3://`, `gs://`...).

A manifest row may name a URL instead of a local path. Its identity for resume is what the server
says about the object (size, and its ETag, else its last-modified time), so a re-run skips it while the
object is unchanged and redoes it when it is replaced. The decode worker copies the object to a local
temporary file (streamed, never held in memory) and decodes that: FFmpeg seeks freely, any server works
(also one without HTTP range requests), and the file is deleted as soon as the video is done.
http(s) is read with the standard library; other schemes through fsspec, which needs the protocol's
package: s3fs for s3, gcsfs for gs (`pip install 'vidcache[remote]'`).

`http://user:password@host/...` is sent as HTTP basic auth (an Authorization header that is not
passed on to another host when the server redirects); a refusal (401/403) is a `CredentialsRefused`
naming the URL with its credentials redacted (vidcache.redact).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from .redact import redact_url, split_basic_auth

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
PACKAGE_OF = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
HTTP_TIMEOUT_S = 60.0  # per network operation (connect, each read), not for the whole download


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


def _is_http(url: str) -> bool:
    return urlsplit(url).scheme.lower() in ("http", "https")


class CredentialsRefused(PermissionError):
    """The server answered 401/403: the message is one line naming the redacted URL."""


def _refused(url: str, code: int, reason: str) -> CredentialsRefused:
    _, auth = split_basic_auth(url)
    sent = "the user:password of the URL" if auth else "the URL's signature or token, if any"
    return CredentialsRefused(  # the URL is followed by a space: a redacted value ends there
        f"the server refused the credentials for {redact_url(url)} (HTTP {code} {reason}; it was sent {sent}): "
        "fix them, or sign the URL again if it expired"
    )


def _http_request(url: str, method: str = "GET", headers: dict[str, str] | None = None):
    """A urllib Request for `url` with its user-info moved into a basic-auth header: urllib would
    take `user:password@host` for the host name. The header is "unredirected": a redirect to another
    host does not carry the credentials along."""
    import base64
    import urllib.request

    bare, auth = split_basic_auth(url)
    request = urllib.request.Request(bare, method=method, headers=headers or {})
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return request


def _http_info(url: str) -> dict:
    """What a web server says about a URL (HEAD; a GET of its first byte where HEAD is refused), with
    the standard library: http(s) needs no extra package."""
    import urllib.error
    import urllib.request

    def ask(method: str, headers: dict[str, str]) -> dict:
        request = _http_request(url, method, headers)
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            info = {k: v for k, v in response.headers.items()}
            size = response.headers.get("Content-Length")
            ranged = response.headers.get("Content-Range", "")
            if ranged and "/" in ranged:
                size = ranged.rsplit("/", 1)[1]
            info["size"] = int(size) if size and size.isdigit() else None
            return info

    try:
        return ask("HEAD", {})
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise FileNotFoundError(redact_url(url)) from None
        if exc.code == 401:
            raise _refused(url, exc.code, exc.reason) from None
        if exc.code not in (403, 405, 501):  # a URL presigned for GET only answers HEAD with 403
            raise
    try:
        return ask("GET", {"Range": "bytes=0-0"})
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise _refused(url, exc.code, exc.reason) from None
        raise


def url_identity(url: str) -> tuple[int, int] | None:
    """(size, a 56-bit number from the object's ETag or last-modified time) or None when it cannot be
    stat'ed now (missing, unreachable, its package not installed)."""
    try:
        if _is_http(url):
            info = _http_info(url)
        else:
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
    suffix = PurePosixPath(urlsplit(url).path).suffix[:16]
    fd, local = tempfile.mkstemp(prefix="vidcache-src-", suffix=suffix, dir=os.environ.get("VIDCACHE_TMPDIR"))
    os.close(fd)
    try:
        if _is_http(url):
            _http_get(url, local)
        else:
            fs, path = _filesystem(url)
            fs.get_file(path, local)
    except BaseException:
        os.unlink(local)
        raise
    return local


def _http_get(url: str, local: str) -> None:
    import shutil
    import urllib.error
    import urllib.request

    try:
        request = _http_request(url)
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response, open(local, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise FileNotFoundError(redact_url(url)) from None
        if exc.code in (401, 403):
            raise _refused(url, exc.code, exc.reason) from None
        raise OSError(f"HTTP {exc.code} {exc.reason}") from None
