"""The training loop every head shares: AdamW, warm-up then cosine schedule, gradient clipping, a
guard against non-finite losses, early stopping on a validation metric, best/last checkpoints,
resume, per-class thresholds tuned on val, and a run directory that explains itself."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cache.reader import Cache
from ..device import autocast_dtype, resolve_device
from ..errors import ConfigError, fault_point
from ..signals import deferred
from ..version import __version__
from .base import HEADS, Head, TrainingError
from .blend import blend_probe
from .checkpoint import load_checkpoint, save_checkpoint
from .config import CONFIG_VERSION, TrainConfig, resolve_schedule
from .context import HeadContext, MinedNegatives, MinedNeighbours, build_context, precheck_inputs
from .data import TRAIN, VAL, Batch, Splits, SplitSource, make_splits, multi_hot, sample_splits
from .metrics import confused_pairs, evaluate, per_class_ap, retrieval_recall_at_k, tune_thresholds_with_evidence
from .search import SEARCH_DIR, needs_search, search_hyperparameters, with_defaults
from .solved import solve_probe
from .validation import check_val_split

log = logging.getLogger("vidcache.heads")
RUN_FILES = ("config.json", "history.csv", "summary.json", "thresholds.json", "best.safetensors", "last.safetensors")


@dataclass
class TrainSummary:
    run_dir: str
    head: str
    view: str
    task: str
    classes: int
    train_videos: int
    val_videos: int
    epochs_run: int
    best_epoch: int
    best_metric: str
    best_value: float
    val_metrics: dict = field(default_factory=dict)  # at 0.5
    val_metrics_tuned: dict = field(default_factory=dict)  # at the tuned thresholds
    seconds: float = 0.0
    samples_per_s: float = 0.0
    skipped_steps: int = 0
    streamed: bool = False
    report: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. a val split too small to choose anything
    # classes whose threshold is the default 0.5: too few val positives / negatives to tune one on
    threshold_fallback: list[str] = field(default_factory=list)
    search: dict | None = None  # the lr / weight-decay search, when one ran (also RUN/search/search.json)
    sweep: dict | None = None  # `--sweep`: the chosen config and every config's val score (also RUN/sweep.csv)


def seed_everything(seed: int, *, deterministic: bool) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def build_head(
    config: TrainConfig,
    *,
    input_dim: int,
    num_classes: int,
    multi_label: bool,
    input_dims: dict[str, int] | None = None,
    context: HeadContext | None = None,
) -> Head:
    head_class = HEADS.get(config.head)
    if len(config.all_views) > 1 and not head_class.multi_view:
        multi = [name for name in HEADS.names() if HEADS.get(name).multi_view]
        raise ConfigError(
            f"--head {config.head} reads one view; --views {','.join(config.all_views)} needs one of: "
            + ", ".join(multi)
        )
    return HEADS.create(
        config.head,
        input_dim=input_dim,
        num_classes=num_classes,
        multi_label=multi_label,
        options=config.options,
        input_dims=input_dims or {config.view: input_dim},
        context=context,
    )


def autocast(device: torch.device, enabled: bool = True):
    """bfloat16 (fp16 where bf16 is missing) autocast on CUDA; nothing on CPU."""
    dtype = autocast_dtype(device) if enabled else None
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


def warmup_cosine(optimizer, *, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict_scores(
    model: Head,
    source: SplitSource,
    device: torch.device,
    *,
    batch_size: int = 256,
    amp: bool = True,
    embeddings: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores [N, C] (and embeddings [N, E] when the head has them and `embeddings` asks: a linear
    head's are its pooled inputs, 2 GiB at 1M videos x 512) in the source's video order.
    Representation heads (`kind == "embed"`) have no class scores: zeros."""
    model.eval()
    scores = np.zeros((len(source), model.num_classes), np.float32)
    kept = None
    for batch in source.batches(batch_size, shuffle=False):
        with autocast(device, amp):
            out = model.forward_batch(batch.to(device, non_blocking=True))
        rows = batch.rows.numpy()
        if model.kind == "classify":
            scores[rows] = model.scores(out.logits.float()).cpu().numpy()
        if out.embedding is not None and embeddings:
            if kept is None:
                kept = np.zeros((len(source), out.embedding.shape[1]), np.float32)
            kept[rows] = out.embedding.float().cpu().numpy()
    return scores, kept


