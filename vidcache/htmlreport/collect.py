"""The facts a report shows, read from a cache and run directories into plain dicts (no HTML here).

Everything that grows with the corpus is bounded here: histograms are binned (a fixed number of
bins whatever N), failure tables and mining samples keep at most the requested number of rows and
say how many were left out.
"""

from __future__ import annotations

import csv
import heapq
import json
import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache.layout import STATUS_ABSENT, STATUS_DONE, STATUS_FAILED, shard_dir
from ..cache.reader import Cache
from .shot_strip import shot_strip

STATUSES = (STATUS_DONE, STATUS_ABSENT, STATUS_FAILED)
HISTOGRAM_BINS = 30


@dataclass
class Histogram:
    """Binned values: `counts[i]` values fall in [edges[i], edges[i + 1])."""

    title: str
    unit: str
    edges: list[float]
    counts: list[int]
    n: int

    @classmethod
    def of(cls, values: list[float], *, title: str, unit: str, bins: int = HISTOGRAM_BINS) -> Histogram:
        data = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
        if len(data) == 0:
            return cls(title, unit, [], [], 0)
        low, high = float(data.min()), float(data.max())
        span = max(high - low, 0.1 * max(abs(low), abs(high)), 1e-6)  # nearly equal values: still visible bars
        middle = (low + high) / 2
        low, high = min(low, middle - span / 2), max(high, middle + span / 2)
        counts, edges = np.histogram(data, bins=bins, range=(low, high))
        return cls(title, unit, edges.tolist(), counts.tolist(), len(data))


@dataclass
class CacheFacts:
    path: str
    views: dict[str, dict]  # view -> recorded identity (its settings)
    status: dict[str, dict[str, int]]  # view -> status -> videos
    rows: dict[str, int]  # view -> rows stored
    bytes: dict[str, int]  # view -> bytes its datasets take in the shards (allocated HDF5 chunks)
    data_bytes: dict[str, int]  # view -> bytes of its rows and timestamps as stored (uncompressed)
    entries: int
    shards: int
    failures: list[dict]  # video_id, view, reason, path (at most max_failures)
    failures_total: int
    histograms: list[Histogram]
    resolutions: list[tuple[str, int]]  # "W×H" -> videos, most common first
    runs: list[dict]  # extract runs recorded in the catalog
    gallery: list[dict] = field(default_factory=list)  # a seeded sample of videos: id, labels, facts, statuses
    gallery_of: int = 0  # videos the gallery was drawn from


@dataclass
class MinedVideo:
    video_id: str
    labels: list[str]
    negative_labels: list[tuple[str, float]] = field(default_factory=list)
    negative_videos: list[tuple[str, float, list[str]]] = field(default_factory=list)


@dataclass
class MiningFacts:
    sources: dict[str, dict]  # mined list name -> what made it (NAME.json), for the lists shown
    videos: list[MinedVideo]
    population: int  # videos with a mined list; `videos` is a seeded sample of them
    duplicates: list[dict] = field(default_factory=list)  # per `mine duplicates` table: counts, largest groups


@dataclass
class RunFacts:
    path: str
    name: str
    summary: dict
    config: dict
    history: list[dict]
    per_class_ap: dict[str, float | None] | None
    confusions: list[dict] | None
    thresholds: dict[str, float] | None


