"""A source whose mtime changed is confirmed by content before work is redone: `touch` re-extracts
nothing (a file and its segments), a real edit of the same size re-extracts exactly that file."""

from __future__ import annotations

import os
import shutil
import sqlite3

import numpy as np

import vidcache
from vidcache import Cache
from vidcache.cache.sources import WHOLE_FILE_BYTES, content_digest
from vidcache.config import RunConfig, SamplingConfig
from vidcache.extract.views.clip import ClipConfig


def _records(cache_dir):
    with sqlite3.connect(cache_dir / "catalog.sqlite") as db:
        rows = db.execute(
            "SELECT video_id, source_size, source_mtime_ns, shard FROM items ORDER BY video_id"
        ).fetchall()
    return {video_id: (size, mtime, shard) for video_id, size, mtime, shard in rows}


def test_touch_keeps_the_rows_and_a_same_size_edit_redoes_the_file(corpus, tmp_path, tiny_checkpoint):
    for name in ("bikes.mp4", "other.mp4"):
        shutil.copy(
            corpus / "a" / "blue-left-2.mp4" if name == "bikes.mp4" else corpus / "a" / "clip.mp4", tmp_path / name
        )
    (tmp_path / "m.csv").write_text(
        "video_id,path,start_s,end_s\nbikes-1,bikes.mp4,0,1.5\nbikes-2,bikes.mp4,1.5,3\nother,other.mp4,,\n"
    )
    config = vidcache.ExtractConfig.create(
        views=("clip",),
        sampling=SamplingConfig(fps=2.0),
        clip=ClipConfig(model="vidcache-tiny", pretrained=str(tiny_checkpoint)),
        run=RunConfig(device="cpu", workers=1),
    )
    cache_dir = tmp_path / "cache"
    first = vidcache.extract(tmp_path / "m.csv", cache_dir, config)
    assert first.extracted == 3
    with Cache(cache_dir) as cache:
        rows = {v: cache.read(v)[0] for v in cache.video_ids()}
    before = _records(cache_dir)

    bikes = tmp_path / "bikes.mp4"
    stat = bikes.stat()
    os.utime(bikes, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touch: same bytes, new mtime
    touched = vidcache.extract(tmp_path / "m.csv", cache_dir, config)
    assert (touched.extracted, touched.skipped) == (0, 3)
    assert touched.models_rss_mib == 0.0  # decided without loading a model (the no-op path)
    after = _records(cache_dir)
    for segment in ("bikes-1", "bikes-2"):  # restamped, so the next run matches by size and mtime alone
        assert after[segment] == (stat.st_size, stat.st_mtime_ns + 5_000_000_000, before[segment][2])
    assert after["other"] == before["other"]

    data = bytearray(bikes.read_bytes())  # a real edit that keeps the size (hashed whole: under 4 MiB)
    assert len(data) < WHOLE_FILE_BYTES
    data[len(data) // 2] ^= 0xFF
    digest = content_digest(str(bikes))
    bikes.write_bytes(bytes(data))
    assert content_digest(str(bikes)) != digest and bikes.stat().st_size == stat.st_size
    edited = vidcache.extract(tmp_path / "m.csv", cache_dir, config)
    assert (edited.extracted, edited.skipped) == (2, 1)  # both segments of the edited file, not the other
    with Cache(cache_dir) as cache:
        np.testing.assert_array_equal(cache.read("other")[0], rows["other"])
    assert _records(cache_dir)["other"] == before["other"]


def test_large_files_are_hashed_by_their_edges_and_spread_blocks(tmp_path):
    """Past 4 MiB the hash reads the first and last MiB and 32 spread blocks: an edit there (container
    headers, the moov index, any sampled block) changes it; a byte no block covers does not (the
    documented price of reading ~4 MiB whatever the size). Checked against hashlib on the same bytes."""
    import hashlib

    from vidcache.cache import sources

    path = tmp_path / "big.bin"
    data = bytearray(np.random.default_rng(0).integers(0, 256, 10 << 20, dtype=np.uint8).tobytes())
    path.write_bytes(data)
    size, edge, block = len(data), sources.EDGE_BYTES, sources.SAMPLE_BYTES
    span = size - 2 * edge - block
    offsets = [edge + span * i // (sources.SAMPLES - 1) for i in range(sources.SAMPLES)]
    expected = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    for piece in [data[:edge], *(data[o : o + block] for o in offsets), data[-edge:]]:
        expected.update(piece)
    assert content_digest(str(path)) == expected.hexdigest()
    for where, changes in ((10, True), (size - 10, True), (offsets[7] + 5, True), (offsets[7] + block + 5, False)):
        edited = bytearray(data)
        edited[where] ^= 0x01
        path.write_bytes(edited)
        assert (content_digest(str(path)) != expected.hexdigest()) == changes, where


def test_a_named_pipe_or_directory_has_no_hash_and_does_not_block(tmp_path):
    """A FIFO in the manifest is a per-row failure (decode names it); hashing it must not open it
    blocking, which stalled a whole extract waiting for a writer that never comes."""
    import threading

    from tests.conftest import HANG_GUARD_S

    fifo = tmp_path / "named-pipe.mp4"
    os.mkfifo(fifo)
    (tmp_path / "a-directory.mp4").mkdir()
    names = ("named-pipe.mp4", "a-directory.mp4")
    results: dict[str, object] = {}
    worker = threading.Thread(
        target=lambda: results.update({n: content_digest(str(tmp_path / n)) for n in names}), daemon=True
    )
    worker.start()
    worker.join(HANG_GUARD_S)
    assert not worker.is_alive(), "content_digest blocked opening a named pipe"
    assert results == {"named-pipe.mp4": None, "a-directory.mp4": None}
