"""Splits, labels and batches of padded frame sequences read from the cache.

A view that fits the memory budget is read once into padded tensors; a larger one is streamed:
videos are grouped in blocks that are contiguous in the shards, blocks are shuffled, and each block
is read with one merged read per shard (`Cache.read_many`)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

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


def _hash_fraction(video_id: str) -> float:
    return int(hashlib.sha1(video_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _seconds(value) -> float | None:
    return None if value is None or value != value else float(value)


def make_splits(cache: Cache, view: str, *, task: str = "auto", val_fraction: float = 0.1) -> Splits:
    """Splits from the manifest's `split` column; fails loudly on leakage, empty splits and classes
    absent from train."""
    done = set(cache.video_ids(view))
    entries = cache.entries()
    if entries.empty or not done:
        raise SplitError(f"cache {cache.path} has no extracted {view!r} videos")
    ids: dict[str, list[str]] = {TRAIN: [], VAL: [], TEST: []}
    labels: dict[str, tuple[str, ...]] = {}
    path_split: dict[tuple, str] = {}
    paths: dict[str, str] = {}
    leaks: list[str] = []
    for row in entries.itertuples():
        if row.video_id not in done:
            continue
        split = SPLIT_ALIASES.get(str(row.split).strip().lower()) if row.split else None
        if split is None:
            raise SplitError(
                f"video {row.video_id!r} has split {row.split!r}; the manifest's split column must be one of "
                "train, val, test for training"
            )
        source = (row.path, _seconds(row.start_s), _seconds(row.end_s))  # NaN != NaN: normalise first
        if source in path_split and path_split[source] != split:
            leaks.append(f"{row.path} in {path_split[source]} and {split}")
        path_split.setdefault(source, split)
        ids[split].append(row.video_id)
        labels[row.video_id] = tuple(row.labels)
        paths[row.video_id] = str(row.path)
    if leaks:
        raise SplitError(f"{len(leaks)} video(s) in two splits (e.g. {leaks[0]}); fix the manifest's split column")
    val_from_train = not ids[VAL]
    if val_from_train:  # by source path (relative to the corpus root: stable when the corpus moves),
        # so clips cut from one file stay on one side
        root = os.path.commonpath(list(paths.values())) if len(paths) > 1 else ""
        carved = [v for v in ids[TRAIN] if _hash_fraction(os.path.relpath(paths[v], root or None)) < val_fraction]
        if not carved or len(carved) == len(ids[TRAIN]):
            raise SplitError("the manifest has no val split and train is too small to carve one; add split=val rows")
        ids[VAL] = carved
        ids[TRAIN] = [v for v in ids[TRAIN] if v not in set(carved)]
    if not ids[TRAIN]:
        raise SplitError("the train split is empty; mark training videos with split=train in the manifest")
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
    out = torch.zeros(len(video_ids), len(vocabulary))
    for row, video_id in enumerate(video_ids):
        for label in labels.get(video_id, ()):
            if label in position:
                out[row, position[label]] = 1.0
    return out


def subsample_rows(rows: np.ndarray, max_frames: int) -> np.ndarray:
    """At most `max_frames` rows, evenly spaced (deterministic: evaluation sees what training saw)."""
    if len(rows) <= max_frames:
        return rows
    return rows[np.linspace(0, len(rows) - 1, max_frames).round().astype(int)]


def pad(batch_rows: list[np.ndarray], max_frames: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Videos' rows → features [B, T, D] float32 (zero-padded) and mask [B, T], with one gather and
    one dtype conversion for the whole batch (rows may arrive as stored, e.g. float16)."""
    rows = [subsample_rows(r, max_frames) for r in batch_rows]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    length = max(1, int(lengths.max(initial=0)))
    dtype = rows[0].dtype if rows else np.float32
    flat = np.concatenate([*(r.reshape(-1, dim) for r in rows), np.zeros((1, dim), dtype)])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(rows) else np.zeros(0, np.int64)
    steps = np.arange(length)
    valid = steps[None, :] < lengths[:, None]
    index = np.where(valid, offsets[:, None] + steps[None, :], len(flat) - 1)
    features = torch.from_numpy(np.ascontiguousarray(flat[index], dtype=np.float32))
    valid[lengths == 0, 0] = True  # a video without rows is one zero frame: no pooling over nothing (NaN)
    return features, torch.from_numpy(valid)


class SplitSource:
    """Batches `(features [B, T, D], mask [B, T], targets [B, C], row indices)` of one split."""

    def __init__(
        self,
        cache: Cache,
        view: str,
        video_ids: list[str],
        targets: torch.Tensor,
        *,
        max_frames: int,
        memory_budget_bytes: float,
        block_videos: int = 1024,
    ):
        self.cache, self.view, self.video_ids, self.targets = cache, view, video_ids, targets
        self.max_frames = max_frames
        locations = cache.locations(view, video_ids)
        self._locations = locations
        self._decode = cache.decoder(view)  # resolved here, in the catalog's thread
        self.dim = int(cache.view_info(view).get("feature_dim") or len(cache.read(video_ids[0], view)[0][0]))
        longest = min(max((loc.row_count for loc in locations), default=1), max_frames)
        # padded tensors are [N, longest, D] float32, plus the gather's transient copy
        self.in_memory = 2 * len(locations) * longest * self.dim * 4 <= memory_budget_bytes
        # storage order, so a streamed block is one contiguous read per shard
        order = sorted(range(len(video_ids)), key=lambda i: (locations[i].shard, locations[i].row_start))
        self.blocks = [order[s : s + block_videos] for s in range(0, len(order), block_videos)]
        self._features: torch.Tensor | None = None
        self._mask: torch.Tensor | None = None
        if self.in_memory:
            features = cache.read_locations(view, locations, decode=self._decode)
            self._features, self._mask = pad([f for f, _ in features], max_frames, self.dim)

    def __len__(self) -> int:
        return len(self.video_ids)

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None) -> Iterator:
        if self.in_memory:
            order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                yield self._features[rows], self._mask[rows], self.targets[rows], rows  # type: ignore[index]
            return
        block_order = torch.randperm(len(self.blocks), generator=generator) if shuffle else range(len(self.blocks))
        for block, features, mask in self._prefetched([self.blocks[int(b)] for b in block_order]):
            local = torch.randperm(len(block), generator=generator) if shuffle else torch.arange(len(block))
            rows_all = torch.tensor(block)
            for start in range(0, len(local), batch_size):
                pick = local[start : start + batch_size]
                rows = rows_all[pick]
                yield features[pick], mask[pick], self.targets[rows], rows

    def _read_block(self, block: list[int]) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        locations = [self._locations[i] for i in block]
        read = self.cache.read_locations(self.view, locations, decode=self._decode)  # as stored
        features, mask = pad([f for f, _ in read], self.max_frames, self.dim)
        return block, features, mask

    def _prefetched(self, blocks: list[list[int]]) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """Read block i+1 in a background thread while the caller trains on block i."""
        if not blocks:
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidcache-prefetch") as pool:
            pending = pool.submit(self._read_block, blocks[0])
            for following in [*blocks[1:], None]:
                ready = pending.result()
                if following is not None:
                    pending = pool.submit(self._read_block, following)
                yield ready
