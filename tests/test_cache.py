"""Cache round trip: rows written by CacheWriter come back from Cache exactly, in every read path."""

from __future__ import annotations

import sqlite3

import h5py
import numpy as np
import pytest
import torch

from vidcache import Cache
from vidcache.cache.catalog import Catalog
from vidcache.cache.layout import TARGET_CHUNK_BYTES
from vidcache.cache.shard import rows_checksum
from vidcache.cache.store import CacheWriter, SourceStat
from vidcache.cache.text import prompt_embeddings, write_text_embeddings
from vidcache.manifest import VideoEntry


def synthetic_videos(n: int, dim: int = 48, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        rows = int(rng.integers(0, 30))
        out[f"dir{i % 3}/video {i}.mp4"] = (
            rng.standard_normal((rows, dim)).astype(np.float32),
            np.sort(rng.uniform(0, 60, rows)),
        )
    return out


@pytest.fixture()
def cache_dir(tmp_path):
    videos = synthetic_videos(40)
    catalog = Catalog.open(tmp_path, create=True)
    catalog.claim_view("clip", {"model": "test"})
    catalog.upsert_entries([VideoEntry(v, f"/x/{v}", ("a", "b"), "train") for v in videos])
    writer = CacheWriter(
        tmp_path,
        catalog,
        run_id="r",
        writer_tag="k0of1",
        root_attrs={},
        view_attrs={"clip": {}},
        dtypes={"clip": "float16"},
        shard_size_mb=0.02,
    )
    for video_id, (features, times) in videos.items():
        writer.add(video_id, {"clip": (features, times)}, source=SourceStat(1, 2))
        writer.maybe_commit()
    writer.commit()
    catalog.close()
    return tmp_path, videos


def test_round_trip_every_read_path(cache_dir):
    path, videos = cache_dir
    cache = Cache(path)
    assert sorted(cache.video_ids("clip")) == sorted(videos) == cache.video_ids()
    assert len(list((path / "shards").glob("*.h5"))) > 2  # rotation by size happened
    for video_id, (features, times) in videos.items():
        got_features, got_times = cache.read(video_id, "clip")
        assert got_features.dtype == np.float16
        np.testing.assert_array_equal(got_features, features.astype(np.float16))
        np.testing.assert_array_equal(got_times, times)
    ids = list(videos)[::-1]
    import vidcache.cache.reader as reader

    for by_key_max in (reader.BY_KEY_MAX, 0):  # looked up by key (a few videos), and by one scan of the view
        reader.BY_KEY_MAX, saved = by_key_max, reader.BY_KEY_MAX
        try:
            asked = [*ids, ids[0]]  # a repeated id is read twice, in place
            for (f, t), video_id in zip(cache.read_many(asked, "clip", dtype=np.float32), asked, strict=True):
                np.testing.assert_array_equal(f, videos[video_id][0].astype(np.float16).astype(np.float32))
                np.testing.assert_array_equal(t, videos[video_id][1])
            with pytest.raises(KeyError, match="no extracted 'clip' rows"):
                cache.read_many([ids[0], "not-a-video"], "clip")
        finally:
            reader.BY_KEY_MAX = saved
    # a sample of the videos: the rows between them are read in the same call but never kept alive by
    # the returned arrays (a 1-in-12 sample of a 1M cache held 8.6 GB of unasked rows that way)
    sample = sorted(videos)[::3]
    for (f, t), video_id in zip(cache.read_many(sample, "clip"), sample, strict=True):
        np.testing.assert_array_equal(f, videos[video_id][0].astype(np.float16))
        assert f.base is None or f.base.nbytes <= f.nbytes, video_id  # owns its rows, not a merged span
        assert t.base is None or t.base.nbytes <= t.nbytes
    seen = {}
    for batch in cache.iter_batches("clip", batch_size=7):
        seen.update({v: f for v, f in zip(batch.video_ids, batch.features, strict=True)})
    assert seen.keys() == videos.keys()
    assert cache.entries().set_index("video_id").loc[ids[0], "labels"] == ["a", "b"]


def test_dataset_in_dataloader_workers(cache_dir):
    path, videos = cache_dir
    dataset = Cache(path).dataset("clip")
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    got = {video_id: features for features, _, video_id in loader}
    assert got.keys() == videos.keys()
    for video_id, features in got.items():
        np.testing.assert_array_equal(np.asarray(features), videos[video_id][0].astype(np.float16).astype(np.float32))


def test_shard_layout_chunks_and_checksums(cache_dir):
    path, videos = cache_dir
    for shard in (path / "shards").glob("*.h5"):
        with h5py.File(shard, "r") as h5:
            group = h5["clip"]
            rows, dim = group["features"].shape
            assert group["features"].chunks[0] * dim * 2 <= TARGET_CHUNK_BYTES
            for video_id, start, count, checksum in zip(
                group["video_ids"].asstr()[()],
                group["row_start"][()],
                group["row_count"][()],
                group["checksum"][()],
                strict=True,
            ):
                features = group["features"][start : start + count]
                assert checksum == rows_checksum(features, group["timestamps_s"][start : start + count])
                np.testing.assert_array_equal(features, videos[video_id][0].astype(np.float16))
            assert group["row_count"][()].sum() == rows
    assert not list((path / "shards").glob("*.partial"))


def test_unknown_video_and_view_errors(cache_dir):
    path, _ = cache_dir
    cache = Cache(path)
    with pytest.raises(KeyError, match="not in the cache"):
        cache.read("nope", "clip")
    with pytest.raises(KeyError, match="view 'audio' is not in cache"):
        cache.view_info("audio")


def test_text_embeddings_are_the_normalised_template_mean(tmp_path):
    rng = np.random.default_rng(0)
    table = {}

    def encode(prompts):
        return np.stack([table.setdefault(p, rng.standard_normal(16)) for p in prompts]).astype(np.float32)

    labels, templates = ["cat", "dog", "red car"], ["a video of {}.", "This is a video about {}"]
    per_template, embeddings = prompt_embeddings(encode, labels, templates)
    for i, label in enumerate(labels):
        vectors = [table[t.format(label)] / np.linalg.norm(table[t.format(label)]) for t in templates]
        expected = np.mean(vectors, axis=0)
        np.testing.assert_allclose(embeddings[i], expected / np.linalg.norm(expected), rtol=1e-5)
        np.testing.assert_allclose(per_template[i, 1], table[templates[1].format(label)], rtol=1e-6)
    Catalog.open(tmp_path, create=True).close()
    write_text_embeddings(
        tmp_path,
        labels=labels,
        templates=templates,
        per_template=per_template,
        embeddings=embeddings,
        attrs={"model": "m"},
    )
    text = Cache(tmp_path).text_embeddings()
    assert text.labels == labels and text.templates == templates
    np.testing.assert_array_equal(text.embeddings, embeddings)


@pytest.mark.parametrize("rows_per_video", [[100], [0, 3], [100, 5000, 7], [9000]])
def test_chunks_allocate_about_the_rows_written(tmp_path, rows_per_video):
    """A view smaller than one chunk (13 KB of clip rows) gets a chunk of exactly its rows, not 1 MiB;
    a larger one full chunks, at most one partly filled. HDF5's own allocated size (h5py
    `get_storage_size`) against the bytes of the rows, which read back intact."""
    rng = np.random.default_rng(1)
    catalog = Catalog.open(tmp_path, create=True)
    catalog.claim_view("clip", {"model": "test"})
    writer = CacheWriter(
        tmp_path, catalog, run_id="r", writer_tag="k0of1", root_attrs={}, view_attrs={"clip": {}, "audio": {}},
        dtypes={"clip": "float16", "audio": "float32"},
    )  # fmt: skip
    written = {}
    for i, n in enumerate(rows_per_video):
        times = np.arange(n, dtype=np.float64)
        written[f"v{i}"] = (rng.standard_normal((n, 64)).astype(np.float16), rng.standard_normal((n, 8)), times)
        clip, audio, _ = written[f"v{i}"]
        views = {"clip": (clip, times), "audio": (audio.astype(np.float32), times, times + 1)}
        writer.add(f"v{i}", views, source=SourceStat(1, 2))
    writer.commit()
    catalog.close()
    (shard,) = (tmp_path / "shards").glob("*.h5")
    total = sum(rows_per_video)
    with h5py.File(shard, "r") as h5:
        for view, row_bytes in (("clip", 64 * 2), ("audio", 8 * 4)):
            features = h5[view]["features"]
            data = total * row_bytes
            allocated = features.id.get_storage_size()
            chunk_bytes = features.chunks[0] * row_bytes
            if data < TARGET_CHUNK_BYTES:
                assert allocated == data or (total == 0 and allocated <= row_bytes), (view, allocated, data)
                assert h5[view]["timestamps_s"].id.get_storage_size() == 8 * total
            else:
                assert chunk_bytes <= TARGET_CHUNK_BYTES and data <= allocated < data + chunk_bytes
    if total * 64 * 2 < TARGET_CHUNK_BYTES:
        assert shard.stat().st_size < 64 * 1024 + total * (64 * 2 + 8 * 4 + 8 * 3)  # was > 2 MiB: two 1 MiB chunks
    with Cache(tmp_path) as cache:
        for video_id, (clip, audio, times) in written.items():
            np.testing.assert_array_equal(cache.read(video_id, "clip")[0], clip)
            np.testing.assert_array_equal(cache.read(video_id, "audio")[0], audio.astype(np.float32))
            np.testing.assert_array_equal(cache.spans(video_id, "audio")[:, 1], times + 1)


def test_a_writer_killed_inside_a_transaction_leaves_a_catalog_that_opens_read_only(tmp_path):
    """CI found it (test_repeated_sigkill_then_resume_...): a SIGKILL inside a catalog transaction left
    catalog.sqlite-journal, and every read-only open (status, verify, Cache) failed with "attempt to
    write a readonly database" and the advice to move the catalog away. The reference is SQLite's own
    recovery: the hot journal is rolled back, so the catalog reads as it was before the transaction."""
    import subprocess
    import sys

    Catalog.open(tmp_path, create=True).close()
    before = sqlite3.connect(tmp_path / "catalog.sqlite").execute("SELECT key, value FROM meta ORDER BY key").fetchall()
    killed = (
        "import os, signal, sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "db.execute('BEGIN IMMEDIATE')\n"
        "for i in range(3000):\n"
        "    db.execute('INSERT INTO meta VALUES(?, ?)', (f'k{i}', 'x' * 1000))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    run = subprocess.run([sys.executable, "-c", killed, str(tmp_path / "catalog.sqlite")])
    assert run.returncode == -9 and (tmp_path / "catalog.sqlite-journal").stat().st_size > 0
    catalog = Catalog.open(tmp_path)  # read-only, as status and verify open it
    try:
        assert catalog._db.execute("SELECT key, value FROM meta ORDER BY key").fetchall() == before
    finally:
        catalog.close()
    assert not (tmp_path / "catalog.sqlite-journal").exists()
    with Cache(tmp_path) as cache:
        assert cache.video_ids() == []
