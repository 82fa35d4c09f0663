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


def test_location_tables_equal_the_per_item_locations(cache_dir, tmp_path):
    """`view_locations` (one SQL query, arrays) gives each video the location `Cache._locations`
    (one checked `Item` per video, the reference) gives; unknown ids are MISSING; a damaged row
    number is the damaged-catalog error."""
    import sqlite3

    from vidcache.cache.locations import MISSING, view_locations
    from vidcache.errors import CacheError

    with Cache(cache_dir) as cache:
        ids = sorted(cache.video_ids("clip"))
        expected = {loc.video_id: loc for loc in cache._locations("clip")}
        located = view_locations(cache, "clip")
        asked = [ids[7], "nope", *reversed(ids[:5]), ids[-1]]
        table = located.take(asked)
        assert len(located) == len(ids) and table.location(1) is None and table.shard[1] == MISSING
        assert [table.location(i) for i in range(len(asked)) if i != 1] == [expected[v] for v in asked if v != "nope"]
        order = [asked[i] for i in table.storage_order()]
        by_storage = sorted(expected.values(), key=lambda loc: (loc.shard, loc.row_start))
        assert order[:-1] == [loc.video_id for loc in by_storage if loc.video_id in asked] and order[-1] == "nope"
    damaged = tmp_path / "damaged"
    shutil.copytree(cache_dir, damaged)
    with sqlite3.connect(damaged / "catalog.sqlite") as db:
        db.execute("UPDATE items SET row_start='x' WHERE video_id='v010'")
    with Cache(damaged) as cache, pytest.raises(CacheError, match=r"catalog .* is damaged"):
        view_locations(cache, "clip")


def test_linear_head_from_stored_means_equals_one_trained_on_rows_pooled_in_numpy(tmp_path):
    """`train --head linear` (a fixed C: the sweep repeats the same solve) on a cache of several rows per video, which
    reads the stored means, gives the head that the same training gives on a second cache holding one
    row per video: that video's rows averaged in NumPy (float64) from `Cache.read`."""
    import json

    import torch
    from safetensors.torch import load_file

    from vidcache.heads import HEADS, TrainConfig
    from vidcache.heads.data import SplitSource
    from vidcache.heads.train import train

    rng = np.random.default_rng(29)
    centres = rng.normal(size=(3, DIM))
    entries, rows = [], []
    for i in range(150):
        label, split = int(rng.integers(3)), ("train", "train", "val", "test")[i % 4]
        frames = centres[label] + 2.0 * rng.normal(size=(int(rng.integers(1, 7)), DIM))
        entries.append(VideoEntry(f"v{i:03d}", f"/x/v{i:03d}.mp4", (f"c{label}",), split))
        rows.append((f"v{i:03d}", frames.astype(np.float32), np.arange(len(frames), dtype=float)))
    frames_cache, means_cache = tmp_path / "frames", tmp_path / "means"
    write_view_arrays(frames_cache, view="clip", rows=rows, entries=entries, identity={"model": "s"}, dtype="float32")
    with Cache(frames_cache) as cache:
        means = [(v, cache.read(v, "clip")[0].astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32),
                  np.zeros(1)) for v, _, _ in rows]  # fmt: skip
        source = SplitSource(cache, "clip", [v for v, _, _ in rows], torch.zeros(len(rows), 1), max_frames=64,
                             memory_budget_bytes=1e9)  # fmt: skip
        assert source.stored_means() is not None  # the path under test: stored means, not frames
    write_view_arrays(means_cache, view="clip", rows=means, entries=entries, identity={"model": "s"}, dtype="float32")
    config = TrainConfig(head="linear", options=HEADS.options("linear", probe_c=0.3))
    summaries = [train(c, config, tmp_path / f"run_{c.name}") for c in (frames_cache, means_cache)]
    assert summaries[0].val_metrics == pytest.approx(summaries[1].val_metrics, abs=1e-6)
    model = [load_file(tmp_path / f"run_{c.name}" / "best.safetensors") for c in (frames_cache, means_cache)]
    assert model[0].keys() == model[1].keys() and any(k.startswith("model.") for k in model[0])
    for name in model[0]:
        torch.testing.assert_close(model[0][name], model[1][name], atol=1e-5, rtol=1e-5)
    runs = [tmp_path / f"run_{c.name}" for c in (frames_cache, means_cache)]
    first, second = (json.loads((r / "thresholds.json").read_text()) for r in runs)
    assert first == second


