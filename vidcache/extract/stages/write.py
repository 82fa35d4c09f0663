"""Write stage: a finished video's rows into the open shard (`CacheWriter`), its failed and absent
views into the catalog, and its counts into the run's summary."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ...cache.layout import failed_item, failure_text
from ...cache.store import CacheWriter
from ...cache.thumbnails import write_thumbnail
from ..plan import ExtractSummary
from .messages import VideoRows
from .view_facts import counts_frames

log = logging.getLogger("vidcache.extract")


@dataclass
class VideoCounts:
    """What a written video adds to the summary: small, so a Ray writer can send it to the driver."""

    video_id: str
    n_views: int
    rows: dict[str, int] = field(default_factory=dict)
    absent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, video: VideoRows) -> VideoCounts:
        rows = {view: len(columns[1]) for view, columns in video.rows.items()}
        return cls(video.video_id, len(video.task.views), rows, list(video.absent), dict(video.failed))


def account(summary: ExtractSummary, counts: VideoCounts) -> None:
    """Add one written video to the summary, as the local engine always has."""
    for view in counts.absent:
        summary.absent[view] = summary.absent.get(view, 0) + 1
    for view, n in counts.rows.items():
        summary.rows[view] = summary.rows.get(view, 0) + n
        if counts_frames(view):
            summary.frames += n
    if counts.failed:
        summary.failed += 1
        summary.failures[counts.video_id] = failure_text(counts.failed, several_views=counts.n_views > 1)
        summary.failed_items.extend(failed_item(counts.video_id, v, r) for v, r in counts.failed.items())
    else:
        summary.extracted += 1


class WriteStage:
    """Writes each `VideoRows` through a `CacheWriter` (the shard rotation, commit timing and catalog
    records are the writer's) and its thumbnail next to the cache; commits when the writer says so."""

    def __init__(self, cache_dir: Path, writer: CacheWriter, summary: ExtractSummary) -> None:
        self.cache_dir, self.writer, self.summary = cache_dir, writer, summary

    def setup(self) -> None:
        """The writer is opened (and orphans adopted) by the coordinator, under the cache's lock."""

    def process(self, video: VideoRows) -> VideoCounts:
        writer, source = self.writer, video.task.source
        if video.thumbnail:
            write_thumbnail(self.cache_dir, video.video_id, video.thumbnail)
        counts = VideoCounts.of(video)
        if video.failed:
            writer.record_failure(
                video.video_id, list(video.failed), video.failed, source=source, info_json=video.info_json
            )
        try:
            if video.rows or video.absent:
                writer.add(video.video_id, video.rows, absent=video.absent, source=source, info_json=video.info_json)
        finally:
            video.close()
        account(self.summary, counts)
        log.debug("video written: %s", video.video_id)  # `vidcache -v`: what a test waits for, not a clock
        writer.maybe_commit()
        return counts

    def teardown(self) -> None:
        """Committing is the coordinator's: it also commits after an interruption."""
