"""The per-view counts kept by SQLite triggers (vidcache/cache/counts.py) against a plain Python count
over `items` (every row read, info_json parsed by the json module), after each kind of write the
catalog makes: new items, replaced items (failed → done), deletes (forget, remove), updates (restamp);
an older catalog without the table (counted on demand read-only, upgraded by a writer's open); and a
write past the triggers (counted on demand again)."""

from __future__ import annotations

import json
import random
import sqlite3

from vidcache.cache.catalog import Catalog, Item
from vidcache.cache.layout import STATUS_ABSENT, STATUS_DONE, STATUS_FAILED
from vidcache.commands.cache import cache_status

INFOS = [
    None, "{}", '{"video_stream": 0}', '{"video_stream": 1, "decode_device": "cuda"}',
    '{"video_stream": 0, "decode_device": "cuda", "decode_fallback": true}', '{"audio_stream": 2}',
    '{"imported_from": "x.npy"}', '{"feature_file": "f.h5", "video_stream": 0}', "not json {",
]  # fmt: skip


STATUSES = [STATUS_DONE, STATUS_DONE, STATUS_FAILED, STATUS_ABSENT]


def _python_counts(catalog: Catalog, view: str, key: str):
    """(status_counts, (streams, devices)) computed in Python from every item of the view."""
    status: dict[str, tuple[int, int]] = {}
    streams: dict[str, int] = {}
    devices: dict[str, int] = {}
    for item in catalog.items(view):
        n, rows = status.get(item.status, (0, 0))
        status[item.status] = (n + 1, rows + (item.row_count or 0))
        try:
            info = json.loads(item.info_json) if item.info_json else {}
        except json.JSONDecodeError:
            info = {}
        if item.status != STATUS_DONE or "imported_from" in info or "feature_file" in info:
            continue
        stream = "?" if info.get(key) is None else str(info[key])
        device = str(info.get("decode_device", "cpu")) + (" (fallback)" if info.get("decode_fallback") else "")
        streams[stream] = streams.get(stream, 0) + 1
        devices[device] = devices.get(device, 0) + 1
    return status, (streams, dict(sorted(devices.items())))


def _items(rng: random.Random, ids: range, view: str) -> list[Item]:
    return [
        Item(
            f"v{i}",
            view,
            rng.choice([STATUS_DONE, STATUS_DONE, STATUS_FAILED, STATUS_ABSENT]),
            "s0",
            i,
            rng.choice([None, 1, 8, 30]),
            0,
            "why",
            10,
            20,
            rng.choice(INFOS),
            "t",
        )
        for i in ids
    ]


def _check(cache, *, usable: bool) -> None:
    catalog = Catalog.open(cache)  # read-only, as `vidcache status` opens it
    try:
        for view, key in (("clip", "video_stream"), ("audio", "audio_stream")):
            status, sources = _python_counts(catalog, view, key)
            assert catalog.status_counts(view) == status
            assert catalog.source_counts(view, key) == sources
        assert catalog._counts_usable is usable
    finally:
        catalog.close()


def test_counts_follow_every_write_and_equal_a_python_count(tmp_path):
    rng = random.Random(29)
    catalog = Catalog.open(tmp_path, create=True)
    catalog.record_items(_items(rng, range(300), "clip") + _items(rng, range(100), "audio"))
    _check(tmp_path, usable=True)
    catalog.record_items(_items(rng, range(150, 400), "clip"))  # INSERT OR REPLACE over 150 of them
    _check(tmp_path, usable=True)
    catalog.forget_items([(f"v{i}", "clip", "s0") for i in range(0, 400, 3)])
    catalog.restamp_sources({f"v{i}": (10, 20, 99, "d") for i in range(0, 100, 2)})  # UPDATE items
    with catalog.transaction() as db:
        catalog.drop_videos(db, video_ids=[f"v{i}" for i in range(50, 60)])
    _check(tmp_path, usable=True)
    for view in ("clip", "audio"):
        catalog.claim_view(view, {"model": "m"})
    shown = cache_status(str(tmp_path))["views"]  # the command's numbers, from the kept counts
    for view, key in (("clip", "video_stream"), ("audio", "audio_stream")):
        status, (streams, devices) = _python_counts(catalog, view, key)
        got = shown[view]
        assert (got["done"], got["rows"]) == status.get(STATUS_DONE, (0, 0))
        assert (got["failed"], got["absent"]) == (status[STATUS_FAILED][0], status[STATUS_ABSENT][0])
        assert got["streams"] == dict(sorted(streams.items()))
        assert got.get("decode_devices", {}) == (devices if view == "clip" else {})
    catalog.close()


