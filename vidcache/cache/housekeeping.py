"""`vidcache remove` and `vidcache compact`: a cache does not only grow.

`remove` drops videos from the catalog (every view, their records and manifest entry); their rows stay
in their shards, unreachable, until `compact` rewrites the live rows of small or partly dead shards into
fewer, larger ones. Compaction is crash-safe: new shards are committed the usual way (rows into a
`.partial`, fsync, rename, one catalog transaction moving each (video, view) to its new place), every
moved row is read back and compared with the original bytes, and only then are the old shard files
deleted, each before its catalog record: a kill at any moment leaves either the old rows or the new
ones reachable, never neither, and a later `compact` finishes the cleanup. Both commands take the
extract lock: they never run beside an extract.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..errors import ConfigError
from ..gcpause import paused_gc
from .blocks import row_blocks
from .catalog import Catalog, Item
from .layout import SHARD_SUFFIX, STATUS_DONE, shard_dir
from .lock import ExtractLock
from .reader import ShardFiles
from .store import CacheWriter, SourceStat


@dataclass
class RemoveSummary:
    cache: str
    removed: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    kept: int = 0


@dataclass
class CompactSummary:
    cache: str
    shards_before: int = 0
    shards_after: int = 0
    shards_rewritten: int = 0
    rows_moved: int = 0
    videos_moved: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    seconds: float = 0.0


def remove_videos(
    cache_dir: str | Path, *, video_ids: list[str] | None = None, keep_only: list[str] | None = None
) -> RemoveSummary:
    """Drop `video_ids`, or every video not in `keep_only` (a manifest's complement), from the catalog."""
    if (video_ids is None) == (keep_only is None):
        raise ConfigError("remove: give VIDEO_ID... or --not-in MANIFEST (one of the two)")
    summary = RemoveSummary(cache=str(cache_dir))
    with ExtractLock(cache_dir):
        catalog = Catalog.open(cache_dir, create=True)
        try:
            with catalog.transaction() as db:
                summary.removed, summary.kept, not_found = catalog.drop_videos(
                    db, keep_only=keep_only, video_ids=video_ids
                )
            if video_ids is not None:  # in the order given, as before
                removed, missing = set(summary.removed), set(not_found)
                summary.removed = [v for v in dict.fromkeys(video_ids) if v in removed]
                summary.not_found = [v for v in dict.fromkeys(video_ids) if v in missing]
        finally:
            catalog.close()
    return summary


def compact_cache(cache_dir: str | Path, *, shard_size_mb: float = 256.0, command: str = "") -> CompactSummary:
    """Rewrite the live rows of every shard that is smaller than `shard_size_mb` or holds rows no
    video uses any more into new shards of about that size; verify them; delete the old ones."""
    started = time.perf_counter()
    cache_dir = Path(cache_dir)
    summary = CompactSummary(cache=str(cache_dir))
    directory = shard_dir(cache_dir)
    # the collector paused: a million items, places and batches stay alive, none in a cycle (gcpause.py)
    with ExtractLock(cache_dir), paused_gc():
        catalog = Catalog.open(cache_dir, create=True)
        files = ShardFiles(directory, chunk_cache_bytes=0)  # whole chunks in order
        try:
            known = catalog.shard_names()
            for orphan in directory.glob(f"*-compact-*{SHARD_SUFFIX}"):  # a killed compact's new shard that its
                if orphan.name[: -len(SHARD_SUFFIX)] not in known:  # transaction never recorded: the old
                    orphan.unlink()  # shards still hold those rows
            shards = {s["name"]: s for s in catalog.shards()}
            summary.shards_before = len(shards)
            summary.bytes_before = sum(s["bytes"] for s in shards.values())
            live: dict[str, list] = {name: [] for name in shards}
            for item in catalog.items(status=STATUS_DONE):
                if item.shard in live:
                    live[item.shard].append(item)
            limit = shard_size_mb * 2**20
            dead_rows = {n: shards[n]["n_rows"] - sum(i.row_count or 0 for i in live[n]) for n in shards}
            small = [n for n in shards if shards[n]["bytes"] < limit and live[n]]
            candidates = sorted(n for n in shards if not live[n] or dead_rows[n] > 0 or (len(small) > 1 and n in small))
            movers = [i for n in candidates for i in live[n]]
            if movers:
                _move(cache_dir, catalog, files, movers, shard_size_mb=shard_size_mb, command=command)
                summary.rows_moved = sum(i.row_count or 0 for i in movers)
                summary.videos_moved = len({i.video_id for i in movers})
            in_use = catalog.shards_in_use()
            for name in candidates:  # every row they held that anyone reads now lives elsewhere
                if name in in_use:
                    continue
                files._files.pop(name, None)
                (directory / f"{name}{SHARD_SUFFIX}").unlink(missing_ok=True)  # the file first (see above)
                catalog.forget_shard(name)
                summary.shards_rewritten += 1
            after = catalog.shards()
            summary.shards_after = len(after)
            summary.bytes_after = sum(s["bytes"] for s in after)
        finally:
            files.close()
            catalog.close()
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _move(
    cache_dir: Path, catalog: Catalog, files: ShardFiles, movers: list[Item], *, shard_size_mb: float, command: str
) -> None:
    """Copy the movers' rows into new shards: read in storage order (shard, view, row) in blocks of
    about 64 MiB (one HDF5 read per dataset), each block's live rows written as one `add_rows`; each
    new shard, once committed, is read back and compared with the rows it was given. The reads run
    one block ahead in a thread (`_prefetched`): h5py lets go of the GIL inside HDF5 and NumPy inside
    its loops, so the disk and the next block's gather overlap this thread's writes, sums, checksums
    and catalog updates; the order of rows, shards, commits and checks is the same as without it."""
    in_order = sorted(movers, key=lambda i: (i.shard, i.view, i.row_start))
    groups = [(key, list(items)) for key, items in itertools.groupby(in_order, key=lambda i: (i.shard, i.view))]
    datasets = {key: files.get(key[0])[key[1]]["features"] for key, _ in groups}
    writer = CacheWriter(
        cache_dir,
        catalog,
        run_id=f"compact-{time.strftime('%Y%m%dT%H%M%S')}",
        writer_tag="compact",
        root_attrs={"config_json": "{}", "command": command},
        view_attrs=catalog.views(),
        # a view keeps the dtype and compression it was written with (the view that wrote it said so: flow)
        dtypes={view: d.dtype.name for (_, view), d in datasets.items()},
        compressed={view for (_, view), d in datasets.items() if d.compression is not None},
        shard_size_mb=shard_size_mb,
        commit_every_s=float("inf"),
        moves=True,  # each commit updates the moved items' place only (store.py)
    )
    writer.remove_own_partials()
    blocks = [
        _Block(shard, view, lo, hi, [items[m] for m in members])
        for (shard, view), items in groups
        for lo, hi, members in row_blocks(
            [(i.row_start, i.row_start + i.row_count) for i in items], row_bytes=_row_bytes(datasets[(shard, view)])
        )
    ]
    given: list[_Given] = []  # what the open shard was given, compared once it is committed
    # the new shards are read back through their own handles: `files` belongs to the reading thread
    written = ShardFiles(files.directory, chunk_cache_bytes=0)
    read_back = _Buffer()  # this thread's
    spare = _Spare()  # gathered rows' arrays, used again once their shard is checked
    try:
        with _prefetched(files, blocks, spare) as batches:
            for batch in batches:
                items = batch.items
                writer.add_rows(
                    batch.view,
                    [i.video_id for i in items],
                    batch.features,
                    np.array([i.row_count for i in items]),
                    batch.times,
                    batch.ends,
                    info_json=[i.info_json or "{}" for i in items],
                    sources=[_source(i) for i in items],
                )
                given.append(batch)
                if writer.maybe_commit():
                    _checked(catalog, written, given, read_back, spare)
        writer.commit()
        _checked(catalog, written, given, read_back, spare)
    except BaseException:
        writer.abort()
        raise
    finally:
        written.close()


def _checked(catalog: Catalog, files: ShardFiles, given: list[_Given], read_back: _Buffer, spare: _Spare) -> None:
    """`_verify_moved`, then the checked batches' arrays go back to `spare` for the blocks to come."""
    arrays = [batch.memory for batch in given]
    _verify_moved(catalog, files, given, read_back)
    for array in arrays:
        if array is not None:
            spare.put(array)


def _row_bytes(features: h5py.Dataset) -> int:
    return int(np.prod(features.shape[1:])) * features.dtype.itemsize


@dataclass
class _Block:
    """One read of compact: rows lo:hi of a view of an old shard, holding these items' rows (in order)."""

    shard: str
    view: str
    lo: int
    hi: int
    items: list[Item]


@contextmanager
def _prefetched(files: ShardFiles, blocks: list[_Block], spare: _Spare, ahead: int = 1) -> Iterator[Iterator[_Given]]:
    """The blocks' live rows (`_read_block`), in order, read by one thread `ahead` blocks before the
    caller asks (memory: `ahead` more blocks than reading inline). On the way out (an error, an
    interrupt) reads not started are dropped and the one under way is waited for: no thread outlives
    compact."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidcache-compact-read")
    buffer = _Buffer()  # the one thread's, read into block after block
    pending: deque[Future[_Given]] = deque()

    def batches() -> Iterator[_Given]:
        for block in blocks:
            pending.append(pool.submit(_read_block, files, block, buffer, spare))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    try:
        yield batches()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _read_block(files: ShardFiles, block: _Block, buffer: _Buffer, spare: _Spare) -> _Given:
    """One block's rows read (one HDF5 read per dataset, the features into the reading thread's
    `buffer`) and its items' rows gathered one after the other into an array from `spare` (never a
    view of `buffer`, which the next block overwrites), dead rows left out."""
    items = block.items
    rows = _live_rows(np.array([i.row_start - block.lo for i in items]), np.array([i.row_count for i in items]))
    features, times, ends = _read_columns(files, block.shard, block.view, block.lo, block.hi, buffer)
    memory = spare.get(block.hi - block.lo, features)
    gathered = memory[: len(rows)]
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # none dead: a plain copy
        np.copyto(gathered, features[int(rows[0]) : int(rows[-1]) + 1])
    else:  # mode="clip": straight into `gathered` ("raise" goes through a new buffer); rows are in range
        np.take(features, rows, axis=0, out=gathered, mode="clip")
    return _Given(block.view, items, gathered, times[rows], None if ends is None else ends[rows], memory)


class _Spare:
    """Arrays for gathered rows, handed back once the shard they went into is checked and taken again
    by the reading thread: new ones would be new pages, zeroed by the kernel on first touch (as `_Buffer`)."""

    def __init__(self) -> None:
        self._free: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()

    def get(self, count: int, like: np.ndarray) -> np.ndarray:
        """An array of at least `count` rows like `like`'s: a spare one, else a new one."""
        try:
            array = self._free.get_nowait()
        except queue.Empty:
            array = None
        return _fitting(array, (count, *like.shape[1:]), like.dtype)  # a misfit is left to the allocator

    def put(self, array: np.ndarray) -> None:
        self._free.put(array)


