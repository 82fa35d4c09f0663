"""Credentials in source URLs never leave the process (issue 25; docs/security.md).

A manifest may name `http://user:password@host/v.mp4` or a presigned URL whose query carries a
signature, an access-key id or a token. The list of such query keys is here and nowhere else.
Three functions use it, each keyed on the URL's structure (parsed with urllib, keys compared
case-insensitively), not on a pattern over free text:

  redact_url        what vidcache stores and shows for a URL: user-info and secret values -> `***`
  url_video_id      the default video_id: no user-info, no secret or signing parameter, so the same
                    object under a freshly signed URL is the same video
  split_basic_auth  the URL to request and the (user, password) to send as an Authorization header

Text that is not a URL vidcache parsed itself (a library's error message, a traceback, a log line)
goes through `redact_text`: the secret values of every URL remembered this run (`remember_url`,
called for each manifest row) are replaced, then a generic pattern catches any other URL credential.
The CLI writes stdout and stderr through `RedactingStream`, so nothing it prints escapes that.
"""

from __future__ import annotations

import re
import threading
from typing import TextIO
from urllib.parse import unquote, unquote_plus, urlsplit, urlunsplit

REDACTED = "***"

# Query parameters whose value is a credential: redacted wherever a URL is stored or shown.
SECRET_QUERY_KEYS: frozenset[str] = frozenset(
    key.lower()
    for key in (
        # AWS SigV4 and SigV2 presigned URLs
        "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "Signature", "AWSAccessKeyId",
        # Google Cloud Storage V4 signed URLs
        "X-Goog-Signature", "X-Goog-Credential",
        # Azure shared access signatures (SAS): the signature and the fields it signs
        "sig", "se", "st", "sp", "sv", "sr", "ss", "srt", "spr", "si", "sdd", "ses",
        "skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid",
        # CloudFront signed URLs
        "Policy", "Key-Pair-Id",
        # common API tokens
        "token", "access_token", "id_token", "refresh_token", "api_key", "apikey", "key", "auth",
        "password", "secret", "client_secret",
    )
)  # fmt: skip

# Not secret, but rewritten each time a URL is signed again: left out of the default video_id only.
SIGNING_QUERY_KEYS: frozenset[str] = frozenset(
    key.lower()
    for key in (
        "X-Amz-Algorithm", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
        "X-Goog-Algorithm", "X-Goog-Date", "X-Goog-Expires", "X-Goog-SignedHeaders", "Expires",
    )
)  # fmt: skip

# A value this short is not worth replacing in free text (it would garble ordinary words); such a
# value is still redacted wherever it sits in a URL.
MIN_REMEMBERED_CHARS = 8

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#'\"<>]+@")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:" + "|".join(re.escape(k) for k in sorted(SECRET_QUERY_KEYS, key=len, reverse=True)) + r")=)"
    r"[^&\s'\"<>#]+"
)
_remembered: set[str] = set()  # the secret values seen this run
_unanchored: list[str] = []  # those without a word window (rare): found with str.find
_WINDOWS = re.compile(rf"(?=([A-Za-z0-9_-]{{{MIN_REMEMBERED_CHARS}}}))")  # where a word window starts
_anchors: dict[str, list[tuple[str, int]]] = {}  # a window of MIN_REMEMBERED_CHARS -> (secret, where)
_lock = threading.Lock()


def _query_key(part: str) -> str:
    return unquote_plus(part.split("=", 1)[0]).strip().lower()


def _netloc_without_userinfo(netloc: str) -> str:
    return netloc.rsplit("@", 1)[1] if "@" in netloc else netloc


