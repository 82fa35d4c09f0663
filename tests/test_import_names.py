"""`vidcache import` never gives one video's file to another (names that are prefixes of each other,
names that look like video_features' own suffixes), resolves video_features i3d / vggish / clip
timestamps to row starts and ends, and takes manifests without a path. References: the arrays the
test saved, and video_features' own i3d loop re-enacted on frame indices."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from tests.conftest import run_cli
from vidcache import Cache
from vidcache.cache.importer import import_features
from vidcache.errors import ConfigError


def manifest_of(tmp_path, paths: list[str], *, column: str = "path"):
    (tmp_path / "m.csv").write_text(column + "\n" + "\n".join(paths) + "\n")
    return tmp_path / "m.csv"


def rows(seed: int, count: int, dim: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)


def save(folder, name, array) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / name, array)


def video_features_i3d_timestamps_ms(num_frames: int, fps: float, *, stack: int = 64, step: int = 64) -> np.ndarray:
    """video_features' ExtractI3D.extract loop on frame indices: after reading frame k, POS_MSEC is k / fps;
    a stack is complete when it holds stack + 1 frames, and the timestamp is then appended."""
    stamps, held = [], 0
    for k in range(num_frames):
        held += 1
        if held - 1 == stack:
            stamps.append(k / fps * 1000)
            held -= step
    return np.array(stamps)


def read(cache_dir, video_id, view):
    with Cache(cache_dir) as cache:
        features, starts = cache.read(video_id, view, dtype=np.float32)
        return features, starts, cache.spans(video_id, view)


@pytest.mark.parametrize(
    ("stems", "feature"),
    [(("talk", "talk_vggish"), "vggish"), (("x", "x_timestamps"), "clip"), (("demo", "demo_fps"), "clip")],
)
def test_video_features_names_that_look_like_suffixes(tmp_path, stems, feature):
    out = tmp_path / "out"
    arrays = {}
    for seed, stem in enumerate(stems):
        arrays[stem] = rows(seed, 3 + seed)
        save(out, f"{stem}_{feature}.npy", arrays[stem])
        if feature == "clip":
            save(out, f"{stem}_timestamps_ms.npy", np.arange(3 + seed) * 500.0)
            save(out, f"{stem}_fps.npy", np.array(2.0))
    manifest = manifest_of(tmp_path, [f"{stem}.mp4" for stem in stems])
    summary = import_features(out, manifest=manifest, cache_dir=tmp_path / "c", view="ext")
    assert (summary.layout, summary.feature, summary.imported, summary.failures) == (
        "video_features",
        feature,
        2,
        {},
    )
    for stem in stems:
        got, starts, _ = read(tmp_path / "c", f"{stem}.mp4", "ext")
        np.testing.assert_array_equal(got, arrays[stem].astype(np.float16).astype(np.float32))
        if feature == "clip":  # frame-wise: timestamps_ms are each row's frame time
            np.testing.assert_array_equal(starts, np.arange(len(arrays[stem])) * 0.5)


def test_plain_names_that_look_like_video_features_stay_plain(tmp_path):
    feats = tmp_path / "feats"
    arrays = {stem: rows(seed, 2 + seed) for seed, stem in enumerate(("talk", "talk_vggish", "a", "a_rgb"))}
    for stem, array in arrays.items():
        save(feats, f"{stem}.npy", array)
    manifest = manifest_of(tmp_path, [f"{stem}.mp4" for stem in arrays])
    summary = import_features(feats, manifest=manifest, cache_dir=tmp_path / "c", view="ext")
    assert (summary.layout, summary.imported, summary.failed) == ("plain", 4, 0)
    for stem, array in arrays.items():
        np.testing.assert_array_equal(read(tmp_path / "c", f"{stem}.mp4", "ext")[0], array.astype(np.float16))


def test_a_folder_both_layouts_explain_equally_is_refused_naming_the_files(tmp_path):
    out = tmp_path / "out"
    save(out, "talk_vggish.npy", rows(1, 3))  # talk's vggish rows, or talk_vggish.mp4's plain file?
    manifest = manifest_of(tmp_path, ["talk.mp4", "talk_vggish.mp4"])
    with pytest.raises(ConfigError, match=r"talk_vggish\.npy for 'talk_vggish\.mp4'.*talk_vggish\.npy for 'talk\.mp4'"):
        import_features(out, manifest=manifest, cache_dir=tmp_path / "c", view="ext")
    summary = import_features(out, manifest=manifest, cache_dir=tmp_path / "c", view="ext", layout="video_features")
    assert summary.imported == 1 and list(summary.failures) == ["talk_vggish.mp4"]


def test_one_plain_file_for_two_video_ids_fails_both(tmp_path):
    feats = tmp_path / "feats"
    save(feats, "a.npy", rows(1, 2))
    save(feats, "b.npy", rows(2, 2))
    (tmp_path / "m.csv").write_text("video_id\na\na.mp4\nb\n")
    summary = import_features(feats, manifest=tmp_path / "m.csv", cache_dir=tmp_path / "c", view="ext")
    assert summary.imported == 1 and set(summary.failures) == {"a", "a.mp4"}
    assert "a.npy is the plain feature file of 2 manifest videos (a, a.mp4)" in summary.failures["a"]


def test_i3d_default_output_imports_with_the_readme_command(tmp_path):
    """`vidcache import features/ --manifest m.csv --cache feats/ --view i3d` on video_features' default
    i3d output (rgb and flow, stack 64, step 64): both streams side by side, rows timed at stack starts."""
    out, fps = tmp_path / "i3d", 25.0
    expected = {}
    for seed, (stem, frames) in enumerate([("a", 300), ("a_rgb", 200)]):
        stamps_ms = video_features_i3d_timestamps_ms(frames, fps)
        count = len(stamps_ms)
        rgb, flow = rows(seed, count, 4), rows(seed + 10, count, 4)
        save(out, f"{stem}_rgb.npy", rgb)
        save(out, f"{stem}_flow.npy", flow)
        save(out, f"{stem}_fps.npy", np.array(fps))
        save(out, f"{stem}_timestamps_ms.npy", stamps_ms)
        first_frames = np.arange(count) * 64  # stack s covers frames 64 s .. 64 s + 63
        expected[stem] = (np.concatenate([rgb, flow], axis=1), first_frames / fps, (first_frames + 64) / fps)
    manifest = manifest_of(tmp_path, ["a.mp4", "a_rgb.mp4"])
    result = run_cli("import", out, "--manifest", manifest, "--cache", tmp_path / "c", "--view", "i3d", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["feature"], summary["dim"], summary["timestamps"], summary["imported"]) == (
        "rgb+flow",
        8,
        "i3d_stack",
        2,
    )
    for stem, (features, starts, ends) in expected.items():
        got, got_starts, spans = read(tmp_path / "c", f"{stem}.mp4", "i3d")
        np.testing.assert_array_equal(got, features.astype(np.float16).astype(np.float32))
        np.testing.assert_allclose(got_starts, starts, atol=1e-9)
        np.testing.assert_allclose(spans[:, 1], ends, atol=1e-9)
    with Cache(tmp_path / "c") as cache:
        assert cache.view_info("i3d")["i3d_stack_frames"] == 64


def test_i3d_timestamps_that_contradict_the_stack_size_fail_that_video(tmp_path):
    out = tmp_path / "i3d"
    save(out, "v_rgb.npy", rows(1, 2, 4))
    save(out, "v_fps.npy", np.array(25.0))
    save(out, "v_timestamps_ms.npy", video_features_i3d_timestamps_ms(100, 25.0, stack=16, step=16)[:2])
    manifest = manifest_of(tmp_path, ["v.mp4", "w.mp4"])
    summary = import_features(out, manifest=manifest, cache_dir=tmp_path / "c", view="i3d", feature="rgb")
    assert "give --i3d-stack-frames" in summary.failures["v.mp4"]
    again = import_features(
        out, manifest=manifest, cache_dir=tmp_path / "c16", view="i3d", feature="rgb", i3d_stack_frames=16
    )
    assert again.imported == 1
    np.testing.assert_allclose(read(tmp_path / "c16", "v.mp4", "i3d")[1], [0.0, 16 / 25])


def test_manifest_without_path_needs_only_video_ids(tmp_path):
    out = tmp_path / "vggish"
    save(out, "clip01_vggish.npy", rows(1, 4, 128))
    save(out, "clip02_vggish.npy", rows(2, 2, 128))
    manifest = manifest_of(tmp_path, ["clip01", "clip02"], column="video_id")
    summary = import_features(out, manifest=manifest, cache_dir=tmp_path / "c", view="vggish")
    assert (summary.imported, summary.feature) == (2, "vggish")
    spans = read(tmp_path / "c", "clip01", "vggish")[2]
    np.testing.assert_allclose(spans, np.stack([np.arange(4) * 0.96, np.arange(1, 5) * 0.96], axis=1))
    with Cache(tmp_path / "c") as cache:
        assert cache.entries().set_index("video_id").loc["clip02", "path"] == ""


def test_a_view_imported_by_an_older_vidcache_is_refused_with_the_reason(tmp_path):
    feats = tmp_path / "feats"
    save(feats, "x.npy", rows(1, 2))
    manifest = manifest_of(tmp_path, ["x.mp4"])
    import_features(feats, manifest=manifest, cache_dir=tmp_path / "c", view="ext")
    with sqlite3.connect(tmp_path / "c" / "catalog.sqlite") as db:  # what an older vidcache recorded
        (text,) = db.execute("SELECT identity_json FROM views WHERE view='ext'").fetchone()
        old = {k: v for k, v in json.loads(text).items() if k != "fidelity"}
        db.execute("UPDATE views SET identity_json=? WHERE view='ext'", (json.dumps(old, sort_keys=True),))
    with pytest.raises(ConfigError, match=r"older vidcache \(fidelity 1\).*new --cache"):
        import_features(feats, manifest=manifest, cache_dir=tmp_path / "c", view="ext")
