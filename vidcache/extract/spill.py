"""Large finished rows of one video (flow fields) wait on disk, not in RAM, until the video is
complete and can be written to a shard contiguously. A 10-minute video at 1 fps has 600 flow
fields (19 MiB at 128 px); at higher flow rates or longer videos that would grow without bound."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import numpy as np

SPILL_SUFFIX = ".rows"


class RowSpill:
    """Rows [n, D] of one (video, view) appended to a temporary file, read back memory-mapped."""

    def __init__(self, directory: Path, prefix: str):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{prefix}-{os.getpid()}-{secrets.token_hex(4)}{SPILL_SUFFIX}"
        self._handle = open(self.path, "wb")
        self.dtype: np.dtype | None = None
        self.row_dim = 0
        self.count = 0

    def append(self, rows: np.ndarray) -> None:
        if self.dtype is None:
            self.dtype, self.row_dim = rows.dtype, rows.shape[1]
        elif rows.dtype != self.dtype or rows.shape[1] != self.row_dim:
            raise ValueError(f"spill {self.path}: rows {rows.dtype}{rows.shape} after {self.dtype}[*, {self.row_dim}]")
        self._handle.write(np.ascontiguousarray(rows).tobytes())
        self.count += len(rows)

    def rows(self) -> np.ndarray:
        self._handle.close()
        if self.count == 0 or self.dtype is None:
            return np.zeros((0, self.row_dim), self.dtype or np.uint8)
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.count, self.row_dim))

    def close(self) -> None:
        self._handle.close()
        self.path.unlink(missing_ok=True)


def remove_spills(directory: Path, prefix: str) -> int:
    """Spill files of a killed run with this writer prefix (their lock is held by the caller)."""
    removed = 0
    for path in directory.glob(f"{prefix}-*{SPILL_SUFFIX}"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed
