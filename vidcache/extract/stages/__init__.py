"""Extraction as stages: decode → per-view model batches → row assembly → write.

Each stage is a small class with `setup / process / teardown` that takes and returns the typed
messages of `messages.py`, knows nothing of threads, processes or Ray, and can be driven alone in a
test. Engines (`vidcache.extract.engines`) decide where each stage runs and move the messages.
"""

from .assemble import AssembleStage
from .decode import DecodeStage
from .messages import ChunkMessage, DecodeMessage, VideoDecoded, VideoRows, VideoTask
from .model import ModelStage
from .view_facts import counts_frames, is_spilled, rows_in
from .write import VideoCounts, WriteStage, account

__all__ = [
    "AssembleStage",
    "ChunkMessage",
    "DecodeMessage",
    "DecodeStage",
    "ModelStage",
    "VideoCounts",
    "VideoDecoded",
    "VideoRows",
    "VideoTask",
    "WriteStage",
    "account",
    "counts_frames",
    "is_spilled",
    "rows_in",
]
