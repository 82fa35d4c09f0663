"""Mined lists the heads read: hard-negative labels, hard-negative videos, cross-view neighbours.

Every ranking orders by (score descending, then label / video row ascending), with scores computed
in float64 from the float32 unit vectors, so an independent NumPy brute force gives the same rows.
Ranks are 1-based (rank 1 = the hardest negative / nearest neighbour). Outputs go to
`CACHE/mined/NAME.parquet`, with `NAME.json` saying what made them.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..cache.reader import Cache
from ..config import check_choice
from ..errors import ConfigError
from ..version import __version__
from . import knn
from .build import build_index, cache_fingerprint, choose_index, load_index
from .ivfjoin import Exclusions, exact_topk, ivf_join_topk, ivf_of
from .vectors import VideoVectors, check_embedding_view, iter_unit_means, normalise, video_vectors

if TYPE_CHECKING:  # pandas costs 0.6 s to import: only the functions that build frames load it
    import pandas as pd

log = logging.getLogger("vidcache.index")
MINED_DIR = "mined"
Sampling = Literal["top", "random"]
Progress = Callable[[int], None]


@dataclass
class MiningSummary:
    name: str
    output: str
    videos: int
    rows: int
    k: int
    view: str
    index_type: str
    exact: bool
    recall_at_k: float | None = None
    recall_sample: int = 0
    short_lists: int = 0  # videos with fewer than k results (small corpus, exclusions, margins)
    seconds: float = 0.0
    parameters: dict = field(default_factory=dict)


# text side ---------------------------------------------------------------------------------------
def label_embeddings(
    cache: Cache, *, label_corpus: str | None = None, text_embeddings: str | None = None
) -> tuple[list[str], np.ndarray]:
    """Labels and unit text embeddings: the cache's text.h5, a labels file looked up in it, or an
    `.npy` [L, D] aligned with the labels file (another text encoder, another prompt ensemble)."""
    from ..cache.text import read_labels_file, stale_text_message

    if text_embeddings is not None:
        if label_corpus is None:
            raise ConfigError("--text-embeddings needs --label-corpus FILE (one label per line, in the .npy's order)")
        labels = read_labels_file(label_corpus)
        matrix = np.load(text_embeddings, allow_pickle=False)
        if matrix.ndim != 2 or len(matrix) != len(labels):
            raise ConfigError(
                f"--text-embeddings {text_embeddings} has shape {matrix.shape}; expected [{len(labels)}, D] "
                f"aligned with the {len(labels)} labels of {label_corpus}"
            )
        return labels, normalise(matrix)
    vocabulary = sorted({label for labels in cache.entries()["labels"] for label in labels})
    stale = stale_text_message(cache.path, vocabulary)
    if stale is not None:  # hard negatives against an old vocabulary would include today's own labels
        raise ConfigError(stale)
    try:
        text = cache.text_embeddings()
    except KeyError:
        raise ConfigError(
            f"cache {cache.path} has no text embeddings; run `vidcache embed-text --cache {cache.path}` "
            "(add --labels-file FILE for a larger label corpus) or pass --text-embeddings X.npy --label-corpus FILE"
        ) from None
    stored = {label: i for i, label in enumerate(text.labels)}
    if label_corpus is None:
        return list(text.labels), normalise(text.embeddings)
    labels = read_labels_file(label_corpus)
    missing = [label for label in labels if label not in stored]
    if missing:
        raise ConfigError(
            f"{len(missing)} label(s) of {label_corpus} (e.g. {missing[0]!r}) have no text embedding in "
            f"{cache.path}/text.h5; run `vidcache embed-text --cache {cache.path} --labels-file {label_corpus}`"
        )
    return labels, normalise(text.embeddings[[stored[label] for label in labels]])


def _labels_by_video(cache: Cache) -> dict[str, list[str]]:
    columns = cache.entry_columns()  # plain columns: a DataFrame of a million label lists cost seconds
    return dict(zip(columns["video_id"], columns["labels"], strict=True))


# hard-negative labels ----------------------------------------------------------------------------
def hard_negative_labels(
    cache: Cache,
    *,
    k: int,
    view: str = "clip",
    pooling: str = "mean",
    label_corpus: str | None = None,
    text_embeddings: str | None = None,
    range_min: int = 0,
    range_max: int | None = None,
    margin: float | None = None,
    relative_margin: float | None = None,
    sampling: str = "top",
    seed: int = 0,
    block_videos: int = 4096,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, MiningSummary]:
    """Per video: its label-corpus entries ranked by cosine with the video, its own labels removed,
    then (optionally) those scoring too close to its best own label removed (`margin`: keep
    score < s_pos − margin; `relative_margin`: keep score < relative_margin · s_pos), then ranks
    [range_min, range_max) of what is left; the first k (`top`) or k drawn at random (`random`,
    seeded per video). A video with none of its labels in the corpus gets no margin filtering."""
    check_choice("--sampling", sampling, Sampling)
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    if margin is not None and relative_margin is not None:
        raise ConfigError("give --margin or --relative-margin, not both")
    if range_min < 0 or (range_max is not None and range_max <= range_min):
        raise ConfigError(f"--range-min {range_min} / --range-max {range_max}: need 0 <= R0 < R1")
    started = time.perf_counter()
    labels, text = label_embeddings(cache, label_corpus=label_corpus, text_embeddings=text_embeddings)
    ids_sorted, blocks = _unit_vector_blocks(cache, view, pooling)
    label_index = {label: i for i, label in enumerate(labels)}
    own = _labels_by_video(cache)
    text64 = text.astype(np.float64)
    picks: list[tuple[np.ndarray, ...]] = []
    short = 0
    block_videos = max(1, min(block_videos, _RANK_BLOCK_VALUES // max(1, len(labels))))
    for block_ids, block_vectors, positions in blocks:
        if text.shape[1] != block_vectors.shape[1]:
            raise ConfigError(
                f"text embeddings have dimension {text.shape[1]} but view {view!r} has {block_vectors.shape[1]}; "
                "mine labels with the CLIP view whose model made the text embeddings"
            )
        for start in range(0, len(block_ids), block_videos):
            ids = block_ids[start : start + block_videos]
            scores = block_vectors[start : start + len(ids)].astype(np.float64) @ text64.T
            positive = _positives(ids, own, label_index, len(labels))
            order, count = _rank_labels(scores, positive, margin=margin, relative_margin=relative_margin)
            rows, ranks, chosen = _pick_ranks(
                order, count, ids, k=k, range_min=range_min, range_max=range_max, sampling=sampling, seed=seed
            )
            short += int(np.count_nonzero(np.bincount(rows, minlength=len(ids)) < k))
            picks.append((positions[start + rows], ranks, chosen, scores[rows, chosen]))
            if progress is not None:
                progress(len(ids))
    video_rows, ranks, chosen, chosen_scores = (
        np.concatenate([block[i] for block in picks]) if picks else np.zeros(0, int) for i in range(4)
    )
    in_order = np.argsort(video_rows, kind="stable")  # by video id, each video's picks in rank order
    columns = {
        "video_id": np.asarray(ids_sorted, dtype=object)[video_rows[in_order]],
        "rank": ranks[in_order],
        "label": np.asarray(labels, dtype=object)[chosen[in_order]],
        "score": chosen_scores[in_order],
    }
    import pandas as pd

    frame = pd.DataFrame(columns).astype({"rank": "int64", "score": "float64"})
    summary = MiningSummary(
        name="hard_negatives",
        output="",
        videos=len(ids_sorted),
        rows=len(frame),
        k=k,
        view=view,
        index_type="exact (dense scores against every label)",
        exact=True,
        short_lists=short,
        seconds=time.perf_counter() - started,
        parameters={
            "pooling": pooling,
            "label_corpus": label_corpus,
            "text_embeddings": text_embeddings,
            "n_labels": len(labels),
            "range_min": range_min,
            "range_max": range_max,
            "margin": margin,
            "relative_margin": relative_margin,
            "sampling": sampling,
            "seed": seed,
        },
    )
    return frame, summary


def _unit_vector_blocks(
    cache: Cache, view: str, pooling: str
) -> tuple[list[str], Iterator[tuple[list[str], np.ndarray, np.ndarray]]]:
    """(every video id of `view`, sorted; blocks of (ids, their unit vectors, their positions in that
    list)). Mean pooling streams the shards' stored means one shard at a time (1M videos × 512 would be
    2 GB at once); other poolings pool every video first, as `video_vectors` does."""
    if pooling != "mean":
        vectors = video_vectors(cache, view, pooling=pooling)
        return vectors.video_ids, iter([(vectors.video_ids, vectors.vectors, np.arange(len(vectors)))])
    check_embedding_view(cache, view)
    ids_sorted = sorted(cache.video_ids(view))
    if not ids_sorted:
        raise ConfigError(f"cache {cache.path} has no extracted {view!r} rows to index")
    where = {video_id: i for i, video_id in enumerate(ids_sorted)}  # 1M ids: ~0.1 s, ~80 MB

    def blocks() -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
        for ids, unit in iter_unit_means(cache, view):
            yield ids, unit, np.fromiter((where[video_id] for video_id in ids), np.int64, len(ids))

    return ids_sorted, blocks()


_RANK_BLOCK_VALUES = 1 << 23  # scores ranked per block (videos × labels): ~200 MB of float64 and int64 at most


def _positives(ids: list[str], own: dict[str, list[str]], label_index: dict[str, int], n_labels: int) -> np.ndarray:
    """[len(ids), n_labels] bool: each video's own labels that are in the label corpus."""
    positive = np.zeros((len(ids), n_labels), bool)
    for row, video_id in enumerate(ids):
        for label in own.get(video_id, ()):
            column = label_index.get(label)
            if column is not None:
                positive[row, column] = True
    return positive


