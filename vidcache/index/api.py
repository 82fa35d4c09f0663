"""The typed Python API of indexing and mining (what `vidcache index build` and `vidcache mine ...`
do), and loading mined lists for the heads as DataFrames or padded index tensors.

    from vidcache.index import api as mining

    mining.mine_hard_negatives("cache", k=10, view="clip")   # CACHE/mined/hard_negatives.parquet
    mining.mine_neighbours("cache", k=5, view="motion")      # CACHE/mined/neighbours_motion.parquet
    frame = mining.load_mined("cache", "neighbours_motion")

Options are keyword-only, choices `Literal`s; a value a parameter cannot take raises `ParamError`
naming the parameter (`mine_neighbours.k=0: must be >= 1`) and, for choices, the allowed values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..fields import check, check_choice
from .mining import MINED_DIR, MiningSummary

if TYPE_CHECKING:  # pandas costs 0.6 s to import: only the functions that build frames load it
    import pandas as pd

Pooling = Literal["mean", "max", "first", "middle"]
IndexType = Literal["auto", "flat", "hnsw", "ivf", "ivfsq", "ivfpq"]
Sampling = Literal["top", "random"]


@dataclass
class Mined:
    """A mined list: its rows, what made it, and where it was written (None with `write=False`)."""

    frame: pd.DataFrame
    summary: MiningSummary
    path: Path | None


def _finish(cache: str | Path, name: str, frame: pd.DataFrame, summary: MiningSummary, write: bool, command: str):
    from .mining import write_mined

    path = write_mined(cache, name, frame, summary, command=command) if write else None
    return Mined(frame, summary, path)


def _check_common(owner: str, k: int, pooling: str) -> None:
    check(owner, "k", isinstance(k, int) and k >= 1, "must be >= 1", value=k)
    check_choice(owner, "pooling", pooling, Pooling)


def _check_search(owner: str, index_type: str, memory_budget_gb: float, min_recall: float, recall_sample: int) -> None:
    check_choice(owner, "index_type", index_type, IndexType)
    check(owner, "memory_budget_gb", memory_budget_gb > 0, "must be > 0", value=memory_budget_gb)
    check(owner, "min_recall", 0 <= min_recall <= 1, "must be in [0, 1]", value=min_recall)
    check(owner, "recall_sample", recall_sample >= 0, "must be >= 0", value=recall_sample)


def mine_hard_negatives(
    cache: str | Path,
    *,
    k: int,
    view: str = "clip",
    pooling: Pooling = "mean",
    label_corpus: str | None = None,
    text_embeddings: str | None = None,
    range_min: int = 0,
    range_max: int | None = None,
    margin: float | None = None,
    relative_margin: float | None = None,
    sampling: Sampling = "top",
    seed: int = 0,
    write: bool = True,
    command: str = "",
    progress: Any = None,
) -> Mined:
    """Per video, the `k` label-corpus entries (default: CACHE/text.h5, or `label_corpus` +
    `text_embeddings`) its `view` ranks highest that are not its own labels; `range_min`/`range_max`
    pick ranks, `margin`/`relative_margin` drop near-positives, `sampling` = top k or k at random.
    Written to CACHE/mined/hard_negatives.parquet (the temporal head's `hard_negatives`)."""
    from ..cache.reader import Cache
    from .mining import hard_negative_labels

    owner = "mine_hard_negatives"
    _check_common(owner, k, pooling)
    check_choice(owner, "sampling", sampling, Sampling)
    check(owner, "range_min", range_min >= 0, "must be >= 0", value=range_min)
    check(owner, "range_max", range_max is None or range_max > range_min, "must be > range_min", value=range_max)
    check(
        owner,
        "text_embeddings",
        not (text_embeddings and not label_corpus),
        "needs label_corpus",
        value=text_embeddings,
    )
    with Cache(cache) as opened:
        frame, summary = hard_negative_labels(
            opened, k=k, view=view, pooling=pooling, label_corpus=label_corpus, text_embeddings=text_embeddings,
            range_min=range_min, range_max=range_max, margin=margin, relative_margin=relative_margin,
            sampling=sampling, seed=seed, progress=progress,
        )  # fmt: skip
    return _finish(cache, "hard_negatives", frame, summary, write, command)


def mine_hard_negative_videos(
    cache: str | Path,
    *,
    k: int,
    view: str = "clip",
    pooling: Pooling = "mean",
    exclude_same_group: bool = False,
    index_type: IndexType = "auto",
    memory_budget_gb: float = 4.0,
    min_recall: float = 0.9,
    recall_sample: int = 1000,
    write: bool = True,
    command: str = "",
    progress: Any = None,
) -> Mined:
    """Per video, its `k` nearest videos in `view` that share no label with it (and, with
    `exclude_same_group`, are not in its folder of video_id): CACHE/mined/hard_negative_videos.parquet
    with a `negative_id` column."""
    from ..cache.reader import Cache
    from .mining import nearest_videos

    owner = "mine_hard_negative_videos"
    _check_common(owner, k, pooling)
    _check_search(owner, index_type, memory_budget_gb, min_recall, recall_sample)
    with Cache(cache) as opened:
        frame, summary = nearest_videos(
            opened, k=k, view=view, pooling=pooling, exclude_shared_labels=True,
            exclude_same_group=exclude_same_group, index_type=index_type, memory_budget_gb=memory_budget_gb,
            min_recall=min_recall, recall_sample=recall_sample, progress=progress,
        )  # fmt: skip
    frame = frame.rename(columns={"neighbour_id": "negative_id"})
    return _finish(cache, "hard_negative_videos", frame, summary, write, command)


def mine_neighbours(
    cache: str | Path,
    *,
    k: int,
    view: str,
    pooling: Pooling = "mean",
    index_type: IndexType = "auto",
    memory_budget_gb: float = 4.0,
    min_recall: float = 0.9,
    recall_sample: int = 1000,
    write: bool = True,
    command: str = "",
    progress: Any = None,
) -> Mined:
    """Per video, its `k` nearest other videos in `view`: CACHE/mined/neighbours_VIEW.parquet, the
    contrastive head's cross-view positives (`cross_view_from=VIEW`)."""
    from ..cache.reader import Cache
    from .mining import nearest_videos

    owner = "mine_neighbours"
    _check_common(owner, k, pooling)
    _check_search(owner, index_type, memory_budget_gb, min_recall, recall_sample)
    with Cache(cache) as opened:
        frame, summary = nearest_videos(
            opened, k=k, view=view, pooling=pooling, index_type=index_type, memory_budget_gb=memory_budget_gb,
            min_recall=min_recall, recall_sample=recall_sample, progress=progress,
        )  # fmt: skip
    return _finish(cache, f"neighbours_{view}", frame, summary, write, command)


def mine_duplicates(
    cache: str | Path,
    *,
    view: str,
    threshold: float,
    pooling: Pooling = "mean",
    max_neighbours: int = 32,
    index_type: IndexType = "auto",
    memory_budget_gb: float = 4.0,
    out: str | Path | None = None,
    write: bool = True,
    command: str = "",
    progress: Any = None,
) -> Mined:
    """Groups of near-duplicate videos of `view` (cosine of pooled unit vectors >= `threshold`):
    CACHE/mined/duplicates_VIEW.parquet with group_id, video_id, similarity (to the group's
    representative) and representative (the one to keep); `out` (.parquet or .csv) also writes it
    there. `vidcache remove --duplicates FILE` keeps one video per group."""
    from ..cache.reader import Cache
    from .duplicates import near_duplicates

    owner = "mine_duplicates"
    check_choice(owner, "pooling", pooling, Pooling)
    check(owner, "threshold", -1.0 <= threshold <= 1.0, "must be a cosine similarity in [-1, 1]", value=threshold)
    check(owner, "max_neighbours", isinstance(max_neighbours, int) and max_neighbours >= 1, "must be >= 1",
          value=max_neighbours)  # fmt: skip
    check_choice(owner, "index_type", index_type, IndexType)
    check(owner, "memory_budget_gb", memory_budget_gb > 0, "must be > 0", value=memory_budget_gb)
    check(owner, "out", out is None or str(out).lower().endswith((".parquet", ".csv")), "must end in .parquet or .csv",
          value=out)  # fmt: skip
    with Cache(cache) as opened:
        frame, summary = near_duplicates(
            opened, view=view, threshold=threshold, pooling=pooling, max_neighbours=max_neighbours,
            index_type=index_type, memory_budget_gb=memory_budget_gb, progress=progress,
        )  # fmt: skip
    mined = _finish(cache, f"duplicates_{view}", frame, summary, write, command)
    if out is not None:
        target = Path(out)
        tmp = target.with_name(target.name + ".tmp")
        frame.to_parquet(tmp, index=False) if target.suffix.lower() == ".parquet" else frame.to_csv(tmp, index=False)
        tmp.replace(target)
    return mined


@dataclass
class IndexResult:
    """A stored index: where it is and how it was chosen (`IndexProvenance`), and the seconds it took."""

    path: Path
    provenance: Any
    seconds: float


def index_view(
    cache: str | Path,
    *,
    view: str = "clip",
    pooling: Pooling = "mean",
    index_type: IndexType = "auto",
    memory_budget_gb: float = 4.0,
) -> IndexResult:
    """Pool each video's rows of `view`, L2-normalise, build and store CACHE/index/VIEW.faiss with its
    provenance (mining then uses it while it matches the cache)."""
    from ..cache.reader import Cache
    from .build import (
        IndexProvenance,
        build_index,
        cache_fingerprint,
        catalog_state,
        choose_index,
        gpu_available,
        save_index,
    )
    from .vectors import video_vectors

    check_choice("index_view", "pooling", pooling, Pooling)
    check_choice("index_view", "index_type", index_type, IndexType)
    check("index_view", "memory_budget_gb", memory_budget_gb > 0, "must be > 0", value=memory_budget_gb)
    started = time.perf_counter()
    with Cache(cache) as opened:
        state = catalog_state(opened, view)  # first: a write after it makes the token stale, never wrong
        fingerprint = cache_fingerprint(opened, view)  # before reading: a later change makes it stale, not wrong
        vectors = video_vectors(opened, view, pooling=pooling)
        choice = choose_index(
            len(vectors), vectors.vectors.shape[1], memory_budget_bytes=memory_budget_gb * 2**30, requested=index_type
        )
        calibration: dict = {}
        built = build_index(vectors.vectors, choice, calibration=calibration)
        provenance = IndexProvenance(
            view=view,
            pooling=pooling,
            index_type=choice.kind,
            factory=choice.factory,
            reason=choice.reason,
            n_vectors=len(vectors),
            dim=int(vectors.vectors.shape[1]),
            fingerprint=fingerprint,
            catalog_state=state,
            view_identity=opened.view_info(view),
            parameters={"memory_budget_gb": memory_budget_gb, "gpu": gpu_available(), **calibration},
        )
        path = save_index(cache, built, vectors, provenance)
    return IndexResult(path, provenance, time.perf_counter() - started)


def load_mined(cache_dir: str | Path, name: str) -> pd.DataFrame:
    """`hard_negatives`, `hard_negative_videos` or `neighbours_<view>` from CACHE/mined/."""
    path = Path(cache_dir) / MINED_DIR / f"{name}.parquet"
    if not path.exists():
        available = sorted(p.stem for p in path.parent.glob("*.parquet")) if path.parent.exists() else []
        raise FileNotFoundError(
            f"{path} does not exist (mined lists here: {', '.join(available) or 'none'}); run `vidcache mine ...`"
        )
    import pandas as pd

    return pd.read_parquet(path)


def mined_matrix(frame: pd.DataFrame, *, queries: list[str], column: str, vocabulary: list[str], k: int) -> np.ndarray:
    """[len(queries), k] int64: row i holds the positions in `vocabulary` of query i's mined items
    (`column` = "label", "negative_id" or "neighbour_id") in rank order, padded with -1.
    `torch.from_numpy` turns it into the tensor a head indexes with."""
    position = {item: i for i, item in enumerate(vocabulary)}
    row_of = {video_id: i for i, video_id in enumerate(queries)}
    out = np.full((len(queries), k), -1, np.int64)
    ordered = frame.sort_values(["video_id", "rank"], kind="stable")
    fill = np.zeros(len(queries), np.int64)
    for video_id, item in zip(ordered["video_id"], ordered[column], strict=True):
        row = row_of.get(video_id)
        if row is None or fill[row] >= k or item not in position:
            continue
        out[row, fill[row]] = position[item]
        fill[row] += 1
    return out


def mined_tensor(frame: pd.DataFrame, *, queries: list[str], column: str, vocabulary: list[str], k: int):
    """`mined_matrix` as a torch LongTensor, for heads that gather embeddings by index."""
    import torch

    return torch.from_numpy(mined_matrix(frame, queries=queries, column=column, vocabulary=vocabulary, k=k))
