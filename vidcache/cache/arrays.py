"""Write per-video arrays of one view into a cache (through the same writer, catalog and lock as
extract): used by `vidcache import` of features made elsewhere, and by tests and benchmarks that
need a cache of known numbers without decoding video."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .catalog import Catalog
from .lock import ExtractLock
from .store import CacheWriter


def write_view_arrays(
    cache_dir: str | Path,
    *,
    view: str,
    rows: Iterable[tuple[str, np.ndarray, np.ndarray]],
    entries: list,
    identity: dict,
    dtype: str = "float16",
    command: str = "",
) -> int:
    """Store `(video_id, features [T, D], timestamps_s [T])` for each video; returns the count.
    `entries` (manifest `VideoEntry`s) give labels and splits; `identity` is the view's recorded
    identity and must match what the cache already holds for `view`."""
    cache_dir = Path(cache_dir)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
    with ExtractLock(cache_dir):
        catalog = Catalog.open(cache_dir, create=True)
        try:
            recorded = catalog.claim_view(view, identity)
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
            try:
                for video_id, features, timestamps_s in rows:
                    writer.add(video_id, {view: (np.asarray(features), np.asarray(timestamps_s))}, source=None)
                    writer.maybe_commit()
                    count += 1
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            catalog.finish_run(run_id, {"videos": count, "view": view})
        finally:
            catalog.close()
    return count
