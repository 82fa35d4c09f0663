"""Shots as items (`--items shots`): each shot of the `shots` view is one item, its features the rows
of each view pooled over the shot's span (`Cache.read_shots`), its split and labels its video's,
unless a shot-labels file names the shot's own labels.

Item ids are `<video_id>#shot<k>` (k from 0, four digits), as `vidcache shots` names them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..cache.reader import Cache
from ..errors import ConfigError
from ..manifest_rows import parse_labels  # the manifest's own rule for a labels cell
from .data import Batch, Splits, SplitSource, label_splits

SHOTS_VIEW = "shots"
SHOT_LABEL_COLUMNS = ("video_id", "shot_index", "labels")


def shot_id(video_id: str, index: int) -> str:
    return f"{video_id}#shot{index:04d}"


@dataclass
class ShotItems:
    """The shots of some videos, in video order then shot order, with each view's pooled rows."""

    ids: list[str]
    video_id: list[str]  # the shot's video
    index: np.ndarray  # [N] shot index within its video
    start_s: np.ndarray  # [N] float64
    end_s: np.ndarray  # [N] float64
    features: dict[str, np.ndarray]  # view → [N, D] float32, pooled (zeros where the video lacks the view)
    present: dict[str, np.ndarray]  # view → [N] bool: the shot's video has rows of this view

    def position(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.ids)}


def check_shots_extracted(cache: Cache, video_ids: list[str]) -> None:
    """Every video needs a row in the shots view: without it there is nothing to split it into."""
    done = set(cache.video_ids(SHOTS_VIEW)) if SHOTS_VIEW in cache.views() else set()
    missing = [v for v in video_ids if v not in done]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(
            f"--items shots: video {missing[0]!r}{more} has no shots in {cache.path}; extract them first with "
            f"`vidcache extract MANIFEST --cache {cache.path} --views {SHOTS_VIEW}`"
        )


def read_shot_items(cache: Cache, video_ids: list[str], views: tuple[str, ...], *, pooling: str) -> ShotItems:
    """Every shot of `video_ids`, each view's rows pooled over it (`pooling`: mean or max)."""
    check_shots_extracted(cache, video_ids)
    done = {view: set(cache.video_ids(view)) for view in views}
    ids: list[str] = []
    owner: list[str] = []
    index, starts, ends = [], [], []
    pooled: dict[str, list[np.ndarray]] = {view: [] for view in views}
    present: dict[str, list[np.ndarray]] = {view: [] for view in views}
    for video_id in video_ids:
        spans = cache.read_shots(video_id)
        count = len(spans)
        ids += [shot_id(video_id, k) for k in range(count)]
        owner += [video_id] * count
        index.append(np.arange(count))
        starts.append(spans.start_s)
        ends.append(spans.end_s)
        for view in views:
            if video_id in done[view]:
                pooled[view].append(cache.read_shots(video_id, view, pooling=pooling).embeddings)
                present[view].append(np.ones(count, bool))
            else:  # a view not extracted for this video (absent audio): masked out, as for videos
                pooled[view].append(None)  # type: ignore[arg-type]
                present[view].append(np.zeros(count, bool))
    features = {}
    for view in views:
        dim = next((p.shape[1] for p in pooled[view] if p is not None), 0)
        parts = zip(pooled[view], present[view], strict=True)
        blocks = [p if p is not None else np.zeros((len(h), dim), np.float32) for p, h in parts]
        features[view] = np.concatenate(blocks) if blocks else np.zeros((0, dim), np.float32)
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)  # noqa: E731
    return ShotItems(
        ids,
        owner,
        cat(index, np.int64),
        cat(starts, np.float64),
        cat(ends, np.float64),
        features,
        {view: cat(present[view], bool) for view in views},
    )


