"""Splits, labels and batches of padded frame sequences read from the cache.

A view that fits the memory budget is read once into padded tensors; a larger one is streamed:
videos are grouped in blocks that are contiguous in the shards, blocks are shuffled, and each block
is read with one merged read per shard (`Cache.read_many`)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..cache.locations import LocationTable, ViewLocations, view_locations
from ..cache.reader import Cache
from ..errors import ConfigError

TRAIN, VAL, TEST = "train", "val", "test"
SPLIT_ALIASES = {"train": TRAIN, "training": TRAIN, "val": VAL, "valid": VAL, "validation": VAL, "test": TEST}


class SplitError(ConfigError):
    """Splits that would make the numbers meaningless (leakage, empty, unseen classes)."""


@dataclass
class Splits:
    ids: dict[str, list[str]]  # split → video ids (sorted)
    labels: dict[str, tuple[str, ...]]  # video id → labels
    vocabulary: list[str]  # classes seen in train, sorted
    multi_label: bool
    val_from_train: bool  # no val split in the manifest: a deterministic fraction of train was used


def sample_splits(splits: Splits, n: int, *, seed: int) -> Splits:
    """At most `n` videos of the train and val splits (a seeded sample, kept in sorted order); the
    vocabulary stays the whole train split's, so a search trial scores the run's classes."""
    rng = np.random.default_rng(seed)
    ids = dict(splits.ids)
    for split in (TRAIN, VAL):
        chosen = ids.get(split, [])
        if len(chosen) > n:
            ids[split] = [chosen[i] for i in np.sort(rng.choice(len(chosen), n, replace=False))]
    return dataclasses.replace(splits, ids=ids)


def _hash_fraction(video_id: str) -> float:
    return int(hashlib.sha1(video_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _seconds(value) -> float | None:
    return None if value is None or value != value else float(value)


def _leaks(paths: list, starts: list, ends: list, split_of: list[str]) -> list[str]:
    """ "PATH in A and B" for each source (path, start, end) listed in two splits; only paths seen
    more than once are looked at (a million distinct files cost one Counter)."""
    repeated = {path for path, n in Counter(paths).items() if n > 1}
    path_split: dict[tuple, str] = {}
    leaks: list[str] = []
    for i in (i for i, path in enumerate(paths) if path in repeated):
        source = (paths[i], _seconds(starts[i]), _seconds(ends[i]))  # NaN != NaN: normalise first
        if source in path_split and path_split[source] != split_of[i]:
            leaks.append(f"{paths[i]} in {path_split[source]} and {split_of[i]}")
        path_split.setdefault(source, split_of[i])
    return leaks


def make_splits(
    cache: Cache, views: str | list[str] | tuple[str, ...], *, task: str = "auto", val_fraction: float = 0.1
) -> Splits:
    """Splits from the manifest's `split` column over the videos with rows in any of `views`; fails
    loudly on leakage, empty splits and classes absent from train."""
    ids, labels, val_from_train = assign_splits(cache, views, val_fraction=val_fraction)
    return label_splits(ids, labels, task=task, val_from_train=val_from_train)


def assign_splits(
    cache: Cache, views: str | list[str] | tuple[str, ...], *, val_fraction: float = 0.1
) -> tuple[dict[str, list[str]], dict[str, tuple[str, ...]], bool]:
    """(split → video ids, video id → labels, whether val was carved from train) of the videos with
    rows in any of `views`, from the manifest's `split` column; fails loudly on leakage and an empty train."""
    views = [views] if isinstance(views, str) else list(views)
    done = set().union(*(cache.video_ids(view) for view in views))
    entries = cache.entry_columns()  # plain columns: no DataFrame of 1M label lists
    if not entries["video_id"] or not done:
        raise SplitError(f"cache {cache.path} has no extracted {'/'.join(views)!r} videos")
    alias = {raw: SPLIT_ALIASES.get(str(raw).strip().lower()) if raw else None for raw in set(entries["split"])}
    kept = [i for i, video_id in enumerate(entries["video_id"]) if video_id in done]
    column = {name: [values[i] for i in kept] for name, values in entries.items()}
    if any(alias[raw] is None for raw in set(column["split"])):  # name the first such video
        pairs = zip(column["video_id"], column["split"], strict=True)
        video_id, row_split = next((v, raw) for v, raw in pairs if alias[raw] is None)
        raise SplitError(
            f"video {video_id!r} has split {row_split!r}; the manifest's split column must be one of "
            "train, val, test for training"
        )
    split_of = [alias[raw] for raw in column["split"]]
    ids: dict[str, list[str]] = {TRAIN: [], VAL: [], TEST: []}
    for video_id, split in zip(column["video_id"], split_of, strict=True):
        ids[split].append(video_id)
    labels: dict[str, tuple[str, ...]] = dict(zip(column["video_id"], column["labels"], strict=True))
    leaks = _leaks(column["path"], column["start_s"], column["end_s"], split_of)
    if leaks:
        raise SplitError(f"{len(leaks)} video(s) in two splits (e.g. {leaks[0]}); fix the manifest's split column")
    val_from_train = not ids[VAL]
    if val_from_train:  # by source path (relative to the corpus root: stable when the corpus moves),
        # so clips cut from one file stay on one side
        paths = dict(zip(column["video_id"], map(str, column["path"]), strict=True))
        root = os.path.commonpath(list(paths.values())) if len(paths) > 1 else ""
        carved = [v for v in ids[TRAIN] if _hash_fraction(os.path.relpath(paths[v], root or None)) < val_fraction]
        if not carved or len(carved) == len(ids[TRAIN]):
            raise SplitError("the manifest has no val split and train is too small to carve one; add split=val rows")
        ids[VAL] = carved
        carved_set = set(carved)
        ids[TRAIN] = [v for v in ids[TRAIN] if v not in carved_set]
    if not ids[TRAIN]:
        raise SplitError("the train split is empty; mark training videos with split=train in the manifest")
    return ids, labels, val_from_train


