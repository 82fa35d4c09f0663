"""Writing one HDF5 shard: ragged rows of many videos per view, made visible atomically.

A shard is written under a `.partial` name, flushed, fsynced and renamed; readers and the catalog
only ever see complete shards.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from isal.isal_zlib import crc32  # zlib's CRC32, the same values, 4-10x faster (ISA-L)

from ..version import __version__
from .layout import PARTIAL_SUFFIX, SCHEMA_VERSION, SHARD_SUFFIX, TARGET_CHUNK_BYTES, rows_per_chunk

_BROKEN_FILES: list = []  # h5py files a failed HDF5 write left behind: kept referenced, never closed

STR_DTYPE = h5py.string_dtype("utf-8")
POOLED_DATASET = "pooled_mean"  # /<view>/pooled_mean [videos, D] float32, aligned with /<view>/video_ids


def rows_checksum(features: np.ndarray, timestamps_s: np.ndarray, end_timestamps_s: np.ndarray | None = None) -> int:
    """CRC32 of a video's stored feature bytes, then its float64 timestamps, then its float64 end
    timestamps when the view has them (all little-endian)."""
    # the CRC reads the arrays' own buffers: no bytes copy (slices of a block read are already contiguous)
    little_endian = features.dtype.newbyteorder("<")
    crc = crc32(_bytes_of(np.ascontiguousarray(features, dtype=little_endian)))
    crc = crc32(_bytes_of(np.ascontiguousarray(timestamps_s, dtype="<f8")), crc)
    if end_timestamps_s is not None:
        crc = crc32(_bytes_of(np.ascontiguousarray(end_timestamps_s, dtype="<f8")), crc)
    return crc


def _bytes_of(array: np.ndarray) -> memoryview:
    """A C-contiguous array's bytes as a flat buffer, without copying them."""
    return memoryview(array.reshape(-1).view(np.uint8))


def plain_attrs(values: dict[str, Any]) -> dict[str, Any]:
    """HDF5 attributes hold plain types only: nested values become JSON strings."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, (dict, list, tuple)):
            out[key] = json.dumps(value, sort_keys=True)
        elif value is None:
            out[key] = ""
        elif isinstance(value, (str, int, float, bool, np.integer, np.floating)):
            out[key] = value
        else:
            raise TypeError(f"attribute {key!r} has non-plain type {type(value).__name__}")
    return out


@dataclass
class ShardRows:
    """Where one video's rows of one view went inside the shard being written."""

    video_id: str
    view: str
    row_start: int
    row_count: int
    checksum: int
    source_size: int = -1
    source_mtime_ns: int = -1
    info_json: str = "{}"