def validate(
    model: Head,
    train_source: SplitSource,
    val_source: SplitSource,
    device: torch.device,
    *,
    multi_label: bool,
    amp: bool,
) -> tuple[dict, np.ndarray]:
    """Validation metrics and scores. A representation head is judged by retrieval: val videos query
    the training videos (CoCLR protocol), recall@k counts a hit when a neighbour shares a label."""
    classify = model.kind == "classify"
    val_scores, val_embeddings = predict_scores(model, val_source, device, amp=amp, embeddings=not classify)
    if classify:
        return evaluate(val_source.targets.numpy(), val_scores, multi_label=multi_label), val_scores
    _, train_embeddings = predict_scores(model, train_source, device, amp=amp)
    metrics = retrieval_recall_at_k(
        val_embeddings, val_source.targets.numpy(), train_embeddings, train_source.targets.numpy()
    )
    return metrics, val_scores


def with_companions(model: Head, batch: Batch, source: SplitSource, generator: torch.Generator) -> Batch:
    """The batch plus the training videos the head asks for (its videos' mined neighbours)."""
    wanted = [source.row_of[v] for v in model.companions(batch.video_ids, generator) if v in source.row_of]
    return Batch.cat([batch, source.gather(wanted)]) if wanted else batch


def _metric_key(config: TrainConfig, multi_label: bool, kind: str = "classify") -> str:
    if config.early_stop_metric != "auto":
        return config.early_stop_metric
    if kind == "embed":
        return "recall_at_1"
    return "map_macro" if multi_label else "top1"


def _plot(run_dir: Path, history: list[dict], vocabulary: list[str], ap: np.ndarray | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    metric_keys = [k for k in history[0] if k.startswith("val_") and k != "val_loss"]
    twin = axis.twinx()
    for number, key in enumerate(metric_keys[:3], start=1):
        twin.plot(epochs, [h[key] for h in history], linestyle="--", color=f"C{number}", label=key)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    twin.set_ylabel("val metric")
    fig.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(run_dir / "loss.png", dpi=120)
    plt.close(fig)
    if ap is None:  # a representation head has no per-class scores
        return
    order = np.argsort(np.nan_to_num(ap, nan=-1.0))
    fig, axis = plt.subplots(figsize=(6, max(2.5, 0.22 * len(vocabulary))))
    axis.barh([vocabulary[i] for i in order], np.nan_to_num(ap[order]))
    axis.set_xlabel("average precision (val)")
    axis.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(run_dir / "per_class_ap.png", dpi=120)
    plt.close(fig)


def threshold_warning(fallback: list[str], classes: int) -> list[str]:
    """The one line `train` and `predict` print when some classes kept the default threshold."""
    if not fallback:
        return []
    named = ", ".join(repr(c) for c in fallback[:3]) + (", …" if len(fallback) > 3 else "")
    return [
        f"{len(fallback)} of {classes} classes ({named}) have too few val positives/negatives to tune a threshold "
        f"on: they predict at the default 0.5 (add val videos to tune them)"
    ]


def log_epoch(run_dir: Path, row: dict, *, epochs: int, best_epoch: int) -> None:
    """One line per epoch in RUN/train.log (what stderr showed before it became one progress line):
    the epoch of the total, every number of history.csv with its split named, the best epoch so far."""
    numbers = " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "epoch")
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} epoch {row['epoch']}/{epochs} {numbers} best_epoch={best_epoch}\n"
    with open(run_dir / "train.log", "a") as handle:
        handle.write(line)


