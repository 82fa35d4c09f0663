"""The large-read paths of issue 29: `.npy` reading for import, row blocks, verify's block CRC32 and
compact's block copy, each against an independent reference (NumPy's np.load, a brute-force
grouping, per-video h5py reads with zlib's CRC32, the rows and sources as they were before)."""

from __future__ import annotations

import io
import zlib

import h5py
import numpy as np
import pytest

from tests.conftest import write_small_shards
from vidcache import Cache
from vidcache.cache import blocks, npy
from vidcache.cache.arrays import write_view_arrays
from vidcache.cache.catalog import Catalog
from vidcache.cache.housekeeping import compact_cache, remove_videos
from vidcache.cache.importer import _largest_magnitude
from vidcache.cache.shard import read_shard_index
from vidcache.cache.verify import verify_cache

RNG = np.random.default_rng(29)


@pytest.mark.parametrize(
    "array",
    [
        RNG.standard_normal((8, 16)).astype("<f2"),
        RNG.standard_normal((3, 5)).astype(">f4"),
        np.asfortranarray(RNG.standard_normal((4, 6))),
        RNG.integers(-9, 9, size=(2, 3), dtype=np.int64),
        RNG.integers(0, 255, size=7, dtype=np.uint8),
        np.array(25.0),
        np.zeros((0, 4), np.float32),
    ],
    ids=["f2", "big-endian f4", "fortran f8", "i8", "u1 1-d", "0-d", "empty"],
)
@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_load_and_header_match_numpy(tmp_path, array, version):
    path = tmp_path / "a.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array(f, array, version=version)
    want = np.load(path, allow_pickle=False)
    got = npy.load(path)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes(order="A") == want.tobytes(order="A") and np.array_equal(got, want)
    assert npy.read_header(path) == (want.shape, want.dtype)
    assert npy.load(path).tobytes() == want.tobytes()  # again: from the parsed-header cache


def test_npy_refuses_what_np_load_refuses(tmp_path):
    good = io.BytesIO()
    np.save(good, np.ones((4, 8), np.float32))
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(good.getvalue()[:-5])
    with pytest.raises(ValueError):
        np.load(truncated, allow_pickle=False)
    with pytest.raises(ValueError, match="truncated"):
        npy.load(truncated)
    text = tmp_path / "text.npy"
    text.write_text("not an array")
    for reader in (np.load, npy.load, npy.read_header):
        with pytest.raises(ValueError):
            reader(text)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for reader in (lambda p: np.load(p, allow_pickle=False), npy.load):
        with pytest.raises(ValueError, match="allow_pickle"):
            reader(objects)


@pytest.mark.parametrize("dtype", ["<f2", ">f2", "<f4", "<f8", ">f8", "<i2"])
def test_largest_magnitude_is_numpys_abs_max(dtype):
    values = (RNG.standard_normal((6, 9)) * 300).astype(dtype)
    assert _largest_magnitude(values) == float(np.abs(values).max())
    assert _largest_magnitude(values.T) == float(np.abs(values).max())
    if dtype[1] == "f":
        for bad in (np.nan, -np.inf):
            damaged = values.copy()
            damaged[4, 2] = bad
            assert not np.isfinite(_largest_magnitude(damaged))


def test_row_blocks_cover_every_range_once_within_the_limit():
    starts = np.cumsum(RNG.integers(0, 5, size=300))
    ranges = [(int(s), int(s + c)) for s, c in zip(starts, RNG.integers(0, 40, size=300), strict=True)]
    ranges.sort()
    got = list(blocks.row_blocks(ranges, row_bytes=10, block_bytes=1000))
    assert [m for _, _, members in got for m in members] == list(range(len(ranges)))
    for lo, hi, members in got:
        assert lo == ranges[members[0]][0] and hi == max(ranges[m][1] for m in members)
        assert (hi - lo) * 10 <= 1000 or len(members) == 1


def _shard_path(cache_dir, view="v"):
    catalog = Catalog.open(cache_dir)
    try:
        (shard,) = {i.shard for i in catalog.items(view)}
    finally:
        catalog.close()
    return cache_dir / "shards" / f"{shard}.h5"


