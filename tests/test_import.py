"""`import_features`: plain and video_features `.npy` layouts into a cache, read back through `Cache`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import run_cli
from vidcache import Cache
from vidcache.cache.catalog import Catalog
from vidcache.cache.importer import import_features
from vidcache.cache.verify import verify_cache
from vidcache.errors import ConfigError

D = 8


def write_manifest(tmp_path, rows: list[tuple[str, str, str]]):
    """Rows of (path relative to the manifest folder, labels, split); the videos need not exist."""
    folder = tmp_path / "videos"
    folder.mkdir(exist_ok=True)
    lines = ["path,labels,split"] + [",".join(row) for row in rows]
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)


def features(seed: int, rows: int, dim: int = D) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32) * 3


@pytest.fixture
def plain(tmp_path):
    """Plain layout: ids with subfolders, files with and without the video's extension, one [D] row."""
    manifest = write_manifest(
        tmp_path,
        [("a/one.mp4", "cat;dog", "train"), ("a/two.mp4", "dog", "val"), ("b/three.mp4", "", "test")],
    )
    feats = tmp_path / "feats"
    arrays = {"a/one.mp4": features(1, 5), "a/two.mp4": features(2, 3), "b/three.mp4": features(3, 1)[0]}
    stamps_s = {"a/one.mp4": np.array([0.0, 0.5, 1.0, 1.5, 2.25]), "a/two.mp4": np.array([3.0, 4.0, 5.0])}
    save(feats / "a" / "one.npy", arrays["a/one.mp4"])  # without the extension
    save(feats / "a" / "one_timestamps_ms.npy", stamps_s["a/one.mp4"] * 1000)
    save(feats / "a" / "two.mp4.npy", arrays["a/two.mp4"])  # with it
    save(feats / "a" / "two.mp4.timestamps_s.npy", stamps_s["a/two.mp4"])
    save(feats / "b" / "three.npy", arrays["b/three.mp4"])  # [D]: one row
    save(feats / "b" / "three_timestamps_ms.npy", np.array([7500.0]))
    stamps_s["b/three.mp4"] = np.array([7.5])
    return manifest, feats, arrays, stamps_s


def test_plain_layout_reads_back_exactly(plain, tmp_path):
    manifest, feats, arrays, stamps_s = plain
    cache_dir = tmp_path / "cache"
    summary = import_features(feats, manifest=manifest, cache_dir=cache_dir, view="ext", command="vidcache import")
    assert (summary.imported, summary.failed, summary.failures) == (3, 0, {})
    assert (summary.view, summary.dim, summary.layout, summary.timestamps) == ("ext", D, "plain", "given")
    with Cache(cache_dir) as cache:
        for video_id, array in arrays.items():
            got, timestamps_s = cache.read(video_id, "ext")
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got, np.atleast_2d(array).astype(np.float16))
            np.testing.assert_array_equal(timestamps_s, stamps_s[video_id])
        assert cache.view_info("ext") == {
            "imported_from": str(feats.resolve()),
            "layout": "plain",
            "feature": "",
            "feature_dim": D,
            "dtype": "float16",
            "timestamps": "given",
            "fidelity": 2,
        }
        assert cache.video_info("a/one.mp4", "ext")["feature_file"] == str((feats / "a" / "one.npy").resolve())
        entries = cache.entries().set_index("video_id")
        assert list(entries.loc["a/one.mp4", "labels"]) == ["cat", "dog"]
        assert entries.loc["a/two.mp4", "split"] == "val" and list(entries.loc["b/three.mp4", "labels"]) == []
        assert sorted(cache.video_ids("ext")) == sorted(arrays)
    assert verify_cache(cache_dir).ok


def test_plain_layout_without_timestamps_uses_the_row_index(tmp_path):
    manifest = write_manifest(tmp_path, [("x.mp4", "a", ""), ("y.mp4", "b", "")])
    feats = tmp_path / "feats"
    save(feats / "x.npy", features(1, 4))
    save(feats / "y.npy", features(2, 2))
    summary = import_features(feats, manifest=manifest, cache_dir=tmp_path / "cache", view="ext", dtype="float32")
    assert summary.imported == 2 and summary.timestamps == "index"
    with Cache(tmp_path / "cache") as cache:
        got, timestamps_s = cache.read("x.mp4", "ext")
        np.testing.assert_array_equal(got, features(1, 4))  # float32 stored as given
        np.testing.assert_array_equal(timestamps_s, [0.0, 1.0, 2.0, 3.0])
        assert cache.view_info("ext")["timestamps"] == "index" and cache.view_info("ext")["dtype"] == "float32"


