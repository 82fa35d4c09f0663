"""The `linear` head's default training: a solved probe instead of epochs (CLIP's linear-probe protocol).

1. Pool every train and val video once (`--frame-pooling`), on the training device.
2. Standardise with train's mean and scale.
3. Sweep C (log-spaced, ½ decade, strongest regularisation first, warm-started, to scikit-learn's
   tolerance; `probe.sweep_c`) and keep the C with the best val metric (`--early-stop-metric`: mAP
   or top-1). On a training split larger than `SWEEP_MAX_VIDEOS` the sweep sees a fixed random
   subset; the full train split is then solved at the chosen C (warm-started, to 1e-5), so 100k
   videos cost a few full solves, not a whole path of them.
   `--probe-c` skips the sweep; a val split too small to choose on keeps C = 1 (scikit-learn's default).
4. Val metrics, thresholds and the summary come from the train-only solution at that C (held out).
5. Keep that train-only fit (default: what scikit-learn's protocol keeps; it tracks it to 1e-3) or
   refit at the chosen C on train+val (`--probe-refit train+val`, as the CLIP paper does before
   testing: more data at the same regularisation, but val metrics become in-sample), and fold the
   standardisation into the head's linear layer, so checkpoints, `eval` and `predict` are those of
   any other head.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from ..errors import ConfigError
from ..fields import check, check_choice, setting
from .base import Head, TrainingError
from .data import SplitSource
from .metrics import evaluate, map_macro
from .probe import DEFAULT_C_GRID, Solution, Standardiser, linear_logits, solve_logistic, sweep_c

SWEEP_MAX_VIDEOS = 25_000
SWEEP_TOLERANCE = 1e-4  # scikit-learn's lbfgs tolerance; the chosen C is then solved to 1e-5
DEFAULT_C = 1.0
ProbeRefit = Literal["train", "train+val"]


@dataclass(frozen=True)
class SolvedProbeOptions:
    """Options of a solved linear probe (the `linear` head, and the probe branch of `mlp`/`prototype`)."""

    probe_c: float | None = setting(
        None, help="Solved probe: a fixed C (scikit-learn's meaning) instead of the val sweep."
    )
    probe_refit: ProbeRefit = setting(
        "train",
        help="Solved probe: the final fit at the chosen C on train (as chosen on val) or train+val (CLIP).",
    )

    def __post_init__(self) -> None:
        check(self, "probe_c", self.probe_c is None or self.probe_c > 0, "must be > 0")
        check_choice(self, "probe_refit", self.probe_refit, ProbeRefit)


@dataclass
class SolvedProbe:
    history: list[dict]  # one row per C of the sweep
    state: dict  # the training loop's state keys (epoch = sweep points, best_epoch = the chosen one)
    report: dict  # chosen C, grid, refit, iterations → learned.json and the summary
    val_metrics: dict
    val_scores: np.ndarray
    samples: int
    seconds: float
    extras: dict = field(default_factory=dict)


Pooling = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def pooled_features(
    pool: Pooling, source: SplitSource, device: torch.device, *, batch_size: int = 2048, mean: bool = False
) -> torch.Tensor:
    """[N, D] float32 on `device`, one pooled vector per video in the source's order; non-finite
    features fail with the first video that has them. `mean` (the pool is a mean over frames): the
    cache's stored mean rows where they are the same thing (`SplitSource.stored_means`)."""
    stored = source.stored_means() if mean else None
    if stored is not None:
        out = torch.from_numpy(stored).to(device)
    else:
        out = torch.empty(len(source), source.dim, dtype=torch.float32, device=device)
        for batch in source.batches(batch_size, shuffle=False):
            out[batch.rows.to(device)] = pool(batch.feature.to(device), batch.mask.to(device)).float()
    bad = torch.cat([~torch.isfinite(block).all(dim=1) for block in out.split(65_536)])  # no [N, D] mask
    if bad.any():
        first = source.video_ids[int(bad.nonzero()[0, 0])]
        raise TrainingError(
            f"features are not finite for {int(bad.sum())} video(s) (e.g. {first!r}); check the cache (vidcache verify)"
        )
    return out


def selection_score(metric: str, *, multi_label: bool) -> Callable[[np.ndarray, np.ndarray], float]:
    """score(targets, scores) for the val metric the sweep maximises."""
    if metric == "map_macro":
        return lambda targets, scores: float(map_macro(targets, scores))
    if metric == "top1" and not multi_label:
        return lambda targets, scores: float((targets.argmax(axis=1) == scores.argmax(axis=1)).mean())

    def score(targets: np.ndarray, scores: np.ndarray) -> float:
        metrics = evaluate(targets, scores, multi_label=multi_label)
        if metric not in metrics:
            raise ConfigError(f"--early-stop-metric {metric!r} is not computed here; choose from {sorted(metrics)}")
        return float(metrics[metric])

    return score