def _bytes_per_view(cache_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Per view: (bytes allocated in the shards, bytes of the data itself)."""
    import h5py

    sizes: Counter = Counter()
    logical: Counter = Counter()
    for path in sorted(shard_dir(cache_dir).glob("*.h5")):
        try:
            with h5py.File(path, "r") as h5:
                for view in h5:
                    if not isinstance(h5[view], h5py.Group):
                        continue

                    def add(_name: str, node, view: str = view) -> None:
                        if isinstance(node, h5py.Dataset):
                            sizes[view] += node.id.get_storage_size()
                            logical[view] += node.size * node.dtype.itemsize

                    h5[view].visititems(add)
        except OSError:  # a damaged shard is `vidcache verify`'s business; the report goes on
            continue
    return dict(sizes), dict(logical)


def _seeded_sample(ids, *, size: int, seed: int) -> list[str]:
    """`size` ids picked by a seeded hash of each id: the same ids for the same seed, whatever the order
    (the `size` smallest hashes, without sorting a million)."""
    return sorted(heapq.nsmallest(size, ids, key=lambda v: (zlib.crc32(f"{seed}\0{v}".encode()), v)))


def video_duration_s(info: dict, entry: dict) -> float | None:
    """How long a manifest entry is: a segment's own span (`start_s`…`end_s`, cut at the file's end),
    not the file's duration that its `info_json` records; the whole file's for a plain entry."""
    whole = info.get("duration_s")
    start, end = entry.get("start_s"), entry.get("end_s")
    if start is None and end is None:
        return whole
    end = whole if end is None else (end if whole is None else min(end, whole))
    return None if end is None else max(0.0, end - (start or 0.0))


def cache_facts(cache: Cache, *, max_failures: int, gallery: int = 0, seed: int = 0) -> CacheFacts:
    catalog = cache._catalog
    views = catalog.views()
    items = catalog.items()
    entries = {e["video_id"]: e for e in catalog.entries()}
    status = {view: dict.fromkeys(STATUSES, 0) for view in views}
    rows: Counter = Counter()
    info_by_video: dict[str, dict] = {}
    failures = []
    for item in items:
        status.setdefault(item.view, dict.fromkeys(STATUSES, 0))
        status[item.view][item.status] = status[item.view].get(item.status, 0) + 1
        if item.status == STATUS_DONE:
            rows[item.view] += item.row_count or 0
        if item.status == STATUS_FAILED:
            failures.append(
                {
                    "video_id": item.video_id,
                    "view": item.view,
                    "reason": item.reason or "failed",
                    "path": entries.get(item.video_id, {}).get("path", ""),
                }
            )
        if item.info_json and item.video_id not in info_by_video:
            try:
                info = json.loads(item.info_json)
            except ValueError:
                continue
            if info.get("width"):  # a video view's facts (audio-only records have none of these)
                info["duration_s"] = video_duration_s(info, entries.get(item.video_id, {}))
                info_by_video[item.video_id] = info
    infos = list(info_by_video.values())
    histograms = [
        Histogram.of([i.get("duration_s") for i in infos], title="durations", unit="s"),
        Histogram.of([i.get("avg_fps") for i in infos], title="frame rates", unit="frames/s"),
        Histogram.of(
            [min(i["width"], i["height"]) for i in infos if i.get("width") and i.get("height")],
            title="short side",
            unit="px",
        ),
    ]
    resolutions = Counter(f"{i['width']}×{i['height']}" for i in infos if i.get("width") and i.get("height"))
    runs = []
    for run in catalog.runs():
        summary = json.loads(run["summary_json"]) if run["summary_json"] else {}
        runs.append(
            {
                "run_id": run["run_id"],
                "started_at": run["started_at"],
                "finished_at": run["finished_at"] or "(interrupted)",
                "command": run["command"] or "",
                "videos": summary.get("total", summary.get("videos", "")),
                "failed": summary.get("failed", ""),
            }
        )
    failures.sort(key=lambda f: (f["video_id"], f["view"]))
    allocated, data_bytes = _bytes_per_view(cache.path)
    statuses: dict[str, dict[str, str]] = {}
    for item in items:
        statuses.setdefault(item.video_id, {})[item.view] = item.status
    shown = []
    for video_id in _seeded_sample(statuses, size=gallery, seed=seed):
        info = info_by_video.get(video_id, {})
        shown.append(
            {
                "video_id": video_id,
                "labels": entries.get(video_id, {}).get("labels", []),
                "duration_s": info.get("duration_s"),
                "size": f"{info['width']}×{info['height']}" if info.get("width") else None,
                "fps": info.get("avg_fps"),
                "statuses": statuses[video_id],
                "shots": shot_strip(cache, video_id, entries.get(video_id, {}).get("path", "")),
            }
        )
    return CacheFacts(
        path=str(cache.path),
        views=views,
        status=status,
        rows=dict(rows),
        bytes=allocated,
        data_bytes=data_bytes,
        entries=len(entries),
        shards=len(catalog.shards()),
        failures=failures[:max_failures],
        failures_total=len(failures),
        histograms=histograms,
        resolutions=resolutions.most_common(20),
        runs=runs,
        gallery=shown,
        gallery_of=len(statuses),
    )


def _read_mined(cache_dir: Path, name: str):
    import pandas as pd

    path = cache_dir / "mined" / f"{name}.parquet"
    if not path.exists():
        return None, {}
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return pd.read_parquet(path), meta


def mining_facts(cache: Cache, *, sample: int, labels_per_video: int, videos_per_video: int, seed: int) -> MiningFacts:
    """A seeded sample of `sample` mined videos (the same videos for the same seed whatever the
    corpus order: picked by a hash of the id), each with its hardest negative labels and videos."""
    labels_frame, labels_meta = _read_mined(cache.path, "hard_negatives")
    videos_frame, videos_meta = _read_mined(cache.path, "hard_negative_videos")
    sources = {
        name: meta
        for name, frame, meta in (
            ("hard_negatives", labels_frame, labels_meta),
            ("hard_negative_videos", videos_frame, videos_meta),
        )
        if frame is not None
    }
    ids: set[str] = set()
    for frame in (labels_frame, videos_frame):
        if frame is not None:
            ids.update(frame["video_id"].unique().tolist())
    chosen = _seeded_sample(ids, size=sample, seed=seed)
    by_labels = labels_frame[labels_frame["video_id"].isin(chosen)] if labels_frame is not None else None
    by_videos = videos_frame[videos_frame["video_id"].isin(chosen)] if videos_frame is not None else None
    out, shown_videos = [], {}
    for video_id in sorted(chosen):
        video = MinedVideo(video_id, [])
        if by_labels is not None:
            rows = by_labels[by_labels["video_id"] == video_id].sort_values("rank").head(labels_per_video)
            video.negative_labels = [(str(r.label), float(r.score)) for r in rows.itertuples()]
        if by_videos is not None:
            rows = by_videos[by_videos["video_id"] == video_id].sort_values("rank").head(videos_per_video)
            column = "negative_id" if "negative_id" in rows else "neighbour_id"
            shown_videos[video_id] = [(str(n), float(s)) for n, s in zip(rows[column], rows["score"], strict=True)]
        out.append(video)
    # the labels of the videos shown, by key (not a million entries decoded)
    wanted = [*chosen, *(n for shown in shown_videos.values() for n, _ in shown)]
    own = {video_id: list(labels) for video_id, labels in cache._catalog.labels_of(wanted).items()}
    for video in out:
        video.labels = own.get(video.video_id, [])
        if video.video_id in shown_videos:
            video.negative_videos = [(n, s, own.get(n, [])) for n, s in shown_videos[video.video_id]]
    return MiningFacts(sources=sources, videos=out, population=len(ids), duplicates=duplicate_facts(cache.path))


def duplicate_facts(cache_dir: Path, *, groups_shown: int = 10, members_shown: int = 6) -> list[dict]:
    """Per `mined/duplicates_<view>.parquet`: view, threshold, groups, videos to drop, and the largest
    groups (representative first, then members by similarity, at most `members_shown`)."""
    out = []
    for path in sorted((cache_dir / "mined").glob("duplicates_*.parquet")):
        frame, meta = _read_mined(cache_dir, path.stem)
        sizes = frame.groupby("group_id").size().sort_values(ascending=False, kind="stable")
        shown = []
        for group_id, size in sizes.head(groups_shown).items():
            members = frame[frame["group_id"] == group_id].sort_values(
                ["representative", "similarity"], ascending=False, kind="stable"
            )
            rows = members.head(members_shown)
            shown.append(
                {
                    "group_id": int(group_id),
                    "size": int(size),
                    "members": [
                        (str(v), float(s), bool(r))
                        for v, s, r in zip(rows["video_id"], rows["similarity"], rows["representative"], strict=True)
                    ],
                }
            )
        out.append(
            {
                "name": path.stem,
                "view": meta.get("view", path.stem.removeprefix("duplicates_")),
                "threshold": meta.get("parameters", {}).get("threshold"),
                "groups": len(sizes),
                "drop": int((~frame["representative"]).sum()),
                "largest": shown,
            }
        )
    return out


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_facts(run_dir: str | Path) -> RunFacts:
    from ..errors import ConfigError

    run_dir = Path(run_dir)
    summary = _read_json(run_dir / "summary.json")
    if summary is None:
        raise ConfigError(
            f"--run {run_dir}: no readable summary.json; give a finished `vidcache train --out` directory"
        )
    history: list[dict] = []
    if (run_dir / "history.csv").exists():
        with open(run_dir / "history.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                history.append({k: _number(v) for k, v in row.items()})
    return RunFacts(
        path=str(run_dir),
        name=run_dir.name,
        summary=summary,
        config=_read_json(run_dir / "config.json") or {},
        history=history,
        per_class_ap=_read_json(run_dir / "per_class_ap.json"),
        confusions=_read_json(run_dir / "confusions.json"),
        thresholds=_read_json(run_dir / "thresholds.json"),
    )


def _number(value: str) -> float | str:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value