def read_shot_labels(path: str | Path) -> dict[tuple[str, int], tuple[str, ...]]:
    """(video_id, shot_index) → labels from a CSV or parquet file with columns video_id, shot_index, labels."""
    path = Path(path)
    try:
        table = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--shot-labels {path}: cannot read it ({error}); give a CSV or parquet file") from None
    missing = [c for c in SHOT_LABEL_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(f"--shot-labels {path}: no {', '.join(missing)} column; it needs video_id,shot_index,labels")
    out: dict[tuple[str, int], tuple[str, ...]] = {}
    for line, (video_id, index, labels) in enumerate(zip(*(table[c] for c in SHOT_LABEL_COLUMNS), strict=True), 2):
        try:
            shot = int(str(index).strip())
        except ValueError:
            shot = -1
        if shot < 0:
            raise ConfigError(f"--shot-labels {path} row {line}: shot_index {index!r} is not a whole number >= 0")
        key = (str(video_id).strip(), shot)
        if key in out:
            raise ConfigError(f"--shot-labels {path} row {line}: shot {key[1]} of {key[0]!r} is listed twice")
        out[key] = parse_labels(None if labels is None or labels != labels else labels)
    return out


def shot_splits(
    cache: Cache,
    video_ids: dict[str, list[str]],
    video_labels: dict[str, tuple[str, ...]],
    items: ShotItems,
    *,
    task: str,
    val_from_train: bool,
    shot_labels: str | None,
) -> Splits:
    """The videos' splits carried over to their shots; each shot's labels are its video's unless
    `shot_labels` (a file) lists the shot."""
    labels = {item: video_labels[video] for item, video in zip(items.ids, items.video_id, strict=True)}
    if shot_labels is not None:
        counts = pd.Series(items.video_id).value_counts().to_dict() if items.ids else {}
        elsewhere = set(cache.video_ids(SHOTS_VIEW)) - set(counts)
        for (video_id, index), given in read_shot_labels(shot_labels).items():
            if video_id in elsewhere:
                continue  # a video with shots but none of the views trained on: not an item here
            if index >= counts.get(video_id, 0):
                raise ConfigError(
                    f"--shot-labels {shot_labels}: {video_id!r} has {counts.get(video_id, 0)} shot(s) in "
                    f"{cache.path}, no shot {index}; shot_index counts the cached shots from 0 (`vidcache shots`)"
                )
            labels[shot_id(video_id, index)] = given
    by_video: dict[str, list[str]] = {}
    for item, video in zip(items.ids, items.video_id, strict=True):
        by_video.setdefault(video, []).append(item)
    ids = {split: [item for video in videos for item in by_video.get(video, [])] for split, videos in video_ids.items()}
    return label_splits(ids, labels, task=task, val_from_train=val_from_train)


class ShotSource(SplitSource):
    """A split of shot items: one pooled row per item and view, held in memory (a shot is one row,
    so even a large corpus's shots are small next to its frame rows)."""

    def __init__(self, items: ShotItems, item_ids: list[str], targets: torch.Tensor) -> None:
        position = items.position()
        pick = np.array([position[i] for i in item_ids], dtype=np.int64)
        self.views = list(items.features)
        self.view = self.views[0]
        self.cache = None  # type: ignore[assignment]
        self.video_ids, self.targets = item_ids, targets
        self.max_frames = 1
        self.row_of = {item: i for i, item in enumerate(item_ids)}
        self.dims = {view: int(items.features[view].shape[1]) for view in self.views}
        self.dim = self.dims[self.view]
        self.in_memory = True
        self.blocks = [list(range(len(item_ids)))]
        self.start_s, self.end_s = items.start_s[pick], items.end_s[pick]
        self.shot_index = items.index[pick]
        self.shot_video = [items.video_id[i] for i in pick]
        single = len(self.views) == 1
        features, masks, times, present = {}, {}, {}, {}
        for view in self.views:
            have = items.present[view][pick]
            features[view] = torch.from_numpy(np.ascontiguousarray(items.features[view][pick]))[:, None, :]
            masks[view] = torch.from_numpy(have | single)[:, None]  # one view: a zero row, as a video without rows
            times[view] = torch.zeros(len(pick), 1)
            present[view] = torch.from_numpy(have)
        index = torch.arange(len(item_ids), dtype=torch.long)
        self._held = Batch(features, masks, times, present, targets, index, list(item_ids))

    def stored_means(self) -> np.ndarray | None:
        """The pooled rows are each item's only row: its mean over frames is itself."""
        return self._held.features[self.view][:, 0].numpy() if len(self.views) == 1 else None  # type: ignore[union-attr]

    def _read(self, rows: list[int]) -> Batch:
        return self._select(self._held, torch.tensor(rows, dtype=torch.long))  # type: ignore[arg-type]

    def read_means(self, on: bool) -> bool:
        """Shot items are already one row each: nothing to switch."""
        return False

    def release(self) -> None:
        """The shot items are the only copy (built once from the cache): kept."""


def shot_data(
    cache: Cache,
    views: tuple[str, ...],
    *,
    task: str,
    val_fraction: float,
    pooling: str,
    shot_labels: str | None,
    splits: tuple[str, ...],
    vocabulary: list[str] | None = None,
) -> tuple[Splits, dict[str, ShotSource]]:
    """The shot items of the videos' splits and a source per split in `splits`, its targets over
    `vocabulary` (default: the classes of the shots' train split; eval passes the run's)."""
    from .data import assign_splits, multi_hot

    check_shots_extracted(cache, sorted(set().union(*(cache.video_ids(view) for view in views))))
    video_ids, video_labels, val_from_train = assign_splits(cache, views, val_fraction=val_fraction)
    wanted = sorted({v for ids in video_ids.values() for v in ids})
    items = read_shot_items(cache, wanted, views, pooling=pooling)
    result = shot_splits(
        cache, video_ids, video_labels, items, task=task, val_from_train=val_from_train, shot_labels=shot_labels
    )
    classes = result.vocabulary if vocabulary is None else vocabulary
    sources = {
        split: ShotSource(items, result.ids[split], multi_hot(result.ids[split], result.labels, classes))
        for split in splits
    }
    return result, sources
