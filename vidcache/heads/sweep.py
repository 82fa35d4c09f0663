"""`vidcache train --sweep`: a small recorded grid, the best config on val kept as the run.

The grid is learning rate × weight decay × the head's own key option (`Head.sweep_axis`, e.g. the
MLP's `hidden_dim`, the pool head's `pool_mode`): 4 × 2 × 2 = 16 configs at the defaults. A given
`lr` or `weight_decay` fixes that axis; a head that is solved rather than trained by steps (`linear`
with L-BFGS, whose C is already chosen on val) sweeps its key option alone.

Every config is trained into RUN/sweep/NAME/ (a complete run directory: config.json, history.csv,
summary.json, checkpoints) and RUN/sweep.csv lists them all with their val score. The winner (best
val metric at its best epoch; ties go to the earlier config in grid order, i.e. the smaller learning
rate and weight decay) is copied into RUN itself, so RUN is a normal run directory for `eval` and
`predict`.

Cost: the cache is opened and every split's features are read (and padded) once for the whole grid,
and the configs train one after another in the same process on those tensors, so a sweep of 16 pays
for start-up, feature reading and plotting once instead of 16 times (`benchmarks/bench_heads_sweep.py`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..cache.reader import Cache
from ..errors import ConfigError
from .base import HEADS, TrainingError
from .config import TrainConfig
from .context import precheck_inputs

if TYPE_CHECKING:
    from .train import TrainSummary

log = logging.getLogger("vidcache.heads")

SWEEP_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
SWEEP_WEIGHT_DECAYS = (1e-4, 1e-2)
SWEEP_DIR = "sweep"
SWEEP_FILE = "sweep.csv"


def sweep_grid(config: TrainConfig) -> list[tuple[str, TrainConfig]]:
    """(name, config) of every point of the grid, in the order ties are broken."""
    head_class = HEADS.get(config.head)
    by_steps = head_class.trains_by_steps(config.options)
    lrs = (config.lr,) if config.lr is not None or not by_steps else SWEEP_LRS
    decays = (config.weight_decay,) if config.weight_decay is not None or not by_steps else SWEEP_WEIGHT_DECAYS
    axis = head_class.sweep_axis
    values = axis[1] if axis else (None,)
    grid = []
    for lr in lrs:
        for weight_decay in decays:
            for value in values:
                options = config.options if axis is None else dataclasses.replace(config.options, **{axis[0]: value})
                parts = []
                if by_steps:
                    parts += [f"lr{lr:g}", f"wd{weight_decay:g}"]
                if axis is not None:
                    parts.append(f"{axis[0]}-{value}")
                name = "_".join(parts) or "default"
                grid.append((name, dataclasses.replace(config, lr=lr, weight_decay=weight_decay, options=options)))
    return grid


def _replot(run_dir: Path) -> None:
    from .train import _plot

    with open(run_dir / "history.csv") as handle:
        history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    vocabulary = json.loads((run_dir / "vocabulary.json").read_text())
    ap = None
    if (run_dir / "per_class_ap.json").exists():
        per_class = json.loads((run_dir / "per_class_ap.json").read_text())
        ap = np.array([np.nan if per_class[c] is None else per_class[c] for c in vocabulary])
    if history:
        _plot(run_dir, history, vocabulary, ap)


def run_sweep(
    cache_dir: str | Path, config: TrainConfig, run_dir: str | Path, *, command: str = "", progress: Any = None
) -> tuple[TrainSummary, list[dict]]:
    """Train every config of `sweep_grid(config)` on data read once; keep the best in `run_dir`.
    Returns (the kept run's TrainSummary, one record per config)."""
    from .search import with_defaults
    from .train import _train_once, load_data

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"run directory {run_dir} is not empty; a sweep needs a new --out")
    precheck_inputs(cache_dir, HEADS.get(config.head).inputs(config.options))
    grid = sweep_grid(config)
    axis = HEADS.get(config.head).sweep_axis
    records: list[dict] = []
    summaries = {}
    with Cache(cache_dir) as cache:
        data = load_data(cache, config)  # every config shares the splits and their features
        data.shared = True
        for name, point in grid:
            point = with_defaults(point)  # a solved head ignores lr / weight decay; AdamW needs a value
            point_started = time.perf_counter()
            try:
                summary = _train_once(
                    cache_dir, point, run_dir / SWEEP_DIR / name, command=command, data=data, plots=False
                )
                value, best_epoch, epochs_run, metric, error = (
                    summary.best_value,
                    summary.best_epoch,
                    summary.epochs_run,
                    summary.best_metric,
                    "",
                )
                summaries[name] = summary
            except TrainingError as exc:  # a diverging config scores -inf; the sweep goes on
                value, best_epoch, epochs_run, metric, error = -math.inf, 0, 0, "", str(exc)
            record = {
                "name": name,
                "lr": point.lr,
                "weight_decay": point.weight_decay,
                "option": axis[0] if axis else "",
                "option_value": getattr(point.options, axis[0]) if axis else "",
                "metric": metric,
                "value": value,
                "best_epoch": best_epoch,
                "epochs_run": epochs_run,
                "seconds": round(time.perf_counter() - point_started, 3),
                "error": error,
            }
            records.append(record)
            log.info("sweep %s: val %s %.4f", name, metric, value)
            if progress is not None:
                progress(len(records), {"sweep": name, "value": value})
    if not summaries:
        raise TrainingError(f"every config of the sweep failed; see {run_dir / SWEEP_FILE}")
    best = max(records, key=lambda r: r["value"])  # max keeps the first of ties: grid order
    for record in records:
        record["chosen"] = record is best
    with open(run_dir / SWEEP_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    chosen_dir = run_dir / SWEEP_DIR / best["name"]
    for item in chosen_dir.iterdir():  # the kept run is a normal run directory
        if item.is_file():
            shutil.copy2(item, run_dir / item.name)
    resolved = json.loads((run_dir / "config.json").read_text())
    resolved["sweep"] = {"chosen": best["name"], "configs": len(records), "file": SWEEP_FILE}
    resolved["command"] = command or resolved.get("command", "")
    (run_dir / "config.json").write_text(json.dumps(resolved, indent=2, sort_keys=True, default=str))
    _replot(run_dir)
    summary = summaries[best["name"]]
    summary.run_dir = str(run_dir)
    summary.seconds = time.perf_counter() - started
    summary.sweep = {"chosen": best["name"], "configs": records}
    (run_dir / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2, default=str))
    return summary, records
