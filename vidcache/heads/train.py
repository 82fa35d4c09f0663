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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..cache.reader import Cache
from ..errors import ConfigError, VidcacheError
from ..extract.device import resolve_device
from .base import HEADS, Head
from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import TRAIN, VAL, Splits, SplitSource, make_splits, multi_hot
from .metrics import evaluate, per_class_ap, tune_thresholds

log = logging.getLogger("vidcache.heads")
RUN_FILES = ("config.json", "history.csv", "summary.json", "thresholds.json", "best.safetensors", "last.safetensors")


class TrainingError(VidcacheError):
    """Training cannot go on (e.g. the loss stayed non-finite)."""


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


def build_head(config: TrainConfig, *, input_dim: int, num_classes: int, multi_label: bool) -> Head:
    return HEADS.create(
        config.head, input_dim=input_dim, num_classes=num_classes, multi_label=multi_label, options=config.options
    )


def warmup_cosine(optimizer, *, warmup_steps: int, total_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict_scores(
    model: Head, source: SplitSource, device: torch.device, *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores [N, C] (and embeddings [N, E] when the head has them) in the source's video order."""
    model.eval()
    scores = np.zeros((len(source), model.num_classes), np.float32)
    embeddings = None
    for features, mask, _, rows in source.batches(batch_size, shuffle=False):
        out = model(features.to(device), mask.to(device))
        scores[rows.numpy()] = model.scores(out.logits).float().cpu().numpy()
        if out.embedding is not None:
            if embeddings is None:
                embeddings = np.zeros((len(source), out.embedding.shape[1]), np.float32)
            embeddings[rows.numpy()] = out.embedding.float().cpu().numpy()
    return scores, embeddings


def _metric_key(config: TrainConfig, multi_label: bool) -> str:
    if config.early_stop_metric != "auto":
        return config.early_stop_metric
    return "map_macro" if multi_label else "top1"


def _plot(run_dir: Path, history: list[dict], vocabulary: list[str], ap: np.ndarray) -> None:
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
    order = np.argsort(np.nan_to_num(ap, nan=-1.0))
    fig, axis = plt.subplots(figsize=(6, max(2.5, 0.22 * len(vocabulary))))
    axis.barh([vocabulary[i] for i in order], np.nan_to_num(ap[order]))
    axis.set_xlabel("average precision (val)")
    axis.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(run_dir / "per_class_ap.png", dpi=120)
    plt.close(fig)


def train(
    cache_dir: str | Path,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    command: str = "",
    progress=None,
) -> TrainSummary:
    started = time.perf_counter()
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise ConfigError(f"run directory {run_dir} is not empty; use another --out or add --resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    generator = seed_everything(config.seed, deterministic=config.deterministic)
    device = resolve_device(config.device)
    with Cache(cache_dir) as cache:
        splits: Splits = make_splits(cache, config.view, task=config.task, val_fraction=config.val_fraction)
        budget = config.memory_budget_gb * 2**30
        sources = {
            split: SplitSource(
                cache,
                config.view,
                splits.ids[split],
                multi_hot(splits.ids[split], splits.labels, splits.vocabulary),
                max_frames=config.max_frames,
                memory_budget_bytes=budget / 2,
            )
            for split in (TRAIN, VAL)
        }
        view_identity = cache.view_info(config.view)
        train_source, val_source = sources[TRAIN], sources[VAL]
        model = build_head(
            config, input_dim=train_source.dim, num_classes=len(splits.vocabulary), multi_label=splits.multi_label
        ).to(device)
        resolved = {
            "train_config": dataclasses.asdict(config),
            "cache": str(Path(cache_dir).resolve()),
            "view_identity": view_identity,
            "input_dim": train_source.dim,
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
            if recorded["train_config"] != resolved["train_config"] or recorded["vocabulary"] != splits.vocabulary:
                raise ConfigError(f"--resume: {run_dir} was trained with other options or classes; use a new --out")
            if recorded.get("splits_sha1") != resolved["splits_sha1"] or recorded["view_identity"] != view_identity:
                raise ConfigError(
                    f"--resume: the cache's videos or view changed since {run_dir} started; use a new --out"
                )
        config_path.write_text(json.dumps(resolved, indent=2, sort_keys=True, default=str))

        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = math.ceil(len(train_source) / config.batch_size)
        scheduler = warmup_cosine(
            optimizer,
            warmup_steps=round(config.warmup_epochs * steps_per_epoch),
            total_steps=config.epochs * steps_per_epoch,
        )
        pos_weight = None
        if config.pos_weight and splits.multi_label:
            positives = train_source.targets.sum(dim=0)
            pos_weight = ((len(train_source) - positives) / positives.clamp(min=1)).clamp(1.0, 100.0).to(device)
        metric = _metric_key(config, splits.multi_label)
        history: list[dict] = []
        state = {"epoch": 0, "best_value": -math.inf, "best_epoch": 0, "bad_epochs": 0, "skipped_steps": 0}
        if resume and (run_dir / "last.safetensors").exists():
            state = load_checkpoint(run_dir, "last", model=model, optimizer=optimizer, scheduler=scheduler)
            if (run_dir / "history.csv").exists():
                with open(run_dir / "history.csv") as handle:
                    history = [
                        {k: int(v) if k == "epoch" else float(v) for k, v in row.items()}
                        for row in csv.DictReader(handle)
                    ]
            log.info("resuming %s after epoch %d", run_dir, state["epoch"])
        samples = 0
        train_seconds = 0.0
        consecutive_bad = 0
        for epoch in range(state["epoch"] + 1, config.epochs + 1):
            if state["bad_epochs"] >= config.patience:
                break
            model.train()
            # per-epoch seeds (shuffling and dropout): a resumed run continues exactly as an unbroken one
            generator.manual_seed(config.seed * 1_000_003 + epoch)
            torch.manual_seed(config.seed * 1_000_003 + epoch)
            epoch_started = time.perf_counter()
            losses = []
            for features, mask, targets, _ in train_source.batches(
                config.batch_size, shuffle=True, generator=generator
            ):
                features, mask, targets = features.to(device), mask.to(device), targets.to(device)
                output = model(features, mask)
                loss, _parts = model.loss(output, targets, pos_weight=pos_weight)
                optimizer.zero_grad(set_to_none=True)
                bad = "the loss was" if not torch.isfinite(loss) else None
                if bad is None:
                    loss.backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    bad = None if torch.isfinite(grad_norm) else "the gradients were"  # finite loss, NaN gradient
                if bad is not None:  # skip the step; stop when it keeps happening
                    state["skipped_steps"] += 1
                    consecutive_bad += 1
                    optimizer.zero_grad(set_to_none=True)
                    if consecutive_bad >= config.max_bad_steps:
                        raise TrainingError(
                            f"{bad} not finite for {consecutive_bad} steps in a row (epoch {epoch}); "
                            "lower --lr or check the features for NaN (vidcache verify)"
                        )
                    continue
                consecutive_bad = 0
                optimizer.step()
                scheduler.step()
                model.after_step(output, targets)
                losses.append(float(loss.detach()))
                samples += len(features)
            train_seconds += time.perf_counter() - epoch_started
            val_scores, _ = predict_scores(model, val_source, device)
            val = evaluate(val_source.targets.numpy(), val_scores, multi_label=splits.multi_label)
            if metric not in val:
                raise ConfigError(f"--early-stop-metric {metric!r} is not computed here; choose from {sorted(val)}")
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan")}
            row.update({f"val_{k}": v for k, v in val.items()})
            row["lr"] = scheduler.get_last_lr()[0]
            history.append(row)
            value = val[metric]
            state["epoch"] = epoch
            if value > state["best_value"]:
                state.update(best_value=value, best_epoch=epoch, bad_epochs=0)
                save_checkpoint(run_dir, "best", model=model, state=dict(state))
            else:
                state["bad_epochs"] += 1
            save_checkpoint(run_dir, "last", model=model, optimizer=optimizer, scheduler=scheduler, state=dict(state))
            with open(run_dir / "history.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(history[0]))
                writer.writeheader()
                writer.writerows(history)
            if progress is not None:
                progress(epoch, row)
        if not (run_dir / "best.safetensors").exists():
            raise TrainingError(f"no epoch finished in {run_dir}")
        load_checkpoint(run_dir, "best", model=model)
        val_scores, _ = predict_scores(model, val_source, device)
        val_targets = val_source.targets.numpy()
        thresholds = (
            tune_thresholds(val_targets, val_scores) if splits.multi_label else np.full(len(splits.vocabulary), 0.5)
        )
        at_half = evaluate(val_targets, val_scores, multi_label=splits.multi_label)
        tuned = evaluate(val_targets, val_scores, multi_label=True, thresholds=thresholds) if splits.multi_label else {}
        (run_dir / "thresholds.json").write_text(
            json.dumps(dict(zip(splits.vocabulary, map(float, thresholds), strict=True)), indent=2)
        )
        (run_dir / "vocabulary.json").write_text(json.dumps(splits.vocabulary))
        report = model.report()
        if report:
            (run_dir / "learned.json").write_text(json.dumps(report, indent=2))
        _plot(run_dir, history, splits.vocabulary, per_class_ap(val_targets, val_scores))
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
        )
        (run_dir / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2, default=str))
        return summary
