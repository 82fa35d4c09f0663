"""Learning rate and weight decay chosen on val when `--lr` / `--weight-decay` are not given.

A short run (a fifth of the resolved epochs, at least 3, at most all of them) per candidate: first
every learning rate of `LR_GRID` at the first weight decay of `WD_GRID` (or the given one), then the
other weight decays at the best learning rate (when `--weight-decay` is not given either; a given
`--lr` skips the search and keeps weight decay 1e-4 unless given). The candidate with the best val
metric at its best epoch wins (ties: the earlier, i.e. smaller, learning rate); a trial whose loss
stays non-finite scores -inf. Every trial is a complete run directory under RUN/search/ and
RUN/search/search.json lists them all, so the choice can be audited. Heads that are solved rather
than trained by steps (`linear` with L-BFGS) skip the search, and so does a val split too small to
choose on (the defaults 1e-3 / 1e-4 are kept, with a warning in the summary)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

from ..cache.reader import Cache
from .base import HEADS, TrainingError
from .config import TrainConfig, resolve_schedule
from .data import TRAIN, VAL, make_splits, multi_hot
from .validation import check_val_split

log = logging.getLogger("vidcache.heads")

LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2)
WD_GRID = (1e-4, 1e-2)
DEFAULT_LR, DEFAULT_WEIGHT_DECAY = 1e-3, 1e-4
TRIAL_FRACTION = 0.2
SEARCH_DIR = "search"


def needs_search(config: TrainConfig) -> bool:
    """Only when `--lr` is left out: a given lr keeps weight decay 1e-4 unless that is given too."""
    return config.lr is None


def with_defaults(config: TrainConfig) -> TrainConfig:
    return dataclasses.replace(
        config,
        lr=DEFAULT_LR if config.lr is None else config.lr,
        weight_decay=DEFAULT_WEIGHT_DECAY if config.weight_decay is None else config.weight_decay,
    )


def _trial_epochs(cache_dir: str | Path, config: TrainConfig) -> tuple[int, bool, list[str]]:
    """(epochs of a trial, whether val can choose, warnings) from the splits, without reading features."""
    with Cache(cache_dir) as cache:
        if config.items == "shots":  # the items are the shots: their counts set the trial's epochs
            from .shot_items import shot_data

            splits, _ = shot_data(
                cache, config.all_views, task=config.task, val_fraction=config.val_fraction,
                pooling=config.shot_pooling, shot_labels=config.shot_labels, splits=(),
            )  # fmt: skip
        else:
            splits = make_splits(cache, config.all_views, task=config.task, val_fraction=config.val_fraction)
    trained = len(splits.ids[TRAIN]) if not config.search_videos else min(len(splits.ids[TRAIN]), config.search_videos)
    full = resolve_schedule(config, train_videos=trained).epochs or 1
    targets = multi_hot(splits.ids[VAL], splits.labels, splits.vocabulary)
    kind = HEADS.get(config.head).kind
    check = check_val_split(targets, multi_label=splits.multi_label, kind=kind, vocabulary=splits.vocabulary)
    return trial_epochs(full), check.usable, check.warnings


def trial_epochs(full_epochs: int) -> int:
    """A fifth of the run's epochs, at least 3, and never more than the run itself: at 1M videos
    auto epochs are 1, and 3 per trial made the search 15 epochs of 600k videos."""
    return min(full_epochs, max(3, math.ceil(full_epochs * TRIAL_FRACTION)))


def search_hyperparameters(
    cache_dir: str | Path, config: TrainConfig, run_dir: Path, *, train_once: Callable
) -> tuple[TrainConfig, dict]:
    """The config with `lr` and `weight_decay` filled in, and the search record (also RUN/search/search.json)."""
    record_path = run_dir / SEARCH_DIR / "search.json"
    if record_path.exists():  # --resume: the search already ran
        record = json.loads(record_path.read_text())
        chosen = record["chosen"]
        return dataclasses.replace(config, lr=chosen["lr"], weight_decay=chosen["weight_decay"]), record
    epochs, usable, warnings = _trial_epochs(cache_dir, config)
    if not usable:
        chosen = with_defaults(config)
        record = {"chosen": {"lr": chosen.lr, "weight_decay": chosen.weight_decay}, "trials": [], "skipped": warnings}
        return chosen, record
    trials: list[dict] = []
    sample = config.search_videos or None  # trials on a seeded sample of each split (1M videos: 50k of 600k)

    def trial(lr: float, weight_decay: float) -> dict:
        name = f"lr{lr:g}-wd{weight_decay:g}"
        trial_config = dataclasses.replace(
            config,
            lr=lr,
            weight_decay=weight_decay,
            epochs=epochs,
            patience=epochs,
            split_sample=sample,
            search_trial=True,
        )
        started = time.perf_counter()
        try:
            summary = train_once(cache_dir, trial_config, run_dir / SEARCH_DIR / name)
            value, best_epoch, error = summary.best_value, summary.best_epoch, ""
        except TrainingError as exc:
            value, best_epoch, error = -math.inf, 0, str(exc)
        row = {
            "lr": lr,
            "weight_decay": weight_decay,
            "epochs": epochs,
            "value": value,
            "best_epoch": best_epoch,
            "seconds": round(time.perf_counter() - started, 2),
            "error": error,
        }
        log.info("search %s: best val %.4f at epoch %d of %d", name, value, best_epoch, epochs)
        trials.append(row)
        return row

    first_wd = config.weight_decay if config.weight_decay is not None else WD_GRID[0]
    lrs = LR_GRID if config.lr is None else (config.lr,)
    best = max((trial(lr, first_wd) for lr in lrs), key=lambda row: row["value"])  # max keeps the first of ties
    if config.weight_decay is None:
        for weight_decay in WD_GRID[1:]:
            row = trial(best["lr"], weight_decay)
            if row["value"] > best["value"]:
                best = row
    chosen = {"lr": best["lr"], "weight_decay": best["weight_decay"]}
    record = {"chosen": chosen, "trial_epochs": epochs, "trial_videos": sample, "trials": trials, "skipped": False}
    record_path.write_text(json.dumps(record, indent=2))
    return dataclasses.replace(config, **chosen), record
