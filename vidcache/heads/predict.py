"""`eval` and `predict` from a run directory: the best checkpoint, its classes and thresholds, and
checks that the cache still holds the features the head was trained on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..cache.reader import Cache
from ..errors import ConfigError
from ..extract.device import resolve_device
from .checkpoint import load_checkpoint
from .config import HeadOptions, TrainConfig
from .data import TEST, TRAIN, SplitSource, make_splits, multi_hot
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
    raw = dict(resolved["train_config"])
    config = TrainConfig(**{**raw, "options": HeadOptions(**raw["options"])})
    vocabulary = resolved["vocabulary"]
    multi_label = resolved["task"] == "multi-label"
    model = build_head(config, input_dim=resolved["input_dim"], num_classes=len(vocabulary), multi_label=multi_label)
    load_checkpoint(run_dir, "best", model=model)
    thresholds_map = json.loads((run_dir / "thresholds.json").read_text())
    thresholds = np.array([thresholds_map[label] for label in vocabulary], dtype=np.float64)
    return LoadedRun(run_dir, config, resolved, model.to(device).eval(), vocabulary, thresholds, multi_label)


def check_cache_matches(run: LoadedRun, cache: Cache) -> None:
    """The cache's view must be the one the head was trained on: same extractor identity and dim."""
    view = run.config.view
    try:
        identity = cache.view_info(view)
    except KeyError:
        raise ConfigError(f"cache {cache.path} has no {view!r} view; the run {run.run_dir} was trained on it") from None
    recorded = run.resolved["view_identity"]
    differs = sorted(k for k in (set(identity) | set(recorded)) - set(_IGNORED) if identity.get(k) != recorded.get(k))
    if differs:
        raise ConfigError(
            f"cache {cache.path} view {view!r} was made with other settings than the run {run.run_dir} "
            f"({', '.join(differs)} differ); evaluate on features from the same extractor"
        )


def _source(run: LoadedRun, cache: Cache, video_ids: list[str], labels: dict) -> SplitSource:
    targets = multi_hot(video_ids, labels, run.vocabulary)
    source = SplitSource(
        cache,
        run.config.view,
        video_ids,
        targets,
        max_frames=run.config.max_frames,
        memory_budget_bytes=run.config.memory_budget_gb * 2**30,
    )
    if source.dim != run.resolved["input_dim"]:
        raise ConfigError(
            f"view {run.config.view!r} has dimension {source.dim}; the head expects {run.resolved['input_dim']}"
        )
    return source


def evaluate_run(run_dir: str | Path, cache_dir: str | Path, *, split: str = TEST, device: str = "auto") -> dict:
    torch_device = resolve_device(device)
    run = load_run(run_dir, device=torch_device)
    with Cache(cache_dir) as cache:
        check_cache_matches(run, cache)
        splits = make_splits(cache, run.config.view, task=run.resolved["task"], val_fraction=run.config.val_fraction)
        if split not in splits.ids or not splits.ids[split]:
            raise ConfigError(f"split {split!r} is empty in cache {cache_dir}; choose one of train, val, test")
        source = _source(run, cache, splits.ids[split], splits.labels)
        scores, embeddings = predict_scores(run.model, source, torch_device)
        targets = source.targets.numpy()
        metrics = evaluate(
            targets, scores, multi_label=run.multi_label, thresholds=run.thresholds if run.multi_label else None
        )
        if split != TRAIN and splits.ids[TRAIN]:
            gallery = _source(run, cache, splits.ids[TRAIN], splits.labels)
            gallery_scores, gallery_embeddings = predict_scores(run.model, gallery, torch_device)
            if embeddings is None:  # heads without an embedding: retrieve with their class scores
                embeddings, gallery_embeddings = scores, gallery_scores
            metrics.update(
                retrieval_recall_at_k(embeddings, targets, gallery_embeddings, gallery.targets.numpy())  # type: ignore[arg-type]
            )
    return {"split": split, "videos": len(source), "run": str(run_dir), **metrics}


def predict_run(
    run_dir: str | Path,
    cache_dir: str | Path,
    *,
    split: str | None = None,
    top_k: int | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """Scores for every (video, class) of the cache's videos (or one split), as a long table
    `video_id, label, score` (plus `predicted` at the run's tuned thresholds / argmax)."""
    torch_device = resolve_device(device)
    run = load_run(run_dir, device=torch_device)
    with Cache(cache_dir) as cache:
        check_cache_matches(run, cache)
        if split is None:
            video_ids = sorted(cache.video_ids(run.config.view))
            labels: dict = {}
        else:
            splits = make_splits(
                cache, run.config.view, task=run.resolved["task"], val_fraction=run.config.val_fraction
            )
            video_ids, labels = splits.ids[split], splits.labels
        if not video_ids:
            raise ConfigError(f"no videos with a {run.config.view!r} view to predict in {cache_dir}")
        source = _source(run, cache, video_ids, labels)
        scores, _ = predict_scores(run.model, source, torch_device)
    n, c = scores.shape
    if run.multi_label:
        predicted = scores >= run.thresholds[None, :]
    else:
        predicted = np.zeros_like(scores, dtype=bool)
        predicted[np.arange(n), scores.argmax(axis=1)] = True
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