def label_splits(
    ids: dict[str, list[str]], labels: dict[str, tuple[str, ...]], *, task: str, val_from_train: bool
) -> Splits:
    """`Splits` of items already assigned to splits (videos, or shots inheriting their video's split):
    the vocabulary of train, the task, and the checks that make the numbers meaningful."""
    vocabulary = sorted({label for v in ids[TRAIN] for label in labels[v]})
    if not vocabulary:
        raise SplitError("no labels in the train split; the manifest needs a labels column")
    unseen = sorted({label for s in (VAL, TEST) for v in ids[s] for label in labels[v]} - set(vocabulary))
    if unseen:
        raise SplitError(
            f"{len(unseen)} class(es) appear in val/test but not in train (e.g. {unseen[0]!r}); "
            "a head cannot learn them: move examples to train or drop the class"
        )
    counts = [len(labels[v]) for v in ids[TRAIN] if labels[v]]
    inferred = "single-label" if counts and max(counts) == 1 else "multi-label"
    if task == "single-label" and counts and max(counts) > 1:
        raise SplitError("--task single-label, but some training videos have several labels")
    multi_label = (inferred if task == "auto" else task) == "multi-label"
    if not multi_label:  # single-label: a video needs exactly one label to be trained or scored
        several = [v for s in (VAL, TEST) for v in ids[s] if len(labels[v]) > 1]
        if several:
            raise SplitError(
                f"{len(several)} val/test video(s) have several labels (e.g. {several[0]!r}) but the task is "
                "single-label; use --task multi-label"
            )
        ids = {k: [v for v in vs if len(labels[v]) == 1] for k, vs in ids.items()}  # unlabelled: no target
        for split in (TRAIN, VAL):
            if not ids[split]:
                raise SplitError(f"the {split} split has no labelled videos")
    return Splits({k: sorted(v) for k, v in ids.items()}, labels, vocabulary, multi_label, val_from_train)