def test_older_catalog_counted_on_demand_then_upgraded_by_a_writer(tmp_path):
    rng = random.Random(7)
    catalog = Catalog.open(tmp_path, create=True)
    catalog.record_items(_items(rng, range(200), "clip") + _items(rng, range(50), "audio"))
    catalog.close()
    db = sqlite3.connect(tmp_path / "catalog.sqlite")  # as a catalog made before the counts existed
    for name in ("item_counts_replaced", "item_counts_insert", "item_counts_delete", "item_counts_update"):
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE item_counts")
    db.commit()
    db.close()
    _check(tmp_path, usable=False)  # read-only: counted on demand, nothing written
    assert "item_counts" not in _tables(tmp_path)
    Catalog.open(tmp_path, create=True).close()  # a writer's open creates and fills it
    assert "item_counts" in _tables(tmp_path)
    _check(tmp_path, usable=True)


def test_a_write_past_the_triggers_is_counted_on_demand(tmp_path):
    rng = random.Random(3)
    catalog = Catalog.open(tmp_path, create=True)
    catalog.record_items(_items(rng, range(100), "clip"))
    catalog.close()
    db = sqlite3.connect(tmp_path / "catalog.sqlite", isolation_level=None)
    db.execute("PRAGMA recursive_triggers = ON")  # REPLACE then also fires the delete trigger: counted twice
    db.execute("INSERT OR REPLACE INTO items SELECT * FROM items WHERE video_id = 'v1'")
    db.close()
    _check(tmp_path, usable=False)


def _tables(cache) -> set[str]:
    db = sqlite3.connect(cache / "catalog.sqlite")
    try:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


def test_the_update_trigger_fires_only_for_the_counted_columns_and_older_catalogs_get_it(tmp_path):
    """compact's moves (shard, row_start, checksum) and restamps cannot change a count, so the update
    trigger no longer runs for them; a catalog with the trigger of every UPDATE gets the narrow one from
    a writer's open, and the counts still equal a Python count after hand-written UPDATEs of the key."""
    rng = random.Random(11)
    catalog = Catalog.open(tmp_path, create=True)
    catalog.record_items(_items(rng, range(120), "clip"))
    catalog.close()
    db = sqlite3.connect(tmp_path / "catalog.sqlite", isolation_level=None)
    (narrow,) = db.execute("SELECT sql FROM sqlite_master WHERE name='item_counts_update'").fetchone()
    db.execute("DROP TRIGGER item_counts_update")  # as a catalog made before: the trigger of every UPDATE
    db.execute(narrow.replace("AFTER UPDATE OF view, status, row_count, info_json ON", "AFTER UPDATE ON"))
    db.close()
    Catalog.open(tmp_path, create=True).close()  # a writer's open narrows it
    db = sqlite3.connect(tmp_path / "catalog.sqlite", isolation_level=None)
    assert db.execute("SELECT sql FROM sqlite_master WHERE name='item_counts_update'").fetchone() == (narrow,)

    def rows_written(statement: str) -> int:  # the items' rows and every row the triggers wrote
        before = db.total_changes
        db.execute(statement)
        return db.total_changes - before

    moved = rows_written("UPDATE items SET shard='moved', row_start=row_start + 1, checksum=checksum WHERE view='clip'")
    restamped = rows_written("UPDATE items SET source_mtime_ns=1 WHERE view='clip'")
    keyed = rows_written("UPDATE items SET status=status WHERE view='clip'")
    # 120 items, the change counter's trigger 2 rows each (cache/changes.py); the counts' 2 more each, only keyed
    assert (moved, restamped, keyed) == (120 * 3, 120 * 3, 120 * 5)
    db.execute("UPDATE items SET status='failed', row_count=0 WHERE video_id IN ('v1', 'v2', 'v3')")
    db.execute("UPDATE items SET info_json='{\"video_stream\": 5}' WHERE video_id='v4'")
    db.close()
    _check(tmp_path, usable=True)