def write_history(run_dir: Path, history: list[dict]) -> None:
    with open(run_dir / "history.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _run_epochs(
    model: Head,
    config: TrainConfig,
    train_source: SplitSource,
    val_source: SplitSource,
    run_dir: Path,
    *,
    device: torch.device,
    multi_label: bool,
    metric: str,
    generator: torch.Generator,
    resume: bool,
    progress,
    select_on_val: bool = True,
) -> tuple[list[dict], dict, int, float]:
    """The epochs of a gradient-trained head: (history, state, videos trained on, seconds of training).
    `select_on_val` False (a val split too small to judge): no early stopping, the last epoch is kept."""
    optimizer, scheduler = _optimizer(model, config, train_source)
    pos_weight = _pos_weight(config, train_source, multi_label=multi_label, device=device)
    use_amp = config.amp and device.type == "cuda"
    # fp16 (GPUs without bf16) needs loss scaling; bf16 does not
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and autocast_dtype(device) == torch.float16)
    history, state = _resumed(run_dir, model, optimizer, scheduler, resume=resume)
    steps = _Steps(optimizer=optimizer, scheduler=scheduler, scaler=scaler, pos_weight=pos_weight)
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if state["bad_epochs"] >= config.patience and select_on_val:
            break
        fault_point("train-epoch", run_dir)
        model.train()
        # per-epoch seeds (shuffling and dropout): a resumed run continues exactly as an unbroken one
        generator.manual_seed(config.seed * 1_000_003 + epoch)
        torch.manual_seed(config.seed * 1_000_003 + epoch)
        epoch_started = time.perf_counter()
        losses = _train_epoch(
            model, config, train_source, steps, state, epoch=epoch, device=device, generator=generator, use_amp=use_amp
        )
        steps.train_seconds += time.perf_counter() - epoch_started
        row = _end_epoch(
            model,
            config,
            train_source,
            val_source,
            run_dir,
            steps,
            state,
            history,
            epoch=epoch,
            losses=losses,
            device=device,
            multi_label=multi_label,
            metric=metric,
            use_amp=use_amp,
            select_on_val=select_on_val,
        )
        log_epoch(run_dir, row, epochs=config.epochs, best_epoch=state["best_epoch"])
        if progress is not None:
            progress(epoch, {**row, "epochs": config.epochs, "best_epoch": state["best_epoch"]})
    if not (run_dir / "best.safetensors").exists():
        raise TrainingError(f"no epoch finished in {run_dir}")
    load_checkpoint(run_dir, "best", model=model)
    return history, state, steps.samples, steps.train_seconds


