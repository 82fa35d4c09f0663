"""Query a cache: text → videos through the CLIP text tower that made the view, video → videos
through the view's index (the stored one when it still matches the cache, else one built now).

Both rank by cosine between unit vectors (the view's rows pooled as the miners pool them), score
descending then video id ascending, exactly as `vidcache.index` ranks.

A text search also says where: each video hit carries the time span (`start_s`, `end_s`) of its
best-matching rows (see `best_span`), and `by="rows"` ranks moments, the view's single rows, instead
of videos (score descending, then video id, then row).

A text query has several usual forms: the text as typed (as clip-retrieval embeds it), the text in
each prompt template of the cache's text.h5, and those templates' ensemble (how text.h5 embeds
labels). `query_form="best"` (the default) scores a video by its best cosine over all of them, so a
video whose rows were made in any of these forms of the same text ranks first; `raw` and `ensemble`
use one form only.

The prompts' raw text-tower embeddings are memoised in the cache (`cache/textmemo.py`, keyed by the view's
identity, the device and precision, the libraries and the query's prompts): a repeated query takes them
from there, bit for bit, and loads no model (nor torch, on a machine without a GPU driver).

>>> hits = search_text("features/", "a dog catching a frisbee", view="clip", k=5)
>>> hits = search_video("features/", "a/clip.mp4", view="clip", k=5)
>>> moments = search_text("features/", "a goal is scored", view="clip", k=5, by="rows")
>>> across = search_video("features/", "a/clip.mp4", view="clip", to_view="video", k=5)

Cross-view neighbours (`to_view`): a video's neighbours ranked in another view's space (the clip
windows of a video model rather than CLIP's frames), each hit also scored in the query's own view.
The two views' spaces differ (their models, often their widths), so no vector of one is compared with
one of the other: the pair of cosines says which neighbours the other view finds that this one does
not (a high `score`, a low `view_score`), the cross-view positives a contrastive head on `view` learns
from (`train --head contrastive --view clip --cross-view-from video`).
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from .cache.reader import Cache
from .errors import ConfigError
from .text_embed import prompt_vectors

__all__ = [
    "SearchHit",
    "best_span",
    "clip_views",
    "search_text",
    "search_texts",
    "search_video",
    "search_videos",
    "text_query_vectors",
]
QueryForm = Literal["best", "ensemble", "raw"]
By = Literal["videos", "rows"]
SPAN_NOISE_COSINE = 0.02  # rows this close to a video's best row match as well as it (frame jitter)


@dataclass(frozen=True)
class SearchHit:
    rank: int  # 1-based
    video_id: str
    score: float  # cosine similarity
    labels: list[str] = field(default_factory=list)
    start_s: float | None = None  # text search: where the best-matching rows start (a row hit: its span)
    end_s: float | None = None  # ... and end (single-frame rows: the last frame's time)
    row: int | None = None  # by="rows": the row's index within its video
    view_score: float | None = None  # search_video(to_view=…): the hit's cosine with the query in `view`

    def as_dict(self) -> dict:
        return asdict(self)


def has_text_tower(identity: dict) -> bool:
    """Whether the model an identity (a view's, or text.h5's attributes) records has a text tower:
    open_clip's, or a transformers video model's (X-CLIP) that says so."""
    if identity.get("backbone") == "open_clip":
        return True
    if identity.get("backbone") == "transformers":
        return bool(identity.get("text_tower")) and bool(identity.get("model"))
    return bool(identity.get("backbone") is None and identity.get("model") and identity.get("weights_sha256"))


def clip_views(cache: Cache) -> list[str]:
    """Views made by a model with a text tower (an open_clip model, or X-CLIP in the `video` view; their
    identity names the model and its weights): the ones a text query can search."""
    return [view for view in cache.views() if has_text_tower(cache.view_info(view))]


def _open(cache: Cache | str | os.PathLike) -> tuple[Cache, bool]:
    return (cache, False) if isinstance(cache, Cache) else (Cache(cache), True)


def _check_k(k: int) -> None:
    if k < 1:
        raise ConfigError(f"--k must be >= 1, got {k}")


def _hits(cache: Cache, ids: list[str], scores: np.ndarray, rows: np.ndarray) -> list[SearchHit]:
    labels = cache.labels_of(ids[row] for row in rows if row >= 0)
    return [
        SearchHit(rank=rank, video_id=ids[row], score=float(score), labels=labels.get(ids[row], []))
        for rank, (score, row) in enumerate(((s, r) for s, r in zip(scores, rows, strict=True) if r >= 0), start=1)
    ]


def best_span(scores: np.ndarray, spans: np.ndarray) -> tuple[float, float]:
    """(start_s, end_s) of the best-matching stretch of one video: the consecutive rows around its
    best row whose scores are at least halfway from the video's lowest row score to its best, or
    within `SPAN_NOISE_COSINE` of the best. Halfway is relative to the video itself, so a segment
    that stands out is found whatever the model's cosine scale; the noise floor keeps a video that
    matches evenly throughout (frame-to-frame jitter only) in one piece, its whole span."""
    best = int(np.argmax(scores))
    top = float(scores[best])
    cut = min((float(scores.min()) + top) / 2, top - SPAN_NOISE_COSINE)
    first = last = best
    while first > 0 and scores[first - 1] >= cut:
        first -= 1
    while last < len(scores) - 1 and scores[last + 1] >= cut:
        last += 1
    return float(spans[first, 0]), float(spans[last, 1])


def _row_scores(rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """[T] cosine of each row with the query, its best over the query's forms (rows normalised in
    float64 as the pooled vectors are)."""
    if not len(rows):
        return np.zeros(0)
    unit = rows.astype(np.float64)
    norms = np.linalg.norm(unit, axis=1, keepdims=True)
    unit /= np.where(norms > 0, norms, 1.0)
    return (unit @ queries.astype(np.float64).T).max(axis=1)


def _with_spans(cache: Cache, view: str, hits: list[SearchHit], queries: np.ndarray) -> list[SearchHit]:
    """Each video hit with the span of its best-matching rows."""
    import dataclasses

    read = cache.read_many([h.video_id for h in hits], view, dtype=np.float32)
    out = []
    for hit, (rows, _) in zip(hits, read, strict=True):
        if not len(rows):
            out.append(hit)
            continue
        start_s, end_s = best_span(_row_scores(rows, queries), cache.spans(hit.video_id, view))
        out.append(dataclasses.replace(hit, start_s=start_s, end_s=end_s))
    return out


def _search_rows(cache: Cache, view: str, queries: np.ndarray, k: int) -> list[SearchHit]:
    """The `k` single rows closest to the query over every video of `view`, by brute force (exact),
    streamed a batch of videos at a time; ties: video id, then row."""
    if cache.view_info(view).get("row_shape"):
        raise ConfigError(f"--view {view!r} holds fields, not embeddings; search an embedding view")
    ids = sorted(cache.video_ids(view))
    best: list[tuple[float, str, int]] = []
    for batch in cache.iter_batches(view, video_ids=ids, dtype=np.float32, batch_size=256):
        for video_id, rows in zip(batch.video_ids, batch.features, strict=True):
            if len(rows) and rows.shape[1] != queries.shape[1]:
                raise ConfigError(f"--view {view!r} has dimension {rows.shape[1]}, its text tower {queries.shape[1]}")
            scores = _row_scores(rows, queries)
            keep = np.argsort(-scores, kind="stable")[:k]  # a video's rows beyond its own top k cannot rank
            best.extend((float(scores[r]), video_id, int(r)) for r in keep)
        best = sorted(best, key=lambda item: (-item[0], item[1], item[2]))[:k]
    labels = {row.video_id: list(row.labels) for row in cache.entries().itertuples()}
    hits = []
    for rank, (score, video_id, row) in enumerate(best, start=1):
        start_s, end_s = cache.spans(video_id, view)[row]
        hits.append(SearchHit(rank, video_id, score, labels.get(video_id, []), float(start_s), float(end_s), row))
    return hits


def _stored_text(cache: Cache):
    try:
        return cache.text_embeddings()
    except (KeyError, ValueError):
        return None


def _text_identity(cache: Cache, view: str, stored) -> dict:
    """The CLIP model a text query of `view` goes through: the one the view's identity records, else
    (a view imported or written from arrays) the one that made the cache's text.h5."""
    allowed = clip_views(cache)
    if view in allowed:
        return cache.view_info(view)
    if view not in cache.views():
        raise ConfigError(f"--view {view!r} is not in cache {cache.path}; choose from: {', '.join(cache.views())}")
    recorded = stored.attrs if stored is not None else {}
    attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in recorded.items()}
    if attrs.get("backbone") in ("open_clip", "transformers") and attrs.get("model") and has_text_tower(attrs):
        return attrs
    raise ConfigError(
        f"--view {view!r} cannot be searched by text: it is not a CLIP view of {cache.path} and the cache's "
        f"text.h5 names no CLIP model; choose from: {', '.join(allowed) or 'none (extract the clip view first)'}"
    )