def _scores(solution: Solution, x: torch.Tensor, *, multi_label: bool) -> np.ndarray:
    logits = linear_logits(solution, x)
    return (torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=1)).cpu().numpy()


def _grid(model: Head, select_on_val: bool) -> tuple[float, ...]:
    if model.options.probe_c is not None:  # every head with a solved probe has SolvedProbeOptions
        return (float(model.options.probe_c),)
    return DEFAULT_C_GRID if select_on_val else (DEFAULT_C,)


def _c_from(model: Head, select_on_val: bool, given: float | None) -> str:
    if given is not None:
        return "given"
    if model.options.probe_c is not None:
        return "--probe-c"
    return "val" if select_on_val else "default"


def solve_probe(
    model: Head,
    train_source: SplitSource,
    val_source: SplitSource,
    *,
    device: torch.device,
    multi_label: bool,
    metric: str,
    select_on_val: bool = True,
    seed: int = 0,
    layer: torch.nn.Linear | None = None,
    pool: Pooling | None = None,
    refit: str | None = None,
    c: float | None = None,
) -> SolvedProbe:
    """Solve the probe (steps 1-5 above) and write it into `layer` (default `model.classifier`),
    on frames pooled by `pool` (default `model.pool`)."""
    started = time.perf_counter()
    layer = layer if layer is not None else model.classifier  # type: ignore[assignment]
    pool = pool if pool is not None else model.pool  # type: ignore[assignment]
    assert layer is not None and pool is not None
    # a probe pooling frames by their mean reads the cache's stored means (issue 29: 1M videos)
    pools = (getattr(model, "pool", None), getattr(model, "probe_pool", None))
    mean = getattr(model, "mean_pooled", False) and pool in pools
    x_train = pooled_features(pool, train_source, device, mean=mean)
    x_val = pooled_features(pool, val_source, device, mean=mean)
    y_train = train_source.targets.to(device=device, dtype=torch.float32)
    y_val = val_source.targets.to(device=device, dtype=torch.float32)
    standardiser = Standardiser.fit(x_train)
    # in place: both were made for this solve (the raw vectors are not needed again: `fold` below)
    x_train, x_val = standardiser.apply_(x_train), standardiser.apply_(x_val)
    score = selection_score(metric, multi_label=multi_label)

    n = len(x_train)
    subset = None
    grid = (float(c),) if c is not None else _grid(model, select_on_val)
    if n > SWEEP_MAX_VIDEOS and len(grid) > 1:
        generator = torch.Generator().manual_seed(seed)
        subset = torch.randperm(n, generator=generator)[:SWEEP_MAX_VIDEOS].to(device)
    sweep = sweep_c(
        x_train if subset is None else x_train[subset],
        y_train if subset is None else y_train[subset],
        x_val,
        y_val,
        multi_label=multi_label,
        score=score,
        grid=grid,
        tolerance=SWEEP_TOLERANCE,
    )
    chosen = sweep.best_c
    assert sweep.solution is not None
    # the full train split at the chosen C, from the sweep's solution, to the final tolerance
    held_out = solve_logistic(
        x_train, y_train, multi_label=multi_label, c=chosen, init=(sweep.solution.weight, sweep.solution.bias)
    )
    val_scores = _scores(held_out, x_val, multi_label=multi_label)
    val_metrics = evaluate(val_source.targets.numpy(), val_scores, multi_label=multi_label)
    final = held_out
    refit = refit or model.options.probe_refit
    if refit == "train+val":
        final = solve_logistic(
            torch.cat([x_train, x_val]),
            torch.cat([y_train, y_val]),
            multi_label=multi_label,
            c=chosen,
            init=(held_out.weight, held_out.bias),
        )
    weight, bias = standardiser.fold(final.weight, final.bias)
    with torch.no_grad():
        layer.weight.copy_(weight.T.to(layer.weight))
        layer.bias.copy_(bias.to(layer.bias))
    history = [
        {
            "epoch": i + 1,
            "train_loss": point.train_loss,
            f"val_{metric}": point.value,
            "val_loss": point.val_loss,
            "c": point.c,
            "iterations": point.iterations,
            "seconds": round(point.seconds, 4),
        }
        for i, point in enumerate(sweep.points)
    ]
    best = sweep.points[sweep.best]
    state = {
        "epoch": len(sweep.points),
        "best_value": best.value,
        "best_epoch": sweep.best + 1,
        "bad_epochs": 0,
        "skipped_steps": 0,
    }
    report = {
        "solver": "lbfgs",
        "c": chosen,
        "c_grid": [point.c for point in sweep.points],
        "c_from": _c_from(model, select_on_val, c),
        "refit": refit,
        "sweep_videos": n if subset is None else len(subset),
        "iterations": final.iterations,
        "converged": final.converged,
        "objective": final.loss if math.isfinite(final.loss) else None,
    }
    seconds = time.perf_counter() - started
    return SolvedProbe(history, state, report, val_metrics, val_scores, n, seconds)
