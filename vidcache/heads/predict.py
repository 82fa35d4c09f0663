"""`eval` and `predict` from a run directory: the best checkpoint, its classes and thresholds, and
checks that the cache still holds the features the head was trained on. `write_embeddings` stores a
head's video embeddings back into the cache as a new view, so they can be indexed and mined again."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..cache.reader import Cache
from ..device import resolve_device
from ..errors import ConfigError
from ..fields import check_choice
from .checkpoint import load_checkpoint
from .config import Items, TrainConfig
from .context import HeadContext
from .data import TEST, TRAIN, Splits, SplitSource, make_splits, multi_hot
from .metrics import evaluate, retrieval_recall_at_k
from .train import build_head, predict_scores

_IGNORED = ("weights_path", "imported_from")  # moved files with the same content are the same features


@dataclass
class LoadedRun:
    run_dir: Path
    config: TrainConfig
    resolved: dict
    model: torch.nn.Module
    vocabulary: list[str]
    thresholds: np.ndarray
    multi_label: bool


def load_run(run_dir: str | Path, *, device: torch.device) -> LoadedRun:
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() or not (run_dir / "best.safetensors").exists():
        raise ConfigError(f"{run_dir} is not a finished training run (no config.json / best.safetensors)")
    resolved = json.loads((run_dir / "config.json").read_text())
    if "finetune_config" in resolved:  # its head scores the fine-tuned tower's features, not the cached view's
        backbone = run_dir / "backbone.safetensors"
        if not backbone.exists():  # fine-tuning did not improve on the base weights: nothing was exported
            raise ConfigError(
                f"{run_dir} is a `vidcache finetune` run that did not improve on its base weights (no backbone "
                f"exported; {run_dir / 'summary.json'}); train a head on the original cache with `vidcache train`"
            )
        raise ConfigError(
            f"{run_dir} is a `vidcache finetune` run: its held-out metrics are in {run_dir / 'summary.json'}; to score "
            f"videos, extract with --clip-pretrained {backbone} into a new cache and train a head there"
        )
    # version 1 runs (one option bag for every head) load through the compatibility path
    config = TrainConfig.from_saved(resolved["train_config"], version=resolved.get("config_version", 1))
    vocabulary = resolved["vocabulary"]
    multi_label = resolved["task"] == "multi-label"
    input_dims = resolved.get("input_dims") or {config.view: resolved["input_dim"]}
    # config.json is written with sorted keys: put the views back in --views order, the order the head
    # built its per-view layers in (`--views clip,audio,motion` must not load as audio,clip,motion)
    input_dims = {view: input_dims[view] for view in config.all_views if view in input_dims} or input_dims
    context = HeadContext.from_description(
        resolved.get("context") or {}, vocabulary=vocabulary, views=config.all_views, input_dims=input_dims
    )
    model = build_head(
        config,
        input_dim=resolved["input_dim"],
        num_classes=len(vocabulary),
        multi_label=multi_label,
        input_dims=input_dims,
        context=context,
    )
    load_checkpoint(run_dir, "best", model=model)
    thresholds_map = json.loads((run_dir / "thresholds.json").read_text())
    thresholds = np.array([thresholds_map[label] for label in vocabulary], dtype=np.float64)
    return LoadedRun(run_dir, config, resolved, model.to(device).eval(), vocabulary, thresholds, multi_label)


def check_cache_matches(run: LoadedRun, cache: Cache) -> None:
    """The cache's views must be the ones the head was trained on: same extractor identity and dim."""
    recorded_all = run.resolved.get("view_identities") or {run.config.view: run.resolved["view_identity"]}
    for view in run.config.all_views:
        try:
            identity = cache.view_info(view)
        except KeyError:
            raise ConfigError(
                f"cache {cache.path} has no {view!r} view; the run {run.run_dir} was trained on it"
            ) from None
        recorded = recorded_all[view]
        differs = sorted(
            k for k in (set(identity) | set(recorded)) - set(_IGNORED) if identity.get(k) != recorded.get(k)
        )
        if differs:
            raise ConfigError(
                f"cache {cache.path} view {view!r} was made with other settings than the run {run.run_dir} "
                f"({', '.join(differs)} differ); evaluate on features from the same extractor"
            )