@pytest.fixture
def video_features_dir(tmp_path):
    """video_features output: `<stem>_<key>.npy` for clip and r21d, `_timestamps_ms` and `_fps`; the
    stems `beta` and `beta_gamma` overlap; `delta` has no clip output."""
    manifest = write_manifest(
        tmp_path,
        [
            ("d1/alpha.mp4", "run", "train"),
            ("d2/beta.mkv", "jump", "train"),
            ("d2/beta_gamma.mp4", "run;jump", "test"),
            ("d1/delta.mp4", "swim", "test"),
        ],
    )
    out = tmp_path / "output" / "clip"
    arrays, stamps_ms = {}, {}
    for seed, (video_id, stem, rows) in enumerate(
        [("d1/alpha.mp4", "alpha", 4), ("d2/beta.mkv", "beta", 2), ("d2/beta_gamma.mp4", "beta_gamma", 3)]
    ):
        arrays[video_id] = features(10 + seed, rows)
        stamps_ms[video_id] = np.arange(rows) * 41.7 + 5
        save(out / f"{stem}_clip.npy", arrays[video_id])
        save(out / f"{stem}_r21d.npy", features(20 + seed, rows, 16))  # like i3d rgb / flow
        save(out / f"{stem}_timestamps_ms.npy", stamps_ms[video_id])
        save(out / f"{stem}_fps.npy", np.array(23.976))
    save(out / "delta_timestamps_ms.npy", np.arange(3) * 40.0)
    return manifest, out, arrays, stamps_ms


def test_video_features_layout_reads_back_exactly(video_features_dir, tmp_path):
    manifest, out, arrays, stamps_ms = video_features_dir
    cache_dir = tmp_path / "cache"
    summary = import_features(out, manifest=manifest, cache_dir=cache_dir, view="vf_clip", feature="clip")
    assert (summary.imported, summary.layout, summary.feature, summary.dim) == (3, "video_features", "clip", D)
    assert list(summary.failures) == ["d1/delta.mp4"] and summary.failed == 1
    assert summary.failures["d1/delta.mp4"] == f"no feature file (looked for {out.resolve() / 'delta_clip.npy'})"
    with Cache(cache_dir) as cache:
        for video_id, array in arrays.items():
            got, timestamps_s = cache.read(video_id, "vf_clip")
            np.testing.assert_array_equal(got, array.astype(np.float16))
            np.testing.assert_array_equal(timestamps_s, stamps_ms[video_id] / 1000.0)
            assert cache.video_info(video_id, "vf_clip")["fps"] == pytest.approx(23.976)
        assert cache.failed("vf_clip") == summary.failures
        assert cache.status("d1/delta.mp4") == {"vf_clip": "failed"}
        info = cache.view_info("vf_clip")
        assert (info["layout"], info["feature"], info["timestamps"]) == ("video_features", "clip", "frame")
        entries = cache.entries().set_index("video_id")
        assert list(entries.loc["d2/beta_gamma.mp4", "labels"]) == ["run", "jump"]
        assert entries.loc["d1/delta.mp4", "split"] == "test"  # failed videos keep their labels too

    with pytest.raises(ConfigError, match=r"other settings.*feature"):
        import_features(out, manifest=manifest, cache_dir=cache_dir, view="vf_clip", feature="r21d")
    with pytest.raises(ConfigError, match=r"several video_features outputs: clip .*r21d"):
        import_features(out, manifest=manifest, cache_dir=tmp_path / "other", view="vf")
    r21d = import_features(out, manifest=manifest, cache_dir=cache_dir, view="vf_r21d", feature="r21d")
    assert r21d.imported == 3 and r21d.dim == 16
    with Cache(cache_dir) as cache:
        assert cache.views() == ["vf_clip", "vf_r21d"]
        np.testing.assert_array_equal(cache.read("d1/alpha.mp4", "vf_clip")[0], arrays["d1/alpha.mp4"].astype("f2"))


