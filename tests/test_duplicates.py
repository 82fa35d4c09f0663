"""`mine duplicates` against an exact brute-force twin (NumPy all-pairs cosine + a plain union-find),
and `remove --duplicates` keeping one video per group."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from vidcache import Cache
from vidcache.cache.arrays import write_view_arrays
from vidcache.cli import cli
from vidcache.index.api import mine_duplicates
from vidcache.manifest import VideoEntry

N_VIDEOS, ROWS, DIM = 3000, 4, 32
THRESHOLD = 0.97


def planted_corpus(seed: int = 0):
    """Random videos (unrelated: cosines near 0) and groups of 2-5 near-copies of one of them."""
    rng = np.random.default_rng(seed)
    videos: dict[str, np.ndarray] = {}
    i = 0
    while len(videos) < N_VIDEOS:
        base = rng.normal(size=(ROWS, DIM))
        videos[f"v{i:05d}"] = base
        i += 1
        if rng.random() < 0.15:  # a planted group: copies with a little noise
            for _ in range(int(rng.integers(1, 5))):
                videos[f"v{i:05d}"] = base + rng.normal(size=base.shape) * 0.05
                i += 1
    return dict(list(videos.items())[:N_VIDEOS])


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    videos = planted_corpus()
    path = tmp_path_factory.mktemp("dups") / "cache"
    entries = [VideoEntry(v, f"/x/{v}.mp4", ("a",), "train") for v in videos]
    rows = [(v, frames.astype(np.float16), np.arange(ROWS, dtype=float)) for v, frames in videos.items()]
    write_view_arrays(path, view="clip", rows=rows, entries=entries, identity={"model": "synthetic"})
    return path


def brute_force_pairs(cache: Cache, threshold: float) -> tuple[list[str], set[tuple[str, str]]]:
    """Every pair of videos in one group: all-pairs float64 cosine of the mean rows (read back from
    the cache), edges at >= threshold, components by union-find."""
    ids = sorted(cache.video_ids("clip"))
    pooled = np.stack([rows.astype(np.float64).mean(axis=0) for rows, _ in cache.read_many(ids, "clip")])
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    sims = unit @ unit.T
    parent = list(range(len(ids)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(*np.nonzero(np.triu(sims >= threshold, k=1)), strict=True):
        parent[root(a)] = root(b)
    groups: dict[int, list[str]] = {}
    for row, video_id in enumerate(ids):
        groups.setdefault(root(row), []).append(video_id)
    return ids, {(a, b) for members in groups.values() for a in members for b in members if a < b}


def pairs_of(frame: pd.DataFrame) -> set[tuple[str, str]]:
    out = set()
    for _, members in frame.groupby("group_id")["video_id"]:
        out |= {(a, b) for a in members for b in members if a < b}
    return out


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivfsq"])
def test_groups_match_the_brute_force_twin(cache_dir, index_type):
    with Cache(cache_dir) as cache:
        ids, expected = brute_force_pairs(cache, THRESHOLD)
        unit = {
            v: r.astype(np.float64).mean(axis=0) for v, (r, _) in zip(ids, cache.read_many(ids, "clip"), strict=True)
        }
    mined = mine_duplicates(cache_dir, view="clip", threshold=THRESHOLD, index_type=index_type, write=False)
    frame = mined.frame
    found = pairs_of(frame)
    assert len(expected) > 300  # the planted groups are there
    precision = len(found & expected) / len(found)
    recall = len(found & expected) / len(expected)
    assert precision >= 0.99 and recall >= 0.99, (precision, recall)
    if index_type == "flat":
        assert found == expected
    # one representative per group, and the similarity column is the cosine to it
    reps = frame[frame["representative"]].set_index("group_id")["video_id"]
    assert reps.index.is_unique and set(reps.index) == set(frame["group_id"])
    for row in frame.itertuples():
        a, b = unit[row.video_id], unit[reps[row.group_id]]
        assert row.similarity == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-6)
    assert mined.summary.parameters["groups"] == len(reps)


def test_cli_writes_the_table_and_remove_keeps_one_per_group(cache_dir, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    table = tmp_path / "dups.csv"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "mine",
            "duplicates",
            "--cache",
            str(cache),
            "--view",
            "clip",
            "--threshold",
            str(THRESHOLD),
            "--out",
            str(table),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    frame = pd.read_csv(table)
    assert list(frame.columns) == ["group_id", "video_id", "similarity", "representative"]
    assert (cache / "mined" / "duplicates_clip.parquet").exists()
    assert summary["parameters"]["duplicates"] == int((~frame["representative"]).sum())
    before = set(Cache(cache).video_ids("clip"))
    result = runner.invoke(cli, ["remove", "--cache", str(cache), "--duplicates", str(table), "--json"])
    assert result.exit_code == 0, result.output
    after = set(Cache(cache).video_ids("clip"))
    assert before - after == set(frame.loc[~frame["representative"], "video_id"])
    kept_per_group = frame[frame["video_id"].isin(after)].groupby("group_id").size()
    assert (kept_per_group == 1).all() and len(kept_per_group) == frame["group_id"].nunique()


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """`vidcache ARGS` in process through `main` (exit codes and --json errors as from the shell)."""
    from vidcache.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(args)
    out = capsys.readouterr()
    return stopped.value.code, out.out, out.err


def test_bad_input_is_one_clear_line(cache_dir, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("video_id\nv00001\n")
    code, out, err = run_main(["remove", "--cache", str(cache_dir), "--duplicates", str(bad), "--json"], capsys)
    message = json.loads(out)["error"]
    assert code == 2 and "bad.csv" in message and "group_id" in message and len(err.strip().splitlines()) == 1
    code, out, _ = run_main(["mine", "duplicates", "--cache", str(cache_dir), "--threshold", "1.5", "--json"], capsys)
    assert code == 2 and "--threshold" in json.loads(out)["error"]
    code, out, _ = run_main(["remove", "--cache", str(cache_dir), "v00001", "--duplicates", str(bad), "--json"], capsys)
    assert code == 2 and "one of the three" in json.loads(out)["error"]


def test_report_shows_the_groups(cache_dir, tmp_path):
    from vidcache.htmlreport.collect import duplicate_facts

    cache = tmp_path / "cache"
    (cache / "mined").mkdir(parents=True)
    mined = mine_duplicates(cache_dir, view="clip", threshold=THRESHOLD, write=False)
    frame = mined.frame
    frame.to_parquet(cache / "mined" / "duplicates_clip.parquet", index=False)
    (cache / "mined" / "duplicates_clip.json").write_text(
        json.dumps({"view": "clip", "parameters": {"threshold": 0.97}})
    )
    (table,) = duplicate_facts(cache)
    sizes = frame.groupby("group_id").size()
    assert table["groups"] == len(sizes) and table["drop"] == int((~frame["representative"]).sum())
    largest = table["largest"][0]
    assert largest["size"] == sizes.max() and largest["members"][0][2]  # the representative comes first
    from vidcache.htmlreport.collect import MiningFacts
    from vidcache.htmlreport.render import _duplicates_part

    html = _duplicates_part(MiningFacts(sources={}, videos=[], population=0, duplicates=[table]))
    assert f"{table['groups']} group(s)" in html and largest["members"][0][0] in html
