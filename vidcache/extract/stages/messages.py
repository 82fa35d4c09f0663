"""The typed messages that flow between the extraction stages (decode → model → assembly → write).

Every engine (threads in this process, Ray tasks and actors on a cluster) moves these same objects,
so a stage never knows which engine runs it. They are plain dataclasses and pickle, because the
decode-process and Ray engines send them between processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...cache.store import SourceStat
from ...manifest import VideoEntry
from ..consumers import Chunk

Outcome = tuple[str, str | None]  # (status, reason): done / absent / failed, and why
Rows = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # (features, start times s, end times s or None)


@dataclass(frozen=True)
class VideoTask:
    """One video to extract: its place in the run's to-do list, and the views it still needs."""

    index: int
    entry: VideoEntry
    source: SourceStat | None
    views: tuple[str, ...]


@dataclass
class ChunkMessage:
    """Chunk number `chunk_no` (decode order) of video `index`: model input, or finished rows when
    `chunk.encoded` (flow, motion: computed on the decode side)."""

    index: int
    chunk_no: int
    chunk: Chunk


@dataclass
class VideoDecoded:
    """The decode side is done with video `index`: it sent `n_chunks` chunks (None: the decode worker
    crashed, so whatever it sent is dropped), with one outcome per view and the per-video facts."""

    index: int
    n_chunks: int | None
    outcomes: dict[str, Outcome]
    info: dict
    decode_s: float


DecodeMessage = ChunkMessage | VideoDecoded


@dataclass
class VideoRows:
    """One finished video, assembled: its rows per view, and the views that failed or are absent.
    `spills` own the on-disk rows some views point into; `close()` releases them once written."""

    task: VideoTask
    rows: dict[str, Rows]
    failed: dict[str, str]
    absent: dict[str, str]
    info_json: str
    thumbnail: bytes | None = None
    spills: list = field(default_factory=list)

    @property
    def video_id(self) -> str:
        return self.task.entry.video_id

    def close(self) -> None:
        for spill in self.spills:
            spill.close()
        self.spills.clear()
