"""The three export layouts. Each splits the videos into units (files) and writes one unit's bytes."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .names import safe_stem, webdataset_key

_PARQUET_VIDEOS_PER_GROUP = 64  # videos per parquet row group: bounded memory on any cache size


@dataclass(frozen=True)
class VideoRows:
    video_id: str
    features: np.ndarray  # [T, ...] as the cache reads them (pooled: [1, D] float32)
    starts_s: np.ndarray
    ends_s: np.ndarray
    count: int  # rows in the cache (pooled rows stand for this many)


@dataclass(frozen=True)
class Unit:
    name: str  # the file, relative to the export folder
    video_ids: tuple[str, ...]
    kind: str = "data"


class RowSource(Protocol):
    pooled: bool  # one mean row per video (`--rows pooled`)

    def rows(self, video_id: str) -> VideoRows: ...

    def times(self, video_id: str) -> tuple[np.ndarray, np.ndarray]: ...


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]  # JSON writes float64 exactly (shortest repr), read back bit for bit


class NpyFormat:
    """video_features' layout: `STEM.npy` per video ([T, D] rows as stored), and `videos.jsonl`
    mapping each video_id to its file, row count and row times."""

    INDEX = "videos.jsonl"

    def units(self, view: str, video_ids: list[str], *, videos_per_shard: int) -> list[Unit]:
        units = [Unit(f"{safe_stem(v)}.npy", (v,)) for v in video_ids]
        return [*units, Unit(self.INDEX, tuple(video_ids), kind="index")]

    def write(self, path: Path, unit: Unit, source: RowSource) -> None:
        if unit.kind == "data":
            with open(path, "wb") as f:
                np.save(f, source.rows(unit.video_ids[0]).features, allow_pickle=False)
            return
        with open(path, "w", encoding="utf-8") as f:
            for video_id in unit.video_ids:
                starts, ends = source.times(video_id)
                record = {"video_id": video_id, "file": f"{safe_stem(video_id)}.npy", "rows": len(starts)}
                f.write(json.dumps({**record, "t_start_s": _floats(starts), "t_end_s": _floats(ends)}) + "\n")


class ParquetFormat:
    """One table `VIEW.parquet`: video_id, row, t_start_s, t_end_s and the row's features as a
    fixed-size list (float16 as stored, float32 when pooled); `--rows pooled` gives one row per video
    with `rows` = how many cache rows it pools."""

    def units(self, view: str, video_ids: list[str], *, videos_per_shard: int) -> list[Unit]:
        return [Unit(f"{safe_stem(view)}.parquet", tuple(video_ids))]

    def write(self, path: Path, unit: Unit, source: RowSource) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        try:
            for lo in range(0, max(1, len(unit.video_ids)), _PARQUET_VIDEOS_PER_GROUP):
                chunk = unit.video_ids[lo : lo + _PARQUET_VIDEOS_PER_GROUP]
                table = self._table(pa, [source.rows(v) for v in chunk], pooled=source.pooled)
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()

    @staticmethod
    def _table(pa, videos: list[VideoRows], *, pooled: bool):
        flat = [v.features.reshape(len(v.features), int(np.prod(v.features.shape[1:]))) for v in videos]
        counts = [len(f) for f in flat]
        if flat:
            values = np.concatenate(flat)
            features = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])
        else:  # a view with no videos: an empty table, still with every column
            features = pa.array([], pa.list_(pa.float32()))
        columns = {
            "video_id": pa.array(
                [v.video_id for v, n in zip(videos, counts, strict=True) for _ in range(n)], pa.string()
            ),
            "row": pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in counts] or [np.zeros(0, np.int32)])),
            "t_start_s": pa.array(np.concatenate([v.starts_s for v in videos] or [np.zeros(0)]).astype(np.float64)),
            "t_end_s": pa.array(np.concatenate([v.ends_s for v in videos] or [np.zeros(0)]).astype(np.float64)),
            "features": features,
        }
        if pooled:
            columns["rows"] = pa.array(np.array([v.count for v in videos], dtype=np.int64))
        row_shape = list(videos[0].features.shape[1:]) if videos else []
        return pa.table(columns).replace_schema_metadata({"vidcache_row_shape": json.dumps(row_shape)})


class WebdatasetFormat:
    """Tar shards `VIEW-NNNNNN.tar` in the webdataset layout: per video, `KEY.npy` (its rows) and
    `KEY.json` (video_id, view, rows, t_start_s, t_end_s); KEY is the video id made safe for
    webdataset (`names.webdataset_key`)."""

    def units(self, view: str, video_ids: list[str], *, videos_per_shard: int) -> list[Unit]:
        return [
            Unit(f"{safe_stem(view)}-{i // videos_per_shard:06d}.tar", tuple(video_ids[i : i + videos_per_shard]))
            for i in range(0, len(video_ids), videos_per_shard)
        ]

    def write(self, path: Path, unit: Unit, source: RowSource) -> None:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            for video_id in unit.video_ids:
                rows = source.rows(video_id)
                key = webdataset_key(video_id)
                buffer = io.BytesIO()
                np.save(buffer, rows.features, allow_pickle=False)
                meta = {"video_id": video_id, "rows": len(rows.features), "cache_rows": rows.count}
                meta |= {"t_start_s": _floats(rows.starts_s), "t_end_s": _floats(rows.ends_s)}
                for name, data in ((f"{key}.npy", buffer.getvalue()), (f"{key}.json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(data), 0o644, 0  # same rows, same bytes
                    tar.addfile(info, io.BytesIO(data))


FORMATS: dict[str, NpyFormat | ParquetFormat | WebdatasetFormat] = {
    "npy": NpyFormat(),
    "parquet": ParquetFormat(),
    "webdataset": WebdatasetFormat(),
}