def _rank_labels(
    scores: np.ndarray, positive: np.ndarray, *, margin: float | None, relative_margin: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(order, count): per video the label columns by (score descending, column ascending), the kept ones
    (not its own, and below the margin of its best own label where it has one and a margin is asked)
    first; `count` of them kept."""
    keep = ~positive
    if margin is not None or relative_margin is not None:
        has_own = positive.any(axis=1)
        s_pos = np.where(positive, scores, 0.0).max(axis=1, initial=-np.inf, where=positive)
        s_pos[~has_own] = 0.0  # no own label in the corpus: no margin filtering (masked below)
        # relative: RM·s_pos for s_pos > 0, generalised so the limit never exceeds s_pos
        limit = s_pos - margin if margin is not None else s_pos - (1 - relative_margin) * np.abs(s_pos)  # type: ignore[operator]
        keep &= (scores < limit[:, None]) | ~has_own[:, None]
    # a stable sort of −score keeps equal scores in column order; dropped columns (+inf) go last
    order = np.argsort(np.where(keep, -scores, np.inf), axis=1, kind="stable")
    return order, keep.sum(axis=1)


def _pick_ranks(
    order: np.ndarray, count: np.ndarray, ids: list[str], *, k: int, range_min: int, range_max: int | None,
    sampling: str, seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(block rows, 1-based ranks, label columns) of the picks: ranks [range_min, range_max) of each video's
    kept labels, the first k (`top`) or k of them drawn with a generator seeded by the video (`random`)."""
    end = np.minimum(count, count.dtype.type(len(order[0]) if range_max is None else range_max))
    window = np.maximum(end - range_min, 0)
    if sampling == "random":
        drawn = [
            (row, range_min + np.sort(np.random.default_rng([seed, zlib.crc32(ids[row].encode())]).choice(
                int(window[row]), k, replace=False)))
            for row in np.flatnonzero(window > k)
        ]  # fmt: skip
    else:
        drawn = []
    taken = np.minimum(window, k)
    taken[[row for row, _ in drawn]] = 0  # the drawn videos are added below
    rows = np.repeat(np.arange(len(order)), taken)
    positions = range_min + np.arange(len(rows)) - np.repeat(np.cumsum(taken) - taken, taken)
    if drawn:
        rows = np.concatenate([rows, *(np.full(k, row) for row, _ in drawn)])
        positions = np.concatenate([positions, *(picked for _, picked in drawn)])
        by_video = np.argsort(rows, kind="stable")  # every video's picks together, in rank order
        rows, positions = rows[by_video], positions[by_video]
    return rows, positions + 1, order[rows, positions]


# video neighbours --------------------------------------------------------------------------------
@dataclass
class VideoSearcher:
    index: object
    vectors: VideoVectors
    index_type: str
    exact: bool


def video_searcher(
    cache: Cache, view: str, *, pooling: str, index_type: str, memory_budget_gb: float, few_queries: bool = False
) -> VideoSearcher:
    """A stored index that still matches the cache, else one built in memory now; with `few_queries`
    (a search, not a self-join) and `auto`, an exact scan of the vectors instead of a build."""
    stored = load_index(cache, view, pooling=pooling) if index_type == "auto" else None
    if stored is not None:
        index, vectors, meta = stored
        log.info("using the stored %s index of view %s", meta["index_type"], view)
        return VideoSearcher(index, vectors, meta["index_type"], meta["index_type"] == "flat")
    vectors = video_vectors(cache, view, pooling=pooling)
    if few_queries and index_type == "auto":  # a build costs more than the scans it would save
        log.info("no stored index of view %s matches the cache: exact scan (`vidcache index build` stores one)", view)
        return VideoSearcher(knn.ScanIndex(vectors.vectors), vectors, "flat", True)
    choice = choose_index(
        len(vectors), vectors.vectors.shape[1], memory_budget_bytes=memory_budget_gb * 2**30, requested=index_type
    )
    return VideoSearcher(build_index(vectors.vectors, choice), vectors, choice.kind, choice.kind == "flat")


def _group_of(video_id: str) -> str:
    return video_id.rsplit("/", 1)[0] if "/" in video_id else ""


def nearest_videos(
    cache: Cache,
    *,
    k: int,
    view: str,
    pooling: str = "mean",
    exclude_shared_labels: bool = False,
    exclude_same_group: bool = False,
    index_type: str = "auto",
    memory_budget_gb: float = 4.0,
    min_recall: float = 0.9,
    recall_sample: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, MiningSummary]:
    """Each video's k nearest other videos in `view` (never itself); optionally only videos that
    share no label with it (hard-negative videos) and not from its group (its folder in video_id)."""
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")
    started = time.perf_counter()
    fingerprint = cache_fingerprint(cache, view)
    searcher = video_searcher(cache, view, pooling=pooling, index_type=index_type, memory_budget_gb=memory_budget_gb)
    vectors = searcher.vectors
    ids = vectors.video_ids
    label_sets = [set()] * len(ids)
    if exclude_shared_labels:
        own = _labels_by_video(cache)
        label_sets = [set(own.get(v, [])) for v in ids]
    groups = [_group_of(v) for v in ids] if exclude_same_group else None

    def exclude(query_row: int, rows: np.ndarray) -> np.ndarray:
        out = rows == query_row
        if exclude_shared_labels and label_sets[query_row]:
            mine = label_sets[query_row]
            out |= np.fromiter((bool(mine & label_sets[r]) for r in rows), bool, len(rows))
        if groups is not None:
            out |= np.fromiter((groups[r] == groups[query_row] for r in rows), bool, len(rows))
        return out

    data = vectors.vectors
    rows_all = np.arange(len(ids))
    exclusions = Exclusions.of(
        [sorted(s) for s in label_sets] if exclude_shared_labels else None, groups if exclude_same_group else None
    )
    ivf = None if searcher.exact else ivf_of(searcher.index)
    if ivf is not None:  # every video a query: the IVF lists as a self-join (ivfjoin.py), not a search per video
        scores, rows = ivf_join_topk(ivf, data, k, nprobe=ivf.nprobe, exclusions=exclusions, progress=progress)
    else:
        # PQ codes rank coarsely: re-ranking 10k candidates on the exact vectors lifts recall@10 from 0.41 to
        # 0.94 at 200k (benchmarks/bench_index.py); the other kinds gain nothing from more
        slack = max(8, 10 * k) if searcher.index_type == "ivfpq" else 8
        scores, rows = knn.search(
            searcher.index,
            data,
            data,
            k,
            exclude=exclude,
            query_rows=rows_all,
            exact=searcher.exact,
            slack=slack,
            progress=progress,
        )
    recall = None
    sample_n = 0
    if not searcher.exact:
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(len(ids), min(recall_sample, len(ids)), replace=False))
        _, exact_rows = exact_topk(data, sample, k, exclusions=exclusions)  # no copy of the vectors
        recall = knn.recall_at_k(rows[sample], exact_rows)
        sample_n = len(sample)
        if recall < min_recall:
            log.warning(
                "recall@%d of the %s index is %.3f on %d sampled queries, below --min-recall %.3f; "
                "use --index-type flat or a larger --memory-budget-gb",
                k,
                searcher.index_type,
                recall,
                sample_n,
                min_recall,
            )
    valid = rows >= 0
    query_index = np.repeat(rows_all, k).reshape(len(ids), k)
    import pandas as pd

    frame = pd.DataFrame(
        {
            "video_id": np.array(ids, dtype=object)[query_index[valid]],
            "rank": np.tile(np.arange(1, k + 1), (len(ids), 1))[valid],
            "neighbour_id": np.array(ids, dtype=object)[rows[valid]],
            "score": scores[valid],
        }
    )
    summary = MiningSummary(
        name="",
        output="",
        videos=len(ids),
        rows=len(frame),
        k=k,
        view=view,
        index_type=searcher.index_type,
        exact=searcher.exact,
        recall_at_k=recall,
        recall_sample=sample_n,
        short_lists=int((~valid).any(axis=1).sum()),
        seconds=time.perf_counter() - started,
        parameters={
            "pooling": pooling,
            "exclude_shared_labels": exclude_shared_labels,
            "exclude_same_group": exclude_same_group,
            "fingerprint": fingerprint,
        },
    )
    return frame, summary