@pytest.mark.parametrize("max_frames", [64, 3])
def test_a_held_split_filled_block_by_block_equals_one_whole_read(cache_dir, tmp_path, max_frames):
    """`_read_whole` (tensors allocated once, filled per block) gives exactly what `_read` of every
    position gives (one gather of the whole split): values, padding, masks, times and presence, for
    one view and for two views where some videos lack the second (subsampled or not)."""
    import torch

    from vidcache.heads.data import SplitSource

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    rng = np.random.default_rng(5)
    some = sorted(Cache(copy).video_ids("clip"))[::3]
    lengths = rng.integers(1, 6, size=len(some))
    extra = [
        (v, rng.normal(size=(n, 8)).astype(np.float16), np.arange(n) * 0.5) for v, n in zip(some, lengths, strict=True)
    ]
    write_view_arrays(copy, view="audio", rows=extra, entries=[], identity={"model": "a"})
    with Cache(copy) as cache:
        ids = sorted(cache.video_ids("clip"))
        for views in ("clip", ["clip", "audio"]):
            source = SplitSource(cache, views, ids, torch.zeros(len(ids), 2), max_frames=max_frames,
                                 memory_budget_bytes=1e9, block_videos=7)  # fmt: skip
            whole, reference = source._read_whole(), source._read(list(range(len(ids))))
            assert whole.video_ids == reference.video_ids
            torch.testing.assert_close(whole.rows, reference.rows, rtol=0, atol=0)
            for view in source.views:
                for got, want in ((whole.features, reference.features), (whole.masks, reference.masks),
                                  (whole.times_s, reference.times_s), (whole.present, reference.present)):  # fmt: skip
                    assert got[view].shape == want[view].shape
                    torch.testing.assert_close(got[view], want[view], rtol=0, atol=0)


def test_a_mean_pooled_source_serves_each_videos_stored_mean_row(cache_dir):
    """`read_means`: batches of [B, 1, D] equal to each video's mean row (NumPy over `Cache.read`), held or
    streamed block by block in storage order; refused where the stored mean is not the frames' mean."""
    import torch

    from vidcache.heads.data import SplitSource

    with Cache(cache_dir) as cache:
        ids = sorted(cache.video_ids("clip"))
        expected = np.stack([cache.read(v, "clip")[0].astype(np.float64).mean(axis=0) for v in ids])
        for budget in (1e9, 0):  # held, streamed
            source = SplitSource(cache, "clip", ids, torch.zeros(len(ids), 1), max_frames=64,
                                 memory_budget_bytes=budget, block_videos=16)  # fmt: skip
            assert source.read_means(True) and source.in_memory == bool(budget)
            got = np.zeros_like(expected)
            for batch in source.batches(7, shuffle=True, generator=torch.Generator().manual_seed(0)):
                assert batch.feature.shape[1:] == (1, DIM) and bool(batch.mask.all())
                got[batch.rows.numpy()] = batch.feature[:, 0].numpy()
            np.testing.assert_allclose(got, expected, atol=1e-6)
            assert not source.read_means(False) and next(source.batches(4, shuffle=False)).feature.shape[1] > 1
        short = SplitSource(cache, "clip", ids, torch.zeros(len(ids), 1), max_frames=2, memory_budget_bytes=1e9)
        assert not short.read_means(True)  # a mean of 2 sampled frames is not the stored mean


def test_every_head_that_says_mean_pooled_sees_frames_only_through_their_mean():
    """Generated from the head registry: a head declaring `mean_pooled` (so training and predict feed it
    stored mean rows) gives the same outputs on a video's frames as on their mean as one frame."""
    import torch

    from vidcache.heads import HEADS
    from vidcache.heads.context import LabelTexts
    from vidcache.heads.data import Batch

    rng = torch.Generator().manual_seed(0)
    features = torch.randn(5, 6, 4, generator=rng)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 3, 1, 4, 2])[:, None]
    means = (features * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    checked = []
    for name in HEADS.names():
        if HEADS.get(name).kind != "classify" or HEADS.needs(name, LabelTexts):
            continue
        head = HEADS.create(name, input_dim=4, num_classes=3, multi_label=False, options=HEADS.options_from(name, {}))
        if not getattr(head, "mean_pooled", False):
            continue
        head.eval()

        def batch(f, m):
            n = len(f)
            present = {"clip": torch.ones(n, dtype=torch.bool)}
            return Batch({"clip": f}, {"clip": m}, {"clip": torch.zeros(m.shape)}, present, torch.zeros(n, 3),
                         torch.arange(n), list("abcde"))  # fmt: skip

        with torch.no_grad():
            frames = head.forward_batch(batch(features, mask)).logits
            mean = head.forward_batch(batch(means[:, None, :], torch.ones(5, 1, dtype=torch.bool))).logits
        torch.testing.assert_close(frames, mean, atol=1e-5, rtol=1e-5)
        checked.append(name)
    assert {"linear", "prototype"} <= set(checked), checked
