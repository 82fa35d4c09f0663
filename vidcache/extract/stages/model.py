"""Model stage: one view's model inputs batched across videos, encoded, sent on as finished rows."""

from __future__ import annotations

import dataclasses
import time

import torch

from ...device import gather
from .messages import ChunkMessage
from .view_facts import rows_in


class ModelStage:
    """Collects one view's model-input chunks (from any number of videos) into batches of at most
    `batch_rows` rows, and encodes a batch when the next chunk would not fit, when it is full, or on
    `flush()`. Returns the same chunks with `data` replaced by the encoded rows (`encoded=True`)."""

    def __init__(self, view: str, encoder, *, device: torch.device | None, batch_rows: int) -> None:
        self.view, self.encoder, self.device, self.batch_rows = view, encoder, device, batch_rows
        self.pending: list[ChunkMessage] = []
        self.model_s = 0.0  # time inside encoder.encode, summed over this stage's batches

    def setup(self) -> None:
        """The encoder is loaded by whoever runs the stage (the coordinator or a Ray actor)."""

    def pending_rows(self) -> int:
        return sum(rows_in(self.view, m.chunk) for m in self.pending)

    def process(self, message: ChunkMessage) -> list[ChunkMessage]:
        """Add one chunk; returns the chunks whose rows were encoded by this call (maybe none)."""
        out: list[ChunkMessage] = []
        if self.pending and self.pending_rows() + rows_in(self.view, message.chunk) > self.batch_rows:
            out += self.flush()
        self.pending.append(message)
        if self.pending_rows() >= self.batch_rows:
            out += self.flush()
        return out

    def flush(self) -> list[ChunkMessage]:
        """Encode whatever is pending, as one batch."""
        items, self.pending = self.pending, []
        if not items:
            return []
        started = time.perf_counter()
        features = self.encoder.encode(gather([m.chunk.data for m in items], self.device))
        self.model_s += time.perf_counter() - started
        out, offset = [], 0
        for message in items:
            n = len(message.chunk.data)
            chunk = dataclasses.replace(message.chunk, data=features[offset : offset + n], encoded=True)
            out.append(ChunkMessage(message.index, message.chunk_no, chunk))
            offset += n
        return out

    def drop(self, index: int) -> None:
        """Forget the pending chunks of video `index` (its decode worker crashed or got stuck)."""
        self.pending = [m for m in self.pending if m.index != index]

    def teardown(self) -> None:
        self.pending = []
