"""Query a cache: text → videos through the CLIP text tower that made the view, video → videos
through the view's index (the stored one when it still matches the cache, else one built now).

Both rank by cosine between unit vectors (the view's rows pooled as the miners pool them), score
descending then video id ascending, exactly as `vidcache.index` ranks.

>>> hits = search_text("features/", "a dog catching a frisbee", view="clip", k=5)
>>> hits = search_video("features/", "a/clip.mp4", view="clip", k=5)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from .cache.reader import Cache
from .errors import ConfigError

__all__ = ["SearchHit", "clip_views", "search_text", "search_video"]


@dataclass(frozen=True)
class SearchHit:
    rank: int  # 1-based
    video_id: str
    score: float  # cosine similarity
    labels: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def clip_views(cache: Cache) -> list[str]:
    """Views made by an open_clip model: the ones a text query can search."""
    return [view for view in cache.views() if cache.view_info(view).get("backbone") == "open_clip"]


def _open(cache: Cache | str | os.PathLike) -> tuple[Cache, bool]:
    return (cache, False) if isinstance(cache, Cache) else (Cache(cache), True)


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")


def _hits(cache: Cache, ids: list[str], scores: np.ndarray, rows: np.ndarray) -> list[SearchHit]:
    labels = {row.video_id: list(row.labels) for row in cache.entries().itertuples()}
    return [
        SearchHit(rank=rank, video_id=ids[row], score=float(score), labels=labels.get(ids[row], []))
        for rank, (score, row) in enumerate(((s, r) for s, r in zip(scores, rows, strict=True) if r >= 0), start=1)
    ]


def text_query_vector(
    cache: Cache,
    text: str,
    *,
    view: str,
    templates: list[str] | None = None,
    device: str = "auto",
    allow_download: bool = False,
) -> np.ndarray:
    """The unit text embedding of `text` by the view's CLIP model, ensembled over `templates`
    (default: those of the cache's text.h5, so a query equal to a label gets that label's stored
    embedding; "{}" alone embeds the text as it is)."""
    from .extract.device import resolve_device
    from .extract.text import DEFAULT_TEMPLATES, clip_for_identity, prompt_embeddings

    if not text.strip():
        raise ConfigError("--text must not be empty")
    allowed = clip_views(cache)
    if view not in allowed:
        raise ConfigError(
            f"--view {view!r} cannot be searched by text: it is not a CLIP view of {cache.path}; "
            f"choose from: {', '.join(allowed) or 'none (extract the clip view first)'}"
        )
    if templates is None:
        try:
            templates = list(cache.text_embeddings().templates)
        except (KeyError, ValueError):
            templates = list(DEFAULT_TEMPLATES)
    for template in templates:
        if "{}" not in template:
            raise ConfigError(f"--template {template!r} has no {{}} where the text goes")
    encoder = clip_for_identity(
        cache.view_info(view), device=resolve_device(device), allow_download=allow_download, cache_dir=cache.path
    )
    _, unit = prompt_embeddings(encoder.encode_text, [text], list(templates))
    return unit[0].astype(np.float32)


def search_text(
    cache: Cache | str | os.PathLike,
    text: str,
    *,
    view: str = "clip",
    k: int = 10,
    pooling: str = "mean",
    templates: list[str] | None = None,
    device: str = "auto",
    allow_download: bool = False,
    index_type: str = "auto",
    memory_budget_gb: float = 4.0,
) -> list[SearchHit]:
    """The `k` videos of `view` closest to `text` (see `text_query_vector`)."""
    from .index import knn
    from .index.mining import video_searcher

    _check_k(k)
    cache, opened = _open(cache)
    try:
        query = text_query_vector(
            cache, text, view=view, templates=templates, device=device, allow_download=allow_download
        )
        searcher = video_searcher(
            cache, view, pooling=pooling, index_type=index_type, memory_budget_gb=memory_budget_gb
        )
        data = searcher.vectors.vectors
        if data.shape[1] != len(query):
            raise ConfigError(f"--view {view!r} has dimension {data.shape[1]}, its text tower {len(query)}")
        scores, rows = knn.search(searcher.index, query[None], data, k, exact=searcher.exact)
        return _hits(cache, searcher.vectors.video_ids, scores[0], rows[0])
    finally:
        if opened:
            cache.close()


def search_video(
    cache: Cache | str | os.PathLike,
    video_id: str,
    *,
    view: str = "clip",
    k: int = 10,
    pooling: str = "mean",
    index_type: str = "auto",
    memory_budget_gb: float = 4.0,
) -> list[SearchHit]:
    """The `k` videos of `view` closest to `video_id` (never itself)."""
    from .index import knn
    from .index.mining import video_searcher

    _check_k(k)
    cache, opened = _open(cache)
    try:
        if view not in cache.views():
            raise ConfigError(f"--view {view!r} is not in cache {cache.path}; choose from: {', '.join(cache.views())}")
        searcher = video_searcher(
            cache, view, pooling=pooling, index_type=index_type, memory_budget_gb=memory_budget_gb
        )
        ids = searcher.vectors.video_ids
        row = {v: i for i, v in enumerate(ids)}.get(video_id)
        if row is None:
            raise ConfigError(
                f"--video {video_id!r} has no extracted {view!r} rows in {cache.path} "
                f"(e.g. {', '.join(ids[:3])}{', …' if len(ids) > 3 else ''})"
            )
        data = searcher.vectors.vectors
        scores, rows = knn.search(
            searcher.index,
            data[row : row + 1],
            data,
            k,
            exclude=lambda query_row, rows: rows == query_row,
            query_rows=np.array([row]),
            exact=searcher.exact,
        )
        return _hits(cache, ids, scores[0], rows[0])
    finally:
        if opened:
            cache.close()
