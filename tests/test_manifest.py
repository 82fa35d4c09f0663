from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import run_cli
from vidcache.errors import ManifestError
from vidcache.manifest import read_manifest, select_shard


def write_csv(path, text: str):
    path.write_text(text)
    return path


def test_defaults_ids_relative_to_root_labels_and_segments(tmp_path):
    manifest = write_csv(
        tmp_path / "m.csv", "path,labels,split,start_s,end_s\nx/clip.mp4,cat; dog ;,train,,\ny/clip.mp4,,test,1.5,3\n"
    )
    a, b = read_manifest(manifest)
    assert (a.video_id, b.video_id) == ("x/clip.mp4", "y/clip.mp4")  # same file name, no collision
    assert a.path == str(tmp_path / "x" / "clip.mp4")
    assert a.labels == ("cat", "dog") and b.labels == ()
    assert (a.split, b.split) == ("train", "test")
    assert (b.start_s, b.end_s) == (1.5, 3.0) and a.start_s is None


def test_every_bad_row_reported_at_once_with_line_numbers(tmp_path):
    manifest = write_csv(
        tmp_path / "m.csv", "path,video_id,start_s,end_s\na.mp4,v1,,\n,v2,,\nb.mp4,v1,,\nc.mp4,v3,5,2\nd.mp4,v4,abc,\n"
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest)
    problems = info.value.problems
    assert len(problems) == 4
    assert problems[0].startswith("row 2 (line 3): empty path")
    assert "row 3 (line 4): duplicate video_id 'v1' (first at row 1)" in problems[1]
    assert "row 4 (line 5): end_s=2.0 is not after start_s=5.0" in problems[2]
    assert "row 5 (line 6): start_s='abc'" in problems[3]


def test_missing_path_column_and_parquet(tmp_path):
    with pytest.raises(ManifestError, match="missing required column 'path'"):
        read_manifest(write_csv(tmp_path / "m.csv", "file,labels\na.mp4,x\n"))
    pq = tmp_path / "m.parquet"
    pd.DataFrame({"path": ["a.mp4", "b/a.mp4"], "labels": ["x;y", None]}).to_parquet(pq)
    entries = read_manifest(pq)
    assert [e.video_id for e in entries] == ["a.mp4", "b/a.mp4"] and entries[0].labels == ("x", "y")


def test_root_confines_paths(tmp_path):
    (tmp_path / "data").mkdir()
    manifest = write_csv(tmp_path / "m.csv", "path\nok.mp4\n../escape.mp4\n/etc/passwd\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(manifest, root=tmp_path / "data")
    assert [p.split(":")[0] for p in info.value.problems] == ["row 2 (line 3)", "row 3 (line 4)"]


def test_shards_partition_the_manifest_deterministically(tmp_path):
    manifest = write_csv(tmp_path / "m.csv", "path\n" + "\n".join(f"v{i}.mp4" for i in range(100)) + "\n")
    entries = read_manifest(manifest)
    parts = [select_shard(entries, k, 4) for k in range(4)]
    ids = [e.video_id for part in parts for e in part]
    assert sorted(ids) == sorted(e.video_id for e in entries)  # disjoint and complete
    assert all(10 < len(p) < 40 for p in parts)
    assert [e.video_id for e in select_shard(list(reversed(entries)), 1, 4)] == [e.video_id for e in reversed(parts[1])]


def test_cli_bad_manifest_exits_2_and_writes_nothing(tmp_path):
    manifest = write_csv(tmp_path / "m.csv", "path,end_s\n,\na.mp4,-1\n")
    cache = tmp_path / "cache"
    result = run_cli(
        "extract", manifest, "--cache", cache, "--clip-model", "vidcache-tiny", "--clip-pretrained", "none"
    )
    assert result.returncode == 2
    assert "row 1 (line 2): empty path" in result.stderr and "row 2 (line 3): end_s='-1'" in result.stderr
    assert not cache.exists()
