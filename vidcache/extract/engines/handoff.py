"""The queue from the decode workers to the model stage, bounded by messages and by bytes.

A model batch (64 frames by default) is encoded while the decode workers go on: the queue must hold
more than a batch's worth of short clips or the workers stop at every batch. On 2 s clips a bound of
4 messages (2 videos) kept both decode threads blocked on a full queue 42 % of the time while the
model ran, and the model stage waiting on an empty one 45 % (py-spy, issue 29). Long videos send
big chunks, so the bytes of model input waiting are bounded too: memory does not grow with length.
"""

from __future__ import annotations

import queue

import torch

from ..stages import ChunkMessage

HANDOFF_MESSAGES = 64  # messages waiting at most: ~32 short clips (a chunk and a "decoded" message each)
HANDOFF_BYTES = 32 * 2**20  # model input waiting at most, whatever the messages' sizes


def message_bytes(message: object) -> int:
    """Bytes of model input (or finished rows) a message holds; 0 for the small per-video ones."""
    if not isinstance(message, ChunkMessage):
        return 0
    data = message.chunk.data
    if isinstance(data, torch.Tensor):
        return data.element_size() * data.nelement()
    return int(getattr(data, "nbytes", 0))


class HandOff(queue.Queue):
    """`queue.Queue` that is also full once the messages in it hold `max_bytes` (a single message
    bigger than that still passes, alone)."""

    def __init__(self, *, max_messages: int = HANDOFF_MESSAGES, max_bytes: int = HANDOFF_BYTES) -> None:
        super().__init__(maxsize=max_messages)
        self.max_bytes = max_bytes
        self.bytes = 0

    def _put(self, item: object) -> None:
        self.bytes += message_bytes(item)
        super()._put(item)

    def _get(self) -> object:
        item = super()._get()
        self.bytes -= message_bytes(item)
        return item

    def _qsize(self) -> int:
        # Queue.put waits while _qsize() >= maxsize and get while it is 0: report "full" once the
        # bytes reach the bound, the true count otherwise
        count = len(self.queue)
        return self.maxsize if count and self.bytes >= self.max_bytes else count