def text_query_vectors(
    cache: Cache,
    text: str,
    *,
    view: str,
    query_form: str = "best",
    templates: list[str] | None = None,
    device: str = "auto",
    allow_download: bool = False,
) -> np.ndarray:
    """Unit text embeddings [F, D] of `text` by the view's CLIP model, one per query form: `raw`
    (the text as typed), `ensemble` (the mean over `templates`, default those of the cache's text.h5,
    so a query equal to a label gets that label's stored embedding) or `best` (raw, each template,
    and the ensemble)."""
    from .cache.text import DEFAULT_TEMPLATES
    from .config import check_choice

    check_choice("--query-form", query_form, QueryForm)
    if not text.strip():
        raise ConfigError("--text must not be empty")
    stored = _stored_text(cache)
    identity = _text_identity(cache, view, stored)
    if templates is None:
        templates = list(stored.templates) if stored is not None else list(DEFAULT_TEMPLATES)
    for template in templates:
        if "{}" not in template:
            raise ConfigError(f"--template {template!r} has no {{}} where the text goes")
    identity_json = json.dumps(identity, sort_keys=True, default=str)
    prompts = [template.format(text) for template in ["{}", *templates]]  # as prompt_embeddings makes them
    per_prompt = prompt_vectors(cache, identity, identity_json, prompts, device=device, allow_download=allow_download)
    unit = per_prompt / np.linalg.norm(per_prompt, axis=-1, keepdims=True).clip(1e-12)
    raw, prompted = unit[0], unit[1:]
    mean = prompted.mean(axis=0)
    ensemble = mean / max(float(np.linalg.norm(mean)), 1e-12)  # as prompt_embeddings makes text.h5's
    forms = {"raw": [raw], "ensemble": [ensemble], "best": [raw, *prompted, ensemble]}[query_form]
    return np.stack(forms).astype(np.float32)


