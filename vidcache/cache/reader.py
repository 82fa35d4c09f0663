"""`vidcache.Cache`: the read API every later stage uses (index, heads, users' own code).

Reads need only h5py, NumPy and SQLite. Shard files are opened lazily and reopened after a fork, so
a `CacheDataset` works inside PyTorch DataLoader workers.

Errors: a (video, view) the catalog does not list as done raises `KeyError`. A damaged cache raises
`CacheError` naming the damaged file (shard or catalog) and pointing to `vidcache verify`; h5py's and
SQLite's own exception types (which vary with the damage) never reach the caller. Reads do not check
the per-video CRC32 (+28-89 % on a warm page cache, see `ShardFiles.read_rows`): silent damage to row
bytes is what `vidcache verify` finds.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import CacheError
from .catalog import Catalog
from .layout import CATALOG_NAME, STATUS_ABSENT, STATUS_DONE, STATUS_FAILED, TEXT_NAME, shard_dir

RowsInto = Callable[[tuple[int, ...], np.dtype], np.ndarray]  # (shape, dtype) -> an array to read rows into

_MAX_OPEN_SHARDS = 64
_MERGE_GAP_ROWS = 4096  # read two videos' rows in one call when fewer rows than this lie between
_MERGE_MAX_ROWS = 65_536  # ... and the merged read spans at most this many rows (64 MiB of 512-d float16)


@dataclass(frozen=True)
class _Location:
    video_id: str
    shard: str
    row_start: int
    row_count: int


@dataclass(frozen=True)
class Batch:
    video_ids: list[str]
    features: list[np.ndarray]
    timestamps_s: list[np.ndarray]


@dataclass(frozen=True)
class TextEmbeddings:
    labels: list[str]
    templates: list[str]
    per_template: np.ndarray  # [L, P, D] raw text embeddings, one per prompt template
    embeddings: np.ndarray  # [L, D] mean of L2-normalised per-template embeddings, re-normalised
    attrs: dict


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class ShardFiles:
    """LRU of open shard files, safe across fork (reopened in a child process)."""

    def __init__(self, directory: Path, max_open: int = _MAX_OPEN_SHARDS, *, chunk_cache_bytes: int | None = None):
        self.directory = directory
        self.max_open = max_open
        # HDF5's chunk cache per dataset (None: its default, 1 MiB); 0 for callers that read whole
        # chunks in order (compact), where the cache only adds a copy of every chunk
        self.chunk_cache_bytes = chunk_cache_bytes
        self._files: OrderedDict[str, h5py.File] = OrderedDict()
        self._pid = os.getpid()
        self._decoders_checked: set[tuple[str, str, _RowDecoder]] = set()

    def get(self, shard: str) -> h5py.File:
        if self._pid != os.getpid():  # forked: the parent's handles must not be used here
            self._files = OrderedDict()
            self._pid = os.getpid()
        handle = self._files.get(shard)
        if handle is None:
            path = self.directory / f"{shard}.h5"
            try:
                handle = h5py.File(path, "r", rdcc_nbytes=self.chunk_cache_bytes)
            except Exception as exc:  # h5py maps HDF5's errors on a damaged file to many types
                raise CacheError(f"shard {path} cannot be opened ({_first_line(exc)}); run `vidcache verify`") from None
            self._files[shard] = handle
            while len(self._files) > self.max_open:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(shard)
        return handle

    def _damaged(self, shard: str, view: str, start: int, stop: int, problem: str) -> CacheError:
        return CacheError(
            f"shard {self.directory / shard}.h5 view {view} rows {start}:{stop} cannot be read ({problem}); "
            "run `vidcache verify`"
        )

    def read_rows(
        self, shard: str, view: str, start: int, stop: int, *, into: RowsInto | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(features, timestamps) of rows start:stop; with `into`, the features are read into the array it
        gives for their shape and dtype (memory used again: compact)."""
        # No CRC32 check here: measured on a warm 100 MB shard (float16 [100x1000, 512]) it adds 28 %
        # to per-video `read`, 51 % to `iter_batches` and 89 % to `read_many` (zlib.crc32 runs at
        # ~2.5 GB/s, about the speed of these reads), so `vidcache verify` is the check for row bytes.
        # The cheap checks stay: every HDF5 error becomes a CacheError naming the shard (a damaged
        # object header raised KeyError from `handle[view]`), and a short read is an error, not a
        # silently truncated array (h5py clips a slice past the end, as NumPy does).
        handle = self.get(shard)
        try:
            group = handle[view]
            features, stamps = group["features"], group["timestamps_s"][start:stop]
            if into is None:
                feats = features[start:stop]
            else:
                available = max(0, min(stop, features.shape[0]) - start)
                feats = into((available, *features.shape[1:]), features.dtype)
                if available:
                    features.read_direct(feats, np.s_[start : start + available])
        except Exception as exc:
            raise self._damaged(shard, view, start, stop, _first_line(exc)) from None
        if len(feats) != stop - start or len(stamps) != stop - start:
            raise self._damaged(shard, view, start, stop, f"it holds {len(feats)} rows, {len(stamps)} times")
        return feats, stamps

    def read_end_times(self, shard: str, view: str, start: int, stop: int) -> np.ndarray | None:
        handle = self.get(shard)
        try:
            group = handle[view]
            ends = group["end_timestamps_s"][start:stop] if "end_timestamps_s" in group else None
        except Exception as exc:
            raise self._damaged(shard, view, start, stop, _first_line(exc)) from None
        if ends is not None and len(ends) != stop - start:
            raise self._damaged(shard, view, start, stop, f"it holds {len(ends)} end times")
        return ends

    def check_decoder(self, shard: str, view: str, decode: _RowDecoder) -> None:
        """Refuse to decode rows (flow: uint8 codes to pixels) with a `bound_px`/`row_shape` that differ
        from the shard's own copy of the view identity (its group attributes, which HDF5 checksums).
        The catalog's copy is the one used, and SQLite has no checksums: one damaged byte there
        (20.0 -> 28.0) silently rescaled every decoded value, and `vidcache verify` checks raw rows only."""
        if decode.raw:
            return
        # a decoder with neither is checked too: a catalog that lost the view's identity (a damaged
        # page) would otherwise hand back flow's uint8 codes as if they were the decoded values
        if (shard, view, decode) in self._decoders_checked:
            return
        handle = self.get(shard)
        try:
            attrs = handle[view].attrs
            bound, shape = attrs.get("bound_px"), attrs.get("row_shape")
            # shards written before these attributes existed carry none: nothing to compare with
            bound_ok = bound is None or (float(bound) if bound != "" else None) == decode.bound_px
            shape_ok = shape is None or (tuple(json.loads(shape)) if shape != "" else None) == decode.row_shape
        except Exception as exc:
            raise CacheError(
                f"shard {self.directory / shard}.h5 view {view} cannot be read ({_first_line(exc)}); "
                "run `vidcache verify`"
            ) from None
        if not (bound_ok and shape_ok):
            raise CacheError(
                f"view {view}: the catalog says bound_px={decode.bound_px}, row_shape={decode.row_shape} but shard "
                f"{self.directory / shard}.h5 says {bound}, {shape}: one of them is damaged (most likely the "
                "catalog: SQLite keeps no checksums); run `vidcache verify`"
            )
        self._decoders_checked.add((shard, view, decode))

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __getstate__(self) -> dict:
        return {"directory": self.directory, "max_open": self.max_open, "chunk_cache_bytes": self.chunk_cache_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"], state["max_open"], chunk_cache_bytes=state.get("chunk_cache_bytes"))


@dataclass(frozen=True)
class _RowDecoder:
    """Turns stored rows into values in their units: flow fields back to pixels in their
    [2, H, W] shape (`raw=True` keeps the stored uint8 rows); other views as stored or as `dtype`."""

    row_shape: tuple[int, ...] | None = None
    bound_px: float | None = None
    raw: bool = False

    @classmethod
    def for_view(cls, identity: dict, *, raw: bool = False) -> _RowDecoder:
        shape = identity.get("row_shape")
        return cls(tuple(shape) if shape else None, identity.get("bound_px"), raw)

    def __call__(self, rows: np.ndarray, dtype) -> np.ndarray:
        if self.raw:
            return rows
        if self.bound_px is not None:
            rows = (rows.astype(np.float32) - 128.0) * np.float32(self.bound_px / 127.0)
        if dtype is not None:
            rows = rows.astype(dtype, copy=False)
        if self.row_shape is not None:
            rows = rows.reshape(len(rows), *self.row_shape)
        return rows


_AS_STORED = _RowDecoder(raw=False)


def _read_locations(
    files: ShardFiles, view: str, locations: Sequence[_Location], dtype, decode: _RowDecoder = _AS_STORED
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read many videos' rows, merging neighbouring row ranges of a shard into single reads."""
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(locations)
    order = sorted(range(len(locations)), key=lambda i: (locations[i].shard, locations[i].row_start))
    run: list[int] = []

    def flush() -> None:
        if not run:
            return
        first, last = locations[run[0]], locations[run[-1]]
        base = first.row_start
        feats, stamps = files.read_rows(first.shard, view, base, last.row_start + last.row_count)
        files.check_decoder(first.shard, view, decode)
        # rows between the asked videos were read too: copy each video's rows out, or the views would
        # keep every merged span alive (a 1-in-12 sample of a 1M cache held 8.6 GB of unasked rows)
        gaps = sum(locations[i].row_count for i in run) < len(feats)
        for i in run:
            loc = locations[i]
            lo, hi = loc.row_start - base, loc.row_start - base + loc.row_count
            rows, times = (feats[lo:hi].copy(), stamps[lo:hi].copy()) if gaps else (feats[lo:hi], stamps[lo:hi])
            out[i] = (decode(rows, dtype), times)
        run.clear()

    for i in order:
        if run:
            prev = locations[run[-1]]
            gap = locations[i].row_start - (prev.row_start + prev.row_count)
            span = locations[i].row_start + locations[i].row_count - locations[run[0]].row_start
            if locations[i].shard != prev.shard or gap > _MERGE_GAP_ROWS or gap < 0 or span > _MERGE_MAX_ROWS:
                flush()
        run.append(i)
    flush()
    return out  # type: ignore[return-value]


class CacheDataset:
    """Map-style dataset over one view: item i is (features [T, D], timestamps_s [T], video_id).

    Locations are snapshotted at creation, so it pickles into DataLoader workers without a
    database connection; each worker opens shard files on first use.
    """

    def __init__(
        self, cache_dir: Path, view: str, locations: list[_Location], dtype=np.float32, decode: _RowDecoder = _AS_STORED
    ):
        self.view = view
        self.locations = locations
        self.dtype = dtype
        self.decode = decode
        self._files = ShardFiles(shard_dir(cache_dir))

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        loc = self.locations[index]
        ((feats, stamps),) = _read_locations(self._files, self.view, [loc], self.dtype, self.decode)
        return feats, stamps, loc.video_id

    @property
    def video_ids(self) -> list[str]:
        return [loc.video_id for loc in self.locations]


class _ReadCatalog:
    """The catalog as the reader sees it: a damaged catalog file raises `CacheError` naming it, not
    sqlite3.DatabaseError ("database disk image is malformed", raised by any query, not only at
    open), json.JSONDecodeError, or a TypeError later on from a value of the wrong type (SQLite
    returns whatever type a damaged record says, e.g. bytes for a video id)."""

    def __init__(self, catalog: Catalog):
        self._catalog = catalog
        self.path = catalog.path

    def _call(self, name: str, *args, **kwargs):
        try:
            return getattr(self._catalog, name)(*args, **kwargs)
        except CacheError:
            raise
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise _damaged_catalog(self.path, exc) from None

    def _checked(self, item):
        if item is not None and not all(isinstance(x, str) for x in (item.video_id, item.view, item.status)):
            raise _damaged_catalog(self.path, f"an item reads {item.video_id!r} [{item.view!r}] {item.status!r}")
        return item

    def items(self, *args, **kwargs):
        return [self._checked(item) for item in self._call("items", *args, **kwargs)]

    def items_of(self, *args, **kwargs):
        return [self._checked(item) for item in self._call("items_of", *args, **kwargs)]

    def item(self, *args, **kwargs):
        return self._checked(self._call("item", *args, **kwargs))

    def views(self) -> dict[str, dict]:
        views = self._call("views")
        if not all(isinstance(view, str) for view in views):
            raise _damaged_catalog(self.path, f"views {sorted(map(repr, views))}")
        return views

    def __getattr__(self, name: str):  # every other Catalog method, checked the same way
        if not callable(getattr(self._catalog, name)):
            return getattr(self._catalog, name)
        return lambda *args, **kwargs: self._call(name, *args, **kwargs)


def _damaged_catalog(path: Path, exc: BaseException | str) -> CacheError:
    problem = exc if isinstance(exc, str) else _first_line(exc)
    return CacheError(
        f"catalog {path} is damaged ({problem}); run `vidcache verify`, or move it away and run extract "
        "again: complete shards are adopted back"
    )


def _checked_location(catalog_path: Path, item, video_id: str, view: str) -> _Location:
    """A `done` item's location, refusing a record a damaged catalog garbled: a wrong row (a damaged
    index b-tree can return another video's row for a lookup), or a wrong type where a number is."""
    if item.video_id != video_id or item.view != view:
        raise _damaged_catalog(catalog_path, f"looking up {video_id!r} [{view}] found {item.video_id!r} [{item.view}]")
    numbers_ok = all(
        isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (item.row_start, item.row_count)
    )
    if not numbers_ok or not isinstance(item.shard, str) or not item.shard:
        raise _damaged_catalog(
            catalog_path, f"{video_id!r} [{view}]: shard {item.shard!r} rows {item.row_start!r}+{item.row_count!r}"
        )
    return _Location(video_id, item.shard, item.row_start, item.row_count)


BY_KEY_MAX = 20_000  # read_many of at most this many videos looks them up by key (else one scan of the view)


class Cache:
    """Read access to a vidcache directory.

    >>> cache = Cache("features/")
    >>> features, timestamps_s = cache.read(cache.video_ids()[0], "clip")
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            catalog = Catalog.open(self.path)
        except (ValueError, TypeError) as exc:  # e.g. a damaged schema_version value
            raise _damaged_catalog(self.path / CATALOG_NAME, exc) from None
        self._catalog = _ReadCatalog(catalog)
        self._files = ShardFiles(shard_dir(self.path))

    # catalog views -------------------------------------------------------------------------------
    def views(self) -> list[str]:
        """The cache's views (extracted, imported or written by a head), sorted."""
        return sorted(self._catalog.views())

    def view_info(self, view: str) -> dict:
        """The recorded identity of a view: model, weights sha256, preprocessing, sampling, dtype."""
        info = self._catalog.view_identity(view)
        if info is None:
            raise KeyError(f"view {view!r} is not in cache {self.path}; views: {', '.join(self.views()) or 'none'}")
        return info

    def video_ids(self, view: str | None = None) -> list[str]:
        """Ids of videos extracted successfully: for `view`, or with no failed view (a view that is
        absent, e.g. audio of a silent video, does not exclude a video)."""
        if view is not None:
            ids = self._catalog.done_ids(view)  # SQL on the items_by_view index: no Item per video
            if not all(isinstance(video_id, str) for video_id in ids):  # SQLite keeps no checksums
                raise _damaged_catalog(self._catalog.path, f"view {view} lists a video id that is not text")
            return ids
        ids: set[str] = set()
        bad: set[str] = set()
        for item in self._catalog.items():
            if item.status == STATUS_DONE:
                ids.add(item.video_id)
            elif item.status == STATUS_FAILED:
                bad.add(item.video_id)
        return sorted(ids - bad)

    def row_checksums(self, view: str) -> dict[str, tuple[int, int]]:
        """{video_id: (row count, CRC32 of its stored rows)} of the videos extracted for `view`: the
        CRC changes whenever the rows do (what `vidcache export` keys its resumable files on)."""
        return {
            item.video_id: (int(item.row_count or 0), int(item.checksum or 0))
            for item in self._catalog.items(view, status=STATUS_DONE)
        }

    def status(self, video_id: str) -> dict[str, str]:
        """Per view: "done", "absent" (no stream for it) or "failed" for one video."""
        return {item.view: item.status for item in self._catalog.items() if item.video_id == video_id}

    def failed(self, view: str | None = None) -> dict[str, str]:
        """{video_id: reason} of the videos whose `view` (any view when None) failed."""
        return {item.video_id: item.reason or "" for item in self._catalog.items(view, status=STATUS_FAILED)}

    def absent(self, view: str | None = None) -> dict[str, str]:
        """Videos with no stream for `view` (e.g. no audio track), with the reason."""
        return {item.video_id: item.reason or "" for item in self._catalog.items(view, status=STATUS_ABSENT)}

    def _decoder(self, view: str, raw: bool = False) -> _RowDecoder:
        identity = self._catalog.view_identity(view)
        try:
            decode = _RowDecoder.for_view(identity or {}, raw=raw)
            hash(decode)  # row_shape must be a tuple of numbers
            return decode
        except (AttributeError, TypeError, ValueError) as exc:  # a damaged identity_json
            raise _damaged_catalog(self._catalog.path, f"view {view} identity {identity!r}: {exc}") from None

    def entries(self):
        """Manifest metadata (video_id, path, labels, split, start_s, end_s) as a pandas DataFrame."""
        import pandas as pd

        columns = self._catalog.entry_columns()
        columns["labels"] = [list(labels) for labels in columns["labels"]]  # a list per row, as before
        return pd.DataFrame(columns, columns=["video_id", "path", "labels", "split", "start_s", "end_s"])

    def labels_of(self, video_ids: Iterable[str]) -> dict[str, list[str]]:
        """{video_id: labels} of these videos, read by key (a search's hits, not the whole manifest)."""
        return {video_id: list(labels) for video_id, labels in self._catalog.labels_of(video_ids).items()}

    def entry_columns(self) -> dict[str, list]:
        """The manifest metadata as plain columns (video_id, path, labels as tuples, split, start_s,
        end_s): what a million-video `train` reads without a DataFrame of lists."""
        return self._catalog.entry_columns()

    def video_info(self, video_id: str, view: str = "clip") -> dict:
        """Per-video facts recorded at extraction (duration, stream start, fps, size, rotation...)."""
        item = self._catalog.item(video_id, view)
        if item is None:
            raise KeyError(f"{video_id!r} has no {view!r} record in {self.path}")
        try:
            info = json.loads(item.info_json or "{}")
            return {"status": item.status, "reason": item.reason, **info}
        except (ValueError, TypeError) as exc:  # a damaged record
            raise _damaged_catalog(self._catalog.path, f"info_json of {video_id!r} [{view}]: {exc}") from None

    def _locations(self, view: str, video_ids: Iterable[str] | None = None) -> list[_Location]:
        asked = None if video_ids is None else list(video_ids)
        if asked is not None and len(asked) <= BY_KEY_MAX:  # a few videos: by key, not the view's every item
            items = self._catalog.items_of(view, list(dict.fromkeys(asked)), status=STATUS_DONE)
        else:
            items = self._catalog.items(view, status=STATUS_DONE)
        done = {i.video_id: i for i in items}
        video_ids = asked
        if video_ids is None:
            every = [_checked_location(self._catalog.path, i, i.video_id, view) for i in done.values()]
            return sorted(every, key=lambda loc: (loc.shard, loc.row_start))
        chosen = []
        for video_id in video_ids:
            if video_id not in done:
                raise KeyError(f"{video_id!r} has no extracted {view!r} rows in {self.path}")
            chosen.append(_checked_location(self._catalog.path, done[video_id], video_id, view))
        return chosen

    # reads ---------------------------------------------------------------------------------------
    def _location(self, video_id: str, view: str) -> _Location:
        item = self._catalog.item(video_id, view)
        if item is None or item.status != STATUS_DONE:
            state = "not in the cache" if item is None else f"{item.status}: {item.reason}"
            raise KeyError(f"{video_id!r} view {view!r} is {state}")
        return _checked_location(self._catalog.path, item, video_id, view)

    def read(
        self, video_id: str, view: str = "clip", *, dtype=None, raw: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, timestamps_s [T] float64). Rows are features [T, D] as stored unless `dtype` is
        given; flow rows are fields [T, 2, H, W] in pixels (`raw=True`: the stored uint8 rows).
        A row's timestamp is when its span starts (the frame shown, a window's or example's start)."""
        loc = self._location(video_id, view)
        return _read_locations(self._files, view, [loc], dtype, self._decoder(view, raw))[0]

    def spans(self, video_id: str, view: str) -> np.ndarray:
        """[T, 2] start and end seconds of each row (S3D windows, flow pairs, audio examples); for
        single-frame rows (clip) both columns are the frame's time."""
        loc = self._location(video_id, view)
        _, starts = self._files.read_rows(loc.shard, view, loc.row_start, loc.row_start + loc.row_count)
        ends = self._files.read_end_times(loc.shard, view, loc.row_start, loc.row_start + loc.row_count)
        return np.stack([starts, starts if ends is None else ends], axis=1)

    def read_shots(self, video_id: str, view: str | None = None, *, pooling: str = "mean", shots_view: str = "shots"):
        """The shots of `video_id` (`vidcache.cache.shots.Shots`): spans and the shots view's columns;
        with `view` (a frame-level view: clip, timm, audio, motion) each shot's rows of that view pooled
        (`pooling`: mean or max) over the rows whose timestamps fall in the shot."""
        from .shots import Shots, pool_rows

        rows, _ = self.read(video_id, shots_view, dtype=np.float64)
        spans = self.spans(video_id, shots_view)
        names = self.view_info(shots_view).get("columns") or [f"c{i}" for i in range(rows.shape[1])]
        shots = Shots(video_id, spans[:, 0], spans[:, 1], {n: rows[:, i] for i, n in enumerate(names)}, view=view)
        if view is not None:
            features, times = self.read(video_id, view, dtype=np.float32)
            shots.embeddings, shots.rows_per_shot = pool_rows(
                shots.start_s,
                shots.end_s,
                features,
                times,
                pooling=pooling,  # type: ignore[arg-type]
            )
        return shots

    def read_many(
        self, video_ids: Sequence[str], view: str = "clip", *, dtype=None, raw: bool = False
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Like `read` for many ids (same order), with neighbouring rows read in one call."""
        return _read_locations(self._files, view, self._locations(view, video_ids), dtype, self._decoder(view, raw))

    def _read_located(
        self, view: str, locations: Sequence[_Location], *, dtype=None, decode: _RowDecoder | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`read_many` for locations fetched earlier with `_locations()`: no catalog query, so it may
        run in a background (prefetch) thread while the catalog is used elsewhere."""
        return _read_locations(self._files, view, locations, dtype, decode or _AS_STORED)

    def iter_batches(
        self,
        view: str = "clip",
        *,
        batch_size: int = 256,
        video_ids: Iterable[str] | None = None,
        dtype=None,
        raw: bool = False,
    ) -> Iterator[Batch]:
        """Videos in storage order (or the given order), `batch_size` videos at a time."""
        locations = self._locations(view, video_ids)
        decode = self._decoder(view, raw)
        for start in range(0, len(locations), batch_size):
            chunk = locations[start : start + batch_size]
            rows = _read_locations(self._files, view, chunk, dtype, decode)
            yield Batch([c.video_id for c in chunk], [r[0] for r in rows], [r[1] for r in rows])

    def dataset(
        self, view: str = "clip", *, video_ids: Iterable[str] | None = None, dtype=np.float32, raw: bool = False
    ) -> CacheDataset:
        """A map-style torch Dataset of (video_id, rows, timestamps_s) for a DataLoader (worker-safe)."""
        return CacheDataset(self.path, view, self._locations(view, video_ids), dtype, self._decoder(view, raw))

    def text_embeddings(self) -> TextEmbeddings:
        """The label vocabulary's text embeddings (text.h5): labels, templates, per-template and ensembled."""
        path = self.path / TEXT_NAME
        if not path.exists():
            raise KeyError(f"no text embeddings in {self.path}; run `vidcache embed-text --cache {self.path}`")
        try:
            with h5py.File(path, "r") as h5:
                decode = lambda values: [v.decode() if isinstance(v, bytes) else v for v in values]  # noqa: E731
                return TextEmbeddings(
                    decode(h5["labels"][()]),
                    decode(h5["templates"][()]),
                    h5["per_template"][()],
                    h5["embeddings"][()],
                    dict(h5.attrs),
                )
        except Exception as exc:  # h5py's many error types for a damaged file, as for shards
            raise CacheError(
                f"{path} cannot be read ({_first_line(exc)}); run `vidcache embed-text --cache {self.path}` again"
            ) from None

    def close(self) -> None:
        """Close the shard files and the catalog (also on leaving a `with` block)."""
        self._files.close()
        self._catalog.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, views={self.views()})"
