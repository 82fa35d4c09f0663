"""The typed Python API of the heads: what `vidcache train`, `eval` and `predict` do, as functions.

    from vidcache.heads import HEADS
    from vidcache.heads.api import train, evaluate, predict

    result = train("cache", "runs/mlp", head="mlp", options=HEADS.options("mlp", hidden_dim=256))
    metrics = evaluate("runs/mlp", "cache", split="test")
    scores = predict("runs/mlp", "cache", split="test", top_k=5)

Options are keyword-only; choices are `Literal` types; a value a parameter cannot take raises
`vidcache.fields.ParamError` naming the parameter as typed here (`train.head='nope': choose one of:
...`) and the values allowed. The command line parses its flags into the same calls.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from ..errors import ConfigError
from ..fields import check, check_choice
from .base import HEADS
from .config import Items, TrainConfig
from .train import TrainSummary

Split = Literal["train", "val", "test"]
Device = Literal["auto", "cpu", "cuda"]
RunKind = Literal["classify", "embed"]
MIN_VAL_VIDEOS = 5  # below this, a run's model selection on val is noise (a warning says so)


@dataclass
class TrainResult:
    """What `train` made: the run directory (`eval`/`predict` read it), its summary, the warnings
    worth showing a user, and with `sweep=True` one record per config of the grid."""

    run_dir: Path
    summary: TrainSummary
    warnings: list[str] = field(default_factory=list)
    sweep: list[dict] | None = None


def train(
    cache: str | Path,
    out: str | Path,
    *,
    head: str | None = None,
    view: str | None = None,
    options: Any = None,
    config: TrainConfig | None = None,
    sweep: bool = False,
    resume: bool = False,
    progress: Any = None,
    command: str = "",
) -> TrainResult:
    """Train a head on a cached view into the run directory `out`.

    `head` / `view` (default: `config`'s, else "linear" / "clip") pick what is trained; `options` is
    the head's own options dataclass (`HEADS.options(head, ...)`, or a dict of its fields; None: its
    defaults); `config` holds the settings every head shares (`TrainConfig`). `sweep=True` trains the
    grid of `vidcache.heads.sweep` and keeps the best config on val in `out`. `resume=True` continues
    an interrupted run. `progress(epoch, row)` is called after each epoch; `command` is recorded."""
    from .sweep import run_sweep
    from .train import train as train_run

    check(
        "train",
        "config",
        config is None or isinstance(config, TrainConfig),
        "must be a TrainConfig or None",
        value=config,
    )
    base = config or TrainConfig()
    head = head if head is not None else base.head
    check_choice("train", "head", head, HEADS.names())
    if isinstance(options, dict):
        options = HEADS.options(head, **options)
    if options is None and head == base.head:
        options = base.options
    options_class = HEADS.options_class(head)
    check(
        "train",
        "options",
        options is None or isinstance(options, options_class),
        f"head {head!r} takes {options_class.__name__} (HEADS.options({head!r}, ...)), not {type(options).__name__}",
        value=type(options).__name__,
    )
    resolved = dataclasses.replace(base, head=head, view=view if view is not None else base.view, options=options)
    check(
        "train",
        "sweep",
        not (sweep and resume),
        "a sweep cannot be resumed; start it again with a new out",
        value=sweep,
    )
    run_dir = Path(out)
    if run_dir.is_dir() and any(run_dir.iterdir()) and not resume:
        raise ConfigError(f"run directory {run_dir} is not empty; use another --out or add --resume")
    records = None
    if sweep:
        summary, records = run_sweep(cache, resolved, run_dir, command=command, progress=progress)
    else:
        summary = train_run(cache, resolved, run_dir, resume=resume, command=command, progress=progress)
    warnings = []
    if summary.val_videos < MIN_VAL_VIDEOS:  # the best epoch and the thresholds are picked on val
        warnings.append(
            f"val holds only {summary.val_videos} video(s): the best epoch ({summary.best_epoch}) and the "
            "val metrics rest on too few to mean much; add split=val rows or raise --val-fraction"
        )
    warnings += list(summary.warnings)
    return TrainResult(run_dir, summary, warnings, records)


def threshold_fallback(run: str | Path) -> tuple[list[str], list[str]]:
    """(classes predicting at the default 0.5 because val had too few positives/negatives to tune
    their threshold, the one-line warning saying so; empty when none) of a trained run."""
    import json

    from .train import threshold_warning

    summary_path = Path(run) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    fallback = list(summary.get("threshold_fallback") or [])
    return fallback, threshold_warning(fallback, int(summary.get("classes") or len(fallback)))


def run_kind(run: str | Path) -> RunKind:
    """ "classify" (class scores) or "embed" (a representation head: video embeddings only)."""
    import json

    return json.loads((Path(run) / "config.json").read_text()).get("head_kind", "classify")


def evaluate(
    run: str | Path,
    cache: str | Path,
    *,
    split: Split = "test",
    device: Device = "auto",
    items: Items | None = None,
    retrieval_queries: int = 10_000,
) -> dict:
    """Metrics of a trained head on a split of the cache: mAP, GAP@20, F1 at 0.5 and at the tuned
    thresholds, top-k (classifiers); retrieval R@k against the training videos (representation heads).
    `items`: videos or shots (default: what the run was trained on). Retrieval R@k is computed over at
    most `retrieval_queries` query videos (a seeded sample above it; 0: every query)."""
    from ..fields import check
    from .predict import evaluate_run

    check_choice("evaluate", "split", split, Split)
    check_choice("evaluate", "device", device, Device)
    if items is not None:
        check_choice("evaluate", "items", items, Items)
    rule = "must be >= 0 (0: every query)"
    check("evaluate", "retrieval_queries", retrieval_queries >= 0, rule, value=retrieval_queries)
    return evaluate_run(run, cache, split=split, device=device, items=items, retrieval_queries=retrieval_queries)


def predict(
    run: str | Path,
    cache: str | Path,
    *,
    split: Split | None = None,
    top_k: int | None = None,
    device: Device = "auto",
    out: str | Path | None = None,
    items: Items | None = None,
) -> pd.DataFrame:
    """Per (video, label): score and predicted (at the run's thresholds), for every video of the
    cache or of `split`, the `top_k` best labels per video when given. A representation head gives
    video_id, embedding instead. With `out` (FILE.parquet) the frame is also written, atomically.
    `items` shots (default: what the run was trained on): one row per shot, video_id, shot_index,
    start_s, end_s, predicted (labels) and score_<label> per class."""
    import numpy as np

    from .predict import predict_embeddings, predict_run

    if split is not None:
        check_choice("predict", "split", split, Split)
    check_choice("predict", "device", device, Device)
    check("predict", "top_k", top_k is None or top_k >= 1, "must be >= 1", value=top_k)
    if items is not None:
        check_choice("predict", "items", items, Items)
    if run_kind(run) == "classify":
        frame = predict_run(run, cache, split=split, top_k=top_k, device=device, items=items)
    else:
        video_ids, embeddings, _ = predict_embeddings(run, cache, split=split, device=device)
        frame = pd.DataFrame({"video_id": video_ids, "embedding": list(embeddings.astype(np.float32))})
    if out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(path)
    return frame


def write_view(
    run: str | Path,
    cache: str | Path,
    *,
    name: str,
    split: Split | None = None,
    device: Device = "auto",
    command: str = "",
) -> int:
    """Store the head's video embeddings in the cache as the new view `name` (index and mine it like
    any view); returns how many videos were written."""
    from .predict import write_embeddings

    if split is not None:
        check_choice("write_view", "split", split, Split)
    check_choice("write_view", "device", device, Device)
    return write_embeddings(run, cache, view_name=name, split=split, device=device, command=command)