def _source(run: LoadedRun, cache: Cache, video_ids: list[str], labels: dict) -> SplitSource:
    targets = multi_hot(video_ids, labels, run.vocabulary)
    source = SplitSource(
        cache,
        run.config.all_views,
        video_ids,
        targets,
        max_frames=run.config.max_frames,
        memory_budget_bytes=0,  # one pass in storage order: holding the split would only add its size to the peak
    )
    source.read_means(getattr(run.model, "mean_pooled", False))  # what the head saw in training
    _check_dims(run, source)
    return source


def _check_dims(run: LoadedRun, source: SplitSource) -> None:
    expected = run.resolved.get("input_dims") or {run.config.view: run.resolved["input_dim"]}
    for view, dim in source.dims.items():
        if dim != expected[view]:
            raise ConfigError(f"view {view!r} has dimension {dim}; the head expects {expected[view]}")


def _video_ids(run: LoadedRun, cache: Cache, split: str | None) -> tuple[list[str], dict]:
    views = run.config.all_views
    if split is None:
        video_ids = sorted(set().union(*(cache.video_ids(view) for view in views)))
        labels: dict = {}
    else:
        splits = make_splits(cache, views, task=run.resolved["task"], val_fraction=run.config.val_fraction)
        video_ids, labels = splits.ids[split], splits.labels
    if not video_ids:
        raise ConfigError(f"no videos with a {'/'.join(views)!r} view to predict in {cache.path}")
    return video_ids, labels


def _items(run: LoadedRun, items: str | None) -> str:
    """The items to score: as given, else those the run was trained on."""
    chosen = items or run.config.items
    check_choice("evaluate", "items", chosen, Items)
    return chosen


def _shot_sources(run: LoadedRun, cache: Cache, splits: tuple[str, ...]) -> tuple[Splits, dict[str, SplitSource]]:
    from .shot_items import shot_data

    config = run.config
    found, sources = shot_data(
        cache, config.all_views, task=run.resolved["task"], val_fraction=config.val_fraction,
        pooling=config.shot_pooling, shot_labels=config.shot_labels, splits=splits, vocabulary=run.vocabulary,
    )  # fmt: skip
    for source in sources.values():
        _check_dims(run, source)
    return found, sources


RETRIEVAL_QUERIES = 10_000  # retrieval R@k: at most this many queries (a seeded sample), each against all


def retrieval_sample(n_queries: int, cap: int) -> np.ndarray:
    """Which queries retrieval R@k scores: all of them up to `cap` (0: no cap), else a sample of `cap`
    drawn with a fixed seed (the same videos every run). Exact R@k costs queries x gallery: at 1M videos
    200k test x 600k train videos (hours); a 10k sample keeps it linear in N with a standard error
    below 0.005."""
    if cap <= 0 or n_queries <= cap:
        return np.arange(n_queries)
    return np.sort(np.random.default_rng(0).choice(n_queries, size=cap, replace=False))