def multi_hot(video_ids: list[str], labels: dict[str, tuple[str, ...]], vocabulary: list[str]) -> torch.Tensor:
    position = {label: i for i, label in enumerate(vocabulary)}
    rows, columns = [], []  # one scatter, not a tensor write per label (a million videos)
    for row, video_id in enumerate(video_ids):
        for label in labels.get(video_id, ()):
            if label in position:
                rows.append(row)
                columns.append(position[label])
    out = torch.zeros(len(video_ids), len(vocabulary))
    out[torch.tensor(rows, dtype=torch.long), torch.tensor(columns, dtype=torch.long)] = 1.0
    return out


def _subsample_index(count: int, max_frames: int) -> np.ndarray:
    """At most `max_frames` row positions, evenly spaced (deterministic: evaluation sees what training saw)."""
    if count <= max_frames:
        return np.arange(count)
    return np.linspace(0, count - 1, max_frames).round().astype(int)


def pad(
    batch_rows: list[np.ndarray],
    max_frames: int,
    dim: int,
    *,
    times: list[np.ndarray] | None = None,
    empty_frame: bool = True,
) -> tuple[torch.Tensor, ...]:
    """Videos' rows → features [B, T, D] float32 (zero-padded) and mask [B, T], with one gather and
    one dtype conversion for the whole batch (rows may arrive as stored, e.g. float16). With `times`
    (each video's row timestamps), a third tensor [B, T] float32 of seconds (0 where padded).
    `empty_frame`: a video without rows is one valid zero frame, so single-view pooling never averages
    over nothing; multi-view heads pass False and mask the view out instead."""
    picks = [_subsample_index(len(r), max_frames) for r in batch_rows]
    rows = [r[p] for r, p in zip(batch_rows, picks, strict=True)]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    length = max(1, int(lengths.max(initial=0)))
    dtype = rows[0].dtype if rows else np.float32
    flat = np.concatenate([*(r.reshape(-1, dim) for r in rows), np.zeros((1, dim), dtype)])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(rows) else np.zeros(0, np.int64)
    steps = np.arange(length)
    valid = steps[None, :] < lengths[:, None]
    index = np.where(valid, offsets[:, None] + steps[None, :], len(flat) - 1)
    features = torch.from_numpy(np.ascontiguousarray(flat[index], dtype=np.float32))
    if times is not None:
        flat_times = np.concatenate([*(np.asarray(t, np.float64)[p] for t, p in zip(times, picks, strict=True)), [0.0]])
        seconds = torch.from_numpy(np.where(valid, flat_times[index], 0.0).astype(np.float32))
    if empty_frame:
        valid[lengths == 0, 0] = True  # a video without rows is one zero frame: no pooling over nothing (NaN)
    mask = torch.from_numpy(valid)
    return (features, mask, seconds) if times is not None else (features, mask)