# output ------------------------------------------------------------------------------------------
def labels_digest(cache_dir: str | Path) -> str:
    """sha256 of every cached video's labels (as the catalog holds the manifest now): mined lists
    record it, so a list mined before the labels changed is noticed (`vidcache train`)."""
    import hashlib

    from ..cache.catalog import Catalog

    catalog = Catalog.open(cache_dir)
    try:
        columns = catalog.entry_columns()  # a sorted copy per distinct label set, not per video
        ordered = {labels: sorted(labels) for labels in set(columns["labels"])}
        pairs = sorted(zip(columns["video_id"], (ordered[labels] for labels in columns["labels"]), strict=True))
    finally:
        catalog.close()
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def write_mined(cache_dir: str | Path, name: str, frame: pd.DataFrame, summary: MiningSummary, *, command: str) -> Path:
    """CACHE/mined/NAME.parquet and NAME.json (what made it: the command, the labels' digest), each
    written atomically."""
    directory = Path(cache_dir) / MINED_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.parquet"
    summary.name, summary.output = name, str(path)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    meta = {
        **asdict(summary),
        "command": command,
        "vidcache_version": __version__,
        "labels_sha256": labels_digest(cache_dir),
    }
    meta_tmp = directory / f"{name}.json.tmp"
    meta_tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    meta_tmp.replace(directory / f"{name}.json")
    return path
