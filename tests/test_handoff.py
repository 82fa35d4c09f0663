"""The decode → model hand-off queue: bounded by messages and by the bytes of model input waiting."""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

from vidcache.extract.consumers import Chunk
from vidcache.extract.engines.handoff import HandOff, message_bytes
from vidcache.extract.stages import ChunkMessage, VideoDecoded


def chunk_message(index: int, nbytes: int, *, tensor: bool = True) -> ChunkMessage:
    data = torch.zeros(nbytes, dtype=torch.uint8) if tensor else np.zeros(nbytes // 4, dtype=np.float32)
    chunk = Chunk(view="clip", times_s=np.zeros(1), end_times_s=None, data=data, encoded=not tensor)
    return ChunkMessage(index=index, chunk_no=0, chunk=chunk)


def decoded(index: int) -> VideoDecoded:
    return VideoDecoded(index=index, n_chunks=1, outcomes={}, info={}, decode_s=0.0)


def test_message_bytes_counts_model_input_only():
    assert message_bytes(chunk_message(0, 1000)) == 1000
    assert message_bytes(chunk_message(0, 4000, tensor=False)) == 4000
    assert message_bytes(decoded(0)) == 0


def test_full_by_count_and_by_bytes_in_order():
    handoff = HandOff(max_messages=4, max_bytes=10_000)
    for i in range(4):
        handoff.put_nowait(decoded(i))
    try:
        handoff.put_nowait(decoded(4))
        raise AssertionError("a fifth message fit a queue of 4")
    except queue.Full:
        pass
    assert [handoff.get_nowait().index for _ in range(4)] == [0, 1, 2, 3]
    assert handoff.empty() and handoff.bytes == 0

    handoff.put_nowait(chunk_message(10, 6_000))
    handoff.put_nowait(chunk_message(11, 6_000))  # under the bound when put: accepted
    try:
        handoff.put_nowait(decoded(12))
        raise AssertionError("put into a queue holding more than max_bytes")
    except queue.Full:
        pass
    assert handoff.get_nowait().index == 10
    handoff.put_nowait(decoded(12))  # 6,000 bytes left: room again
    assert [handoff.get_nowait().index for _ in range(2)] == [11, 12]
    assert handoff.bytes == 0


def test_a_message_bigger_than_the_bound_passes_alone():
    handoff = HandOff(max_messages=4, max_bytes=1_000)
    handoff.put_nowait(chunk_message(0, 50_000))
    assert not handoff.empty()
    got = []
    consumer = threading.Thread(target=lambda: got.append(handoff.get(timeout=5)))
    consumer.start()
    handoff.put(decoded(1), timeout=5)  # blocks until the big one is taken
    consumer.join()
    assert got[0].index == 0 and handoff.get_nowait().index == 1