def test_video_features_output_is_found_when_alone(tmp_path):
    manifest = write_manifest(tmp_path, [("v/one.mp4", "a", ""), ("v/two.mp4", "b", "")])
    out = tmp_path / "vggish"
    save(out / "one_vggish.npy", features(1, 3, 128))
    save(out / "two_vggish.npy", features(2, 5, 128))
    summary = import_features(out, manifest=manifest, cache_dir=tmp_path / "cache", view="audio_vggish")
    assert (summary.layout, summary.feature, summary.timestamps, summary.imported) == (
        "video_features",
        "vggish",
        "vggish_example",
        2,
    )
    with Cache(tmp_path / "cache") as cache:  # VGGish's 0.96 s examples, back to back from the audio's start
        np.testing.assert_allclose(cache.read("v/two.mp4", "audio_vggish")[1], np.arange(5.0) * 0.96)
        np.testing.assert_allclose(cache.spans("v/two.mp4", "audio_vggish")[:, 1], np.arange(1, 6) * 0.96)


def test_bad_videos_fail_alone(tmp_path):
    manifest = write_manifest(
        tmp_path, [(f"{name}.mp4", "x", "") for name in ("good", "wide", "cube", "nan", "huge", "short", "gone")]
    )
    feats = tmp_path / "feats"
    for name in ("good", "wide", "cube", "nan", "huge", "short"):
        save(feats / f"{name}_timestamps_ms.npy", np.arange(3) * 100.0)
    save(feats / "good.npy", features(1, 3))
    save(feats / "wide.npy", features(2, 3, D + 1))
    save(feats / "cube.npy", np.zeros((3, 2, D), np.float32))
    nan = features(3, 3)
    nan[1, 2] = np.nan
    save(feats / "nan.npy", nan)
    save(feats / "huge.npy", features(4, 3) * 1e5)
    save(feats / "short.npy", features(5, 4))  # 4 rows, 3 timestamps
    summary = import_features(feats, manifest=manifest, cache_dir=tmp_path / "cache", view="ext")
    assert summary.imported == 1 and summary.failed == 6
    reasons = summary.failures
    assert f"D={D + 1}, the other videos D={D}" in reasons["wide.mp4"]
    assert "shape (3, 2, 8)" in reasons["cube.mp4"]
    assert "NaN or infinite" in reasons["nan.mp4"] and "first row 1" in reasons["nan.mp4"]
    assert "beyond float16" in reasons["huge.mp4"]
    assert "3 timestamps for 4 feature rows" in reasons["short.mp4"]
    assert reasons["gone.mp4"].startswith("no feature file (looked for ") and "gone.mp4.npy" in reasons["gone.mp4"]
    with Cache(tmp_path / "cache") as cache:
        assert cache.video_ids("ext") == ["good.mp4"]
        assert cache.failed("ext") == reasons
    again = import_features(feats, manifest=manifest, cache_dir=tmp_path / "c32", view="ext", dtype="float32")
    assert "huge.mp4" not in again.failures and again.imported == 2


def test_missing_timestamps_among_given_ones_fail_that_video(tmp_path):
    manifest = write_manifest(tmp_path, [("a.mp4", "", ""), ("b.mp4", "", "")])
    feats = tmp_path / "feats"
    save(feats / "a.npy", features(1, 2))
    save(feats / "a_timestamps_ms.npy", np.array([0.0, 500.0]))
    save(feats / "b.npy", features(2, 2))
    summary = import_features(feats, manifest=manifest, cache_dir=tmp_path / "cache", view="ext")
    assert summary.imported == 1 and "no timestamps file" in summary.failures["b.mp4"]


def test_shared_stems_cannot_be_told_apart_in_video_features(tmp_path):
    manifest = write_manifest(tmp_path, [("a/clip.mp4", "", ""), ("b/clip.mp4", "", ""), ("c/other.mp4", "", "")])
    out = tmp_path / "out"
    save(out / "clip_s3d.npy", features(1, 2))
    save(out / "other_s3d.npy", features(2, 2))
    summary = import_features(out, manifest=manifest, cache_dir=tmp_path / "cache", view="s3d_ext", feature="s3d")
    assert summary.imported == 1
    assert set(summary.failures) == {"a/clip.mp4", "b/clip.mp4"}
    assert "share the file name stem 'clip'" in summary.failures["a/clip.mp4"]