def redact_url(url: str) -> str:
    """`url` with its user-info and the values of SECRET_QUERY_KEYS replaced by `***`; everything else
    (scheme, host, port, path, other parameters, their order and spelling) as given."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{_netloc_without_userinfo(netloc)}"
    query = "&".join(
        f"{part.split('=', 1)[0]}={REDACTED}" if _query_key(part) in SECRET_QUERY_KEYS else part
        for part in parts.query.split("&")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_video_id(url: str) -> str:
    """The default video_id of a URL: scheme, host, path and the parameters that are neither secret
    nor part of a signature, so re-signing the URL (a new signature, date, expiry) keeps the id."""
    parts = urlsplit(url)
    kept = [
        part
        for part in parts.query.split("&")
        if part and _query_key(part) not in SECRET_QUERY_KEYS | SIGNING_QUERY_KEYS
    ]
    return urlunsplit((parts.scheme, _netloc_without_userinfo(parts.netloc), parts.path, "&".join(kept), ""))


def split_basic_auth(url: str) -> tuple[str, tuple[str, str] | None]:
    """(the URL without user-info, (user, password) percent-decoded) or (url, None) without user-info."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo = parts.netloc.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, _netloc_without_userinfo(parts.netloc), parts.path, parts.query, parts.fragment))
    return bare, (unquote(user), unquote(password))


def remember_url(url: str) -> None:
    """Let `redact_text` replace each secret value of this URL (its user-info, its password, each
    listed parameter's value; raw and percent-decoded) wherever it shows up."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    secrets = [userinfo, *userinfo.split(":", 1)[1:]] if userinfo else []
    secrets += [p.split("=", 1)[1] for p in parts.query.split("&") if "=" in p and _query_key(p) in SECRET_QUERY_KEYS]
    found = {
        spelling
        for secret in secrets
        for spelling in (secret, unquote(secret), unquote_plus(secret))
        if len(spelling) >= MIN_REMEMBERED_CHARS
    }
    width = MIN_REMEMBERED_CHARS
    with _lock:  # appended in place: a reader in another thread sees a secret or not yet, never half
        for secret in found - _remembered:
            _remembered.add(secret)
            windows = [window.start() for window in _WINDOWS.finditer(secret)]
            if not windows:  # punctuation every few characters (a decoded password): searched for whole
                _unanchored.append(secret)
                continue
            # of its first, middle and last word windows, the one least shared so far: tokens of one
            # issuer share their first characters (a JWT's header)
            offset = min({windows[0], windows[len(windows) // 2], windows[-1]},
                         key=lambda k: len(_anchors.get(secret[k : k + width], ())))  # fmt: skip
            _anchors.setdefault(secret[offset : offset + width], []).append((secret, offset))


def _remembered_spans(text: str) -> list[tuple[int, int]]:
    """Where remembered secrets sit in `text`, overlaps merged. Each secret is indexed by one window of
    MIN_REMEMBERED_CHARS letters, digits, '_' or '-' (its anchor): one dictionary lookup per such
    window of the text, the same cost with 10 or 200,000 secrets remembered."""
    spans = []
    for window in _WINDOWS.finditer(text):  # the regex engine finds where a word window starts
        for secret, offset in _anchors.get(window.group(1), ()):
            start = window.start() - offset
            if start >= 0 and text.startswith(secret, start):
                spans.append((start, start + len(secret)))
    for secret in _unanchored:
        start = text.find(secret)
        while start >= 0:
            spans.append((start, start + len(secret)))
            start = text.find(secret, start + 1)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def redact_text(text: str) -> str:
    """Free text with every remembered secret replaced, then any URL user-info or listed query
    value (the backstop for URLs this run never parsed)."""
    if not text:
        return text
    if _remembered:
        kept, cursor = [], 0
        for start, end in _remembered_spans(text):
            kept += [text[cursor:start], REDACTED]
            cursor = end
        text = "".join(kept) + text[cursor:]
    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    return _SECRET_PARAM.sub(rf"\1{REDACTED}", text)


class RedactingStream:
    """A text stream (stdout, stderr) that passes every write through `redact_text`; the rest (isatty,
    fileno, encoding, flush) is the wrapped stream's, so rich and logging treat it as the original."""

    buffer = None  # no way around the redaction: click writes to `.buffer` when it can find one

    def __init__(self, stream: TextIO):
        self.wrapped = stream

    def write(self, text: str) -> int:
        self.wrapped.write(redact_text(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)


def redact_standard_streams() -> None:
    """From now on, everything this process prints (tables, --json, logs, progress, errors, tracebacks)
    passes through `redact_text`: the CLI and each decode process call it first."""
    import sys

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingStream):
            setattr(sys, name, RedactingStream(stream))
