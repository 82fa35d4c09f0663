"""Assembly stage: a video's chunks (finished rows from decode, encoded rows from the models) and its
`VideoDecoded`, in any order, into one `VideoRows` once every chunk has its rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...cache.layout import STATUS_ABSENT, STATUS_FAILED
from ...cache.thumbnails import THUMBNAIL_KEY
from ..consumers import Chunk
from ..spill import RowSpill
from .messages import ChunkMessage, Outcome, VideoDecoded, VideoRows, VideoTask
from .view_facts import is_spilled

NO_RESULT = "worker ended without a result"
NO_ROWS = "no rows (e.g. fewer than two frames for flow)"


@dataclass
class _VideoState:
    task: VideoTask
    chunks: dict[int, Chunk] = field(default_factory=dict)
    encoded: set[int] = field(default_factory=set)
    n_chunks: int | None = None  # known once the decode side says the video is complete
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    spills: dict[str, RowSpill] = field(default_factory=dict)  # large finished rows, kept on disk
    spilled_upto: dict[str, int] = field(default_factory=dict)  # per spilled view: its last chunk number

    def close(self) -> None:
        for spill in self.spills.values():
            spill.close()
        self.spills.clear()

    @property
    def complete(self) -> bool:
        return self.n_chunks is not None and len(self.encoded) == self.n_chunks


class AssembleStage:
    """Holds the videos in flight. `expect` a task, then feed it `ChunkMessage`s (model inputs are
    registered and wait for their encoded twin; finished rows count at once) and its `VideoDecoded`;
    `ready()` hands over each video whose every chunk has rows. Rows of spilled views (flow fields)
    wait in files under `spill_dir`, named with `spill_prefix`, so the next run can remove leftovers."""

    def __init__(self, *, spill_dir: Path, spill_prefix: str) -> None:
        self.spill_dir, self.spill_prefix = spill_dir, spill_prefix
        self.states: dict[int, _VideoState] = {}
        # videos changed since the last `ready()`: only they can have become complete. Scanning every
        # video in flight instead made a run quadratic in its length (the local engine expects its
        # whole to-do list up front: a million short clips, a million states per message)
        self._touched: set[int] = set()

    def setup(self) -> None:
        """Nothing to load."""

    def expect(self, task: VideoTask) -> None:
        self.states[task.index] = _VideoState(task)

    def __len__(self) -> int:
        return len(self.states)

    def process(self, message: ChunkMessage | VideoDecoded, *, hand_over: bool = True) -> list[VideoRows]:
        """Take one message; returns the videos now complete (usually none or one). With
        `hand_over=False` nothing is returned yet: a caller taking a whole model batch calls `ready()`
        once after it, so the videos that batch completed are handed over in to-do order."""
        state = self.states.get(message.index)
        if state is None:  # a video already given up (stuck decoder): later messages are ignored
            return []
        self._touched.add(message.index)
        if isinstance(message, VideoDecoded):
            state.outcomes, state.info = message.outcomes, message.info
            if message.n_chunks is None:  # the decode worker crashed: drop what it sent
                self._reset(state, 0)
            else:
                state.n_chunks = message.n_chunks
            return self.ready() if hand_over else []
        chunk = message.chunk
        state.chunks[message.chunk_no] = chunk
        if chunk.encoded:
            if is_spilled(chunk.view):
                # a spill file is appended to, so its rows must come in chunk order: they do, as one decode
                # worker makes them in order (only model rows, batched elsewhere, may come out of order)
                number, last = message.chunk_no, state.spilled_upto.get(chunk.view, -1)
                if number < last:
                    raise ValueError(f"{chunk.view} chunk {number} of video {message.index} after chunk {last}")
                state.spilled_upto[chunk.view] = number
                if chunk.view not in state.spills:
                    state.spills[chunk.view] = RowSpill(self.spill_dir, self.spill_prefix)
                state.spills[chunk.view].append(np.asarray(chunk.data))
                chunk.data = np.zeros((len(chunk), 0), np.uint8)  # the rows are on disk now
            state.encoded.add(message.chunk_no)
            return self.ready() if hand_over and state.complete else []
        return []

    def fail(self, index: int, reason: str) -> list[VideoRows]:
        """Every view of video `index` fails with `reason` (its decoder got stuck); what it sent is dropped."""
        state = self.states.get(index)
        if state is None:
            return []
        self._touched.add(index)
        self._reset(state, 0)
        state.info = {}
        state.outcomes = {view: (STATUS_FAILED, reason) for view in state.task.views}
        return self.ready()

    def _reset(self, state: _VideoState, n_chunks: int) -> None:
        state.close()
        state.chunks, state.encoded, state.n_chunks = {}, set(), n_chunks
        state.spilled_upto = {}

    def ready(self) -> list[VideoRows]:
        """The complete videos, in to-do order (task indices are positions in the to-do list)."""
        touched, self._touched = self._touched, set()
        done = sorted(index for index in touched if index in self.states and self.states[index].complete)
        return [self._rows(self.states.pop(index)) for index in done]

    def _rows(self, state: _VideoState) -> VideoRows:
        thumbnail = state.info.pop(THUMBNAIL_KEY, None)  # bytes from the decode pass: a file, not catalog JSON
        info_json = json.dumps(state.info, sort_keys=True, default=str)
        rows, failed, absent = {}, {}, {}
        for view in state.task.views:
            status, reason = state.outcomes.get(view, (STATUS_FAILED, NO_RESULT))
            if status == STATUS_FAILED:
                failed[view] = reason or "failed"
                continue
            if status == STATUS_ABSENT:
                absent[view] = reason or "absent"
                continue
            parts = [state.chunks[c] for c in sorted(state.chunks) if state.chunks[c].view == view]
            if not parts:
                absent[view] = NO_ROWS
                continue
            times = np.concatenate([p.times_s for p in parts])
            if view in state.spills:
                features = state.spills[view].rows()
            else:
                features = np.concatenate([np.asarray(p.data) for p in parts])
            ends = np.concatenate([p.end_times_s for p in parts]) if parts[0].end_times_s is not None else None
            if parts[0].repeats is not None:
                repeats = np.concatenate([p.repeats for p in parts])
                times, features = np.repeat(times, repeats), np.repeat(features, repeats, axis=0)
                ends = np.repeat(ends, repeats) if ends is not None else None
            rows[view] = (features, times, ends)
        return VideoRows(
            state.task, rows, failed, absent, info_json, thumbnail=thumbnail, spills=list(state.spills.values())
        )

    def teardown(self) -> None:
        for state in self.states.values():
            state.close()
        self.states.clear()