def search_text(
    cache: Cache | str | os.PathLike,
    text: str,
    *,
    view: str = "clip",
    k: int = 10,
    pooling: str = "mean",
    query_form: str = "best",
    templates: list[str] | None = None,
    device: str = "auto",
    allow_download: bool = False,
    index_type: str = "auto",
    memory_budget_gb: float = 4.0,
    by: str = "videos",
) -> list[SearchHit]:
    """The `k` videos of `view` closest to `text`: each video scored by its best cosine over the
    query's forms (see `text_query_vectors`), with the span of its best-matching rows; `by="rows"`:
    the `k` closest single rows (moments), each with its own span."""
    return search_texts(
        cache,
        [text],
        view=view,
        k=k,
        pooling=pooling,
        query_form=query_form,
        templates=templates,
        device=device,
        allow_download=allow_download,
        index_type=index_type,
        memory_budget_gb=memory_budget_gb,
        by=by,
    )[0]


def search_texts(
    cache: Cache | str | os.PathLike,
    texts: list[str],
    *,
    view: str = "clip",
    k: int = 10,
    pooling: str = "mean",
    query_form: str = "best",
    templates: list[str] | None = None,
    device: str = "auto",
    allow_download: bool = False,
    index_type: str = "auto",
    memory_budget_gb: float = 4.0,
    by: str = "videos",
) -> list[list[SearchHit]]:
    """`search_text` for each of `texts`, in one process and one pass: the text tower is built once,
    the index (or the vectors of an exact scan) loaded once and every query's forms searched together.
    A new query costs the model's forward pass, not the seconds of loading torch and the model."""
    from .config import check_choice

    _check_k(k)
    check_choice("--by", by, By)
    cache, opened = _open(cache)
    try:
        per_text = [
            text_query_vectors(
                cache,
                text,
                view=view,
                query_form=query_form,
                templates=templates,
                device=device,
                allow_download=allow_download,
            )
            for text in texts
        ]
        if by == "rows":
            return [_search_rows(cache, view, queries, k) for queries in per_text]
        from .index.mining import video_searcher

        searcher = video_searcher(
            cache, view, pooling=pooling, index_type=index_type, memory_budget_gb=memory_budget_gb, few_queries=True
        )
        return _text_hits(cache, view, searcher, per_text, k)
    finally:
        if opened:
            cache.close()


def _text_hits(cache: Cache, view: str, searcher, per_text: list[np.ndarray], k: int) -> list[list[SearchHit]]:
    """Each text's `k` videos: all texts' forms searched in one call, each video scored by its best form
    (a video in the top k by its best form is in that form's own top k: the per-form lists are merged)."""
    from .index import knn

    data = searcher.vectors.vectors
    if per_text and data.shape[1] != per_text[0].shape[1]:
        raise ConfigError(f"--view {view!r} has dimension {data.shape[1]}, its text tower {per_text[0].shape[1]}")
    found, found_rows = knn.search(searcher.index, np.concatenate(per_text), data, k, exact=searcher.exact)
    out, first = [], 0
    for queries in per_text:
        best: dict[int, float] = {}
        rows_of_text = slice(first, first + len(queries))
        for score, row in zip(found[rows_of_text].ravel(), found_rows[rows_of_text].ravel(), strict=True):
            if row >= 0 and score > best.get(int(row), -np.inf):
                best[int(row)] = float(score)
        first += len(queries)
        ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))[:k]
        scores, rows = np.array([s for _, s in ranked]), np.array([r for r, _ in ranked], np.int64)
        out.append(_with_spans(cache, view, _hits(cache, searcher.vectors.video_ids, scores, rows), queries))
    return out


