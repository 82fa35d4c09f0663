"""Write per-video arrays of one view into a cache (through the same writer, catalog and lock as
extract): used by `vidcache import` of features made elsewhere, and by tests and benchmarks that
need a cache of known numbers without decoding video."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ConfigError, cache_write_error
from .catalog import Catalog
from .fidelity import stale_view_message
from .layout import STATUS_DONE
from .lock import ExtractLock
from .store import CacheWriter, check_cache_writable

_BATCH_BYTES = 16 << 20  # videos written together: few large HDF5 writes instead of one per video
_BATCH_VIDEOS = 4096


def write_view_arrays(
    cache_dir: str | Path,
    *,
    view: str,
    rows: Iterable[tuple[str, np.ndarray, np.ndarray] | tuple[str, np.ndarray, np.ndarray, dict]],
    entries: list,
    identity: dict,
    dtype: str = "float16",
    command: str = "",
    failures: dict[str, str] | None = None,
) -> int:
    """Store `(video_id, features [T, D], timestamps_s)` for each video, `timestamps_s` being row
    starts [T] or starts and ends [T, 2] (all videos of the view alike; an optional fourth
    item, a dict, is the video's info: `Cache.video_info`); returns the count. `entries` (manifest
    `VideoEntry`s) give labels and splits; `identity` is the view's recorded identity and must match
    what the cache already holds for `view`. `failures` (video_id -> reason; `rows` may add to it
    while it is consumed) are recorded as failed after the rows are committed, except for videos
    that already hold rows of `view`: those keep them."""
    cache_dir = Path(cache_dir)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    check_cache_writable(cache_dir)
    try:
        return _write(cache_dir, run_id, view, rows, entries, identity, dtype, command, failures)
    except (OSError, sqlite3.OperationalError) as exc:
        # as in extract: a full disk or a read-only cache in one line, never h5py's multi-line text
        raise cache_write_error(cache_dir, exc) from None


def _write(cache_dir: Path, run_id: str, view, rows, entries, identity, dtype, command, failures) -> int:
    with ExtractLock(cache_dir):
        catalog = Catalog.open(cache_dir, create=True)
        try:
            recorded = catalog.claim_view(view, identity)
            # writers that record the extraction rules' version (import) refuse rows made under other rules
            stale = stale_view_message(cache_dir, view, recorded) if "fidelity" in identity else None
            if stale:
                raise ConfigError(stale)
            if recorded != identity:
                differs = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
                raise ConfigError(f"cache {cache_dir} holds view {view!r} with other settings ({', '.join(differs)})")
            catalog.upsert_entries(entries)
            writer = CacheWriter(
                cache_dir,
                catalog,
                run_id=run_id,
                writer_tag="k0of1",
                root_attrs={"command": command},
                view_attrs={view: identity},
                dtypes={view: dtype},
            )
            catalog.start_run(run_id, command=command, config_json="{}")
            count = 0
            batch: list = []
            batch_bytes = 0
            try:
                for video_id, features, timestamps_s, *info in rows:
                    times = np.asarray(timestamps_s)
                    features = np.asarray(features)
                    starts, ends = (times, None) if times.ndim == 1 else (times[:, 0], times[:, 1])
                    info_json = json.dumps(info[0], sort_keys=True) if info else "{}"
                    batch.append((video_id, features, starts, ends, info_json))
                    batch_bytes += features.nbytes
                    count += 1
                    if batch_bytes >= _BATCH_BYTES or len(batch) >= _BATCH_VIDEOS:
                        writer.add_many(view, batch)  # one HDF5 write per batch: import at >5,000 videos/s
                        writer.maybe_commit()
                        batch, batch_bytes = [], 0
                writer.add_many(view, batch)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            for video_id, reason in (failures or {}).items():
                item = catalog.item(video_id, view)
                if item is None or item.status != STATUS_DONE:
                    writer.record_failure(video_id, [view], reason, source=None)
            summary = {"videos": count, "view": view, **({"failed": len(failures)} if failures else {})}
            catalog.finish_run(run_id, summary)
        finally:
            catalog.close()
    return count
