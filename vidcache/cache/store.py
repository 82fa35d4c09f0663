"""The write side of a cache: shard rotation, catalog records, crash recovery.

Order of operations is what makes `kill -9` safe: rows go into a `.partial` shard; the shard is
fsynced and renamed; only then does one catalog transaction mark its videos done. On start, complete
shards the catalog does not know yet (a crash between rename and record) are adopted, and this
writer's own stale `.partial` files are removed.

A full disk must never reach HDF5: after a write fails inside HDF5 (h5py 3.16 / HDF5 2.0), closing
that file crashes the process (SIGSEGV), at once or at exit. So rows are only written while the
file system has room for them plus a reserve, and a shard that will not be committed is deleted
without another write to the disk (`_discard`).
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FAULT_ENV, as_os_error, cache_write_error, fault_point
from ..remote import is_url, url_identity
from .catalog import Catalog, Item, now_iso
from .layout import PARTIAL_SUFFIX, SHARD_SUFFIX, STATUS_ABSENT, STATUS_DONE, STATUS_FAILED, shard_dir
from .shard import ShardWriter, read_shard_index

log = logging.getLogger("vidcache.cache")

# free space kept back: new 1 MiB chunks of every view, HDF5 metadata, the commit's index, SQLite's journal
SPACE_RESERVE_BYTES = 16 << 20
COMMIT_RESERVE_BYTES = 4 << 20


def _ensure_space(directory: Path, nbytes: int, reserve: int) -> None:
    """Raise ENOSPC before HDF5 would hit it (see the module docstring)."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return
    if st.f_blocks and st.f_bavail * st.f_frsize < nbytes + reserve:  # f_blocks 0: the mount reports no size
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))


def check_cache_writable(cache_dir: Path) -> None:
    """Fail in a second, before models load or rows are computed, when the cache directory cannot be
    written (chmod -w, another user's cache, a read-only mount): SQLite's journal and the shards are
    created in it. Raises the one-line `CacheError`."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fault_point("cache-write", cache_dir)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=cache_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise cache_write_error(cache_dir, exc) from None


@dataclass(frozen=True)
class SourceStat:
    """Size and mtime of a source video, to notice when it changed since extraction."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str) -> SourceStat | None:
        """The local file's (size, mtime); for a URL, the object's size and a number from its ETag (or
        last-modified time): the server's word for "unchanged". None when it cannot be stat'ed now."""
        if is_url(path):
            found = url_identity(path)
            return cls(*found) if found is not None else None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_size, st.st_mtime_ns)


def _known(value: int) -> int | None:
    """Shards store -1 for "unknown source size/mtime"; the catalog stores NULL."""
    return None if value is None or value < 0 else int(value)


def done_items(shard: str, rows) -> list[Item]:
    return [
        Item(
            r.video_id,
            r.view,
            STATUS_DONE,
            shard,
            r.row_start,
            r.row_count,
            r.checksum,
            None,
            _known(r.source_size),
            _known(r.source_mtime_ns),
            r.info_json,
            now_iso(),
        )
        for r in rows
    ]