def test_verify_in_blocks_finds_exactly_the_damaged_videos(tmp_path, monkeypatch):
    """40 videos × 5 rows × 4096 float32 (64 rows per 1 MiB chunk) checked in blocks of 6 rows: bytes
    changed inside two videos' rows are found in exactly those two, as per-video reads with zlib's
    CRC32 (the reference) say."""
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 6 * 4096 * 4)
    rows = [(f"v{i:02d}", RNG.standard_normal((5, 4096)).astype(np.float32), np.arange(5.0)) for i in range(40)]
    cache = tmp_path / "cache"
    write_view_arrays(cache, view="v", rows=rows, entries=[], identity={"m": 1}, dtype="float32")
    path = _shard_path(cache)
    with h5py.File(path, "r") as h5:
        dataset = h5["v/features"]
        chunk_rows = dataset.chunks[0]
        chunks = {dataset.id.get_chunk_info(i).chunk_offset[0]: dataset.id.get_chunk_info(i).byte_offset
                  for i in range(dataset.id.get_num_chunks())}  # fmt: skip
    assert verify_cache(cache).damaged == []
    with open(path, "r+b") as f:
        for video in (7, 33):  # row 2 of the video, 100 bytes in
            row = video * 5 + 2
            f.seek(chunks[row - row % chunk_rows] + (row % chunk_rows) * 4096 * 4 + 100)
            f.write(b"\xff" * 8)
    report = verify_cache(cache)
    reference = []
    index = {r.video_id: r for r in read_shard_index(path)["v"]}
    with h5py.File(path, "r") as h5:
        for video_id, entry in index.items():
            stop = entry.row_start + entry.row_count
            crc = zlib.crc32(h5["v/features"][entry.row_start : stop].astype("<f4").tobytes())
            crc = zlib.crc32(h5["v/timestamps_s"][entry.row_start : stop].astype("<f8").tobytes(), crc)
            if crc != entry.checksum:
                reference.append(video_id)
    assert reference == ["v07", "v33"]
    assert [(d["video_id"], d["problem"]) for d in report.damaged] == [(v, "checksum mismatch") for v in reference]


def test_compact_copies_rows_end_times_sources_and_means_exactly(tmp_path):
    """Three small shards with dead rows, end times and source stats: after compact every live
    video reads back the same bytes, keeps its source size and mtime, and its pooled mean is the
    NumPy mean of its rows; one shard is left and verify finds nothing."""
    cache = tmp_path / "cache"
    write_small_shards(cache, parts=3, rng=RNG)
    catalog = Catalog.open(cache, create=True)
    with catalog.transaction() as db:
        db.execute("UPDATE items SET source_size = 1000 + length(video_id), source_mtime_ns = 7")
    catalog.close()
    remove_videos(cache, video_ids=["v01", "v08", "v17"])
    with Cache(cache) as reader:
        before = {v: (*reader.read(v, "v"), reader.spans(v, "v")) for v in reader.video_ids("v")}
    summary = compact_cache(cache)
    assert (summary.shards_before, summary.shards_after, summary.videos_moved) == (3, 1, 15)
    with Cache(cache) as reader:
        assert sorted(reader.video_ids("v")) == sorted(before)
        for video_id, (features, times, spans) in before.items():
            got, got_times = reader.read(video_id, "v")
            assert got.tobytes() == features.tobytes() and got_times.tobytes() == times.tobytes()
            assert reader.spans(video_id, "v").tobytes() == spans.tobytes()
    index = read_shard_index(_shard_path(cache))["v"]
    assert {(r.video_id, r.source_size, r.source_mtime_ns) for r in index} == {(v, 1003, 7) for v in before}
    with h5py.File(_shard_path(cache), "r") as h5:
        means = dict(zip([r.video_id for r in index], h5["v/pooled_mean"][()], strict=True))
    for video_id, (features, _, _) in before.items():
        want = (features.astype(np.float64).sum(axis=0) / len(features)).astype(np.float32)
        assert means[video_id].tobytes() == want.tobytes()
    assert verify_cache(cache).damaged == []
