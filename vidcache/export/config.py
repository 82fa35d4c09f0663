"""The options of `vidcache export` (the CLI flags are generated from them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..fields import check, setting


@dataclass(frozen=True)
class ExportConfig:
    view: str = setting("clip", help="The cache view to export.")
    format: Literal["npy", "parquet", "webdataset"] = setting(
        "npy",
        help="npy: one VIDEO.npy per video (video_features' layout) and videos.jsonl; parquet: one table "
        "VIEW.parquet; webdataset: VIEW-NNNNNN.tar shards of KEY.npy + KEY.json samples.",
    )
    rows: Literal["all", "pooled"] = setting(
        "all", help="Every row of a video, or one mean-pooled float32 row per video."
    )
    videos_per_shard: int = setting(1000, help="Videos per webdataset tar shard.")

    def __post_init__(self) -> None:
        check(self, "videos_per_shard", self.videos_per_shard >= 1, "must be >= 1")