class CacheWriter:
    def __init__(
        self,
        cache_dir: str | Path,
        catalog: Catalog,
        *,
        run_id: str,
        writer_tag: str,
        root_attrs: dict[str, Any],
        exclusive: bool = True,
        view_attrs: dict[str, dict[str, Any]],
        dtypes: dict[str, str],
        compressed: set[str] | frozenset[str] = frozenset(),
        shard_size_mb: float = 256.0,
        commit_every_s: float = 60.0,
        moves: bool = False,
    ):
        self.cache_dir = Path(cache_dir)
        # compact: every video added is a done item whose rows are copied unchanged; a commit moves each
        # item to its new place (`Catalog.move_items`) instead of writing the whole item again
        self.moves = moves
        self.exclusive = exclusive  # True when no other writer can be running (unsharded extract)
        self.directory = shard_dir(cache_dir)
        self.catalog = catalog
        self.run_id = run_id
        self.writer_tag = writer_tag
        self._root_attrs = {**root_attrs, "run_id": run_id}
        self._view_attrs = view_attrs
        self._dtypes = dtypes
        self._compressed = compressed
        self.shard_size_bytes = int(shard_size_mb * (1 << 20))
        self.commit_every_s = commit_every_s
        self._writer: ShardWriter | None = None
        self._sequence = 0
        self.write_seconds = 0.0
        self.directory.mkdir(parents=True, exist_ok=True)

    def spec(self) -> dict[str, Any]:
        """The keyword arguments that make another writer of the same shards (attributes, dtypes, size,
        writer tag) over another catalog: a Ray worker's, whose records the driver replays."""
        return {
            "run_id": self.run_id,
            "writer_tag": self.writer_tag,
            "root_attrs": {k: v for k, v in self._root_attrs.items() if k != "run_id"},
            "exclusive": self.exclusive,
            "view_attrs": self._view_attrs,
            "dtypes": self._dtypes,
            "compressed": set(self._compressed),
            "shard_size_mb": self.shard_size_bytes / (1 << 20),
            "commit_every_s": self.commit_every_s,
            "moves": self.moves,
        }

    # recovery ------------------------------------------------------------------------------------
    def remove_own_partials(self) -> int:
        """Partial shards of this writer tag are leftovers of a killed run (we hold its lock)."""
        removed = 0
        for path in self.directory.glob(f"*-{self.writer_tag}-*{SHARD_SUFFIX}{PARTIAL_SUFFIX}"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def adopt_orphans(self) -> int:
        """Record complete shards that a crash left unrecorded; skip unreadable ones (verify handles them)."""
        known = self.catalog.shard_names()
        adopted = 0
        for path in sorted(self.directory.glob(f"*{SHARD_SUFFIX}")):
            name = path.name[: -len(SHARD_SUFFIX)]
            if name in known:
                continue
            if not self.exclusive and f"-{self.writer_tag}-" not in name:
                continue  # another live shard process may be about to record it
            try:
                index = read_shard_index(path)
            except Exception as exc:
                log.warning("shard %s is unreadable (%s); left in place; move it away to redo its videos", path, exc)
                continue
            items = done_items(name, [r for rows in index.values() for r in rows])
            n_rows = sum(r.row_count for rows in index.values() for r in rows)
            self.catalog.record_shard(
                name=name,
                n_rows=n_rows,
                n_videos=len({i.video_id for i in items}),
                size_bytes=path.stat().st_size,
                run_id=None,
                items=items,
            )
            adopted += 1
        return adopted

    # writing -------------------------------------------------------------------------------------
    def _new_writer(self) -> ShardWriter:
        self._sequence += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"{stamp}-{self.writer_tag}-{os.getpid()}-{secrets.token_hex(3)}-{self._sequence:04d}"
        return ShardWriter(
            self.directory,
            name,
            root_attrs=self._root_attrs,
            view_attrs=self._view_attrs,
            dtype=self._dtypes,
            compressed=self._compressed,
        )

    def add(
        self,
        video_id: str,
        views: dict[str, tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray | None]],
        *,
        source: SourceStat | None,
        info_json: str = "{}",
        absent: dict[str, str] | None = None,
    ) -> None:
        """Add the views of one finished video to the open shard (committed together): each as
        (features, timestamps_s) or (features, timestamps_s, end_timestamps_s). Views in `absent`
        (the video has no stream for them) are recorded as such at once: they have no rows."""
        started = time.perf_counter()
        if views:
            needed = sum(np.asarray(c).nbytes for cols in views.values() for c in cols if c is not None)
            _ensure_space(self.directory, needed, SPACE_RESERVE_BYTES)  # the open shard stays intact
            fault_point("shard-add", self._writer.partial_path if self._writer else self.directory)
        if views and self._writer is None:
            self._writer = self._new_writer()
        try:
            for view, columns in views.items():
                features, timestamps_s = columns[0], columns[1]
                self._writer.add(  # type: ignore[union-attr]
                    video_id,
                    view,
                    features,
                    timestamps_s,
                    source_size=source.size if source else -1,
                    source_mtime_ns=source.mtime_ns if source else -1,
                    info_json=info_json,
                    end_timestamps_s=columns[2] if len(columns) > 2 else None,
                )
        except Exception as exc:
            # HDF5 failed (or the rows were refused): the shard cannot be committed; its videos are redone
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.discard(hdf5_failed=True)
            raise as_os_error(exc) from None  # h5py's errno-carrying RuntimeError as the OSError it is
        if absent:
            self._record(video_id, STATUS_ABSENT, absent, source=source, info_json=info_json)
        self.write_seconds += time.perf_counter() - started

    def add_many(
        self,
        view: str,
        videos: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None, str]],
    ) -> None:
        """Add many finished videos of one view (video_id, features, timestamps_s, end_timestamps_s or
        None, info_json) to the open shard in one write (`vidcache import`, arrays): as `add` for each,
        without source files."""
        if not videos:
            return
        has_ends = [v[3] is not None for v in videos]
        if any(has_ends) and not all(has_ends):
            self.abort()  # as `add`: refused rows leave no shard to commit; its videos are redone
            raise ValueError(f"view {view}: every video must give end timestamps, or none")
        self.add_rows(
            view,
            [v[0] for v in videos],
            np.concatenate([v[1] for v in videos]),
            np.array([len(v[1]) for v in videos]),
            np.concatenate([np.asarray(v[2], np.float64) for v in videos]),
            np.concatenate([v[3] for v in videos]) if all(has_ends) else None,  # type: ignore[misc]
            info_json=[v[4] for v in videos],
        )

    def add_rows(
        self,
        view: str,
        video_ids: list[str],
        features: np.ndarray,
        counts: np.ndarray,
        timestamps_s: np.ndarray,
        end_timestamps_s: np.ndarray | None,
        *,
        info_json: list[str],
        sources: list[SourceStat | None] | None = None,
    ) -> None:
        """`add_many` with the videos' rows already one after the other (`counts` rows each; compact
        hands over slices of what it read): one HDF5 write per dataset. `sources`: each video's source
        file stat (none: no source files)."""
        started = time.perf_counter()
        _ensure_space(self.directory, features.nbytes, SPACE_RESERVE_BYTES)
        if os.environ.get(FAULT_ENV):  # the test hook counts videos, as with `add` (only when set: 1M lookups)
            for _ in video_ids:
                fault_point("shard-add", self._writer.partial_path if self._writer else self.directory)
        if self._writer is None:
            self._writer = self._new_writer()
        try:
            self._writer.add_many(
                view,
                video_ids,
                features,
                counts,
                timestamps_s,
                info_json=info_json,
                end_timestamps_s=end_timestamps_s,
                sources=None if sources is None else [(s.size, s.mtime_ns) if s else (-1, -1) for s in sources],
            )
        except Exception as exc:  # as in `add`: this shard cannot be committed; its videos are redone
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.discard(hdf5_failed=True)
            raise as_os_error(exc) from None
        self.write_seconds += time.perf_counter() - started

    def record_failure(
        self,
        video_id: str,
        views: list[str],
        reason: str | dict[str, str],
        *,
        source: SourceStat | None,
        info_json: str = "{}",
    ) -> None:
        reasons = reason if isinstance(reason, dict) else dict.fromkeys(views, reason)
        self._record(video_id, STATUS_FAILED, {v: reasons[v] for v in views}, source=source, info_json=info_json)

    def _record(
        self, video_id: str, status: str, reasons: dict[str, str], *, source: SourceStat | None, info_json: str
    ) -> None:
        items = [
            Item(
                video_id,
                view,
                status,
                None,
                None,
                None,
                None,
                reason,
                source.size if source else None,
                source.mtime_ns if source else None,
                info_json,
                now_iso(),
            )
            for view, reason in reasons.items()
        ]
        self.catalog.record_items(items)

    def maybe_commit(self) -> bool:
        writer = self._writer
        if writer is None or not writer.rows:
            return False
        if writer.nbytes >= self.shard_size_bytes or writer.age_s >= self.commit_every_s:
            self.commit()
            return True
        return False

    def commit(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if not writer.rows:
            writer.abort()
            return
        started = time.perf_counter()
        try:
            _ensure_space(self.directory, 0, COMMIT_RESERVE_BYTES)
            fault_point("shard-commit", writer.partial_path)
        except BaseException:
            writer.discard(hdf5_failed=False)  # the catalog never hears of it
            raise
        try:
            path = writer.commit()
        except BaseException as exc:
            writer.discard(hdf5_failed=True)
            raise as_os_error(exc) from None  # h5py's errno-carrying RuntimeError as the OSError it is
        fault_point("shard-renamed", path)
        record = {
            "name": writer.name,
            "n_rows": sum(r.row_count for r in writer.rows),
            "n_videos": len({r.video_id for r in writer.rows}),
            "size_bytes": path.stat().st_size,
            "run_id": self.run_id,
        }
        if self.moves:
            places = [(r.video_id, r.view, r.row_start, r.row_count, r.checksum) for r in writer.rows]
            self.catalog.move_items(**record, places=places)
        else:
            self.catalog.record_shard(**record, items=done_items(writer.name, writer.rows))
        self.write_seconds += time.perf_counter() - started

    def abort(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.discard(hdf5_failed=False)