def evaluate_run(
    run_dir: str | Path,
    cache_dir: str | Path,
    *,
    split: str = TEST,
    device: str = "auto",
    items: str | None = None,
    retrieval_queries: int = RETRIEVAL_QUERIES,
) -> dict:
    """Metrics of the run on a split of the cache; `items` (videos or shots; default: the run's);
    retrieval R@k over at most `retrieval_queries` queries (0: all; see `retrieval_sample`)."""
    torch_device = resolve_device(device)
    run = load_run(run_dir, device=torch_device)
    items = _items(run, items)
    with Cache(cache_dir) as cache:
        check_cache_matches(run, cache)
        if items == "shots":
            splits, shot_sources = _shot_sources(run, cache, (split, TRAIN) if split != TRAIN else (TRAIN,))
        else:
            splits = make_splits(
                cache, run.config.all_views, task=run.resolved["task"], val_fraction=run.config.val_fraction
            )
        if split not in splits.ids or not splits.ids[split]:
            raise ConfigError(f"split {split!r} is empty in cache {cache_dir}; choose one of train, val, test")
        if items == "shots":
            source = shot_sources[split]
        else:
            source = _source(run, cache, splits.ids[split], splits.labels)
        scores, embeddings = predict_scores(run.model, source, torch_device)
        targets = source.targets.numpy()
        metrics = {}
        if run.model.kind == "classify":
            metrics = evaluate(
                targets, scores, multi_label=run.multi_label, thresholds=run.thresholds if run.multi_label else None
            )
        if split != TRAIN and splits.ids[TRAIN]:
            gallery = shot_sources[TRAIN] if items == "shots" else _source(run, cache, splits.ids[TRAIN], splits.labels)
            gallery_scores, gallery_embeddings = predict_scores(run.model, gallery, torch_device)
            if embeddings is None:  # heads without an embedding: retrieve with their class scores
                embeddings, gallery_embeddings = scores, gallery_scores
            asked = retrieval_sample(len(embeddings), retrieval_queries)
            queries, embeddings = embeddings[asked], None  # type: ignore[index]  # only the sample is kept
            metrics.update(
                retrieval_recall_at_k(queries, targets[asked], gallery_embeddings, gallery.targets.numpy())  # type: ignore[arg-type]
            )
            metrics["retrieval_queries"] = len(asked)
    videos = len(set(source.shot_video)) if items == "shots" else len(source)  # type: ignore[attr-defined]
    shots = {"shots": len(source)} if items == "shots" else {}
    return {"split": split, "videos": videos, **shots, "items": items, "run": str(run_dir), **metrics}


def predict_run(
    run_dir: str | Path,
    cache_dir: str | Path,
    *,
    split: str | None = None,
    top_k: int | None = None,
    device: str = "auto",
    items: str | None = None,
) -> pd.DataFrame:
    """Scores for every (video, class) of the cache's videos (or one split), as a long table
    `video_id, label, score` (plus `predicted` at the run's tuned thresholds / argmax). `items`
    shots (default: the run's items): one row per shot, `video_id, shot_index, start_s, end_s,
    predicted` (its predicted labels) and a `score_<label>` column per class."""
    torch_device = resolve_device(device)
    run = load_run(run_dir, device=torch_device)
    items = _items(run, items)
    if run.model.kind != "classify":
        raise ConfigError(
            f"{run_dir} is a {run.config.head} head: it makes embeddings, not class scores; "
            "use `vidcache predict --write-view NAME` (or --embeddings FILE.parquet)"
        )
    if items == "shots" and top_k is not None:
        raise ConfigError("--top-k keeps labels of the long video table; with --items shots every class has a column")
    with Cache(cache_dir) as cache:
        check_cache_matches(run, cache)
        if items == "shots":
            source = _predict_shot_source(run, cache, split)
        else:
            video_ids, labels = _video_ids(run, cache, split)
            source = _source(run, cache, video_ids, labels)
        scores, _ = predict_scores(run.model, source, torch_device, embeddings=False)
    n, c = scores.shape
    if run.multi_label:
        predicted = scores >= run.thresholds[None, :]
    else:
        predicted = np.zeros_like(scores, dtype=bool)
        predicted[np.arange(n), scores.argmax(axis=1)] = True
    if items == "shots":
        return _shot_table(run, source, scores, predicted)  # type: ignore[arg-type]
    frame = pd.DataFrame(
        {
            "video_id": np.repeat(np.array(video_ids, dtype=object), c),
            "label": np.tile(np.array(run.vocabulary, dtype=object), n),
            "score": scores.ravel().astype(np.float64),
            "predicted": predicted.ravel(),
        }
    )
    if top_k is not None:
        frame = (
            frame.sort_values(["video_id", "score"], ascending=[True, False], kind="stable")
            .groupby("video_id", sort=False)
            .head(top_k)
            .reset_index(drop=True)
        )
    return frame


