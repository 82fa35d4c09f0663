"""Pooled (mean) vectors stored beside the rows (issue 29): equal to a NumPy re-computation from the
rows, and a cache written before them (no `pooled_mean` in its shards) gives the same vectors."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from vidcache import Cache
from vidcache.cache.arrays import write_view_arrays
from vidcache.cache.housekeeping import compact_cache, remove_videos
from vidcache.cache.shard import POOLED_DATASET
from vidcache.commands.cache import cache_status
from vidcache.index.vectors import video_vectors
from vidcache.manifest import VideoEntry

DIM = 24


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("pooled") / "cache"
    videos = {f"v{i:03d}": rng.normal(size=(int(rng.integers(1, 9)), DIM)) * (1 + i % 3) for i in range(120)}
    entries = [VideoEntry(v, f"/x/{v}.mp4", ("a",), "train") for v in videos]
    rows = [(v, f.astype(np.float16), np.arange(len(f), dtype=float)) for v, f in videos.items()]
    write_view_arrays(path, view="clip", rows=rows[:70], entries=entries, identity={"model": "s"})
    write_view_arrays(path, view="clip", rows=rows[70:], entries=entries, identity={"model": "s"})  # two shards
    return path


def numpy_vectors(cache: Cache) -> tuple[list[str], np.ndarray]:
    """Independent: every video's rows through Cache.read, mean in float64, L2-normalised."""
    ids = sorted(cache.video_ids("clip"))
    pooled = np.stack([cache.read(v, "clip")[0].astype(np.float64).mean(axis=0) for v in ids])
    return ids, pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_shards_store_the_mean_of_each_videos_rows(cache_dir):
    with Cache(cache_dir) as cache:
        shards = sorted((cache_dir / "shards").glob("*.h5"))
        assert len(shards) == 2
        for shard in shards:
            with h5py.File(shard, "r") as h5:
                group = h5["clip"]
                ids = [v.decode() for v in group["video_ids"][()]]
                stored = group[POOLED_DATASET][()]
                assert stored.dtype == np.float32 and stored.shape == (len(ids), DIM)
                for video_id, mean in zip(ids, stored, strict=True):
                    rows = cache.read(video_id, "clip")[0].astype(np.float64)
                    np.testing.assert_allclose(mean, rows.mean(axis=0), rtol=1e-6, atol=1e-6)
        ids, expected = numpy_vectors(cache)
        vectors = video_vectors(cache, "clip")
        assert vectors.video_ids == ids
        np.testing.assert_allclose(vectors.vectors, expected, atol=1e-6)


def test_a_cache_without_pooled_data_gives_the_same_vectors(cache_dir, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(cache_dir, old)
    for shard in (old / "shards").glob("*.h5"):
        with h5py.File(shard, "r+") as h5:
            del h5["clip"][POOLED_DATASET]  # as written before issue 29
    with Cache(cache_dir) as new_cache, Cache(old) as old_cache:
        new, computed = video_vectors(new_cache, "clip"), video_vectors(old_cache, "clip")
        _, expected = numpy_vectors(old_cache)
    assert computed.video_ids == new.video_ids
    np.testing.assert_allclose(computed.vectors, new.vectors, atol=1e-7)
    np.testing.assert_allclose(computed.vectors, expected, atol=1e-6)


def test_remove_and_compact_keep_the_pooled_vectors_right(cache_dir, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    remove_videos(cache, video_ids=["v005", "v080"])
    compact_cache(cache, shard_size_mb=256, command="test")
    with Cache(cache) as opened:
        ids, expected = numpy_vectors(opened)
        vectors = video_vectors(opened, "clip")
        assert "v005" not in ids and vectors.video_ids == ids
        np.testing.assert_allclose(vectors.vectors, expected, atol=1e-6)
        status = cache_status(str(cache))["views"]["clip"]
        assert status["done"] == len(ids) == 118
        assert status["rows"] == sum(len(opened.read(v, "clip")[0]) for v in ids)


def test_the_linear_probe_reads_the_stored_means(cache_dir):
    """The solved probe's pooled features from the stored means equal the frames' masked mean
    (what it computed before), and a video subsampled to max_frames falls back to the frames."""
    import torch

    from vidcache.heads.base import masked_mean
    from vidcache.heads.data import SplitSource
    from vidcache.heads.solved import pooled_features

    with Cache(cache_dir) as cache:
        ids = sorted(cache.video_ids("clip"))[:50]
        targets = torch.zeros(len(ids), 1)
        source = SplitSource(cache, "clip", ids, targets, max_frames=64, memory_budget_bytes=1e9)
        stored = source.stored_means()
        assert stored is not None
        fast = pooled_features(masked_mean, source, torch.device("cpu"), mean=True)
        frames = pooled_features(masked_mean, source, torch.device("cpu"))
        torch.testing.assert_close(fast, frames, atol=1e-5, rtol=1e-5)
        expected = np.stack([cache.read(v, "clip")[0].astype(np.float64).mean(axis=0) for v in ids])
        np.testing.assert_allclose(fast.numpy(), expected, atol=1e-5)
        short = SplitSource(cache, "clip", ids, targets, max_frames=2, memory_budget_bytes=1e9)
        assert short.stored_means() is None  # means of 2 sampled frames are not the stored means


def test_split_sources_read_rows_only_when_batched_and_share_locations(cache_dir):
    """Train and val sources share one catalog lookup per view (`located`), and a source reads its
    padded rows on the first batch, not at construction; the batch equals `Cache.read`."""
    import torch

    from vidcache.heads.data import SplitSource

    with Cache(cache_dir) as cache:
        ids = sorted(cache.video_ids("clip"))
        located: dict = {}
        train = SplitSource(cache, "clip", ids[:40], torch.zeros(40, 1), max_frames=64, memory_budget_bytes=1e9,
                            located=located)  # fmt: skip
        val = SplitSource(cache, "clip", ids[40:60], torch.zeros(20, 1), max_frames=64, memory_budget_bytes=1e9,
                          located=located)  # fmt: skip
        assert list(located) == ["clip"] and len(located["clip"]) == len(ids)
        assert train.in_memory and train._held is None and val._held is None
        batch = next(val.batches(5, shuffle=False))
        assert val._held is not None and train._held is None
        for row, video_id in enumerate(batch.video_ids):
            rows = cache.read(video_id, "clip")[0].astype(np.float32)
            np.testing.assert_array_equal(batch.feature[row, : len(rows)].numpy(), rows)
            assert int(batch.mask[row].sum()) == len(rows)