@dataclass
class _Steps:
    """What the optimisation steps carry across epochs."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    pos_weight: torch.Tensor | None
    samples: int = 0  # videos trained on (throughput)
    train_seconds: float = 0.0
    consecutive_bad: int = 0  # steps in a row with a non-finite loss or gradient


def _optimizer(model: Head, config: TrainConfig, train_source: SplitSource) -> tuple[torch.optim.Optimizer, Any]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_source) / config.batch_size)
    scheduler = warmup_cosine(
        optimizer,
        warmup_steps=round(config.warmup_epochs * steps_per_epoch),
        total_steps=config.epochs * steps_per_epoch,
    )
    return optimizer, scheduler


def _pos_weight(
    config: TrainConfig, train_source: SplitSource, *, multi_label: bool, device: torch.device
) -> torch.Tensor | None:
    if not (config.pos_weight and multi_label):
        return None
    positives = train_source.targets.sum(dim=0)
    return ((len(train_source) - positives) / positives.clamp(min=1)).clamp(1.0, 100.0).to(device)


def _resumed(run_dir: Path, model: Head, optimizer, scheduler, *, resume: bool) -> tuple[list[dict], dict]:
    """(history, state): a fresh start, or where `--resume` finds the last epoch."""
    history: list[dict] = []
    state = {"epoch": 0, "best_value": -math.inf, "best_epoch": 0, "bad_epochs": 0, "skipped_steps": 0}
    if resume and (run_dir / "last.safetensors").exists():
        state = load_checkpoint(run_dir, "last", model=model, optimizer=optimizer, scheduler=scheduler)
        if (run_dir / "history.csv").exists():
            with open(run_dir / "history.csv") as handle:
                history = [
                    {k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in csv.DictReader(handle)
                ]
        log.info("resuming %s after epoch %d", run_dir, state["epoch"])
    return history, state


def _train_epoch(
    model: Head,
    config: TrainConfig,
    train_source: SplitSource,
    steps: _Steps,
    state: dict,
    *,
    epoch: int,
    device: torch.device,
    generator: torch.Generator,
    use_amp: bool,
) -> list[float]:
    """One pass over the train split; the losses of the steps taken."""
    optimizer, scaler = steps.optimizer, steps.scaler
    losses = []
    for batch in train_source.batches(config.batch_size, shuffle=True, generator=generator):
        sampled = len(batch)  # throughput counts the split's videos, not the companions added to them
        batch = with_companions(model, batch, train_source, generator).to(device, non_blocking=True)
        with autocast(device, use_amp):
            output = model.forward_batch(batch)
            loss, _parts = model.loss(output, batch, pos_weight=steps.pos_weight)
        loss = loss.float()
        optimizer.zero_grad(set_to_none=True)
        bad = "the loss was" if not torch.isfinite(loss) else None
        if bad is None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            bad = None if torch.isfinite(grad_norm) else "the gradients were"  # finite loss, NaN gradient
        if bad is not None:  # skip the step; stop when it keeps happening
            state["skipped_steps"] += 1
            steps.consecutive_bad += 1
            optimizer.zero_grad(set_to_none=True)
            if steps.consecutive_bad >= config.max_bad_steps:
                raise TrainingError(
                    f"{bad} not finite for {steps.consecutive_bad} steps in a row (epoch {epoch}); "
                    "lower --lr or check the features for NaN (vidcache verify)"
                )
            continue
        steps.consecutive_bad = 0
        scaler.step(optimizer)
        scaler.update()
        steps.scheduler.step()
        model.after_step(output, batch)
        losses.append(float(loss.detach()))
        steps.samples += sampled
    return losses


def _end_epoch(
    model: Head,
    config: TrainConfig,
    train_source: SplitSource,
    val_source: SplitSource,
    run_dir: Path,
    steps: _Steps,
    state: dict,
    history: list[dict],
    *,
    epoch: int,
    losses: list[float],
    device: torch.device,
    multi_label: bool,
    metric: str,
    use_amp: bool,
    select_on_val: bool,
) -> dict:
    """Validate, keep the best epoch, checkpoint and write the history; the epoch's history row."""
    val, _ = validate(model, train_source, val_source, device, multi_label=multi_label, amp=use_amp)
    if metric not in val:
        raise ConfigError(f"--early-stop-metric {metric!r} is not computed here; choose from {sorted(val)}")
    row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan")}
    row.update({f"val_{k}": v for k, v in val.items()})
    row["lr"] = steps.scheduler.get_last_lr()[0]
    history.append(row)
    value = val[metric]
    with deferred():  # SIGTERM/Ctrl-C waits until best, last and history agree on this epoch
        state["epoch"] = epoch
        if value > state["best_value"] or not select_on_val:  # val too small to choose: keep the latest
            state.update(best_value=value, best_epoch=epoch, bad_epochs=0)
            save_checkpoint(run_dir, "best", model=model, state=dict(state))
        else:
            state["bad_epochs"] += 1
        save_checkpoint(
            run_dir, "last", model=model, optimizer=steps.optimizer, scheduler=steps.scheduler, state=dict(state)
        )
        write_history(run_dir, history)
    return row


