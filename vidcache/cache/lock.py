"""Advisory locks so two extracts never write the same part of a cache.

An unsharded extract takes the cache lock exclusively; `--shard K/N` takes it shared plus an
exclusive lock for its own K/N, so different shards of one job run side by side. flock is released
by the kernel when a process dies, so a `kill -9` never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..errors import CacheLockedError, cache_write_error
from .layout import LOCK_DIR


class ExtractLock:
    def __init__(self, cache_dir: str | Path, *, shard_index: int = 0, shard_count: int = 1):
        self.cache_dir = Path(cache_dir)
        self.shard_index, self.shard_count = shard_index, shard_count
        self._fds: list[int] = []

    def _take(self, path: Path, mode: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            try:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            finally:
                os.close(fd)
            info = f" ({holder})" if holder else ""
            raise CacheLockedError(
                f"cache {self.cache_dir} is locked by another running extract{info}; "
                "wait for it to finish, or use a different --shard K/N or --cache"
            ) from None
        if mode == fcntl.LOCK_EX:
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%FT%T%z")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fds.append(fd)

    def acquire(self) -> ExtractLock:
        lock_dir = self.cache_dir / LOCK_DIR
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
            if self.shard_count == 1:
                self._take(lock_dir / "extract.lock", fcntl.LOCK_EX)
            else:
                self._take(lock_dir / "extract.lock", fcntl.LOCK_SH)
                self._take(lock_dir / f"extract-{self.shard_index}-of-{self.shard_count}.lock", fcntl.LOCK_EX)
        except OSError as exc:  # a read-only cache (the lock file opens read-write): one line, not a traceback
            self.release()
            raise cache_write_error(self.cache_dir, exc) from None
        except BaseException:
            self.release()  # e.g. the per-shard lock is held: do not keep the shared one
            raise
        return self

    def release(self) -> None:
        for fd in reversed(self._fds):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> ExtractLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