@dataclass
class Batch:
    """A batch of videos: per view, padded rows, their mask and their timestamps; targets; where
    the videos sit in their split (`rows`) and their ids (for mined lists)."""

    features: dict[str, torch.Tensor]  # view → [B, T_v, D_v] float32
    masks: dict[str, torch.Tensor]  # view → [B, T_v] bool
    times_s: dict[str, torch.Tensor]  # view → [B, T_v] float32, row start times (0 where padded)
    present: dict[str, torch.Tensor]  # view → [B] bool: the video has rows of this view
    targets: torch.Tensor  # [B, C] multi-hot
    rows: torch.Tensor  # [B] positions in the split's video list
    video_ids: list[str]

    @property
    def views(self) -> list[str]:
        return list(self.features)

    @property
    def feature(self) -> torch.Tensor:  # the first (or only) view
        return next(iter(self.features.values()))

    @property
    def mask(self) -> torch.Tensor:
        return next(iter(self.masks.values()))

    def __len__(self) -> int:
        return len(self.video_ids)

    def to(self, device: torch.device, *, non_blocking: bool = False) -> Batch:
        move = lambda d: {k: v.to(device, non_blocking=non_blocking) for k, v in d.items()}  # noqa: E731
        return Batch(
            move(self.features),
            move(self.masks),
            move(self.times_s),
            move(self.present),
            self.targets.to(device, non_blocking=non_blocking),
            self.rows,
            self.video_ids,
        )

    @staticmethod
    def cat(batches: list[Batch]) -> Batch:
        """One batch from several (e.g. sampled videos plus their mined neighbours); shorter
        sequences are padded with masked zero frames."""
        first = batches[0]

        def stack(name: str, view: str, fill) -> torch.Tensor:
            parts = [getattr(b, name)[view] for b in batches]
            length = max(p.shape[1] for p in parts)
            padded = []
            for p in parts:
                extra = length - p.shape[1]
                if extra:
                    shape = (p.shape[0], extra, *p.shape[2:])
                    p = torch.cat([p, torch.full(shape, fill, dtype=p.dtype, device=p.device)], dim=1)
                padded.append(p)
            return torch.cat(padded)

        views = first.views
        return Batch(
            {v: stack("features", v, 0.0) for v in views},
            {v: stack("masks", v, False) for v in views},
            {v: stack("times_s", v, 0.0) for v in views},
            {v: torch.cat([b.present[v] for b in batches]) for v in views},
            torch.cat([b.targets for b in batches]),
            torch.cat([b.rows for b in batches]),
            [i for b in batches for i in b.video_ids],
        )


