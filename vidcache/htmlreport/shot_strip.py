"""A video's shots as a strip of thumbnails: the frame on screen at the middle of each shot.

The cache keeps one thumbnail per video (`vidcache.cache.thumbnails`), not one per shot, so the
report decodes the few middle frames of the videos it shows from their source files (one seek per
shot, only for the sampled videos) and makes them small JPEGs with the cache's own thumbnail
encoder. A source that cannot be read (moved, a URL: the report never fetches anything) gives the
video's stored thumbnail in every place, and the strip's caption says so."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..cache.reader import Cache
from ..cache.thumbnails import encode_thumbnail, read_thumbnail
from ..remote import is_url

log = logging.getLogger("vidcache.report")
SHOTS_VIEW = "shots"
MAX_SHOTS_SHOWN = 12  # per video: the page stays bounded whatever a video's shot count
STRIP_SIDE_PX = 96
STRIP_MAX_BYTES = 4 * 1024


@dataclass
class ShotStrip:
    video_id: str
    shots: int  # shots of the video (the strip shows at most MAX_SHOTS_SHOWN of them)
    start_s: list[float]
    end_s: list[float]
    jpegs: list[bytes | None] = field(default_factory=list)  # one per shown shot
    note: str = ""  # how the pictures were made when not each shot's own middle frame


def _middle_frames(path: str, middles_s: list[float]) -> list[np.ndarray]:
    """RGB frames on screen at each time (ascending), one seek each."""
    import av

    from ..extract.decode import frame_to_rgb

    out = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        base = stream.time_base
        for middle in middles_s:
            container.seek(int(middle / base), stream=stream, backward=True)
            shown = None
            for frame in container.decode(stream):
                if frame.time is not None and frame.time > middle and shown is not None:
                    break  # `shown` was on screen at `middle`
                shown = frame
            if shown is None:
                raise ValueError(f"no frame at {middle:.3f} s")
            out.append(frame_to_rgb(shown, max_short_side=2 * STRIP_SIDE_PX))
    return out


def shot_strip(cache: Cache, video_id: str, path: str) -> ShotStrip | None:
    """The strip of one video, or None when it has no shots row."""
    if SHOTS_VIEW not in cache.views() or cache.status(video_id).get(SHOTS_VIEW) != "done":
        return None
    spans = cache.read_shots(video_id)
    shown = min(len(spans), MAX_SHOTS_SHOWN)
    strip = ShotStrip(video_id, len(spans), spans.start_s[:shown].tolist(), spans.end_s[:shown].tolist())
    middles = [(a + b) / 2 for a, b in zip(strip.start_s, strip.end_s, strict=True)]
    reason = ""
    if is_url(path):
        reason = "a URL (the report fetches nothing)"
    elif not Path(path).is_file():
        reason = "not found"
    else:
        try:
            frames = _middle_frames(path, middles)
            strip.jpegs = [encode_thumbnail(f, max_side=STRIP_SIDE_PX, max_bytes=STRIP_MAX_BYTES) for f in frames]
            return strip
        except Exception as exc:  # a damaged or changed source costs the pictures, never the report
            log.debug("shots strip of %s: %s", video_id, exc)
            reason = f"not decodable ({type(exc).__name__})"
    strip.jpegs = [read_thumbnail(cache.path, video_id)] * shown
    strip.note = f"source {reason}: each picture is the video's stored thumbnail, not the shot's middle frame"
    return strip
