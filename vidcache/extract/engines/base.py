"""What the coordinator (`Extractor`) hands an engine: the planned videos and everything the stages
need, already set up under the cache's lock (models loaded, views claimed, writer open)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from ...cache.store import CacheWriter
from ..config import ExtractConfig
from ..plan import ExtractSummary
from ..stages.decode import ConsumersFn
from ..stages.messages import VideoTask

ProgressFn = Callable[[ExtractSummary], None]
SPILL_DIR = "tmp"  # under the cache: large finished rows wait here until their video is complete


@dataclass
class ExtractJob:
    tasks: list[VideoTask]
    config: ExtractConfig
    cache_dir: Path
    encoders: dict[str, object]  # model views, as loaded by the coordinator
    device: torch.device
    writer: CacheWriter
    summary: ExtractSummary
    progress: ProgressFn
    started: float  # perf_counter() at the start of the run (summary.seconds counts from it)
    consumers_for: ConsumersFn  # the decode-side work of a list of views, with this process's encoders
    decode_in: str  # local engine: "threads" or "processes" (resolved by the coordinator)


class Engine(Protocol):
    name: str

    def run(self, job: ExtractJob) -> None:
        """Extract every task of `job` into `job.writer` (or shards the coordinator's catalog records),
        updating `job.summary`; the coordinator commits what is left and handles interruptions."""
        ...