@dataclass
class _Pending:
    """A view's first rows, held until they fill a chunk or the shard commits: HDF5 allocates whole
    chunks, so a view smaller than one chunk gets a chunk of exactly its rows instead of 1 MiB."""

    features: list[np.ndarray]
    stamps: list[np.ndarray]
    ends: list[np.ndarray] | None
    rows: int = 0
    nbytes: int = 0


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ShardWriter:
    def __init__(
        self,
        directory: Path,
        name: str,
        *,
        root_attrs: dict[str, Any],
        view_attrs: dict[str, dict[str, Any]],
        dtype: dict[str, str],
        compressed: frozenset[str] | set[str] = frozenset(),
    ):
        self.directory = directory
        self._compressed = compressed  # views stored gzip-compressed (flow fields compress ~3x)
        self.name = name
        self.final_path = directory / (name + SHARD_SUFFIX)
        self.partial_path = directory / (name + SHARD_SUFFIX + PARTIAL_SUFFIX)
        self._view_attrs = view_attrs
        self._dtype = dtype
        self.opened_at = time.monotonic()
        self.nbytes = 0
        self.rows: list[ShardRows] = []
        self._index: dict[str, list[ShardRows]] = {}
        # per view, each video's mean row (float64 sum of the stored values, then float32), in blocks
        # [videos, D] (one per `add`, one per `add_many`): what indexes,
        # search, mining and the linear probe read instead of every row (see cache-format.md)
        self._pooled: dict[str, list[np.ndarray]] = {}
        # every dataset handle stays open until the file closes: closing one flushes its chunk cache,
        # and a flush that fails on a full disk inside a handle's dealloc is only printed, not raised
        self._datasets: dict[str, tuple[h5py.Dataset, h5py.Dataset, h5py.Dataset | None]] = {}
        self._pending: dict[str, _Pending] = {}
        directory.mkdir(parents=True, exist_ok=True)
        self._h5 = h5py.File(self.partial_path, "w", libver="latest")
        self._h5.attrs.update(
            plain_attrs(
                {
                    "schema_version": SCHEMA_VERSION,
                    "vidcache_version": __version__,
                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "shard_name": name,
                    **root_attrs,
                }
            )
        )

    def discard(self, *, hdf5_failed: bool) -> None:
        """Delete a shard that will not be committed; its videos are simply redone by the next run.

        The partial file goes first, so nothing is left behind whatever happens next. The file is
        then closed with its descriptor pointed at an anonymous in-memory file (Linux), so the close's
        last writes cannot fail: after a failed HDF5 write (a disk filled by someone else, a quota)
        closing it on the full disk fails again and HDF5 then crashes the process at exit. Where
        that redirection is not available, a failed file is never touched again."""
        self.partial_path.unlink(missing_ok=True)
        redirected = False
        try:
            if hasattr(os, "memfd_create"):
                memory = os.memfd_create("vidcache-discarded-shard")
                os.dup2(memory, self._h5.id.get_vfd_handle())
                os.close(memory)
                redirected = True
            if redirected or not hdf5_failed:
                self._h5.close()
                return
        except Exception:
            pass
        _BROKEN_FILES.append(self._h5)

    def _group(self, view: str, feature_dim: int, *, with_end: bool, chunk_rows: int) -> h5py.Group:
        if view in self._h5:
            group = self._h5[view]
            if ("end_timestamps_s" in group) != with_end:
                raise ValueError(f"view {view}: every video must give end timestamps, or none")
            return group
        group = self._h5.create_group(view)
        group.attrs.update(plain_attrs(self._view_attrs.get(view, {})))
        dtype = np.dtype(self._dtype.get(view, "float16"))
        compression = {"compression": "gzip", "compression_opts": 4} if view in self._compressed else {}
        group.create_dataset(
            "features",
            shape=(0, feature_dim),
            maxshape=(None, feature_dim),
            dtype=dtype,
            chunks=(chunk_rows, feature_dim),
            **compression,
        )
        whole = chunk_rows >= rows_per_chunk(feature_dim, dtype.itemsize)  # else: a small view, exactly its rows
        time_chunks = (max(1024, chunk_rows) if whole else chunk_rows,)
        group.create_dataset("timestamps_s", shape=(0,), maxshape=(None,), dtype="<f8", chunks=time_chunks)
        if with_end:
            group.create_dataset("end_timestamps_s", shape=(0,), maxshape=(None,), dtype="<f8", chunks=time_chunks)
        return group

    def add(
        self,
        video_id: str,
        view: str,
        features: np.ndarray,
        timestamps_s: np.ndarray,
        *,
        source_size: int = -1,
        source_mtime_ns: int = -1,
        info_json: str = "{}",
        end_timestamps_s: np.ndarray | None = None,
    ) -> ShardRows:
        if features.ndim != 2 or len(features) != len(timestamps_s):
            raise ValueError(f"{video_id}/{view}: features {features.shape} and timestamps {timestamps_s.shape} differ")
        if end_timestamps_s is not None and len(end_timestamps_s) != len(timestamps_s):
            raise ValueError(f"{video_id}/{view}: {len(end_timestamps_s)} end times for {len(timestamps_s)} rows")
        stamps_le = np.asarray(timestamps_s, dtype="<f8")
        ends_le = None if end_timestamps_s is None else np.asarray(end_timestamps_s, dtype="<f8")
        dtype = np.dtype(self._dtype.get(view, "float16")).newbyteorder("<")
        if view not in self._datasets:
            pending = self._pending.setdefault(view, _Pending([], [], None if ends_le is None else []))
            if (pending.ends is None) != (ends_le is None):
                raise ValueError(f"view {view}: every video must give end timestamps, or none")
            size = len(features) * features.shape[1] * dtype.itemsize
            if pending.nbytes + size < TARGET_CHUNK_BYTES:  # still less than a chunk: hold it (small)
                part = np.array(features, dtype=dtype)  # a copy: the caller may reuse its buffer
                pending.features.append(part)
                pending.stamps.append(stamps_le.copy())
                if pending.ends is not None and ends_le is not None:
                    pending.ends.append(ends_le.copy())
                start, crc = pending.rows, crc32(_bytes_of(part))
                pending.rows, pending.nbytes = pending.rows + len(features), pending.nbytes + size
                return self._record(
                    video_id,
                    view,
                    start,
                    len(features),
                    crc,
                    stamps_le,
                    ends_le,
                    source_size,
                    source_mtime_ns,
                    info_json,
                    features.shape[1] * dtype.itemsize,
                )
            self._create(view, features.shape[1], chunk_rows=rows_per_chunk(features.shape[1], dtype.itemsize))
        feats, stamps, ends = self._datasets[view]
        if (ends is None) != (end_timestamps_s is None):
            raise ValueError(f"view {view}: every video must give end timestamps, or none")
        start, count = feats.shape[0], len(features)
        for dataset in (feats, stamps, *(() if ends is None else (ends,))):
            dataset.resize(start + count, axis=0)
        # features go in blocks, so a memory-mapped spill of a long video's flow is never loaded whole;
        # the CRC32 runs over the same bytes in the same order as rows_checksum
        crc = 0
        block = max(1, (64 << 20) // max(1, features.shape[1] * feats.dtype.itemsize))
        pooled = feats.dtype.kind == "f"  # embeddings; integer rows (flow fields) have no meaningful mean
        total = np.zeros(features.shape[1], np.float64)
        for lo in range(0, count, block):
            part = np.ascontiguousarray(features[lo : lo + block], dtype=feats.dtype.newbyteorder("<"))
            feats[start + lo : start + lo + len(part)] = part
            crc = crc32(_bytes_of(part), crc)
            if pooled:
                total += part.sum(axis=0, dtype=np.float64)
        if pooled:
            self._pooled.setdefault(view, []).append((total / max(count, 1)).astype(np.float32)[None])
        if count:
            stamps[start:] = stamps_le
            if ends is not None:
                ends[start:] = ends_le
        return self._record(
            video_id,
            view,
            start,
            count,
            crc,
            stamps_le,
            ends_le,
            source_size,
            source_mtime_ns,
            info_json,
            features.shape[1] * feats.dtype.itemsize,
        )

    def _create(self, view: str, feature_dim: int, *, chunk_rows: int) -> None:
        """Create the view's datasets with `chunk_rows` rows per chunk and write its held rows."""
        pending = self._pending.pop(view, None)
        with_end = pending is not None and pending.ends is not None
        group = self._group(view, feature_dim, with_end=with_end, chunk_rows=max(1, chunk_rows))
        ends = group["end_timestamps_s"] if "end_timestamps_s" in group else None
        self._datasets[view] = (group["features"], group["timestamps_s"], ends)
        if pending is None or not pending.rows:
            return
        datasets = [(group["features"], pending.features), (group["timestamps_s"], pending.stamps)]
        if ends is not None and pending.ends is not None:
            datasets.append((ends, pending.ends))
        for dataset, parts in datasets:
            dataset.resize(pending.rows, axis=0)
            dataset[:] = np.concatenate(parts)

    def _record(
        self,
        video_id: str,
        view: str,
        start: int,
        count: int,
        crc: int,
        stamps_le: np.ndarray,
        ends_le: np.ndarray | None,
        source_size: int,
        source_mtime_ns: int,
        info_json: str,
        row_bytes: int,
    ) -> ShardRows:
        crc = crc32(_bytes_of(stamps_le), crc)
        if ends_le is not None:
            crc = crc32(_bytes_of(ends_le), crc)
        rows = ShardRows(video_id, view, start, count, crc, source_size, source_mtime_ns, info_json)
        self.rows.append(rows)
        self._index.setdefault(view, []).append(rows)
        self.nbytes += count * row_bytes + 8 * count
        return rows

    def add_many(
        self,
        view: str,
        video_ids: list[str],
        features: np.ndarray,
        counts: np.ndarray,
        timestamps_s: np.ndarray,
        *,
        info_json: list[str],
        end_timestamps_s: np.ndarray | None = None,
        sources: list[tuple[int, int]] | None = None,
    ) -> list[ShardRows]:
        """`add` for many videos of one view at once (import, arrays): their rows concatenated in
        `features` [sum(counts), D], written with one resize and one write per dataset instead of
        one per video; checksums and pooled means are the same as `add`'s, video by video. `sources`:
        each video's (source_size, source_mtime_ns), -1 where unknown (compact keeps them)."""
        counts = np.asarray(counts, np.int64)
        total = int(counts.sum())
        if features.ndim != 2 or len(features) != total or len(timestamps_s) != total:
            raise ValueError(f"{view}: {len(features)} rows and {len(timestamps_s)} times for {total} counted rows")
        if end_timestamps_s is not None and len(end_timestamps_s) != total:
            raise ValueError(f"{view}: {len(end_timestamps_s)} end times for {total} rows")
        if view not in self._datasets:  # many rows at once: whole 1 MiB chunks (and any rows `add` held)
            itemsize = np.dtype(self._dtype.get(view, "float16")).itemsize
            if view not in self._pending and end_timestamps_s is not None:
                self._pending[view] = _Pending([], [], [])  # so _create makes the end-time dataset
            self._create(view, features.shape[1], chunk_rows=rows_per_chunk(features.shape[1], itemsize))
        feats, stamps, ends = self._datasets[view]
        if (ends is None) != (end_timestamps_s is None):
            raise ValueError(f"view {view}: every video must give end timestamps, or none")
        start = feats.shape[0]
        stored = np.ascontiguousarray(features, dtype=feats.dtype.newbyteorder("<"))
        stamps_le = np.ascontiguousarray(timestamps_s, dtype="<f8")
        ends_le = None if end_timestamps_s is None else np.ascontiguousarray(end_timestamps_s, dtype="<f8")
        for dataset, values in ((feats, stored), (stamps, stamps_le), (ends, ends_le)):
            if dataset is not None:
                dataset.resize(start + total, axis=0)
                dataset[start:] = values
        offsets = np.concatenate([[0], np.cumsum(counts)])
        if feats.dtype.kind == "f":
            sums = _video_sums(stored, counts, offsets)
            self._pooled.setdefault(view, []).append((sums / np.maximum(counts, 1)[:, None]).astype(np.float32))
        # each column as bytes, one row per line: a video's CRC32 runs over its lines (no copy per video)
        lines = [None if c is None else c.reshape(len(c), -1).view(np.uint8) for c in (stored, stamps_le, ends_le)]
        added = []
        for i, (lo, hi) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)):
            crc = crc32(lines[1][lo:hi], crc32(lines[0][lo:hi]))
            if lines[2] is not None:
                crc = crc32(lines[2][lo:hi], crc)
            size, mtime_ns = sources[i] if sources is not None else (-1, -1)
            added.append(ShardRows(video_ids[i], view, start + lo, hi - lo, crc, size, mtime_ns, info_json[i]))
        self.rows.extend(added)
        self._index.setdefault(view, []).extend(added)
        self.nbytes += stored.nbytes + 8 * total
        return added

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.opened_at

    def commit(self) -> Path:
        """Write each view's video index, then flush, fsync and rename into place."""
        for view in list(self._pending):  # views smaller than a chunk: one chunk of exactly their rows
            pending = self._pending[view]
            width = pending.features[0].shape[1] if pending.features else 0
            self._create(view, width, chunk_rows=pending.rows)
        for view, rows in self._index.items():
            group = self._h5[view]
            group.create_dataset("video_ids", data=np.array([r.video_id for r in rows], dtype=object), dtype=STR_DTYPE)
            group.create_dataset("row_start", data=np.array([r.row_start for r in rows], dtype="<i8"))
            group.create_dataset("row_count", data=np.array([r.row_count for r in rows], dtype="<i8"))
            group.create_dataset("checksum", data=np.array([r.checksum for r in rows], dtype="<u4"))
            group.create_dataset("source_size", data=np.array([r.source_size for r in rows], dtype="<i8"))
            group.create_dataset("source_mtime_ns", data=np.array([r.source_mtime_ns for r in rows], dtype="<i8"))
            group.create_dataset("info_json", data=np.array([r.info_json for r in rows], dtype=object), dtype=STR_DTYPE)
            if view in self._pooled:
                group.create_dataset(POOLED_DATASET, data=np.concatenate(self._pooled[view]).astype("<f4"))
        self._h5.attrs["n_videos"] = len({r.video_id for r in self.rows})
        self._h5.flush()  # a failed write raises here with every handle still open, so `discard` can close them
        self._h5.close()
        _fsync_path(self.partial_path)
        os.replace(self.partial_path, self.final_path)
        _fsync_path(self.directory, directory=True)
        return self.final_path

    def abort(self) -> None:
        try:
            self._h5.close()
        finally:
            self.partial_path.unlink(missing_ok=True)


