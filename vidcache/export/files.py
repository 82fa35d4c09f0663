"""Atomic export files and the journal that makes an export resumable.

Each file is written under `NAME.partial`, fsynced and renamed, then one line `{"file", "digest"}` is
appended to `.vidcache-export.jsonl`: a file is kept by the next export only when it exists and its
last journal line has the digest of the rows and options it would be written from now."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError

JOURNAL = ".vidcache-export.jsonl"
PARTIAL = ".partial"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ExportState:
    def __init__(self, out: Path, digests: dict[str, str]):
        self.out = out
        self._digests = digests
        self._journal = open(out / JOURNAL, "a", encoding="utf-8")

    @classmethod
    def open(cls, out: Path) -> ExportState:
        try:
            out.mkdir(parents=True, exist_ok=True)
            for stale in out.glob(f"*{PARTIAL}"):  # a killed export's unfinished file
                stale.unlink()
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot write there ({exc.strerror}); give a writable folder") from None
        digests: dict[str, str] = {}
        journal = out / JOURNAL
        if journal.exists():
            for line in journal.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    digests[str(record["file"])] = str(record["digest"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line a kill cut short: its file is simply written again
        return cls(out, digests)

    def done(self, name: str, digest: str) -> bool:
        return self._digests.get(name) == digest and (self.out / name).is_file()

    def write(self, name: str, digest: str, fill: Callable[[Path], None]) -> None:
        """`fill(path)` writes the file's bytes to `path`; it becomes `name` only once complete."""
        final = self.out / name
        partial = final.with_name(final.name + PARTIAL)
        try:
            fill(partial)
            _fsync(partial)
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        self._journal.write(json.dumps({"file": name, "digest": digest}) + "\n")
        self._journal.flush()
        self._digests[name] = digest

    def close(self) -> None:
        self._journal.close()
