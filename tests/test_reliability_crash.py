"""Crash and fault injection through `vidcache extract` run as separate processes, the way cron or
Slurm run it: SIGKILL at random moments and at named commit steps, then resume; a full disk; a
read-only cache; two `--shard K/2` parts started together. Each ends compared with one uninterrupted
run of the same corpus: same ids per view, same rows, each (video, view) exactly once, verify clean.

Named steps come from the fault hook `vidcache.errors.fault_point` (env VIDCACHE_FAULT, inert unless
set): `catalog-commit:kill` dies inside the shard's SQLite transaction, `shard-renamed:kill` between
the rename and that transaction, `shard-commit:ENOSPC` makes the shard flush fail as on a full disk,
`cache-write:EACCES` stands in for `chmod -w` where the tests run as root (root ignores it).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S, REPO, tiny_clip_args
from vidcache import Cache
from vidcache.cache.catalog import Catalog, Item, now_iso
from vidcache.cache.shard import read_shard_index
from vidcache.cache.store import SPACE_RESERVE_BYTES
from vidcache.cache.verify import verify_cache
from vidcache.errors import FAULT_ENV, cache_write_error
from vidcache.synth import index_frame, write_video

N_VIDEOS = 20
VIEWS = ("clip", "audio")


def _env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    if fault:
        env[FAULT_ENV] = fault
    return env


def _command(manifest: Path, cache: Path, args: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "vidcache.cli", "extract", str(manifest), "--cache", str(cache), *args, *extra]


def _extract(manifest: Path, cache: Path, args: list[str], *extra: str, fault: str | None = None):
    return subprocess.run(
        _command(manifest, cache, args, *extra),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env=_env(fault),
        cwd=REPO,
    )


def _summary(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    """The run failed with exit 2 and said so in exactly one line, without a traceback."""
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vidcache: error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def corpus_args(tmp_path_factory, tiny_checkpoint) -> tuple[Path, list[str]]:
    """Twenty short labelled clips with a tone (so every video has `clip` and `audio` rows) and the
    extract options: a commit after every video, so a run commits many times."""
    root = tmp_path_factory.mktemp("crash_corpus")
    rows = ["path,labels"]
    for i in range(N_VIDEOS):
        write_video(
            root / f"v{i:02d}.mp4",
            24 + (i % 4) * 6,
            fps=12,
            gop=6,
            tone_hz=220.0 * (1 + i % 3),
            frame_fn=lambda k, _t, i=i: index_frame(k + 7 * i),
        )
        rows.append(f"v{i:02d}.mp4,{'abc'[i % 3]}")
    (root / "m.csv").write_text("\n".join(rows) + "\n")
    args = [
        *tiny_clip_args(str(tiny_checkpoint)),
        "--views",
        ",".join(VIEWS),
        "--fps",
        "4",
        "--workers",
        "1",
        "--batch-size",
        "4",
        "--commit-every-s",
        "0.001",
        "--json",
    ]
    return root / "m.csv", args


@pytest.fixture(scope="module")
def reference(corpus_args, tmp_path_factory) -> Path:
    """One uninterrupted run: what every other cache here must equal."""
    manifest, args = corpus_args
    cache = tmp_path_factory.mktemp("reference") / "cache"
    summary = _summary(_extract(manifest, cache, args))
    assert (summary["extracted"], summary["failed"]) == (N_VIDEOS, 0)
    return cache


def _done_count(cache: Path) -> int:
    if not (cache / "catalog.sqlite").exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{cache / 'catalog.sqlite'}?mode=ro", uri=True)) as db:
        with contextlib.suppress(sqlite3.OperationalError):  # killed before the schema existed
            return db.execute("SELECT count(*) FROM items WHERE status='done'").fetchone()[0]
    return 0


def _assert_consistent(cache: Path) -> None:
    """What a reader sees at any moment: every done row readable, every checksum right."""
    if not list((cache / "shards").glob("*.h5")):
        return  # killed before the first commit (possibly while the catalog was being created)
    report = verify_cache(cache)
    assert report.broken == {}, report
    with Cache(cache) as reader:
        for view in reader.views():
            for video_id in reader.video_ids(view):
                reader.read(video_id, view)


def _assert_equals_reference(cache: Path, reference: Path) -> None:
    with Cache(cache) as got, Cache(reference) as want:
        assert got.views() == want.views() and set(want.views()) == set(VIEWS)
        for view in VIEWS:
            assert got.video_ids(view) == want.video_ids(view) and len(want.video_ids(view)) == N_VIDEOS, view
            for video_id in want.video_ids(view):
                (f1, t1), (f2, t2) = got.read(video_id, view), want.read(video_id, view)
                np.testing.assert_array_equal(t1, t2)
                np.testing.assert_array_equal(f1, f2)  # same frames, same model: bit-identical rows
        np.testing.assert_array_equal(got.text_embeddings().embeddings, want.text_embeddings().embeddings)
    with contextlib.closing(sqlite3.connect(cache / "catalog.sqlite")) as db:
        statuses = db.execute("SELECT view, status, count(*) FROM items GROUP BY view, status").fetchall()
        assert sorted(statuses) == [(view, "done", N_VIDEOS) for view in sorted(VIEWS)]
    # each (video, view) is in exactly one shard file: nothing extracted twice, nothing left unrecorded
    copies = collections.Counter(
        (rows.video_id, rows.view)
        for path in (cache / "shards").glob("*.h5")
        for view_rows in read_shard_index(path).values()
        for rows in view_rows
    )
    assert set(copies.values()) == {1} and len(copies) == N_VIDEOS * len(VIEWS), copies.most_common(3)
    report = verify_cache(cache)
    assert report.broken == {} and report.unrecorded == [], report
    leftovers = [p.name for p in cache.rglob("*") if p.name.endswith((".partial", ".rows", "-journal"))]
    assert leftovers == []


def test_repeated_sigkill_then_resume_equals_uninterrupted_run(corpus_args, reference, tmp_path):
    manifest, args = corpus_args
    cache = tmp_path / "killed"
    rng = random.Random(20261122)
    # (what to wait for, fault hook): "start-up" = a random moment while Python imports and loads the
    # model (the cache may not exist yet); "rows" = a random moment after this run wrote its first
    # shard file; the named steps kill at exactly that point of the commit protocol
    plan = [
        ("start-up", None),
        ("step", "catalog-commit:kill:1"),  # the cache's first commit, inside its SQLite transaction
        ("rows", None),
        ("step", "shard-renamed:kill:2"),  # a complete shard the catalog does not know: adopted next run
        ("rows", None),
    ]
    done_before = 0
    outcomes = []
    for moment, fault in plan:
        shards = cache / "shards"
        before = set(shards.glob("*")) if shards.exists() else set()
        with open(tmp_path / "stderr.txt", "w") as err:
            proc = subprocess.Popen(
                _command(manifest, cache, args), stdout=subprocess.DEVNULL, stderr=err, env=_env(fault), cwd=REPO
            )
            try:
                if moment == "start-up":
                    time.sleep(rng.uniform(0.2, 2.5))
                elif moment == "rows":
                    deadline = time.monotonic() + HANG_GUARD_S
                    while proc.poll() is None and time.monotonic() < deadline:
                        if shards.exists() and set(shards.glob("*")) - before:
                            break
                        time.sleep(0.005)
                    time.sleep(rng.uniform(0.0, 0.4))
                if moment != "step":
                    proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=HANG_GUARD_S)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert proc.returncode in (-signal.SIGKILL, 0), (moment, fault, (tmp_path / "stderr.txt").read_text())
        outcomes.append(proc.returncode)
        _assert_consistent(cache)  # readable right after the kill
        done = _done_count(cache)
        assert done >= done_before, (moment, fault, "committed work was lost")
        done_before = done
    assert outcomes.count(-signal.SIGKILL) >= 4, outcomes
    assert (cache / "catalog.sqlite").exists() and 0 < done_before < N_VIDEOS * len(VIEWS)

    # a run killed while it wrote text.h5 leaves this behind (write_text_embeddings' temporary name)
    (cache / "text.h5.4242.0a1b2c.partial").write_bytes(b"\x89HDF torn")
    with Cache(cache) as reader:
        complete = {v for v in reader.video_ids() if set(reader.status(v).values()) == {"done"}}
    summary = _summary(_extract(manifest, cache, args))
    assert summary["extracted"] + summary["skipped"] == N_VIDEOS and summary["failed"] == 0
    assert summary["skipped"] >= len(complete)  # committed videos are not extracted again
    _assert_equals_reference(cache, reference)


def test_disk_full_fails_in_one_line_and_the_rerun_keeps_committed_videos(corpus_args, reference, tmp_path):
    manifest, args = corpus_args
    cache = tmp_path / "full"
    failed = _extract(manifest, cache, args, fault="shard-commit:ENOSPC:4")  # the 4th shard flush fails
    line = _one_line_error(failed)
    assert str(cache) in line and "no space left" in line and "free space" in line
    assert not [p for p in cache.rglob("*") if p.name.endswith((".partial", ".rows", "-journal"))]
    shards = sorted((cache / "shards").glob("*.h5"))
    assert len(shards) == 3  # the three commits before the failure; the failed one left nothing
    on_disk = {(r.video_id, r.view) for path in shards for rows in read_shard_index(path).values() for r in rows}
    with contextlib.closing(sqlite3.connect(cache / "catalog.sqlite")) as db:
        recorded = set(db.execute("SELECT video_id, view FROM items WHERE status='done'").fetchall())
        assert db.execute("SELECT count(*) FROM shards").fetchone()[0] == 3
    assert recorded == on_disk  # the catalog holds exactly the committed shards, not the failed one
    report = verify_cache(cache)
    assert report.broken == {} and report.unrecorded == []
    kept = {path.name: path.stat().st_mtime_ns for path in shards}

    summary = _summary(_extract(manifest, cache, args))  # "space freed": the hook is gone
    committed_videos = {video_id for video_id, _ in recorded}
    assert summary["skipped"] == len(committed_videos) and summary["extracted"] == N_VIDEOS - len(committed_videos)
    assert {p.name: p.stat().st_mtime_ns for p in (cache / "shards").glob("*.h5") if p.name in kept} == kept
    _assert_equals_reference(cache, reference)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 20 MiB tmpfs: a real full disk. Needs mount rights (root with CAP_SYS_ADMIN), else skipped;
    the hook-based test above runs everywhere."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        # a ballast leaves the writer's reserve plus room for a few of these small shards (each view's
        # chunk is sized to its rows, so 20 videos would otherwise fit): the disk fills mid-run
        st = os.statvfs(mount_point)
        room = st.f_bavail * st.f_frsize - SPACE_RESERVE_BYTES - (192 << 10)
        (mount_point / "ballast").write_bytes(b"\0" * max(0, room))
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_real_full_disk_stops_cleanly_before_hdf5_fails(corpus_args, tiny_tmpfs):
    """HDF5 cannot recover from a failed write (closing the file then crashes the process), so the
    writer must stop with ENOSPC while there is still room: exit 2, not a SIGSEGV with pages of
    h5py tracebacks, and every committed shard intact."""
    manifest, args = corpus_args
    cache = tiny_tmpfs / "cache"
    line = _one_line_error(_extract(manifest, cache, args))
    assert str(cache) in line and "no space left" in line
    assert not [p for p in cache.rglob("*") if p.name.endswith((".partial", ".rows", "-journal"))]
    shards = list((cache / "shards").glob("*.h5"))
    assert shards and _done_count(cache) == sum(
        len(rows) for path in shards for rows in read_shard_index(path).values()
    )
    _assert_consistent(cache)


def test_a_disk_filled_inside_the_margin_fails_in_hdf5_without_crashing(corpus_args, tiny_tmpfs):
    """Someone else fills the disk between vidcache's free-space check and the write (or a quota
    stops it): HDF5's own write fails. The run must still end in the one-line error (exit 2, not a
    SIGSEGV at exit when HDF5 closes the failed file), leave no partial shard, and keep every
    committed shard consistent with the catalog. The child runs the real CLI with the check disabled."""
    manifest, args = corpus_args
    cache = tiny_tmpfs / "cache"
    (tiny_tmpfs / "reserve-ballast").write_bytes(b"\0" * SPACE_RESERVE_BYTES)  # the check is off: fill its reserve
    unchecked = (
        "import sys; import vidcache.cache.store as store; store._ensure_space = lambda *a, **k: None; "
        "from vidcache.cli import main; sys.argv[0] = 'vidcache'; main()"
    )
    command = [sys.executable, "-c", unchecked, *_command(manifest, cache, args)[3:]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_S, env=_env(), cwd=REPO)
    line = _one_line_error(result)
    assert str(cache) in line and "no space left" in line
    assert not [p for p in cache.rglob("*") if p.name.endswith((".partial", ".rows"))]
    _assert_consistent(cache)


def _writes_are_refused(directory: Path) -> bool:
    try:
        (directory / ".probe").write_bytes(b"")
    except PermissionError:
        return True
    (directory / ".probe").unlink()
    return False


def test_read_only_cache_fails_in_one_line_and_stays_readable(corpus_args, reference, tmp_path):
    manifest, args = corpus_args
    cache = tmp_path / "ro"
    shutil.copytree(reference, cache)  # the result of a first successful run
    for i in range(2):  # new manifest rows: this run has work to do
        write_video(manifest.parent / "more" / f"n{i}.mp4", 24, fps=12, gop=6, frame_fn=lambda k, _t: index_frame(k))
    more = manifest.with_name("m_more.csv")
    more.write_text(manifest.read_text() + "".join(f"more/n{i}.mp4,a\n" for i in range(2)))

    def snapshot() -> tuple:
        files = sorted((str(p.relative_to(cache)), p.stat().st_size, p.stat().st_mtime_ns) for p in cache.rglob("*"))
        return hashlib.sha256((cache / "catalog.sqlite").read_bytes()).hexdigest(), files

    before = snapshot()
    os.chmod(cache, 0o555)
    try:
        # root writes through chmod: there the hook raises the EACCES a normal user gets
        fault = None if _writes_are_refused(cache) else "cache-write:EACCES"
        line = _one_line_error(_extract(more, cache, args, fault=fault))
        assert str(cache) in line and "is not writable" in line
        assert snapshot() == before
        _assert_equals_reference(cache, reference)  # still fully readable, verify clean
    finally:
        os.chmod(cache, 0o755)


def test_two_shard_parts_started_together_equal_one_process(corpus_args, reference, tmp_path):
    """`test_parallel_shards_share_one_cache` also starts both parts at once, but only counts ids.
    Here both parts race on a fresh cache (catalog creation, view claims, commits after every video,
    text.h5) and the union must equal the one-process run row for row."""
    manifest, args = corpus_args
    cache = tmp_path / "sharded"
    procs = [
        subprocess.Popen(
            _command(manifest, cache, args, "--shard", f"{k}/2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=REPO,
        )
        for k in range(2)
    ]
    outputs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    totals = [json.loads(out.strip().splitlines()[-1])["total"] for out, _ in outputs]
    assert sum(totals) == N_VIDEOS and min(totals) > 0
    _assert_equals_reference(cache, reference)


def test_a_failed_commit_leaves_no_open_transaction(tmp_path):
    """A COMMIT that fails (SQLITE_FULL on a full disk; here a deferred constraint, which fails the
    same way at COMMIT) used to leave the transaction open: every later write then failed with
    "cannot start a transaction within a transaction" instead of the real error."""
    catalog = Catalog.open(tmp_path, create=True)
    try:
        db = catalog._db
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE child(p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
        with pytest.raises(sqlite3.IntegrityError), catalog.transaction() as tx:
            tx.execute("INSERT INTO child VALUES(1)")  # only checked at COMMIT
        assert not db.in_transaction
        catalog.record_items([Item("v", "clip", "failed", None, None, None, None, "x", None, None, "{}", now_iso())])
        assert [i.reason for i in catalog.items()] == ["x"]
    finally:
        catalog.close()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left"),
        # h5py: errno only in a message that spans lines (HDF5 puts a ctime with its newline in it)
        (
            OSError("Can't close file (file write failed: time = Sun Nov 22\n, errno = 28, error message = 'No"),
            "no space",
        ),
        (sqlite3.OperationalError("database or disk is full"), "no space left"),
        (sqlite3.OperationalError("attempt to write a readonly database"), "is not writable"),
        (PermissionError(errno.EACCES, "Permission denied"), "is not writable (Permission denied)"),
        (OSError(errno.EROFS, "Read-only file system"), "is not writable (Read-only file system)"),
        (OSError(errno.EIO, "Input/output error"), "cannot write to cache /c (Input/output error)"),
    ],
)
def test_cache_write_errors_are_one_line_naming_the_directory_and_the_fix(exc, expected):
    message = str(cache_write_error("/c", exc))
    assert "\n" not in message and "/c" in message and expected in message
