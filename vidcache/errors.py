"""Errors with the exit code the CLI maps them to.

Fatal errors (configuration, input, locking) stop a command; `VideoFailure` is per video and only
marks that video failed in the catalog while the run goes on.
"""

from __future__ import annotations

import errno
import os
import re
import signal
import sys
import threading
import time

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3


class VidcacheError(Exception):
    """A fatal error whose message is one line a user can act on."""

    exit_code = EXIT_USAGE


class ConfigError(VidcacheError):
    """An option or combination of options that cannot work."""


class ManifestError(VidcacheError):
    """The manifest has one or more bad rows; every problem is listed, nothing was written."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        head = f"manifest {path}: {len(problems)} problem(s); fix the rows below and run again"
        super().__init__("\n".join([head, *("  " + p for p in problems)]))


class MissingWeightsError(VidcacheError):
    """Model weights are not available locally and downloading is off."""


class CacheError(VidcacheError):
    """The cache directory is unusable (wrong config, unreadable, corrupt)."""


class CacheLockedError(VidcacheError):
    exit_code = EXIT_LOCKED


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _os_errno(exc: BaseException) -> int | None:
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code > 0:
        return code
    found = re.search(r"errno = (\d+)", str(exc))  # h5py errors often carry the OS errno only in their text
    return int(found.group(1)) if found else None


def write_problem(exc: BaseException) -> str | None:
    """What stopped a write to a cache: "no-space", "not-writable" or None (something else), for an
    OSError, an h5py error or a SQLite error (named on Python >= 3.11, else only in the message)."""
    code, text = _os_errno(exc), str(exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    if code in _NO_SPACE or name == "SQLITE_FULL" or "database or disk is full" in text:
        return "no-space"
    if (
        code in _NOT_WRITABLE
        or name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"))
        or "readonly database" in text
        or "unable to open database file" in text
    ):
        return "not-writable"
    return None


def as_os_error(exc: BaseException) -> BaseException:
    """h5py reports a failed write (full disk, quota) as a RuntimeError with the OS errno only in
    its text: give it back as the OSError it is, so callers handle it like any other write error."""
    code = _os_errno(exc)
    if isinstance(exc, OSError) or code is None:
        return exc
    found = re.search(r"filename = '([^']*)'", str(exc))
    return OSError(code, os.strerror(code), found.group(1) if found else None)


def cache_write_error(cache_dir: object, exc: BaseException) -> CacheError:
    """The one-line error for a cache that cannot be written, naming the directory and the fix
    (raw h5py messages span lines: HDF5 embeds a ctime with its newline)."""
    code = _os_errno(exc)
    lines = str(exc).strip().splitlines()
    detail = os.strerror(code) if code else (lines[0] if lines else type(exc).__name__)
    problem = write_problem(exc)
    if problem == "no-space":
        return CacheError(
            f"no space left on the device of cache {cache_dir}: free space there (or use another --cache) "
            "and run the same command again; finished videos are kept"
        )
    if problem == "not-writable":
        return CacheError(
            f"cache {cache_dir} is not writable ({detail}): make it writable (permissions, owner, or a "
            "read-write mount) or use another --cache; what it holds can still be read"
        )
    return CacheError(f"cannot write to cache {cache_dir} ({detail}); fix that and run again: finished videos are kept")


FAULT_ENV = "VIDCACHE_FAULT"
FAULT_MATCH_ENV = "VIDCACHE_FAULT_MATCH"  # optional: only paths containing this text reach the fault
_fault_hits: dict[str, int] = {}


def fault_point(step: str, path: object = None) -> None:
    """Test hook: crash or fail at a named step of the cache write path. Inert unless the
    VIDCACHE_FAULT environment variable names this step.

    VIDCACHE_FAULT="STEP:ACTION[:N]": from the N-th time (default 1) this process reaches STEP on,
    ACTION happens: `kill` sends SIGKILL to this process (a crash exactly there); an errno name
    (`ENOSPC`, `EROFS`, `EACCES`, ...) raises that OSError for `path`, as the OS would (and keeps
    raising it: a full disk stays full); `hang` blocks the calling thread forever, only on the N-th
    visit, as a decoder stuck inside one FFmpeg call would (nothing Python can interrupt); `stall`
    blocks the calling thread for 600 s with SIGINT and SIGTERM masked in it, as one long C call
    (CUDA initialisation, a cold import) holds off a signal handler in the thread it runs in. Steps:
      decode-open     decode: before a worker opens a video file (video or audio pass)
      cache-write     runner: the write test in the cache directory, before models load
      load-models     runner: before the views' models are created and loaded
      shard-add       store: before a finished video's rows go into the open .partial shard
      shard-commit    store: before the shard's index is written, fsynced and renamed
      shard-renamed   store: after the rename and directory fsync, before the catalog transaction
      catalog-commit  catalog: inside the shard's catalog transaction, just before COMMIT
      train-epoch     train: before each epoch (after the previous one's checkpoints are saved)
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec or spec.split(":", 1)[0] != step:
        return
    match = os.environ.get(FAULT_MATCH_ENV)
    if match and match not in str(path):  # only at this file (decode processes count visits each)
        return
    _, action, *nth = spec.split(":")
    _fault_hits[step] = hits = _fault_hits.get(step, 0) + 1
    if hits < int(nth[0] if nth else 1):
        return
    if action == "hang":
        if hits == int(nth[0] if nth else 1):
            print(f"vidcache fault: {step} hangs here ({FAULT_ENV})", file=sys.stderr, flush=True)
            threading.Event().wait()  # a signal still interrupts the main thread here
        return
    if action == "stall":
        print(f"vidcache fault: {step} stalls here ({FAULT_ENV})", file=sys.stderr, flush=True)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            time.sleep(600)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    code = getattr(errno, action)
    raise OSError(code, os.strerror(code), None if path is None else str(path))


class VideoFailure(Exception):
    """One video cannot be extracted; `reason` is stored in the catalog."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class ViewAbsent(Exception):
    """The video has no stream for a view (e.g. no audio track): recorded as "absent", not failed."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)