def _predict_shot_source(run: LoadedRun, cache: Cache, split: str | None):
    """The shots of one split's videos, or of every video with the run's views."""
    from .shot_items import ShotSource, read_shot_items

    if split is not None:
        return _shot_sources(run, cache, (split,))[1][split]
    video_ids, _ = _video_ids(run, cache, None)
    shot_items = read_shot_items(cache, video_ids, run.config.all_views, pooling=run.config.shot_pooling)
    source = ShotSource(shot_items, shot_items.ids, torch.zeros(len(shot_items.ids), len(run.vocabulary)))
    _check_dims(run, source)
    return source


def _shot_table(run: LoadedRun, source, scores: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    vocabulary = np.array(run.vocabulary, dtype=object)
    frame = pd.DataFrame(
        {
            "video_id": np.array(source.shot_video, dtype=object),
            "shot_index": source.shot_index.astype(np.int64),
            "start_s": source.start_s.astype(np.float64),
            "end_s": source.end_s.astype(np.float64),
            "predicted": [list(vocabulary[row]) for row in predicted],
        }
    )
    for k, label in enumerate(run.vocabulary):
        frame[f"score_{label}"] = scores[:, k].astype(np.float64)
    return frame


def predict_embeddings(
    run_dir: str | Path, cache_dir: str | Path, *, split: str | None = None, device: str = "auto"
) -> tuple[list[str], np.ndarray, LoadedRun]:
    """One embedding per video (the head's pooled, normalised output), in video-id order."""
    torch_device = resolve_device(device)
    run = load_run(run_dir, device=torch_device)
    with Cache(cache_dir) as cache:
        check_cache_matches(run, cache)
        video_ids, labels = _video_ids(run, cache, split)
        source = _source(run, cache, video_ids, labels)
        _, embeddings = predict_scores(run.model, source, torch_device)
    if embeddings is None:
        raise ConfigError(f"the {run.config.head} head of {run_dir} has no video embedding to write")
    return video_ids, embeddings, run


def write_embeddings(
    run_dir: str | Path,
    cache_dir: str | Path,
    *,
    view_name: str,
    split: str | None = None,
    device: str = "auto",
    command: str = "",
) -> int:
    """Store each video's embedding as one row (timestamp 0: it stands for the whole video) of a new
    view `view_name`, through the same writer and catalog as extract, so `index build` / `mine` read it
    like any other view. The view's identity names the run and the hash of its checkpoint: writing
    the same run again replaces the rows, another run under the same name is refused."""
    import hashlib

    from ..cache.arrays import write_view_arrays
    from ..manifest import VideoEntry

    video_ids, embeddings, run = predict_embeddings(run_dir, cache_dir, split=split, device=device)
    checkpoint = Path(run_dir) / "best.safetensors"
    identity = {
        "model": f"head:{run.config.head}",
        "head_run": str(Path(run_dir).resolve()),
        "head_checkpoint_sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "source_views": list(run.config.all_views),
        "feature_dim": int(embeddings.shape[1]),
        "dtype": "float32",
    }
    with Cache(cache_dir) as cache:
        entries_frame = cache.entries().set_index("video_id")
    entries = []
    for video_id in video_ids:
        row = entries_frame.loc[video_id]
        entries.append(
            VideoEntry(video_id, str(row["path"]), tuple(row["labels"]), row["split"] or None, *_segment(row))
        )
    rows = ((video_id, embeddings[i : i + 1], np.zeros(1)) for i, video_id in enumerate(video_ids))
    return write_view_arrays(
        cache_dir, view=view_name, rows=rows, entries=entries, identity=identity, dtype="float32", command=command
    )


def _segment(row) -> tuple:
    start, end = row.get("start_s"), row.get("end_s")
    clean = lambda v: None if v is None or v != v else float(v)  # noqa: E731  NaN → None
    return clean(start), clean(end)
