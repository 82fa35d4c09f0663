"""`compact` with its reads one block ahead in a thread and its commits as catalog moves: the rows,
the catalog and the safety stops are what they were (a new shard that reads back differently, an old
block that cannot be read: compact stops, deletes nothing, leaves no thread behind)."""

from __future__ import annotations

import threading

import h5py
import numpy as np
import pytest

from tests.conftest import write_small_shards
from vidcache import Cache
from vidcache.cache import blocks, counts, housekeeping
from vidcache.cache.catalog import Catalog
from vidcache.cache.housekeeping import compact_cache, remove_videos
from vidcache.cache.reader import ShardFiles
from vidcache.cache.shard import ShardWriter
from vidcache.cache.verify import verify_cache
from vidcache.errors import CacheError

RNG = np.random.default_rng(2929)
REMOVED = ["v01", "v08", "v09", "v17", "v20"]


def _small_cache(tmp_path, monkeypatch):
    """Four shards of six videos (2-4 rows of 32 float16 values, end times), five videos removed;
    blocks of about 10 rows and new shards of about 1 KiB, so compact reads many blocks per old
    shard and commits (and checks) many new shards while the reading thread runs ahead."""
    cache = tmp_path / "cache"
    write_small_shards(cache, parts=4, rng=RNG)
    remove_videos(cache, video_ids=REMOVED)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 10 * 32 * 2)
    return cache


def _rows_and_items(cache) -> tuple[dict, dict]:
    with Cache(cache) as reader:
        rows = {v: (*reader.read(v, "v"), reader.spans(v, "v")) for v in reader.video_ids("v")}
    catalog = Catalog.open(cache)
    try:
        items = {i.video_id: i for i in catalog.items("v")}
    finally:
        catalog.close()
    return rows, items


def _shard_files(cache) -> set[str]:
    return {p.name for p in (cache / "shards").iterdir()}


def _reading_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("vidcache-compact-read")]


def test_compact_in_many_blocks_and_shards_keeps_rows_and_catalog(tmp_path, monkeypatch):
    """Every live video reads back the same bytes; its catalog item is the same but for its place
    (status, rows, checksum, sources, info kept); the per-view counts still agree with the items."""
    cache = _small_cache(tmp_path, monkeypatch)
    rows, items = _rows_and_items(cache)
    summary = compact_cache(cache, shard_size_mb=1 / 1024)
    assert (summary.shards_before, summary.videos_moved, summary.shards_rewritten) == (4, 19, 4)
    assert summary.shards_after >= 3  # about 1 KiB each: several commits, each checked before the next
    after_rows, after_items = _rows_and_items(cache)
    assert sorted(after_rows) == sorted(rows) == sorted(set(f"v{i:02d}" for i in range(24)) - set(REMOVED))
    for video_id, (features, times, spans) in rows.items():
        got, got_times, got_spans = after_rows[video_id]
        assert (got.tobytes(), got_times.tobytes(), got_spans.tobytes()) == (
            features.tobytes(), times.tobytes(), spans.tobytes())  # fmt: skip
        before, now = items[video_id], after_items[video_id]
        assert now.shard != before.shard and "-compact-" in now.shard
        same = ("status", "row_count", "checksum", "reason", "source_size", "source_mtime_ns", "info_json")
        assert [getattr(now, k) for k in same] == [getattr(before, k) for k in same]
    catalog = Catalog.open(cache)
    try:
        assert counts.usable(catalog._db)
        assert sorted(counts.counted(catalog._db, "v")) == sorted(counts.computed(catalog._db, "v"))
    finally:
        catalog.close()
    assert verify_cache(cache).damaged == [] and _reading_threads() == []