def test_same_import_again_replaces_rows_and_keeps_the_cache_sound(plain, tmp_path):
    manifest, feats, arrays, _ = plain
    cache_dir = tmp_path / "cache"
    import_features(feats, manifest=manifest, cache_dir=cache_dir, view="ext")
    changed = features(99, 5)
    save(feats / "a" / "one.npy", changed)
    (feats / "b" / "three.npy").unlink()  # now missing: its earlier rows stay
    summary = import_features(feats, manifest=manifest, cache_dir=cache_dir, view="ext")
    assert summary.imported == 2 and list(summary.failures) == ["b/three.mp4"]
    with Cache(cache_dir) as cache:
        np.testing.assert_array_equal(cache.read("a/one.mp4", "ext")[0], changed.astype(np.float16))
        np.testing.assert_array_equal(cache.read("a/two.mp4", "ext")[0], arrays["a/two.mp4"].astype(np.float16))
        np.testing.assert_array_equal(cache.read("b/three.mp4", "ext")[0], arrays["b/three.mp4"][None].astype("f2"))
        assert cache.video_ids("ext") == ["a/one.mp4", "a/two.mp4", "b/three.mp4"]
    catalog = Catalog.open(cache_dir)
    try:
        assert len(catalog.shards()) == 2
        runs = [json.loads(r["summary_json"]) for r in catalog.runs()]
        assert runs[-1] == {"videos": 2, "view": "ext", "failed": 1}
    finally:
        catalog.close()
    report = verify_cache(cache_dir)
    assert report.ok and not report.unrecorded


def test_requests_that_cannot_work_are_config_errors(plain, tmp_path):
    manifest, feats, *_ = plain
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match="none of the 3 manifest videos"):
        import_features(tmp_path / "videos", manifest=manifest, cache_dir=cache, view="ext")
    with pytest.raises(ConfigError, match="does not exist"):
        import_features(tmp_path / "nope", manifest=manifest, cache_dir=cache, view="ext")
    with pytest.raises(ConfigError, match="--dtype"):
        import_features(feats, manifest=manifest, cache_dir=cache, view="ext", dtype="int8")
    with pytest.raises(ConfigError, match="not a view name"):
        import_features(feats, manifest=manifest, cache_dir=cache, view="a/b")
    with pytest.raises(ConfigError, match="plain layout has none"):
        import_features(feats, manifest=manifest, cache_dir=cache, view="ext", feature="clip", layout="plain")
    assert not cache.exists()
    import_features(feats, manifest=manifest, cache_dir=cache, view="ext")
    with pytest.raises(ConfigError, match=r"other settings.*dtype"):
        import_features(feats, manifest=manifest, cache_dir=cache, view="ext", dtype="float32")


@pytest.mark.parametrize(
    ("fault", "words"),
    [("shard-add:ENOSPC:2", ("no space left", "free space")), ("cache-write:EROFS", ("not writable",))],
)
def test_full_disk_or_read_only_cache_fail_in_one_line_and_keep_the_cache(plain, tmp_path, fault, words):
    """`vidcache import` (and `predict --write-view`, same writer) on a cache that fills up or turns
    read-only: exit 2 with one line naming the cache, no traceback, no partial shard, the view
    imported before still reads exactly; with the fault gone the same command finishes."""
    manifest, feats, arrays, stamps_s = plain
    cache_dir = tmp_path / "cache"
    import_features(feats, manifest=manifest, cache_dir=cache_dir, view="ext", command="first")
    args = ("import", feats, "--manifest", manifest, "--cache", cache_dir, "--view", "ext2", "--json")
    failed = run_cli(*args, env={"VIDCACHE_FAULT": fault})
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(cache_dir) in lines[0] and all(w in lines[0] for w in words), failed.stderr
    assert not [p for p in cache_dir.rglob("*") if p.name.endswith((".partial", "-journal"))]
    assert verify_cache(cache_dir).broken == {}
    with Cache(cache_dir) as cache:
        assert cache.video_ids("ext2") == []
        for video_id, array in arrays.items():
            rows, times_s = cache.read(video_id, "ext", dtype=np.float32)
            np.testing.assert_allclose(rows, np.atleast_2d(array), rtol=1e-3, atol=1e-2)
            np.testing.assert_allclose(times_s, stamps_s[video_id])
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["imported"] == 3