class _Buffer:
    """Feature rows read again and again into the same memory (`ShardFiles.read_rows(into=...)`): a new
    64 MiB array is new pages, each zeroed by the kernel on first touch (clear_page: 21 % of a
    1M-video compact's time). One thread's."""

    def __init__(self) -> None:
        self._array: np.ndarray | None = None

    def rows(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        self._array = _fitting(self._array, shape, dtype)
        return self._array[: shape[0]]


def _fitting(array: np.ndarray | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """`array` when it has at least shape[0] rows of shape[1:] and `dtype`, else a new array of `shape`."""
    if array is None or array.dtype != dtype or array.shape[1:] != shape[1:] or len(array) < shape[0]:
        return np.empty(shape, dtype)
    return array


@dataclass
class _Given:
    """One `add_rows` of compact: these items' rows, one after the other."""

    view: str
    items: list[Item]
    features: np.ndarray
    times: np.ndarray
    ends: np.ndarray | None
    memory: np.ndarray | None = None  # the reused array `features` lies in (`_Spare`), free once checked

    def columns(self) -> tuple:
        return self.features, self.times, self.ends


def _live_rows(offsets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The row numbers, within a block, of the videos starting at `offsets` with `counts` rows, in
    order: [o0, o0+1, ..., o1, o1+1, ...] (dead rows between them are left out)."""
    firsts = np.repeat(offsets - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return firsts + np.arange(int(counts.sum()))


def _source(item: Item) -> SourceStat | None:
    if item.source_size is None or item.source_mtime_ns is None:
        return None
    return SourceStat(item.source_size, item.source_mtime_ns)


def _verify_moved(catalog: Catalog, files: ShardFiles, given: list[_Given], buffer: _Buffer | None = None) -> None:
    """Every moved (video, view) reads back from where the catalog now puts it byte for byte, or
    compaction stops before any old shard is deleted: each batch's pairs must lie one after the
    other in one new shard, read there in one read per column and compared with what was given."""
    pairs = [(i.video_id, batch.view) for batch in given for i in batch.items]
    where = {(video_id, view): (shard, start, count) for shard, view, start, count, video_id in catalog.located(pairs)}
    for batch in given:
        located = [where.get((i.video_id, batch.view)) for i in batch.items]
        lost = next((i for i, at in zip(batch.items, located, strict=True) if at is None), None)
        if lost is not None:
            raise RuntimeError(f"compact: the catalog has lost {lost.video_id} [{batch.view}]; nothing deleted")
        shard, lo = located[0][0], located[0][1]  # type: ignore[index]
        expected = itertools.accumulate((at[2] for at in located), initial=lo)  # type: ignore[index]
        tiled = all(
            at[0] == shard and at[1] == start and at[2] == item.row_count  # type: ignore[index]
            for at, start, item in zip(located, expected, batch.items, strict=False)
        )
        hi = lo + len(batch.features)
        if tiled and _same_columns(_read_columns(files, shard, batch.view, lo, hi, buffer), batch.columns()):
            continue
        first = 0  # name the first pair that differs (each read alone, from where the catalog puts it)
        for item, (at_shard, start, count) in zip(batch.items, located, strict=True):  # type: ignore[misc]
            mine = tuple(None if c is None else c[first : first + item.row_count] for c in batch.columns())
            if count != item.row_count or not _same_columns(
                _read_columns(files, at_shard, batch.view, start, start + count), mine
            ):
                raise RuntimeError(
                    f"compact: {item.video_id} [{batch.view}] reads back differently from {at_shard}; nothing deleted"
                )
            first += item.row_count
    given.clear()


def _read_columns(
    files: ShardFiles, shard: str, view: str, start: int, stop: int, buffer: _Buffer | None = None
) -> tuple:
    """(features, times, end times or None) of rows start:stop, the features into `buffer` when given."""
    features, times = files.read_rows(shard, view, start, stop, into=None if buffer is None else buffer.rows)
    return features, times, files.read_end_times(shard, view, start, stop)


def _same_columns(new: tuple, old: tuple) -> bool:
    """Whether each column read back (features, times, end times or None) holds exactly the bytes
    given, compared as the widest unsigned words the row length allows (NumPy's == per byte is 20x slower)."""
    for got, want in zip(new, old, strict=True):
        if got is None or want is None:
            if got is not None or want is not None:
                return False
            continue
        if got.shape != want.shape or got.dtype != want.dtype:
            return False
        if not np.array_equal(_words(got), _words(want)):
            return False
    return True


def _words(array: np.ndarray) -> np.ndarray:
    lines = np.ascontiguousarray(array).reshape(len(array), -1).view(np.uint8)
    width = next(w for w in (8, 4, 2, 1) if lines.shape[1] % w == 0)
    return lines.view(f"<u{width}")


def as_dict(summary: object) -> dict:
    return dataclasses.asdict(summary)  # type: ignore[call-overload]
