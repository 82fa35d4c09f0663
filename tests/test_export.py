"""`vidcache export`: every layout read back by its own reader (numpy, pyarrow, the webdataset
library) and compared with `Cache.read` / `Cache.spans` bit for bit; resumable, atomic, safe names."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from vidcache import Cache
from vidcache.cache.catalog import Catalog
from vidcache.cache.store import CacheWriter, SourceStat
from vidcache.cli import main
from vidcache.export.api import export_view
from vidcache.export.config import ExportConfig
from vidcache.manifest import VideoEntry

# ids a file system or webdataset would mangle: folders, dots, unicode, a path traversal, a near-twin
VIDEO_IDS = ["a/clip.mp4", "b/clip.mp4", "a_clip.mp4", "../../escape", "vidéo 1.mkv", "plain", "empty"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("export-cache")
    rng = np.random.default_rng(0)
    catalog = Catalog.open(path, create=True)
    for view in ("clip", "audio"):
        catalog.claim_view(view, {"model": f"test-{view}"})
    catalog.upsert_entries([VideoEntry(v, f"/x/{v}", ("a",), "train") for v in VIDEO_IDS])
    writer = CacheWriter(
        path,
        catalog,
        run_id="r",
        writer_tag="k0of1",
        root_attrs={},
        view_attrs={"clip": {}, "audio": {}},
        dtypes={"clip": "float16", "audio": "float32"},
        shard_size_mb=0.01,
    )
    for i, video_id in enumerate(VIDEO_IDS):
        n = 0 if video_id == "empty" else 3 + 2 * i
        starts = np.sort(rng.uniform(0, 30, n))
        writer.add(
            video_id,
            {
                "clip": (rng.standard_normal((n, 16)).astype(np.float32), starts),
                "audio": (rng.standard_normal((n, 8)).astype(np.float32), starts, starts + 0.96),
            },
            source=SourceStat(1, 2),
        )
        writer.maybe_commit()
    writer.commit()
    catalog.close()
    return path


def _inside(out, path) -> bool:
    return path.resolve().parent == out.resolve()


@pytest.mark.parametrize("view", ["clip", "audio"])
def test_npy_layout_round_trips_with_safe_names(cache_dir, tmp_path, view):
    out = tmp_path / "npy"
    summary = export_view(cache_dir, out, ExportConfig(view=view, format="npy"))
    assert summary.videos == len(VIDEO_IDS) and not summary.files_kept
    index = [json.loads(line) for line in (out / "videos.jsonl").read_text().splitlines()]
    assert sorted(r["video_id"] for r in index) == sorted(VIDEO_IDS)
    assert len({r["file"] for r in index}) == len(VIDEO_IDS)  # near-twin ids never share a file
    assert sorted(p.name for p in out.glob("*.npy")) == sorted(r["file"] for r in index)
    assert not (tmp_path / "escape.npy").exists() and not list(tmp_path.glob("*escape*"))
    with Cache(cache_dir) as cache:
        for record in index:
            path = out / record["file"]
            assert _inside(out, path) and "/" not in record["file"]
            features, starts = cache.read(record["video_id"], view)
            loaded = np.load(path)
            assert loaded.dtype == features.dtype and loaded.shape == features.shape
            np.testing.assert_array_equal(loaded, features)
            spans = cache.spans(record["video_id"], view)
            np.testing.assert_array_equal(np.array(record["t_start_s"], dtype=np.float64).reshape(-1), spans[:, 0])
            np.testing.assert_array_equal(np.array(record["t_end_s"], dtype=np.float64).reshape(-1), spans[:, 1])
            assert record["rows"] == len(starts)
    assert summary.rows == sum(len(r["t_start_s"]) for r in index)


def test_parquet_per_row_and_pooled_tables(cache_dir, tmp_path):
    export_view(cache_dir, tmp_path / "rows", ExportConfig(view="audio", format="parquet"))
    export_view(cache_dir, tmp_path / "pooled", ExportConfig(view="clip", format="parquet", rows="pooled"))
    table = pq.read_table(tmp_path / "rows" / "audio.parquet").to_pandas()
    pooled = pq.read_table(tmp_path / "pooled" / "clip.parquet").to_pandas().set_index("video_id")
    with Cache(cache_dir) as cache:
        assert sorted(set(table.video_id)) == sorted(v for v in VIDEO_IDS if v != "empty")
        for video_id, rows in table.groupby("video_id"):
            features, _ = cache.read(video_id, "audio")
            rows = rows.sort_values("row")
            assert list(rows.row) == list(range(len(features)))
            np.testing.assert_array_equal(np.stack(rows.features.to_numpy()), features)
            np.testing.assert_array_equal(rows[["t_start_s", "t_end_s"]].to_numpy(), cache.spans(video_id, "audio"))
        for video_id in VIDEO_IDS:
            features, starts = cache.read(video_id, "clip")
            row = pooled.loc[video_id]
            assert row["rows"] == len(features)
            expected = features.astype(np.float64).mean(axis=0) if len(features) else np.full(16, np.nan)
            np.testing.assert_allclose(np.asarray(row["features"], dtype=np.float64), expected, rtol=1e-6, atol=1e-6)
            if len(features):
                assert (row["t_start_s"], row["t_end_s"]) == (starts[0], starts[-1])


def test_webdataset_shards_read_back_with_the_webdataset_library(cache_dir, tmp_path):
    out = tmp_path / "wds"
    summary = export_view(cache_dir, out, ExportConfig(view="audio", format="webdataset", videos_per_shard=3))
    shards = sorted(out.glob("*.tar"))
    assert [p.name for p in shards] == ["audio-000000.tar", "audio-000001.tar", "audio-000002.tar"]
    assert summary.files_written == [p.name for p in shards]
    samples = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False).decode())
    assert len(samples) == len(VIDEO_IDS) and len({s["__key__"] for s in samples}) == len(VIDEO_IDS)
    with Cache(cache_dir) as cache:
        for sample in samples:
            meta = sample["json"]
            features, _ = cache.read(meta["video_id"], "audio")
            np.testing.assert_array_equal(sample["npy"], features)
            assert sample["npy"].dtype == features.dtype
            spans = cache.spans(meta["video_id"], "audio")
            np.testing.assert_array_equal(np.array(meta["t_start_s"]).reshape(-1), spans[:, 0])
            np.testing.assert_array_equal(np.array(meta["t_end_s"]).reshape(-1), spans[:, 1])


def test_a_rerun_keeps_finished_files_and_rewrites_only_what_changed(cache_dir, tmp_path):
    out = tmp_path / "npy"
    first = export_view(cache_dir, out, ExportConfig(format="npy"))
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    (out / "leftover.npy.partial").write_bytes(b"a killed export's file")
    second = export_view(cache_dir, out, ExportConfig(format="npy"))
    assert second.files_written == [] and sorted(second.files_kept) == sorted(first.files_written)
    assert not list(out.glob("*.partial"))
    # one video's rows change (its recorded CRC32 differs), another file is deleted: only those two
    # and the index are written again
    victim = out / "plain.npy"
    victim.unlink()
    with sqlite3.connect(cache_dir / "catalog.sqlite") as db:
        db.execute("UPDATE items SET checksum = checksum + 1 WHERE video_id='a_clip.mp4' AND view='clip'")
    try:
        third = export_view(cache_dir, out, ExportConfig(format="npy"))
    finally:
        with sqlite3.connect(cache_dir / "catalog.sqlite") as db:
            db.execute("UPDATE items SET checksum = checksum - 1 WHERE video_id='a_clip.mp4' AND view='clip'")
    changed = [
        r["file"]
        for r in map(json.loads, (out / "videos.jsonl").read_text().splitlines())
        if r["video_id"] == "a_clip.mp4"
    ]
    assert sorted(third.files_written) == sorted(["plain.npy", *changed, "videos.jsonl"])
    untouched = set(stamps) - set(third.files_written)
    assert {n: (out / n).stat().st_mtime_ns for n in untouched} == {n: stamps[n] for n in untouched}


def test_cli_json_and_one_line_errors(cache_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(
            [
                "export",
                "--cache",
                str(cache_dir),
                "--view",
                "clip",
                "--format",
                "parquet",
                "--out",
                str(tmp_path / "p"),
                "--json",
            ]
        )
    assert done.value.code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["files_written"] == ["clip.parquet"] and summary["videos"] == len(VIDEO_IDS)
    for args, needle in (
        (["--view", "motion"], "--view motion"),
        (["--videos-per-shard", "0"], "--videos-per-shard 0"),
    ):
        with pytest.raises(SystemExit) as done:
            main(["export", "--cache", str(cache_dir), "--out", str(tmp_path / "x"), *args, "--json"])
        captured = capsys.readouterr()
        assert done.value.code == 2, captured
        error = json.loads(captured.out)
        assert needle in error["error"] and error["exit_code"] == 2 and len(captured.err.splitlines()) == 1