class SplitSource:
    """`Batch`es of one split over one or more views. A video missing a view (absent audio, a view
    not extracted for it) has no rows there: `present` is False and, for multi-view sources, its
    mask is all False."""

    def __init__(
        self,
        cache: Cache,
        views: str | list[str] | tuple[str, ...],
        video_ids: list[str],
        targets: torch.Tensor,
        *,
        max_frames: int,
        memory_budget_bytes: float,
        block_videos: int = 1024,
        located: dict[str, ViewLocations] | None = None,
    ):
        """`located`: a view → its catalog locations (arrays), a memo shared by the sources of one
        cache (train and val each looked up every done item of the view: 2 × N catalog rows)."""
        located = {} if located is None else located
        self.views = [views] if isinstance(views, str) else list(views)
        if not self.views:
            raise ConfigError("a split source needs at least one view")
        self.cache, self.video_ids, self.targets = cache, video_ids, targets
        self.view = self.views[0]
        self.max_frames = max_frames
        self._empty_frame = len(self.views) == 1
        self._tables: dict[str, LocationTable] = {}
        self._decoders = {}
        self.dims: dict[str, int] = {}
        for view in self.views:
            if view not in located:
                located[view] = view_locations(cache, view)
            table = located[view].take(video_ids)
            if len(self.views) == 1 and not table.present.all():
                missing = video_ids[int(np.flatnonzero(~table.present)[0])]
                raise KeyError(f"{missing!r} has no extracted {view!r} rows in {cache.path}")
            self._tables[view] = table
            self._decoders[view] = cache._decoder(view)  # resolved here, in the catalog's thread
            self.dims[view] = self._dim(view, table)
        self.dim = self.dims[self.view]
        self.means = False  # batches of frames; `read_means` switches to each video's stored mean row
        self.memory_budget_bytes = memory_budget_bytes
        self.in_memory = self._padded_bytes() <= memory_budget_bytes
        # storage order of the first view, so a streamed block is one contiguous read per shard
        order = self._tables[self.view].storage_order().tolist()
        self.blocks = [order[s : s + block_videos] for s in range(0, len(order), block_videos)]
        self._held: Batch | None = None  # every row, read on first use: a probe on stored means never needs it

    @functools.cached_property
    def row_of(self) -> dict[str, int]:
        """{video_id: position in the split}: built when a head asks (mined companions), not for every source."""
        return {video_id: i for i, video_id in enumerate(self.video_ids)}

    @property
    def _all(self) -> Batch | None:
        """The whole split as one padded batch when it fits the budget (read once, on first use), else None."""
        if self.in_memory and self._held is None:
            self._held = self._read_whole()
        return self._held

    def release(self) -> None:
        """Drop the held split (if any); it is read again on the next batch that asks for it."""
        self._held = None

    def _padded_bytes(self) -> int:
        """What holding the split costs: padded tensors [N, longest, D] float32, counted twice (the
        batches a head cuts from it, its own work) so a held split leaves room in the budget."""
        return sum(2 * len(self) * self._longest(view) * self.dims[view] * 4 for view in self.views)

    def read_means(self, on: bool) -> bool:
        """Batches of each video's stored mean row ([B, 1, D], mask True) instead of its frames, for
        a head that only ever sees the mean over a video's frames (`Head.mean_pooled`): an epoch
        reads one row per video instead of all of them, and a held split is that much smaller.
        Only where the stored means are that mean (see `stored_means`); returns whether it is on."""
        on = bool(on) and self._means_are_the_mean()
        if on != self.means:
            self.means, self._held = on, None
            self.in_memory = self._padded_bytes() <= self.memory_budget_bytes
        return on

    def _means_are_the_mean(self) -> bool:
        """One view of float embeddings, every video present and none subsampled to `max_frames`."""
        table = self._tables[self.view]
        info = self.cache.view_info(self.view)
        return (
            len(self.views) == 1
            and np.dtype(info.get("dtype", "float16")).kind == "f"
            and not info.get("row_shape")
            and bool(table.present.all())
            and not (table.row_count > self.max_frames).any()
        )

    def _read_means(self, rows: list[int]) -> Batch:
        from ..cache.pooled import pooled_means_at

        means, _ = pooled_means_at(self.cache, self.view, self._tables[self.view].at(rows))
        n, view = len(rows), self.view
        index = torch.tensor(rows, dtype=torch.long)
        return Batch(
            {view: torch.from_numpy(means).unsqueeze(1)},
            {view: torch.ones(n, 1, dtype=torch.bool)},
            {view: torch.zeros(n, 1)},  # a mean has no one time
            {view: torch.ones(n, dtype=torch.bool)},
            self.targets[index],
            index,
            [self.video_ids[i] for i in rows],
        )

    def _read_whole(self) -> Batch:
        """Every video of the split, padded to the split's longest, filled block by block into tensors
        allocated once: the peak is the held batch plus one block, not the stored rows, their gather
        and the float32 copy of the whole split at once (3x the held batch). Equal to `_read` of
        every position."""
        n = len(self.video_ids)
        longest = {view: self._longest(view) for view in self.views}
        features = {v: torch.zeros(n, longest[v], self.dims[v]) for v in self.views}
        masks = {v: torch.zeros(n, longest[v], dtype=torch.bool) for v in self.views}
        times = {v: torch.zeros(n, longest[v]) for v in self.views}
        present = {v: torch.zeros(n, dtype=torch.bool) for v in self.views}
        for block in self._prefetched(self.blocks):
            for view in self.views:
                length = block.features[view].shape[1]
                features[view][block.rows, :length] = block.features[view]
                masks[view][block.rows, :length] = block.masks[view]
                times[view][block.rows, :length] = block.times_s[view]
                present[view][block.rows] = block.present[view]
        return Batch(features, masks, times, present, self.targets, torch.arange(n), list(self.video_ids))

    def _longest(self, view: str) -> int:
        """The padded length `pad` gives the whole split: its longest video, at most `max_frames`, at least 1."""
        if self.means:
            return 1
        table = self._tables[view]
        return max(1, min(int(table.row_count[table.present].max(initial=0)), self.max_frames))

    def stored_means(self) -> np.ndarray | None:
        """[N, D] float32: each video's mean row as the cache stores it beside the rows (one read per
        shard instead of every row), when that is what a mean over its frames gives: one view of
        embeddings and no video subsampled to `max_frames`; None otherwise."""
        if not self._means_are_the_mean():
            return None
        from ..cache.pooled import pooled_means_at

        return pooled_means_at(self.cache, self.view, self._tables[self.view])[0]

    def _dim(self, view: str, table: LocationTable) -> int:
        recorded = self.cache.view_info(view).get("feature_dim")
        if recorded:
            return int(recorded)
        present = np.flatnonzero(table.present)
        if not len(present):
            raise ConfigError(f"none of the split's videos has rows of view {view!r} in {self.cache.path}")
        some = table.location(int(present[0]))
        rows = self.cache._read_located(view, [some], decode=self._decoders[view])[0][0]
        return int(np.prod(rows.shape[1:]))

    def __len__(self) -> int:
        return len(self.video_ids)

    def _read(self, rows: list[int]) -> Batch:
        """Rows of the given split positions, read with one merged read per shard and view."""
        if self.means:
            return self._read_means(rows)
        features, masks, times, present = {}, {}, {}, {}
        for view in self.views:
            locations = self._tables[view].locations(rows)
            have = [loc for loc in locations if loc is not None]
            read = iter(self.cache._read_located(view, have, decode=self._decoders[view]))  # as stored
            empty = (np.zeros((0, self.dims[view]), np.float32), np.zeros(0))
            got = [next(read) if loc is not None else empty for loc in locations]
            features[view], masks[view], times[view] = pad(
                [f.reshape(len(f), self.dims[view]) for f, _ in got],
                self.max_frames,
                self.dims[view],
                times=[t for _, t in got],
                empty_frame=self._empty_frame,
            )
            present[view] = torch.tensor([loc is not None for loc in locations], dtype=torch.bool)
        index = torch.tensor(rows, dtype=torch.long)
        return Batch(features, masks, times, present, self.targets[index], index, [self.video_ids[i] for i in rows])

    def _select(self, batch: Batch, pick: torch.Tensor) -> Batch:
        counts = {v: batch.masks[v][pick].sum(dim=1) for v in batch.views}
        length = {v: max(1, int(c.max())) if len(c) else 1 for v, c in counts.items()}
        cut = lambda d: {v: t[pick][:, : length[v]] for v, t in d.items()}  # noqa: E731
        return Batch(
            cut(batch.features),
            cut(batch.masks),
            cut(batch.times_s),
            {v: t[pick] for v, t in batch.present.items()},
            batch.targets[pick],
            batch.rows[pick],
            [batch.video_ids[int(i)] for i in pick],
        )

    def gather(self, rows: list[int]) -> Batch:
        """Any videos of the split by position (e.g. mined neighbours of a batch's videos)."""
        if self._all is not None:
            return self._select(self._all, torch.tensor(rows, dtype=torch.long))
        return self._read(list(rows))

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None) -> Iterator[Batch]:
        if self._all is not None:
            order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
            for start in range(0, len(order), batch_size):
                yield self._select(self._all, order[start : start + batch_size])
            return
        block_order = torch.randperm(len(self.blocks), generator=generator) if shuffle else range(len(self.blocks))
        for block in self._prefetched([self.blocks[int(b)] for b in block_order]):
            local = torch.randperm(len(block), generator=generator) if shuffle else torch.arange(len(block))
            for start in range(0, len(local), batch_size):
                yield self._select(block, local[start : start + batch_size])

    def _prefetched(self, blocks: list[list[int]]) -> Iterator[Batch]:
        """Read block i+1 in a background thread while the caller trains on block i."""
        if not blocks:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidcache-prefetch") as pool:
            pending = pool.submit(self._read, blocks[0])
            for following in [*blocks[1:], None]:
                ready = pending.result()
                if following is not None:
                    pending = pool.submit(self._read, following)
                yield ready
