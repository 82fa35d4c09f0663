"""Issue 29's cheap cache commands at scale, checked at small N on the same code paths (no timings):
`status` loads none of the heavy libraries and its counts equal SQLite's own; the no-op `extract`
re-run and `remove --not-in` decide from the catalog in bulk and give what a per-video reference gives."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import HANG_GUARD_S, REPO
from vidcache.cache.arrays import write_view_arrays
from vidcache.manifest import VideoEntry

N_VIDEOS = 60
HEAVY = ("numpy", "torch", "h5py", "pandas", "pyarrow", "faiss", "av", "cv2", "open_clip")


@pytest.fixture()
def cache_dir(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cache"
    entries = [VideoEntry(f"v{i:03d}", str(tmp_path / f"v{i:03d}.mp4"), ("a",), "train") for i in range(N_VIDEOS)]
    rows = [(e.video_id, rng.normal(size=(1 + i % 4, 8)).astype(np.float16), np.arange(1 + i % 4, dtype=float))
            for i, e in enumerate(entries)]  # fmt: skip
    write_view_arrays(path, view="clip", rows=rows, entries=entries, identity={"model": "s"})
    return path


def test_status_loads_no_heavy_library_and_counts_what_sqlite_counts(cache_dir):
    script = (
        "import json, sys\n"
        "from vidcache.cli import main\n"
        f"sys.argv = ['vidcache', 'status', '--cache', {str(cache_dir)!r}, '--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr
    status_line, loaded_line = out.stdout.strip().splitlines()[-2:]
    assert json.loads(loaded_line) == []  # start-up is what status costs at 1M videos (issue 29: <= 1 s)
    status = json.loads(status_line)["views"]["clip"]
    with sqlite3.connect(cache_dir / "catalog.sqlite") as db:  # the reference: SQLite on the catalog file
        query = "SELECT count(*), sum(row_count) FROM items WHERE view='clip' AND status='done'"
        done, rows = db.execute(query).fetchone()
    assert (status["done"], status["rows"]) == (done, rows) == (N_VIDEOS, sum(1 + i % 4 for i in range(N_VIDEOS)))


def test_remove_not_in_drops_the_complement_that_a_python_set_difference_gives(cache_dir, tmp_path):
    from vidcache.cache.housekeeping import remove_videos

    with sqlite3.connect(cache_dir / "catalog.sqlite") as db:
        known = {v for (v,) in db.execute("SELECT video_id FROM entries UNION SELECT video_id FROM items")}
    keep = [f"v{i:03d}" for i in range(0, N_VIDEOS, 3)] + ["never-cached"]
    summary = remove_videos(cache_dir, keep_only=keep)
    assert summary.removed == sorted(known - set(keep)) and summary.kept == len(known & set(keep))
    with sqlite3.connect(cache_dir / "catalog.sqlite") as db:
        left_items = {v for (v,) in db.execute("SELECT video_id FROM items")}
        left_entries = {v for (v,) in db.execute("SELECT video_id FROM entries")}
    assert left_items == left_entries == known & set(keep)
    # by name: the order given, unknown ones reported, the rest kept
    by_name = remove_videos(cache_dir, video_ids=["v009", "nope", "v000", "v001"])
    assert (by_name.removed, by_name.not_found, by_name.kept) == (
        ["v009", "v000"],
        ["nope", "v001"],
        len(left_items) - 2,
    )


def test_bulk_plan_decides_what_the_per_video_plan_decides(cache_dir, tmp_path, monkeypatch):
    from vidcache.cache.catalog import Catalog
    from vidcache.extract import plan

    entries = [VideoEntry(f"v{i:03d}", str(tmp_path / f"v{i:03d}.mp4"), ("a",), "train") for i in range(N_VIDEOS + 5)]
    for entry in entries[::7]:  # a file there now, of no recorded size: changed, so planned again
        open(entry.path, "wb").write(b"x" * 10)
    catalog = Catalog.open(cache_dir)
    try:
        results = []
        for threshold in (10**9, 0):  # per video (the reference), then in bulk
            monkeypatch.setattr(plan, "BULK_PLAN_VIDEOS", threshold)
            summary = plan.ExtractSummary()
            todo = plan.plan_videos(catalog, entries, ["clip"], summary, retry_failed=False)
            results.append(([(e.video_id, s, views) for e, s, views in todo], summary.skipped, summary.failed))
    finally:
        catalog.close()
    assert results[0] == results[1]
    todo_ids = {v for v, _, _ in results[0][0]}
    assert todo_ids == {e.video_id for e in entries[::7]} | {f"v{i:03d}" for i in range(N_VIDEOS, N_VIDEOS + 5)}