def train(
    cache_dir: str | Path,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    command: str = "",
    progress=None,
) -> TrainSummary:
    """Train `config.head` on the cache into `run_dir`; `lr` / `weight_decay` left to None are chosen
    on val first by a short search (heads/search.py) for heads trained by steps."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise ConfigError(f"run directory {run_dir} is not empty; use another --out or add --resume")
    inputs = HEADS.get(config.head).inputs(config.options)
    mined = [type(i).__name__ for i in inputs if isinstance(i, MinedNegatives | MinedNeighbours)]
    if config.items == "shots" and mined:  # mined lists are per video: a shot item has none
        raise ConfigError(
            f"--items shots: the {config.head} head's mined inputs ({', '.join(mined)}) are lists per video, "
            "not per shot; train without them (--hard-negatives 0 / --cross-view-k 0) or on --items videos"
        )
    precheck_inputs(cache_dir, inputs)  # before the search writes
    search = None
    if HEADS.get(config.head).trains_by_steps(config.options):
        if needs_search(config):
            run_dir.mkdir(parents=True, exist_ok=True)
            config, search = search_hyperparameters(cache_dir, config, run_dir, train_once=_train_once)
        config = with_defaults(config)
    summary = _train_once(cache_dir, config, run_dir, resume=resume, command=command, progress=progress)
    if search is not None:
        summary.search = search
        summary.seconds = time.perf_counter() - started
        if search.get("skipped"):
            summary.warnings = [*summary.warnings, "no lr / weight-decay search: val too small; defaults kept"]
        (run_dir / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2, default=str))
    return summary


@dataclass
class TrainData:
    """The splits and their features, read once: a sweep trains every config on the same `TrainData`."""

    cache: Cache
    splits: Splits
    train: SplitSource
    val: SplitSource
    view_identity: dict
    view_identities: dict
    memo: dict = field(default_factory=dict)  # results every config of a sweep shares (the solved probe branch)
    shared: bool = False  # a sweep's: the next config trains on the held splits too, so none is released


def load_data(cache: Cache, config: TrainConfig) -> TrainData:
    """What `_train_once` reads from the cache; depends only on the config's views, task, split and
    memory settings, not on the head or its optimisation."""
    views = config.all_views
    identities = {view: cache.view_info(view) for view in views}
    if config.items == "shots":  # one pooled row per shot, held in memory
        from .shot_items import shot_data

        splits, shot_sources = shot_data(
            cache, views, task=config.task, val_fraction=config.val_fraction, pooling=config.shot_pooling,
            shot_labels=config.shot_labels, splits=(TRAIN, VAL),
        )  # fmt: skip
        return TrainData(cache, splits, shot_sources[TRAIN], shot_sources[VAL], identities[config.view], identities)
    splits: Splits = make_splits(cache, views, task=config.task, val_fraction=config.val_fraction)
    if config.split_sample:  # a search trial: a seeded sample of each split
        splits = sample_splits(splits, config.split_sample, seed=config.seed)
    budget = config.memory_budget_gb * 2**30
    located: dict = {}  # each view's catalog locations, read once for both splits
    sources = {
        split: SplitSource(
            cache,
            views,
            splits.ids[split],
            multi_hot(splits.ids[split], splits.labels, splits.vocabulary),
            max_frames=config.max_frames,
            memory_budget_bytes=budget / 2,
            located=located,
        )
        for split in (TRAIN, VAL)
    }
    return TrainData(cache, splits, sources[TRAIN], sources[VAL], cache.view_info(config.view), identities)


def _train_once(
    cache_dir: str | Path,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    command: str = "",
    progress=None,
    data: TrainData | None = None,
    plots: bool = True,
) -> TrainSummary:
    if data is not None:
        return _fit(cache_dir, config, run_dir, data, resume=resume, command=command, progress=progress, plots=plots)
    with Cache(cache_dir) as cache:
        data = load_data(cache, config)
        return _fit(cache_dir, config, run_dir, data, resume=resume, command=command, progress=progress, plots=plots)


def _fit(
    cache_dir: str | Path,
    config: TrainConfig,
    run_dir: str | Path,
    data: TrainData,
    *,
    resume: bool,
    command: str,
    progress,
    plots: bool,
) -> TrainSummary:
    started = time.perf_counter()
    run_dir = Path(run_dir)
    if run_dir.exists() and any(p.name != SEARCH_DIR for p in run_dir.iterdir()) and not resume:
        raise ConfigError(f"run directory {run_dir} is not empty; use another --out or add --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    generator = seed_everything(config.seed, deterministic=config.deterministic)
    device = resolve_device(config.device)
    splits, train_source, val_source = data.splits, data.train, data.val
    config = resolve_schedule(config, train_videos=len(train_source))  # recorded resolved, below
    model, context = _build_model(config, data, device)
    for source in (train_source, val_source):  # a head that sees only a video's mean frame reads one row per video
        source.read_means(getattr(model, "mean_pooled", False))
    resolved = _record_config(cache_dir, config, run_dir, data, model, context, resume=resume, command=command)
    metric = _metric_key(config, splits.multi_label, model.kind)
    check = check_val_split(
        val_source.targets, multi_label=splits.multi_label, kind=model.kind, vocabulary=splits.vocabulary
    )
    for warning in check.warnings:
        log.warning("%s", warning)
    use_amp = config.amp and device.type == "cuda"
    fitted = _fit_model(
        model,
        config,
        run_dir,
        data,
        device=device,
        metric=metric,
        generator=generator,
        resume=resume,
        progress=progress,
        select_on_val=check.usable,
        use_amp=use_amp,
    )
    history, state, report_extra, samples, train_seconds, at_half, val_scores = fitted
    plots = plots and not config.search_trial
    tuned, report, fallback = _write_val_outputs(
        model, run_dir, splits, val_source, history, val_scores, report_extra=report_extra, plots=plots
    )
    summary = TrainSummary(
        run_dir=str(run_dir),
        head=config.head,
        view=config.view,
        task=resolved["task"],
        classes=len(splits.vocabulary),
        train_videos=len(train_source),
        val_videos=len(val_source),
        epochs_run=state["epoch"],
        best_epoch=state["best_epoch"],
        best_metric=metric,
        best_value=float(state["best_value"]),
        val_metrics=at_half,
        val_metrics_tuned={k: v for k, v in tuned.items() if k.endswith("_tuned")},
        seconds=time.perf_counter() - started,
        samples_per_s=samples / train_seconds if train_seconds > 0 else 0.0,
        skipped_steps=state["skipped_steps"],
        streamed=not train_source.in_memory,
        report=report,
        warnings=[*check.warnings, *threshold_warning(fallback, len(splits.vocabulary))],
        threshold_fallback=fallback,
    )
    (run_dir / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2, default=str))
    return summary


def _build_model(config: TrainConfig, data: TrainData, device: torch.device) -> tuple[Head, HeadContext]:
    """The head, on `device`, with the context its inputs declare (label texts, mined lists)."""
    cache, splits, views = data.cache, data.splits, config.all_views
    head_class = HEADS.get(config.head)
    train_source = data.train
    context = build_context(
        cache,
        head_class.inputs(config.options),
        vocabulary=splits.vocabulary,
        views=views,
        input_dims=train_source.dims,
        video_ids=splits.ids[TRAIN],
        seed=config.seed,
        head=config.head,
    )
    model = build_head(
        config,
        input_dim=train_source.dim,
        num_classes=len(splits.vocabulary),
        multi_label=splits.multi_label,
        input_dims=train_source.dims,
        context=context,
    ).to(device)
    return model, context


def _record_config(
    cache_dir: str | Path,
    config: TrainConfig,
    run_dir: Path,
    data: TrainData,
    model: Head,
    context: HeadContext,
    *,
    resume: bool,
    command: str,
) -> dict:
    """Write RUN/config.json (what `eval`/`predict` rebuild the head from); `--resume` must find the
    same options, classes, videos and views."""
    splits, train_source = data.splits, data.train
    view_identity, view_identities = data.view_identity, data.view_identities
    resolved = {
        "train_config": config.saved(),  # the head's own options verbatim under "options"
        "config_version": CONFIG_VERSION,
        "cache": str(Path(cache_dir).resolve()),
        "view_identity": view_identity,
        "view_identities": view_identities,
        "input_dim": train_source.dim,
        "input_dims": train_source.dims,
        "head_kind": model.kind,
        "context": context.describe(),
        "vocabulary": splits.vocabulary,
        "task": "multi-label" if splits.multi_label else "single-label",
        "splits": {k: len(v) for k, v in splits.ids.items()},
        "splits_sha1": hashlib.sha1(json.dumps(splits.ids, sort_keys=True).encode()).hexdigest(),
        "val_from_train": splits.val_from_train,
        "command": command,
        "vidcache_version": __version__,
    }
    config_path = run_dir / "config.json"
    if resume and config_path.exists():
        recorded = json.loads(config_path.read_text())
        # a field added since the run started (e.g. `search_trial`) was its default then
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
        then = {**json.loads(json.dumps(defaults, default=str)), **recorded["train_config"]}
        if then != resolved["train_config"] or recorded["vocabulary"] != splits.vocabulary:
            raise ConfigError(f"--resume: {run_dir} was trained with other options or classes; use a new --out")
        same_views = recorded.get("view_identities") == json.loads(json.dumps(view_identities, default=str))
        if recorded.get("splits_sha1") != resolved["splits_sha1"] or not same_views:
            raise ConfigError(f"--resume: the cache's videos or view changed since {run_dir} started; use a new --out")
    config_path.write_text(json.dumps(resolved, indent=2, sort_keys=True, default=str))
    return resolved


def _fit_model(
    model: Head,
    config: TrainConfig,
    run_dir: Path,
    data: TrainData,
    *,
    device: torch.device,
    metric: str,
    generator: torch.Generator,
    resume: bool,
    progress,
    select_on_val: bool,
    use_amp: bool,
) -> tuple[list[dict], dict, dict, int, float, dict, np.ndarray]:
    """Solve (a probe) or train by epochs: (history, state, report extras, videos trained on, seconds
    of training, val metrics at 0.5, val scores)."""
    splits, train_source, val_source = data.splits, data.train, data.val
    if getattr(model, "solves", False):
        solved = solve_probe(
            model,
            train_source,
            val_source,
            device=device,
            multi_label=splits.multi_label,
            metric=metric,
            select_on_val=select_on_val,
        )
        history, state, report_extra = solved.history, solved.state, solved.report
        samples, train_seconds = solved.samples, solved.seconds
        # held-out numbers: the train-only fit at the chosen C (the saved model may be refitted on train+val)
        at_half, val_scores = solved.val_metrics, solved.val_scores
        with deferred():
            save_checkpoint(run_dir, "best", model=model, state=dict(state))
            save_checkpoint(run_dir, "last", model=model, state=dict(state))
            write_history(run_dir, history)
        for row in history:
            log_epoch(run_dir, row, epochs=len(history), best_epoch=state["best_epoch"])
            if progress is not None:
                progress(row["epoch"], {**row, "epochs": len(history), "best_epoch": state["best_epoch"]})
    else:
        history, state, samples, train_seconds = _run_epochs(
            model,
            config,
            train_source,
            val_source,
            run_dir,
            device=device,
            multi_label=splits.multi_label,
            metric=metric,
            generator=generator,
            resume=resume,
            progress=progress,
            select_on_val=select_on_val,
        )
        if not data.shared:  # the epochs are over: the probe solve reads its own copy (1.2 GB at 1M videos)
            train_source.release()
        report_extra = {}
        # a search trial is judged on its epochs' val metric (`best_value`): the blend would not change it
        if getattr(model, "probe", None) is not None and hasattr(model, "probe_mix") and not config.search_trial:
            report_extra = blend_probe(
                model,
                train_source,
                val_source,
                device=device,
                multi_label=splits.multi_label,
                metric=metric,
                select_on_val=select_on_val,
                memo=data.memo,
            )
            save_checkpoint(run_dir, "best", model=model, state=dict(state))
        at_half, val_scores = validate(
            model, train_source, val_source, device, multi_label=splits.multi_label, amp=use_amp
        )
    return history, state, report_extra, samples, train_seconds, at_half, val_scores


def _write_val_outputs(
    model: Head,
    run_dir: Path,
    splits: Splits,
    val_source: SplitSource,
    history: list[dict],
    val_scores: np.ndarray,
    *,
    report_extra: dict,
    plots: bool,
) -> tuple[dict, dict, list[str]]:
    """Thresholds tuned on val, the vocabulary, what the head learned, per-class AP and confusions:
    (the metrics at the tuned thresholds, what the head learned, the classes left at the default threshold)."""
    val_targets = val_source.targets.numpy()
    classify = model.kind == "classify"
    fallback: list[str] = []
    thresholds = np.full(len(splits.vocabulary), 0.5)  # single-label predicts the argmax: no threshold
    if splits.multi_label and classify:
        thresholds, fell_back = tune_thresholds_with_evidence(val_targets, val_scores)
        fallback = [label for label, flag in zip(splits.vocabulary, fell_back, strict=True) if flag]
    tuned = (
        evaluate(val_targets, val_scores, multi_label=True, thresholds=thresholds)
        if splits.multi_label and classify
        else {}
    )
    (run_dir / "thresholds.json").write_text(
        json.dumps(dict(zip(splits.vocabulary, map(float, thresholds), strict=True)), indent=2)
    )
    (run_dir / "vocabulary.json").write_text(json.dumps(splits.vocabulary))
    report = {**model.report(), **report_extra}
    if report:
        (run_dir / "learned.json").write_text(json.dumps(report, indent=2))
    ap = per_class_ap(val_targets, val_scores) if classify else None
    if plots:  # a sweep plots only the run it keeps
        _plot(run_dir, history, splits.vocabulary, ap)
    if ap is not None:  # what `vidcache report` shows: per-class AP and the most confused pairs on val
        per_class = {c: (None if np.isnan(v) else float(v)) for c, v in zip(splits.vocabulary, ap, strict=True)}
        (run_dir / "per_class_ap.json").write_text(json.dumps(per_class, indent=2))
        pairs = confused_pairs(
            val_targets,
            val_scores,
            multi_label=splits.multi_label,
            thresholds=thresholds if splits.multi_label else None,
            vocabulary=splits.vocabulary,
        )
        (run_dir / "confusions.json").write_text(json.dumps(pairs, indent=2))
    return tuned, report, fallback