def test_compact_stops_and_deletes_nothing_when_a_new_shard_reads_back_differently(tmp_path, monkeypatch):
    """The second new shard is damaged on disk between its commit and its check (one value's bytes
    flipped in the file): the check, a real read of the file, finds it; compact stops naming the
    video, every old shard file and record stays, no partial shard and no reading thread is left."""
    cache = _small_cache(tmp_path, monkeypatch)
    old_files = _shard_files(cache)
    commit, committed = ShardWriter.commit, []

    def commit_then_damage(self: ShardWriter):
        path = commit(self)
        committed.append(path)
        if len(committed) == 2:
            with h5py.File(path, "r") as h5:
                offset = h5["v/features"].id.get_chunk_info(0).byte_offset
            with open(path, "r+b") as f:
                f.seek(offset)
                value = f.read(2)
                f.seek(offset)
                f.write(bytes(b ^ 0x5A for b in value))
        return path

    monkeypatch.setattr(ShardWriter, "commit", commit_then_damage)
    with pytest.raises(RuntimeError, match=r"reads back differently from .*-compact-.*; nothing deleted"):
        compact_cache(cache, shard_size_mb=1 / 1024)
    assert len(committed) == 2
    assert old_files <= _shard_files(cache) and not list((cache / "shards").glob("*.partial"))
    catalog = Catalog.open(cache)
    try:
        assert {f[: -len(".h5")] for f in old_files} <= catalog.shard_names()
    finally:
        catalog.close()
    assert _reading_threads() == []


def test_compact_stops_and_deletes_nothing_when_an_old_block_cannot_be_read(tmp_path, monkeypatch):
    """The reading thread's third block fails (a damaged old shard): its error stops compact in the
    writing thread; every video still reads back its rows, every old shard file stays, the shard
    being written is deleted, and the thread is gone."""
    cache = _small_cache(tmp_path, monkeypatch)
    rows, _ = _rows_and_items(cache)
    old_files = _shard_files(cache)
    read_columns, reads = housekeeping._read_columns, []

    def failing_read(files: ShardFiles, shard: str, view: str, start: int, stop: int, buffer=None):
        if "-compact-" not in shard:
            reads.append(shard)
            if len(reads) == 3:
                raise CacheError(f"shard {shard} view {view} rows {start}:{stop} cannot be read (test)")
        return read_columns(files, shard, view, start, stop, buffer)

    monkeypatch.setattr(housekeeping, "_read_columns", failing_read)
    with pytest.raises(CacheError, match=r"cannot be read \(test\)"):
        compact_cache(cache, shard_size_mb=1 / 1024)
    monkeypatch.setattr(housekeeping, "_read_columns", read_columns)
    assert old_files <= _shard_files(cache) and not list((cache / "shards").glob("*.partial"))
    after, _ = _rows_and_items(cache)
    assert sorted(after) == sorted(rows)
    for video_id, (features, times, spans) in rows.items():
        assert [a.tobytes() for a in after[video_id]] == [features.tobytes(), times.tobytes(), spans.tobytes()]
    assert _reading_threads() == []
    compact_cache(cache)  # a later compact finishes the job
    assert verify_cache(cache).damaged == [] and len(_shard_files(cache)) == 1


def test_move_items_records_nothing_unless_every_item_is_there_as_it_was(tmp_path, monkeypatch):
    """A place for an item that is not done with that many rows (here: one row count off) makes the
    whole move fail: no shard record, no item moved."""
    cache = _small_cache(tmp_path, monkeypatch)
    _, items = _rows_and_items(cache)
    first, second = items["v00"], items["v02"]
    catalog = Catalog.open(cache, create=True)
    try:
        places = [("v00", "v", 0, first.row_count, first.checksum), ("v02", "v", 9, second.row_count + 1, 7)]
        with pytest.raises(RuntimeError, match="1 of 2 moved items changed"):
            catalog.move_items(name="moved", n_rows=9, n_videos=2, size_bytes=1, run_id=None, places=places)
        assert "moved" not in catalog.shard_names()
        assert (catalog.item("v00", "v"), catalog.item("v02", "v")) == (first, second)
    finally:
        catalog.close()