def _video_sums(stored: np.ndarray, counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """float64 sums of each video's rows, added in row order as `add` adds them. Videos side by side
    with the same row count are summed as one [videos, rows, D] array (20x faster than reduceat)."""
    sums = np.zeros((len(counts), stored.shape[1]), np.float64)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(counts)) + 1, [len(counts)]]).tolist()
    for a, b in itertools.pairwise(bounds):
        rows = int(counts[a])
        if rows:
            block = stored[int(offsets[a]) : int(offsets[b])]
            sums[a:b] = block.reshape(b - a, rows, stored.shape[1]).sum(axis=1, dtype=np.float64)
    return sums


def read_shard_index(path: Path) -> dict[str, list[ShardRows]]:
    """The per-view video index a committed shard carries (used to adopt and to verify it)."""
    out: dict[str, list[ShardRows]] = {}
    with h5py.File(path, "r") as h5:
        for view in h5:
            group = h5[view]
            ids = [v.decode() if isinstance(v, bytes) else v for v in group["video_ids"][()]]
            infos = [v.decode() if isinstance(v, bytes) else v for v in group["info_json"][()]]
            columns = zip(
                ids,
                group["row_start"][()],
                group["row_count"][()],
                group["checksum"][()],
                group["source_size"][()],
                group["source_mtime_ns"][()],
                infos,
                strict=True,
            )
            out[view] = [
                ShardRows(v, view, int(s), int(c), int(k), int(z), int(m), i) for v, s, c, k, z, m, i in columns
            ]
    return out


def read_shard_ranges(path: Path) -> dict[tuple[str, str], tuple[int, int]]:
    """{(video_id, view): (row_start, row_count)} from a committed shard's index: the part of
    `read_shard_index` that `verify` compares with the catalog, as whole-column reads."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    with h5py.File(path, "r") as h5:
        for view in h5:
            group = h5[view]
            ids = group["video_ids"].asstr()[()].tolist()
            ranges = zip(group["row_start"][()].tolist(), group["row_count"][()].tolist(), strict=True)
            out.update(zip(((video_id, view) for video_id in ids), ranges, strict=True))
    return out
