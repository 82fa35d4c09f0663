"""`--engine ray`: the same cache as the local engine, row for row and catalog record for record, on a real
local Ray cluster (one for the whole test session); a Ray worker killed mid-run loses and duplicates
nothing; a driver killed with SIGKILL is resumed by the next run; two Ray nodes share the videos."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S, REPO, run_cli, tiny_clip_args
from vidcache import Cache
from vidcache.cache.layout import PARTIAL_SUFFIX, SHARD_SUFFIX, catalog_path, shard_dir
from vidcache.cache.verify import verify_cache
from vidcache.commands.extract import build_config
from vidcache.errors import FAULT_ENV, FAULT_MATCH_ENV
from vidcache.extract.views import VIEWS as VIEW_REGISTRY
from vidcache.manifest import read_manifest
from vidcache.synth import moving_square_frame, write_video

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

VIEWS = "clip,audio,flow"  # a model view, a second model, and decode-side rows that spill to disk (flow)
# the catalog's columns that say what a (video, view) holds; where it lies (shard, row_start) and when
# (updated_at) differ between any two runs
NO_AUTH = ("RAY_AUTH_MODE", "disabled")  # test clusters on this machine only
ITEM_COLUMNS = "video_id, view, status, row_count, checksum, reason, source_size, source_mtime_ns, info_json"


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """One local Ray cluster for the whole test session (2 CPUs); its address for subprocess drivers."""
    # no token: the token file Ray would write is shared by every Ray user of this home directory
    previous = os.environ.get(NO_AUTH[0])
    os.environ[NO_AUTH[0]] = NO_AUTH[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop(NO_AUTH[0], None)
        else:
            os.environ[NO_AUTH[0]] = previous


def options(checkpoint: Path, **extra) -> dict:
    return dict(views=VIEWS, clip_model="vidcache-tiny", clip_pretrained=str(checkpoint), fps=2.0, device="cpu",
                **extra)  # fmt: skip


def extract(manifest: Path, cache: Path, checkpoint: Path, **extra):
    from vidcache.extract.runner import Extractor

    entries = read_manifest(str(manifest))
    extractor = Extractor(cache, build_config(**options(checkpoint, **extra)), command="test")
    return extractor.run(entries), extractor


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Eight short clips with a tone each (so every view has rows), in two folders, and their manifest."""
    root = tmp_path_factory.mktemp("ray-corpus")
    rows = ["path,labels"]
    for i in range(8):
        name, direction = f"{'ab'[i // 4]}/v{i}.mp4", "left" if i % 2 else "right"
        write_video(
            root / name, 18 + 6 * (i % 4), fps=12, width=80, height=60, gop=6, tone_hz=330.0 + 40 * i,
            frame_fn=lambda _, t, i=i, d=direction: moving_square_frame(
                t, colour=("red", "green", "blue")[i % 3], direction=d, width=80, height=60
            ),
        )  # fmt: skip
        rows.append(f"{name},{direction}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def reference(corpus, tiny_checkpoint, tmp_path_factory) -> Path:
    """The local engine's cache of the corpus: what every Ray run must equal."""
    cache = tmp_path_factory.mktemp("local") / "cache"
    summary, _ = extract(corpus / "manifest.csv", cache, tiny_checkpoint, workers=1)
    assert summary.extracted == 8 and summary.failed == 0
    return cache


def catalog_rows(cache: Path, table: str, columns: str = "*") -> list[tuple]:
    with sqlite3.connect(catalog_path(cache)) as db:
        return sorted(db.execute(f"SELECT {columns} FROM {table}").fetchall())


def assert_within_one_ulp(rows_a: np.ndarray, rows_b: np.ndarray) -> None:
    """Equal, or apart by at most one unit in the last place of their storage dtype (float16 by default):
    what docs/cluster.md promises for a batched model's rows when the two runs batched them differently."""
    assert rows_a.dtype == rows_b.dtype and rows_a.shape == rows_b.shape
    ulp = np.maximum(np.spacing(np.abs(rows_a)), np.spacing(np.abs(rows_b))).astype(np.float64)
    apart = np.abs(rows_a.astype(np.float64) - rows_b.astype(np.float64))
    assert (apart <= ulp).all(), (apart / ulp).max()


def assert_same_cache(a: Path, b: Path, *, skip: set[str] = frozenset()) -> None:
    """Bit-identical rows and times for every (video, view) made without a batched model (flow,
    motion); a batched model's rows (clip, audio) equal within one storage ULP, since which videos
    share a batch depends on timing in both engines (docs/cluster.md); the same catalog records
    (a batched model's CRC32 aside, which follows its bytes)."""
    batched = {view for view in ("clip", "audio", "flow", "motion") if VIEW_REGISTRY.get(view).batched_model}
    with Cache(a) as ca, Cache(b) as cb:
        for view in ("clip", "audio", "flow", "motion"):
            ids = [v for v in ca.video_ids(view) if v not in skip]
            assert ids == [v for v in cb.video_ids(view) if v not in skip] and ids
            for video_id in ids:
                rows_a, times_a = ca.read(video_id, view)
                rows_b, times_b = cb.read(video_id, view)
                assert rows_a.dtype == rows_b.dtype and len(rows_a) > 0
                if view in batched:
                    assert_within_one_ulp(rows_a, rows_b)
                else:
                    np.testing.assert_array_equal(rows_a, rows_b)
                np.testing.assert_array_equal(times_a, times_b)
    checksum = ITEM_COLUMNS.split(", ").index("checksum")

    def records(cache: Path) -> list[tuple]:
        rows = [r for r in catalog_rows(cache, "items", ITEM_COLUMNS) if r[0] not in skip]
        return [(*r[:checksum], None if r[1] in batched else r[checksum], *r[checksum + 1 :]) for r in rows]

    items_a, items_b = records(a), records(b)
    assert items_a == items_b
    assert catalog_rows(a, "views", "view, identity_json") == catalog_rows(b, "views", "view, identity_json")
    assert catalog_rows(a, "entries") == catalog_rows(b, "entries")


def assert_nothing_twice(cache: Path) -> None:
    """Each (video, view) is one catalog record, and the shards hold exactly the rows the catalog names."""
    items = catalog_rows(cache, "items", "video_id, view, status, row_count")
    assert len({(v, view) for v, view, _, _ in items}) == len(items)
    shard_rows = sum(n for (n,) in catalog_rows(cache, "shards", "n_rows"))
    assert shard_rows == sum(n or 0 for _, _, status, n in items if status == "done")
    assert not list(shard_dir(cache).glob(f"*{PARTIAL_SUFFIX}"))
    assert verify_cache(cache).ok


def test_ray_writes_the_local_engines_cache_and_a_rerun_skips_everything(ray_cluster, corpus, tiny_checkpoint,
                                                                          reference, tmp_path):  # fmt: skip
    cache = tmp_path / "ray"
    summary, extractor = extract(corpus / "manifest.csv", cache, tiny_checkpoint, engine="ray")
    assert (summary.extracted, summary.failed, summary.decode_in) == (8, 0, "ray")
    assert_same_cache(reference, cache)
    assert_nothing_twice(cache)
    with Cache(reference) as ref:  # the summary counts what the local engine counts
        assert summary.rows["clip"] == sum(len(ref.read(v, "clip")[0]) for v in ref.video_ids("clip"))
    assert summary.frames == summary.rows["clip"]
    assert set(extractor.engine.nodes) == {e.video_id for e in read_manifest(str(corpus / "manifest.csv"))}

    again, _ = extract(corpus / "manifest.csv", cache, tiny_checkpoint, engine="ray")
    assert (again.skipped, again.extracted, again.failed) == (8, 0, 0)
    assert_same_cache(reference, cache)


def test_a_killed_ray_worker_loses_and_duplicates_nothing(ray_cluster, corpus, tiny_checkpoint, reference, tmp_path,
                                                           monkeypatch):  # fmt: skip
    victim = "v5"  # its decode task's worker process is SIGKILLed on every try
    cache = tmp_path / "ray"
    monkeypatch.setenv(FAULT_ENV, "decode-open:kill")
    monkeypatch.setenv(FAULT_MATCH_ENV, f"/b/{victim}.mp4")
    summary, _ = extract(corpus / "manifest.csv", cache, tiny_checkpoint, engine="ray")
    victims = [v for v in summary.failures if victim in v]
    assert summary.failed == 1 and len(victims) == 1 and summary.extracted == 7
    assert "decode worker died 3 times" in summary.failures[victims[0]]
    statuses = {(v, view): s for v, view, s, _ in catalog_rows(cache, "items", "video_id, view, status, row_count")}
    assert {s for (v, _), s in statuses.items() if v == victims[0]} == {"failed"}
    assert_same_cache(reference, cache, skip={victims[0]})
    assert_nothing_twice(cache)

    monkeypatch.delenv(FAULT_ENV)
    retry, _ = extract(corpus / "manifest.csv", cache, tiny_checkpoint, engine="ray", retry_failed=True)
    assert (retry.extracted, retry.skipped, retry.failed) == (1, 7, 0)
    assert_same_cache(reference, cache)
    assert_nothing_twice(cache)


def test_a_driver_killed_with_sigkill_is_resumed_by_the_next_run(ray_cluster, corpus, tiny_checkpoint, reference,
                                                                  tmp_path):  # fmt: skip
    cache = tmp_path / "ray"
    args = ["extract", corpus / "manifest.csv", "--cache", cache, *tiny_clip_args(tiny_checkpoint), "--views", VIEWS,
            "--fps", "2", "--device", "cpu", "--engine", "ray", "--ray-address", ray_cluster, "--json"]  # fmt: skip
    # SIGKILL inside the first shard's catalog transaction: the shard file is complete and renamed, unrecorded
    killed = run_cli(*args, env={FAULT_ENV: "catalog-commit:kill"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    orphans = list(shard_dir(cache).glob(f"*{SHARD_SUFFIX}"))
    assert orphans and not catalog_rows(cache, "shards")
    # a dead writer's unfinished shard, as a worker killed mid-write leaves it (its name carries the writer tag)
    stray = shard_dir(cache) / f"20260101T000000-k0of1-wdead00-1-abcdef-0001{SHARD_SUFFIX}{PARTIAL_SUFFIX}"
    stray.write_bytes(b"half a shard")

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["failed"] == 0 and summary["extracted"] + summary["skipped"] == 8
    assert not stray.exists()
    assert {p.name[: -len(SHARD_SUFFIX)] for p in orphans} <= {n for (n,) in catalog_rows(cache, "shards", "name")}
    assert_same_cache(reference, cache)
    assert_nothing_twice(cache)


def test_sigterm_keeps_the_shards_being_written_and_the_next_run_finishes(ray_cluster, corpus, tiny_checkpoint,
                                                                          reference, tmp_path):  # fmt: skip
    """Slurm's SIGTERM (= Ctrl-C) on a Ray driver: exit 143, every recorded video whole, the same command resumes."""
    cache = tmp_path / "ray"
    args = ["extract", corpus / "manifest.csv", "--cache", cache, *tiny_clip_args(tiny_checkpoint), "--views", VIEWS,
            "--fps", "2", "--device", "cpu", "--engine", "ray", "--ray-address", ray_cluster, "--json",
            "--workers", "1", "--commit-every-s", "0.2"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "vidcache.cli", *map(str, args)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + HANG_GUARD_S
    while not list(shard_dir(cache).glob(f"*{SHARD_SUFFIX}")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the first group of finished videos is written: stop in the middle of the run
    driver.send_signal(15)
    _, stderr = driver.communicate(timeout=HANG_GUARD_S)
    assert driver.returncode == 143, stderr[-2000:]
    kept = {v for v, status in catalog_rows(cache, "items", "video_id, status") if status == "done"}
    assert kept and len(kept) < 8  # the finished videos were kept, the rest was not started or dropped whole
    assert_nothing_twice(cache)

    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["skipped"] == len(kept)
    assert_same_cache(reference, cache)
    assert_nothing_twice(cache)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError(f"the Ray head did not open port {port} within {timeout_s} s")


def test_two_ray_nodes_share_the_videos(corpus, tiny_checkpoint, reference, tmp_path):
    """A head and a second node (`ray start`, 1 CPU each) on this machine: decode tasks run on both."""
    port = free_port()
    temp = Path(f"/tmp/rvc{os.getpid()}")  # short: Ray's socket paths must stay under 107 characters
    env = {
        **os.environ,
        NO_AUTH[0]: NO_AUTH[1],
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    ray_cli = str(Path(sys.executable).with_name("ray"))  # the venv's, whatever PATH says
    head = subprocess.Popen(
        [ray_cli, "start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", str(temp),
         *common], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    nodes = [head]
    try:
        wait_for_port(port)
        second = subprocess.Popen(
            [ray_cli, "start", "--address", f"127.0.0.1:{port}", "--resources", '{"second_node": 1}', *common],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        nodes.append(second)
        driver = f"""
import json, sys, time, ray
ray.init(address="127.0.0.1:{port}", log_to_driver=False)
for _ in range(60):
    if len([n for n in ray.nodes() if n["Alive"]]) == 2:
        break
    time.sleep(0.5)
from tests.test_engine_ray import extract
from pathlib import Path
summary, extractor = extract(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), engine="ray")
print(json.dumps({{"nodes": extractor.engine.nodes, "extracted": summary.extracted}}))
"""
        cache = tmp_path / "two"
        done = subprocess.run(
            [sys.executable, "-c", driver, corpus / "manifest.csv", cache, tiny_checkpoint],
            capture_output=True, text=True, timeout=HANG_GUARD_S, env=env, cwd=REPO,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["extracted"] == 8
        assert len(set(result["nodes"].values())) == 2  # both nodes decoded videos
        assert_same_cache(reference, cache)
        assert_nothing_twice(cache)
    finally:
        for process in reversed(nodes):  # `ray start --block` stops its own node's processes on SIGTERM
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
