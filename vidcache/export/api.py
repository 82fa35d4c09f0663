"""Export one view of a cache: the videos, their rows, the files they go to, what is already done."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache.reader import Cache
from ..errors import ConfigError
from .config import ExportConfig
from .files import ExportState
from .writers import FORMATS, VideoRows

EXPORT_VERSION = 1  # bump when a format's bytes change: an earlier export's files are then rewritten


@dataclass
class ExportSummary:
    cache: str
    view: str
    format: str
    rows_mode: str
    out: str
    videos: int = 0
    rows: int = 0
    files_written: list[str] = field(default_factory=list)
    files_kept: list[str] = field(default_factory=list)  # written by an earlier export from the same rows
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _pooled(rows: VideoRows) -> VideoRows:
    """One float32 row per video: the mean of its rows, spanning its first start to its last end."""
    features = rows.features.reshape(len(rows.features), int(np.prod(rows.features.shape[1:]))).astype(np.float32)
    mean = features.mean(axis=0, keepdims=True) if len(features) else np.full((1, features.shape[1]), np.nan, "f4")
    start = rows.starts_s[:1] if len(rows.starts_s) else np.array([np.nan])
    end = rows.ends_s[-1:] if len(rows.ends_s) else np.array([np.nan])
    return VideoRows(rows.video_id, mean.astype(np.float32), start, end, rows.count)


def _digest(config: ExportConfig, identity: dict, videos: list[tuple[str, int, int]]) -> str:
    """What a unit's bytes are made from: the options, the view's identity, each video's row count and CRC32."""
    text = json.dumps([EXPORT_VERSION, dataclasses.asdict(config), identity, videos], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class _Source:
    """Rows of the exported view, read once per video; their times kept for the index files."""

    def __init__(self, cache: Cache, config: ExportConfig):
        self._cache, self._config = cache, config
        self.pooled = config.rows == "pooled"
        self._times: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def rows(self, video_id: str) -> VideoRows:
        features, starts = self._cache.read(video_id, self._config.view)
        ends = self._cache.spans(video_id, self._config.view)[:, 1]
        rows = VideoRows(video_id, features, starts, ends, len(features))
        if self.pooled:
            rows = _pooled(rows)
        self._times[video_id] = (rows.starts_s, rows.ends_s)
        return rows

    def times(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        if video_id not in self._times:
            self.rows(video_id)
        return self._times[video_id]


def export_view(cache_dir: str | Path, out_dir: str | Path, config: ExportConfig | None = None) -> ExportSummary:
    """Write `config.view` of the cache at `cache_dir` under `out_dir` in `config.format`; files an
    earlier export wrote from the same rows and options are kept, every other file is replaced
    atomically (a killed export leaves only complete files, and `*.partial` ones the next removes)."""
    config = config or ExportConfig()
    started = time.perf_counter()
    out = Path(out_dir)
    summary = ExportSummary(str(cache_dir), config.view, config.format, config.rows, str(out))
    with Cache(cache_dir) as cache:
        if config.view not in cache.views():
            raise ConfigError(
                f"--view {config.view}: cache {cache_dir} has no such view; views: {', '.join(cache.views()) or 'none'}"
            )
        identity = cache.view_info(config.view)
        stored = cache.row_checksums(config.view)
        video_ids = sorted(stored)
        summary.videos, summary.rows = len(video_ids), sum(count for count, _ in stored.values())
        source = _Source(cache, config)
        writer = FORMATS[config.format]
        state = ExportState.open(out)
        try:
            for unit in writer.units(config.view, video_ids, videos_per_shard=config.videos_per_shard):
                digest = _digest(config, identity, [(v, *stored[v]) for v in unit.video_ids])
                if state.done(unit.name, digest):
                    summary.files_kept.append(unit.name)
                    continue
                state.write(unit.name, digest, lambda path, unit=unit: writer.write(path, unit, source))
                summary.files_written.append(unit.name)
        finally:
            state.close()
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary
