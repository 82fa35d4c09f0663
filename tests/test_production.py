"""vidcache as cron, Slurm, systemd and Kubernetes run it (issue 14): every check drives the real CLI in
a subprocess; signals go to the real process; JSON is parsed from stdout."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S, REPO, run_cli, tiny_clip_args
from vidcache.cache.arrays import write_view_arrays
from vidcache.cache.catalog import Catalog
from vidcache.manifest import VideoEntry

pytestmark = pytest.mark.slow  # real CLI subprocesses / a real browser: left out by make test-fast


def start_cli(*args: object, env: dict[str, str] | None = None, new_session: bool = False) -> subprocess.Popen:
    """`vidcache ARGS` started in the background, stdout and stderr piped (text); `new_session`: in a
    process group of its own, so a test can signal the whole group as Slurm does."""
    return subprocess.Popen(
        [sys.executable, "-m", "vidcache.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        start_new_session=new_session,
    )


def wait_for_line(process: subprocess.Popen, text: str, *, timeout: float = HANG_GUARD_S) -> list[str]:
    """Read the process's stderr until a line containing `text`; return the lines read."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stderr is not None
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            raise AssertionError(f"the process ended before {text!r}:\n{''.join(lines)}")
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} within {timeout} s:\n{''.join(lines)}")


def done_videos(cache: Path, view: str = "clip") -> set[str]:
    catalog = Catalog.open(cache)
    try:
        return {i.video_id for i in catalog.items(view) if i.status == "done"}
    finally:
        catalog.close()


@pytest.fixture(scope="module")
def stuck_manifest(corpus, tmp_path_factory) -> Path:
    """The corpus's 8 videos, then a 9th whose opening hangs (VIDCACHE_FAULT_MATCH=stuck-9)."""
    folder = tmp_path_factory.mktemp("stuck")
    lines = (corpus / "manifest.csv").read_text().splitlines()
    rows = [lines[0]] + [f"{corpus / row.split(',', 1)[0]},{row.split(',', 1)[1]}" for row in lines[1:]]
    stuck = folder / "stuck-9.mp4"
    stuck.write_bytes((corpus / "a" / "clip.mp4").read_bytes())
    rows.append(f"{stuck},red;left,train")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


@pytest.mark.parametrize("decode_in", ["threads", "processes"])
def test_sigterm_mid_extract_keeps_finished_videos_and_the_rerun_does_only_the_rest(
    decode_in, stuck_manifest, tiny_checkpoint, tmp_path
):
    cache = tmp_path / "cache"
    args = ["extract", stuck_manifest, "--cache", cache, *tiny_clip_args(tiny_checkpoint), "--fps", "2"]
    # one worker, nothing committed by time: the 8 finished videos wait in the open .partial shard
    process = start_cli(
        "-v", *args, "--workers", "1", "--commit-every-s", "3600", "--video-timeout-s", "30", "--json",
        "--decode-in", decode_in,
        env={"VIDCACHE_FAULT": "decode-open:hang", "VIDCACHE_FAULT_MATCH": "stuck-9"},
        new_session=decode_in == "processes",
    )  # fmt: skip
    seen = wait_for_line(process, "decode-open hangs here")
    written = sum("video written:" in line for line in seen)
    while written < 8:  # the main thread writes the videos the worker handed over before it hung
        written += "video written:" in wait_for_line(process, "video written:")[-1]
    if decode_in == "processes":  # Slurm signals every process of the step: the decode children too
        os.killpg(process.pid, signal.SIGTERM)
    else:  # `timeout`, systemd, Kubernetes: the main process
        process.send_signal(signal.SIGTERM)
    # the stuck decoder never returns: ending at all (within the hang guard) shows it was left after the grace
    stdout, stderr = process.communicate(timeout=HANG_GUARD_S)
    assert process.returncode == 143, stderr
    error = json.loads(stdout)
    assert error == {"error": error["error"], "exit_code": 143}
    assert "SIGTERM" in error["error"] and "finished videos are kept" in error["error"]
    assert "Traceback" not in stderr and stderr.count("vidcache: error:") == 1
    assert len(done_videos(cache)) == 8 and "stuck-9.mp4" not in " ".join(done_videos(cache))
    assert not list((cache / "shards").glob("*.partial"))
    assert run_cli("verify", "--cache", cache, "--json", check=True).returncode == 0

    again = run_cli(*args, "--json", check=True)
    summary = json.loads(again.stdout)
    assert (summary["extracted"], summary["skipped"], summary["failed"]) == (1, 8, 0)


def _train_cache(path: Path, *, videos: int = 40) -> Path:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 8))
    entries, rows = [], []
    for i in range(videos):
        split = "train" if i < 30 else ("val" if i < 35 else "test")
        video_id = f"v{i:03d}"
        entries.append(VideoEntry(video_id, f"/src/{video_id}.mp4", (("a", "b")[i % 2],), split))
        rows.append((video_id, centres[i % 2] + rng.normal(size=(4, 8)), np.arange(4.0)))
    write_view_arrays(path, view="clip", rows=rows, entries=entries, identity={"model": "x"}, dtype="float32")
    return path


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_in_train_names_the_resume_command_and_it_finishes_the_run(signum, tmp_path):
    cache = _train_cache(tmp_path / "cache")
    run = tmp_path / "run"
    # an epoch-trained head with its lr and weight decay given (no search runs): the linear head is solved
    args = ["train", "--cache", cache, "--head", "mlp", "--out", run, "--epochs", "6", "--patience", "50",
            "--lr", "0.001", "--weight-decay", "0.0001"]  # fmt: skip
    process = start_cli(*args, env={"VIDCACHE_FAULT": "train-epoch:hang:3"})  # epochs 1, 2 done, then waits
    wait_for_line(process, "train-epoch hangs here")
    process.send_signal(signum)  # SIGINT: Ctrl-C
    _, stderr = process.communicate(timeout=HANG_GUARD_S)
    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    message = [line for line in stderr.splitlines() if line.startswith("vidcache: error:")]
    assert len(message) == 1 and f"interrupted by {signal.Signals(signum).name}" in message[0]
    command = shlex.split(message[0].split("resume with: ", 1)[1])
    assert command[0] == "vidcache" and command[1:] == [*map(str, args), "--resume"]
    resumed = run_cli(*command[1:], "--json", check=True)
    summary = json.loads(resumed.stdout)
    assert summary["epochs_run"] == 6
    history = (run / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2", "3", "4", "5", "6"]


@pytest.fixture(scope="module")
def small_cache(corpus, tiny_checkpoint, tmp_path_factory) -> tuple[Path, Path]:
    """Two videos of the corpus extracted with the tiny CLIP at 2 fps: (manifest, cache)."""
    folder = tmp_path_factory.mktemp("small")
    lines = (corpus / "manifest.csv").read_text().splitlines()
    rows = [lines[0]] + [f"{corpus / row.split(',', 1)[0]},{row.split(',', 1)[1]}" for row in lines[1:3]]
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    cache = folder / "cache"
    run_cli("extract", manifest, "--cache", cache, *tiny_clip_args(tiny_checkpoint), "--fps", "2", check=True)
    return manifest, cache


def test_the_same_weights_under_another_path_are_accepted_and_other_settings_show_old_vs_new(
    small_cache, tiny_checkpoint, tmp_path
):
    manifest, cache = small_cache
    elsewhere = tmp_path / "mnt" / "weights"
    elsewhere.mkdir(parents=True)
    os.link(tiny_checkpoint, elsewhere / "linked.pt")  # a hard link in another directory
    relative = os.path.relpath(tiny_checkpoint, REPO)  # run_cli runs in REPO
    for weights in (relative, elsewhere / "linked.pt"):
        result = run_cli(
            "extract", manifest, "--cache", cache, "--clip-model", "vidcache-tiny", "--clip-pretrained", weights,
            "--fps", "2", "--json",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert (summary["skipped"], summary["extracted"]) == (2, 0)

    other = run_cli("extract", manifest, "--cache", cache, *tiny_clip_args(tiny_checkpoint), "--fps", "3", "--json")
    assert other.returncode == 2 and "Traceback" not in other.stderr
    error = json.loads(other.stdout)
    assert error["exit_code"] == 2 and "sampling differ" in error["error"]
    assert "sampling.fps 2.0 vs 3.0" in error["error"], error


def one_json(result: subprocess.CompletedProcess) -> dict:
    """The one JSON object a `--json` command writes on stdout (nothing else there)."""
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, (result.returncode, result.stdout, result.stderr)
    document = json.loads(lines[0])
    assert isinstance(document, dict)
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode != 0 and "error" in document:
        assert set(document) == {"error", "exit_code"} and document["exit_code"] == result.returncode
        assert "\n" not in document["error"] or document["error"].startswith("manifest ")
    return document


def test_every_command_writes_one_json_object_on_success_and_on_error(tmp_path):
    cache = _train_cache(tmp_path / "cache")
    labels, texts = tmp_path / "labels.txt", tmp_path / "text.npy"
    labels.write_text("a\nb\nc\n")
    np.save(texts, np.eye(3, 8, dtype=np.float32))
    run = tmp_path / "run"
    ok = [
        ("status", "--cache", cache),
        ("verify", "--cache", cache),
        ("index", "build", "--cache", cache, "--index-type", "flat"),
        ("mine", "neighbours", "--cache", cache, "--view", "clip", "--k", "2"),
        ("mine", "hard-negative-videos", "--cache", cache, "--k", "2"),
        ("mine", "hard-negatives", "--cache", cache, "--k", "1", "--label-corpus", labels, "--text-embeddings", texts),
        ("train", "--cache", cache, "--out", run, "--epochs", "2"),
        ("eval", "--run", run, "--cache", cache),
        ("predict", "--run", run, "--cache", cache, "--out", tmp_path / "p.parquet"),
    ]
    for args in ok:
        result = run_cli(*args, "--json")
        assert result.returncode == 0, (args, result.stderr)
        assert "error" not in one_json(result), args
    assert (
        one_json(run_cli("predict", "--run", run, "--cache", cache, "--out", tmp_path / "q.parquet", "--json"))[
            "videos"
        ]
        == 40
    )

    few = _train_cache(tmp_path / "few", videos=31)  # 30 train videos, 1 val
    trained = one_json(run_cli("train", "--cache", few, "--out", tmp_path / "few-run", "--epochs", "1", "--json"))
    assert "val holds only 1 video(s)" in trained["warnings"][0]

    bad_manifest = tmp_path / "bad.csv"
    bad_manifest.write_text("path,split\n,train\n")
    failing = [
        (2, ("status", "--cache", tmp_path / "nowhere")),  # click's own usage error
        (2, ("extract", bad_manifest, "--cache", tmp_path / "c2")),
        (2, ("index", "build", "--cache", cache, "--index-type", "ivfpq")),  # 40 vectors cannot train PQ
        (2, ("train", "--cache", cache, "--out", run)),  # not empty, no --resume
        (2, ("embed-text", "--cache", cache)),  # imported features: no CLIP model to embed with
        (2, ("predict", "--run", run, "--cache", cache)),  # neither --out nor --write-view
        (2, ("mine", "neighbours", "--cache", cache, "--view", "nope", "--k", "2")),
    ]
    for code, args in failing:
        result = run_cli(*args, "--json")
        error = one_json(result)
        assert result.returncode == code and error["exit_code"] == code, (args, result.stderr)
        assert result.stderr.count("vidcache: error:") == 1, result.stderr
    assert (
        "--index-type ivfpq needs at least 256"
        in one_json(run_cli("index", "build", "--cache", cache, "--index-type", "ivfpq", "--json"))["error"]
    )

    # hard negatives mined before the labels changed: train refuses, naming the command that refreshes them
    catalog = Catalog.open(cache, create=True)
    catalog.upsert_entries([VideoEntry("v000", "/src/v000.mp4", ("b",), "train")])  # was "a"
    catalog.close()
    temporal = ["train", "--cache", cache, "--head", "temporal", "--hard-negatives", "1", "--label-corpus", labels,
                "--text-embeddings", texts, "--epochs", "1", "--out", tmp_path / "temporal", "--json"]  # fmt: skip
    refused = run_cli(*temporal)
    error = one_json(refused)["error"]
    assert refused.returncode == 2 and "was mined before the manifest's labels changed" in error, error
    command = shlex.split(error.split("refresh it with `", 1)[1].split("`", 1)[0])
    assert command[:3] == ["vidcache", "mine", "hard-negatives"]
    run_cli(*command[1:], check=True)
    assert run_cli(*temporal).returncode == 0


def test_download_without_network_is_one_line_and_exit_2(small_cache, tmp_path):
    manifest, _ = small_cache
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch")}
    result = run_cli("extract", manifest, "--cache", tmp_path / "c", "--download", "--json", env=env)
    error = one_json(result)
    assert result.returncode == 2 and error["exit_code"] == 2
    assert "could not download CLIP weights ViT-B-32/openai" in error["error"]
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no retry chatter, no traceback


def imports_of_cli(*args: object) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`vidcache ARGS` and the top-level modules it imported (-X importtime): what shows it ended "at
    once" (no model loaded), on any machine load, where its wall time would not."""
    result = run_cli(*args, env={"PYTHONPROFILEIMPORTTIME": "1"})
    lines = result.stderr.splitlines()
    modules = {line.split("|")[-1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    stderr = "\n".join(line for line in result.stderr.splitlines() if not line.startswith("import time:"))
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout, stderr), modules


def test_no_op_rerun_and_locked_cache_end_at_once_without_loading_a_model(small_cache, tiny_checkpoint):
    manifest, cache = small_cache
    args = ["extract", manifest, "--cache", cache, *tiny_clip_args(tiny_checkpoint), "--fps", "2", "--json"]
    result, modules = imports_of_cli(*args, "--workers", "1")  # run-only options do not change rows
    assert result.returncode == 0, result.stderr
    summary = one_json(result)
    assert (summary["skipped"], summary["extracted"], summary["models_rss_mib"]) == (2, 0, 0.0)
    assert not modules & {"torch", "open_clip", "av"}, sorted(modules)  # "at once": no model, not a clock

    from vidcache.cache.lock import ExtractLock

    with ExtractLock(cache):  # another extract is running
        result, modules = imports_of_cli(*args)
    error = one_json(result)
    assert result.returncode == 3 and error["exit_code"] == 3 and "locked by another running extract" in error["error"]
    assert not modules & {"torch", "open_clip", "av"}, sorted(modules)


def test_fusion_with_views_in_any_order_trains_then_evaluates_and_predicts(tmp_path):
    """README: `train --head fusion --views clip,audio,motion` (not alphabetical), then eval and predict."""
    rng = np.random.default_rng(1)
    cache = tmp_path / "cache"
    entries = []
    rows: dict[str, list] = {"clip": [], "audio": [], "motion": []}
    dims = {"clip": 8, "audio": 4, "motion": 6}
    for i in range(24):
        split = "train" if i < 14 else ("val" if i < 19 else "test")
        video_id = f"v{i:02d}"
        entries.append(VideoEntry(video_id, f"/src/{video_id}.mp4", (("a", "b")[i % 2],), split))
        for view, dim in dims.items():
            features = rng.normal(size=(3, dim)) + (i % 2)
            rows[view].append((video_id, features, np.arange(3.0)))
    for view in dims:
        write_view_arrays(cache, view=view, rows=rows[view], entries=entries, identity={"model": view}, dtype="float32")
    run = tmp_path / "fusion"
    run_cli(
        "train", "--cache", cache, "--head", "fusion", "--views", "clip,audio,motion", "--hidden-dim", "16",
        "--epochs", "2", "--out", run, "--json", check=True,
    )  # fmt: skip
    metrics = one_json(run_cli("eval", "--run", run, "--cache", cache, "--json", check=True))
    assert "map_macro" in metrics
    predicted = one_json(
        run_cli("predict", "--run", run, "--cache", cache, "--out", tmp_path / "p.parquet", "--json", check=True)
    )
    assert predicted["videos"] == 24 and predicted["labels"] == 2


def test_manifest_mistakes_are_warned_at_extract_and_strict_makes_them_errors(corpus, tiny_checkpoint, tmp_path):
    video = corpus / "a" / "clip.mp4"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label,split,camera\n{video},red,tets,A\n")
    args = ["extract", manifest, "--cache", tmp_path / "c", *tiny_clip_args(tiny_checkpoint), "--json"]
    strict = run_cli(*args, "--strict")
    error = one_json(strict)
    assert strict.returncode == 2 and error["exit_code"] == 2 and not (tmp_path / "c").exists()
    assert "column 'label' is not read (did you mean 'labels'?)" in error["error"]
    assert "column 'camera' is not read" in error["error"]
    assert "split 'tets' on 1 row(s) (did you mean 'test'?)" in error["error"]

    warned = run_cli(*args)
    summary = one_json(warned)
    assert warned.returncode == 0 and summary["extracted"] == 1 and len(summary["warnings"]) == 3
    assert warned.stderr.count("WARNING manifest") == 3
    declared = run_cli(*args, "--splits", "train,val,test,tets", "--strict")  # declared: only the columns remain
    assert declared.returncode == 2 and "tets" not in one_json(declared)["error"]


def test_changed_labels_refresh_the_text_embeddings_or_mining_names_the_command_that_does(
    small_cache, tiny_checkpoint, tmp_path
):
    import shutil

    from vidcache import Cache

    manifest, original = small_cache
    cache = tmp_path / "cache"
    shutil.copytree(original, cache)
    relabelled = manifest.with_name("relabelled.csv")
    relabelled.write_text(manifest.read_text().replace("red;", "crimson;"))
    args = ["extract", relabelled, "--cache", cache, *tiny_clip_args(tiny_checkpoint), "--fps", "2", "--json"]
    summary = one_json(run_cli(*args, check=True))
    assert (summary["extracted"], summary["skipped"]) == (0, 2)  # no video redone, only the label texts
    with Cache(cache) as reader:
        assert "crimson" in reader.text_embeddings().labels and "red" not in reader.text_embeddings().labels

    catalog = Catalog.open(cache, create=True)  # labels changed by a command that cannot embed text
    entries = catalog.entries()
    catalog.upsert_entries(
        VideoEntry(e["video_id"], e["path"], tuple(["scarlet" if x == "crimson" else x for x in e["labels"]]))
        for e in entries
    )
    catalog.close()
    mine = ["mine", "hard-negatives", "--cache", cache, "--k", "1", "--json"]
    refused = run_cli(*mine)
    error = one_json(refused)
    assert refused.returncode == 2 and "not embedded: scarlet" in error["error"], error
    command = shlex.split(error["error"].split("refresh them with `", 1)[1].rstrip("`"))
    assert command[:2] == ["vidcache", "embed-text"]
    run_cli(*command[1:], check=True)
    assert one_json(run_cli(*mine, check=True))["videos"] == 2


@pytest.fixture
def http_server(corpus):
    """The corpus folder on a local HTTP server (Python's own: no range requests), torn down after."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(corpus)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def s3_server(corpus):
    """moto's S3 server on a free local port with the corpus's two first videos in bucket `videos`;
    yields the environment a vidcache process needs to reach it."""
    pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
    }
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                          aws_secret_access_key="test")  # fmt: skip
    client.create_bucket(Bucket="videos")
    for name in ("clip.mp4", "green-right-1.mp4"):
        client.upload_file(str(corpus / "a" / name), "videos", f"a/{name}")
    yield env
    server.stop()


def _rows(cache: Path, view: str = "clip") -> list[tuple[np.ndarray, np.ndarray]]:
    from vidcache import Cache

    with Cache(cache) as reader:
        return [reader.read(video_id, view) for video_id in sorted(reader.video_ids(view))]


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_urls_extract_like_local_files_and_resume_on_the_objects_identity(
    scheme, request, small_cache, tiny_checkpoint, tmp_path
):
    _, local_cache = small_cache
    if scheme == "http":
        base, env = request.getfixturevalue("http_server") + "/a", {}
    else:
        base, env = "s3://videos/a", request.getfixturevalue("s3_server")
    manifest = tmp_path / "urls.csv"
    manifest.write_text(
        f"path,labels,split\n{base}/clip.mp4,red;left,train\n{base}/green-right-1.mp4,green;right,train\n"
    )
    args = ["extract", manifest, "--cache", tmp_path / "c", *tiny_clip_args(tiny_checkpoint), "--fps", "2", "--json"]
    first = run_cli(*args, env=env)
    summary = one_json(first)
    assert first.returncode == 0 and (summary["extracted"], summary["failed"]) == (2, 0), summary
    for (ours, our_times), (local, local_times) in zip(_rows(tmp_path / "c"), _rows(local_cache), strict=True):
        np.testing.assert_array_equal(ours, local)
        np.testing.assert_array_equal(our_times, local_times)
    again = one_json(run_cli(*args, env=env, check=True))
    assert (again["extracted"], again["skipped"]) == (0, 2)  # same size and ETag / Last-Modified: nothing redone
    missing = tmp_path / "missing.csv"
    missing.write_text(f"path\n{base}/nothing-here.mp4\n")
    failed = run_cli("extract", missing, *args[2:], env=env)
    assert failed.returncode == 1 and "file not found" in one_json(failed)["failures"][f"{base}/nothing-here.mp4"]


def test_tables_keep_their_full_width_when_stdout_is_not_a_terminal(tmp_path):
    long_id = "folder-with-a-long-name/" * 6 + "video.mp4"  # 150 characters: cut at 80 before
    entries = [VideoEntry(long_id, f"/src/{long_id}", ("a",), "train")]
    rows = [(long_id, np.ones((2, 4)), np.arange(2.0))]
    cache = tmp_path / "cache"
    write_view_arrays(cache, view="clip", rows=rows, entries=entries, identity={"model": "x"}, dtype="float32")
    catalog = Catalog.open(cache, create=True)
    from vidcache.cache.catalog import Item

    reason = "not a readable video (Invalid data found when processing input); " + "x" * 80
    catalog.record_items([Item(long_id, "audio", "failed", None, None, None, None, reason, 1, 1, "{}", "now")])
    catalog.close()
    result = run_cli("status", "--cache", cache, env={"COLUMNS": ""}, check=True)
    assert f"failed {long_id}: {reason}" in result.stdout.splitlines()[-1], result.stdout


def test_remove_then_compact_rewrites_live_rows_into_one_verified_shard_even_after_a_kill(tmp_path):
    from vidcache import Cache

    cache = tmp_path / "cache"
    rng = np.random.default_rng(3)
    for part in range(4):  # four small shards of five videos each
        entries, rows = [], []
        for i in range(part * 5, part * 5 + 5):
            video_id = f"v{i:03d}"
            entries.append(VideoEntry(video_id, f"/src/{video_id}.mp4", ("a",), "train"))
            rows.append((video_id, rng.normal(size=(3 + i % 4, 8)).astype(np.float16), np.arange(3 + i % 4) * 0.5))
        write_view_arrays(cache, view="clip", rows=rows, entries=entries, identity={"model": "x"})
    assert len(list((cache / "shards").glob("*.h5"))) == 4

    removed = one_json(run_cli("remove", "--cache", cache, "v000", "v001", "nowhere", "--json", check=True))
    assert (removed["removed"], removed["not_found"]) == (["v000", "v001"], ["nowhere"])
    keep = tmp_path / "keep.csv"
    keep.write_text("video_id\n" + "\n".join(f"v{i:03d}" for i in range(2, 17)) + "\n")
    removed = one_json(run_cli("remove", "--cache", cache, "--not-in", keep, "--json", check=True))
    assert removed["removed"] == ["v017", "v018", "v019"] and removed["kept"] == 15
    with Cache(cache) as reader:
        before = {v: reader.read(v, "clip") for v in reader.video_ids("clip")}
    assert sorted(before) == [f"v{i:03d}" for i in range(2, 17)]

    killed = run_cli("compact", "--cache", cache, "--json", env={"VIDCACHE_FAULT": "catalog-commit:kill"})
    assert killed.returncode == -9
    for attempt in ("after the kill", "compacted"):
        if attempt == "compacted":
            summary = one_json(run_cli("compact", "--cache", cache, "--json", check=True))
            assert (summary["shards_before"], summary["shards_after"], summary["videos_moved"]) == (4, 1, 15)
            assert len(list((cache / "shards").glob("*.h5*"))) == 1
        with Cache(cache) as reader:
            assert sorted(reader.video_ids("clip")) == sorted(before), attempt
            for video_id, (features, times) in before.items():
                got, got_times = reader.read(video_id, "clip")
                np.testing.assert_array_equal(got, features)
                np.testing.assert_array_equal(got_times, times)
        assert one_json(run_cli("verify", "--cache", cache, "--json", check=True))["broken"] == {}