def _view_scores(
    cache: Cache, view: str, video_ids: list[str], hits: list[list[SearchHit]], pooling: str
) -> list[list[SearchHit]]:
    """Each query's hits with their cosine to the query video in `view` (pooled and normalised as the
    index's vectors; one read for every query); None where either video has no rows of `view`."""
    import dataclasses

    from .index.vectors import video_vectors

    have = set(cache.video_ids(view))
    wanted = sorted({*video_ids, *(h.video_id for found in hits for h in found)} & have)
    if not wanted:
        return hits
    vectors = video_vectors(cache, view, pooling=pooling, video_ids=wanted)
    unit = dict(zip(vectors.video_ids, vectors.vectors, strict=True))
    out = []
    for video_id, found in zip(video_ids, hits, strict=True):
        if video_id not in unit:
            out.append(found)
            continue
        query = unit[video_id].astype(np.float64)
        out.append(
            [
                dataclasses.replace(h, view_score=float(unit[h.video_id].astype(np.float64) @ query))
                if h.video_id in unit
                else h
                for h in found
            ]
        )
    return out


def search_video(
    cache: Cache | str | os.PathLike,
    video_id: str,
    *,
    view: str = "clip",
    to_view: str | None = None,
    k: int = 10,
    pooling: str = "mean",
    index_type: str = "auto",
    memory_budget_gb: float = 4.0,
) -> list[SearchHit]:
    """The `k` videos of `view` closest to `video_id` (never itself). With `to_view`: its `k` nearest
    videos in `to_view`'s space (cross-view neighbours), each with its cosine in `view` as `view_score`."""
    return search_videos(
        cache,
        [video_id],
        view=view,
        to_view=to_view,
        k=k,
        pooling=pooling,
        index_type=index_type,
        memory_budget_gb=memory_budget_gb,
    )[0]


def search_videos(
    cache: Cache | str | os.PathLike,
    video_ids: list[str],
    *,
    view: str = "clip",
    to_view: str | None = None,
    k: int = 10,
    pooling: str = "mean",
    index_type: str = "auto",
    memory_budget_gb: float = 4.0,
) -> list[list[SearchHit]]:
    """`search_video` for each of `video_ids`, the index (or the vectors of an exact scan) loaded once
    and every query searched in one call."""
    from .index import knn
    from .index.mining import video_searcher

    _check_k(k)
    cache, opened = _open(cache)
    try:
        for option, name in (("--view", view), ("--to-view", to_view)):
            if name is not None and name not in cache.views():
                raise ConfigError(
                    f"{option} {name!r} is not in cache {cache.path}; choose from: {', '.join(cache.views())}"
                )
        ranked_in = to_view or view
        searcher = video_searcher(
            cache,
            ranked_in,
            pooling=pooling,
            index_type=index_type,
            memory_budget_gb=memory_budget_gb,
            few_queries=True,
        )
        ids = searcher.vectors.video_ids
        rows = np.array([_row_of(cache, ids, video_id, ranked_in) for video_id in video_ids], np.int64)
        data = searcher.vectors.vectors
        scores, found = knn.search(
            searcher.index,
            np.asarray(data[rows]),
            data,
            k,
            exclude=lambda query_row, candidates: candidates == query_row,
            query_rows=rows,
            exact=searcher.exact,
        )
        out = [
            _hits(cache, ids, video_scores, video_rows) for video_scores, video_rows in zip(scores, found, strict=True)
        ]
        return _view_scores(cache, view, video_ids, out, pooling) if to_view and to_view != view else out
    finally:
        if opened:
            cache.close()


def _row_of(cache: Cache, ids: list[str], video_id: str, view: str) -> int:
    """`video_id`'s row among the searcher's ids, sorted (`VideoVectors`): a bisection, not a scan per query."""
    row = bisect.bisect_left(ids, video_id)
    if row < len(ids) and ids[row] == video_id:
        return row
    raise ConfigError(
        f"--video {video_id!r} has no extracted {view!r} rows in {cache.path} "
        f"(e.g. {', '.join(ids[:3])}{', …' if len(ids) > 3 else ''})"
    )
