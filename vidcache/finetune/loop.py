"""`finetune`: the CLIP image tower that made a cached view, trained jointly with a head on the
view's frames; the same splits, metrics, early stopping on val and run-directory files as `train`
(config.json, history.csv, best/last.safetensors, thresholds.json, vocabulary.json, summary.json),
plus RUN/backbone.safetensors for `extract`.

Resume is exact: `last.safetensors` holds model, optimizer and scheduler, its state the epoch, step
and RNG states; every epoch reseeds shuffling, augmentation and dropout from (seed, epoch), so a run
resumed after epoch k repeats epochs k+1.. exactly as an unbroken run computes them."""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import json
import logging
import math
import secrets
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..cache.reader import Cache
from ..errors import ConfigError, fault_point
from ..extract.weights import state_dict_sha256
from ..heads import HEADS, HeadOutput
from ..heads.base import TrainingError
from ..heads.checkpoint import load_checkpoint, save_checkpoint
from ..heads.data import TEST, TRAIN, VAL, Batch, make_splits, multi_hot
from ..heads.metrics import evaluate, tune_thresholds
from ..signals import deferred
from ..version import __version__
from . import distributed
from .augment import augment_video
from .config import FinetuneConfig, parse_head_options
from .export import BACKBONE_FILE, export_backbone, provenance
from .frames import CacheFrames, FrameSource, VideoFrames, preprocess_of
from .head_init import fit_head, frozen_features
from .model import VideoModel, encoder_for_identity, set_trainable
from .optim import make_optimizer, param_groups, warmup_cosine

log = logging.getLogger("vidcache.finetune")


@dataclass
class FinetuneSummary:
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
    val_metrics: dict = field(default_factory=dict)
    test_metrics: dict = field(default_factory=dict)  # the best epoch on the test split, when there is one
    unfreeze: str = "all"
    trainable_backbone_params: int = 0
    frozen_backbone_params: int = 0
    frames_from: str = "cache"
    steps: int = 0
    seconds: float = 0.0
    train_frames_per_s: float = 0.0
    world_size: int = 1
    backbone: str = ""  # RUN/backbone.safetensors; "" when fine-tuning did not improve on the base weights
    backbone_improved: bool = True
    base_weights: str = ""  # not improved: the extract flags of the weights to use instead
    warnings: list[str] = field(default_factory=list)


def _not_improved(summary: FinetuneSummary, identity: dict, run_dir: Path, cache_dir, *, best_epoch: int) -> None:
    """The best epoch's tower is the base tower bit for bit: exporting it would give the same weights a
    new sha256 and a cache would recompute identical features as new. Export nothing, say why."""
    (run_dir / BACKBONE_FILE).unlink(missing_ok=True)  # a resumed run's earlier export is not the best
    # a tag stays a tag (its file is wherever the HF cache put it); a weights file is named by its path
    kind = identity.get("weights_kind")
    pretrained = identity.get("weights_path") if kind == "file" else identity.get("pretrained")
    summary.backbone_improved = False
    summary.base_weights = f"--clip-model {identity.get('model')} --clip-pretrained {pretrained}"
    why = ("epoch 0, the head fitted on the untouched tower, scored best on val" if best_epoch == 0
           else f"the best epoch ({best_epoch}) left the tower as it was (frozen by --unfreeze or the lr)")  # fmt: skip
    summary.warnings.append(
        f"fine-tuning did not improve on the base weights: {why}, so no {BACKBONE_FILE} was written; "
        f"cache {cache_dir} already holds those features (the run's head was fitted on them); to make them "
        f"again extract with {summary.base_weights}"
    )


def _rng_state(generator: torch.Generator) -> dict:
    pack = lambda t: base64.b64encode(t.numpy().tobytes()).decode()  # noqa: E731
    return {"torch": pack(torch.get_rng_state()), "generator": pack(generator.get_state())}


def _restore_rng(state: dict, generator: torch.Generator) -> None:
    unpack = lambda s: torch.from_numpy(np.frombuffer(base64.b64decode(s), np.uint8).copy())  # noqa: E731
    if "torch" in state:
        torch.set_rng_state(unpack(state["torch"]))
        generator.set_state(unpack(state["generator"]))


def _head_options(config: FinetuneConfig):
    """The head's own options; a probe is trained by steps with the tower (an L-BFGS solve or a blend
    solved on frozen features has no meaning while the features move)."""
    known = {f.name for f in dataclasses.fields(HEADS.options_class(config.head))}
    by_steps = {k: v for k, v in {"solver": "adamw", "probe_blend": False}.items() if k in known}
    options = {**by_steps, **parse_head_options(config.head_options, config.head)}
    if options.get("solver", "adamw") != "adamw" or options.get("probe_blend", False):
        raise ConfigError("--head-options: fine-tuning trains the head by steps: solver=adamw, probe_blend=false only")
    return HEADS.options(config.head, **options)


def _metric_key(config: FinetuneConfig, multi_label: bool) -> str:
    if config.early_stop_metric != "auto":
        return config.early_stop_metric
    return "map_macro" if multi_label else "top1"


def _autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA GPUs that have it; fp32 elsewhere (fp16 would need loss scaling)."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def collate(
    source: FrameSource,
    video_ids: list[str],
    rows: list[int],
    targets: torch.Tensor,
    *,
    view: str,
    augment: FinetuneConfig | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Batch]:
    """Frames [B, T, 3, H, W] uint8 (zero-padded), mask [B, T] and a feature-less `Batch`."""
    clips, times = [], []
    for video_id in video_ids:
        frames, stamps = source.get(video_id)
        if augment is not None and augment.augment:
            frames = augment_video(frames, scale_min=augment.crop_scale_min, generator=generator, flip=augment.flip)
        clips.append(frames)
        times.append(stamps)
    steps = max(len(c) for c in clips)
    frames = torch.zeros((len(clips), steps, *clips[0].shape[1:]), dtype=torch.uint8)
    mask = torch.zeros((len(clips), steps), dtype=torch.bool)
    seconds = torch.zeros((len(clips), steps), dtype=torch.float32)
    for number, (clip, stamps) in enumerate(zip(clips, times, strict=True)):
        frames[number, : len(clip)] = clip
        mask[number, : len(clip)] = True
        seconds[number, : len(clip)] = torch.from_numpy(np.asarray(stamps, np.float32))
    index = torch.tensor(rows, dtype=torch.long)
    batch = Batch({}, {view: mask}, {view: seconds}, {view: torch.ones(len(clips), dtype=torch.bool)},
                  targets[index], index, list(video_ids))  # fmt: skip
    return frames, mask, batch


def _to(batch: Batch, device: torch.device) -> Batch:
    move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
    return Batch({}, move(batch.masks), move(batch.times_s), move(batch.present), batch.targets.to(device),
                 batch.rows, batch.video_ids)  # fmt: skip


@torch.no_grad()
def predict_logits(
    model: VideoModel, source: FrameSource, video_ids: list[str], targets: torch.Tensor, *, view: str,
    device: torch.device, batch_size: int, amp: bool,
) -> np.ndarray:  # fmt: skip
    """Logits [N, C] of the videos, unaugmented frames, eval mode."""
    model.eval()
    out = []
    for start in range(0, len(video_ids), batch_size):
        ids = video_ids[start : start + batch_size]
        frames, mask, batch = collate(source, ids, list(range(start, start + len(ids))), targets, view=view)
        with _autocast(device, amp):
            _, logits, _ = model(frames.to(device), mask.to(device), _to(batch, device), with_loss=False)
        out.append(logits.float().cpu().numpy())
    return np.concatenate(out)


def _write_history(run_dir: Path, history: list[dict]) -> None:
    with open(run_dir / "history.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    with open(path) as handle:
        return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def finetune(
    cache_dir: str | Path,
    config: FinetuneConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    command: str = "",
    progress=None,
) -> FinetuneSummary:
    """Fine-tune the tower of `config.view` with `config.head` into `run_dir` (see the module doc)."""
    started = time.perf_counter()
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise ConfigError(f"run directory {run_dir} is not empty; use another --out or add --resume")
    world = distributed.start(config.device)
    try:
        return _finetune(cache_dir, config, run_dir, world, resume=resume, command=command, progress=progress,
                         started=started)  # fmt: skip
    finally:
        distributed.stop(world)


def _finetune(cache_dir, config: FinetuneConfig, run_dir: Path, world, *, resume, command, progress, started):
    if world.main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    with Cache(cache_dir) as cache:
        data = _open_data(cache, cache_dir, config)
        run = _build_run(config, data, run_dir, world, generator=generator, progress=progress)
        _start_or_resume(run, cache_dir, resume=resume, command=command)
        fresh = not (resume and (run_dir / "last.safetensors").exists())
        if fresh and config.head_init == "probe":  # LP-FT: epoch 0 is the head fitted on frozen features
            _probe_epoch(run)
        train_model = distributed.wrap(run.model, world)  # after the head fit: DDP broadcasts rank 0's weights
        for epoch in range(run.state["epoch"] + 1, config.epochs + 1):
            if run.state["bad_epochs"] >= config.patience:
                break
            fault_point("train-epoch", run_dir)
            epoch_started = time.perf_counter()
            losses = _train_epoch(run, train_model, epoch)
            run.train_seconds += time.perf_counter() - epoch_started
            _end_epoch(run, epoch, losses)
        if not (run_dir / "best.safetensors").exists():
            raise TrainingError(f"no epoch finished in {run_dir}")
        load_checkpoint(run_dir, "best", model=run.model)
        val_scores, at_best, test_metrics = _final_metrics(run)
        summary = _summary(run, at_best, test_metrics)
        if world.main:
            _write_outputs(run, summary, val_scores, started=started)
        world.barrier()
        return summary


@dataclass
class _Data:
    """The cached view being fine-tuned: its identity, splits, targets, encoder and frame sources."""

    cache: Cache
    config: FinetuneConfig
    identity: dict
    splits: Any
    ids: dict[str, list[str]]
    targets: dict[str, torch.Tensor]
    encoder: Any
    preprocess: Any
    budget: float  # bytes of frames held in memory per source
    base_sha256: str = ""  # the tower before training: tells, at the end, whether it changed
    sources: dict[str, FrameSource] = field(default_factory=dict)

    def source(self, video_ids: list[str]) -> FrameSource:
        config = self.config
        if config.frames_from == "cache":
            made: FrameSource = CacheFrames(self.cache, config.frames_view, video_ids, max_frames=config.max_frames,
                                            memory_budget_bytes=self.budget)  # fmt: skip
        else:
            made = VideoFrames(self.cache, self.identity, video_ids, max_frames=config.max_frames,
                               memory_budget_bytes=self.budget)  # fmt: skip
        made.preload(workers=2)
        return made


@dataclass
class _Run:
    """What the steps of one fine-tuning run share."""

    config: FinetuneConfig
    data: _Data
    run_dir: Path
    world: Any
    device: torch.device
    generator: torch.Generator
    progress: Any
    head: Any
    model: VideoModel
    clip_model: Any
    visual: Any
    trainable: list[str]
    frozen_names: list[str]
    my_videos: int  # train videos per process (the shuffled order is padded to a multiple of the world size)
    optimizer: Any
    scheduler: Any
    metric: str
    pos_weight: torch.Tensor | None = None
    resolved: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    frames_seen: int = 0
    train_seconds: float = 0.0


def _open_data(cache: Cache, cache_dir, config: FinetuneConfig) -> _Data:
    if config.view not in cache.views():
        raise ConfigError(f"--view {config.view!r} is not in cache {cache_dir}; it has: {', '.join(cache.views())}")
    identity = cache.view_info(config.view)
    if identity.get("backbone") != "open_clip":
        raise ConfigError(f"--view {config.view}: only open_clip views can be fine-tuned (this one: "
                          f"{identity.get('backbone') or 'no model'})")  # fmt: skip
    splits = make_splits(cache, config.view, task=config.task, val_fraction=config.val_fraction)
    ids = {split: splits.ids[split] for split in (TRAIN, VAL)}
    targets = {split: multi_hot(ids[split], splits.labels, splits.vocabulary) for split in ids}
    encoder = encoder_for_identity(identity, cache_dir=cache_dir)
    preprocess = preprocess_of(identity)
    budget = config.memory_budget_gb * 2**30 / 2
    data = _Data(cache, config, identity, splits, ids, targets, encoder, preprocess, budget,
                 base_sha256=state_dict_sha256(encoder.model.visual))  # fmt: skip
    data.sources = {split: data.source(ids[split]) for split in ids}
    if config.frames_from == "cache":  # the frames must be the pixels the tower saw when it made the view
        frames_identity = cache.view_info(config.frames_view)
        differs = [k for k in ("preprocess", "sampling") if frames_identity.get(k) != identity.get(k)]
        if differs:
            raise ConfigError(f"--frames-view {config.frames_view} was made with another {' and '.join(differs)} "
                              f"than view {config.view}; extract both with the same options (--views clip,frames) "
                              "or use --frames-from videos")  # fmt: skip
    return data


def _build_run(config: FinetuneConfig, data: _Data, run_dir: Path, world, *, generator, progress) -> _Run:
    """The head, the tower with its trainable blocks, the optimiser and schedule."""
    splits, encoder, device = data.splits, data.encoder, world.device
    head_class = HEADS.get(config.head)
    needs_inputs = bool(head_class.inputs(HEADS.options_class(config.head)()))  # label texts, mined lists
    if getattr(head_class, "kind", "classify") != "classify" or needs_inputs or head_class.multi_view:
        raise ConfigError(f"--head {config.head}: fine-tuning trains single-view classification heads without "
                          "label texts; choose linear, mlp, prototype or pool")  # fmt: skip
    torch.manual_seed(config.seed)  # the head's initialisation depends on the seed only
    head = HEADS.create(
        config.head,
        input_dim=encoder.feature_dim,
        num_classes=len(splits.vocabulary),
        multi_label=splits.multi_label,
        options=_head_options(config),
        input_dims={config.view: encoder.feature_dim},
        context=None,
    )
    clip_model = encoder.model
    visual = clip_model.visual
    trainable = set_trainable(visual, config.unfrozen_blocks)
    for param in clip_model.parameters():  # the text tower never trains here
        if not any(param is p for p in visual.parameters()):
            param.requires_grad_(False)
    if config.grad_checkpointing and hasattr(visual, "set_grad_checkpointing"):
        visual.set_grad_checkpointing(True)
    model = VideoModel(visual, data.preprocess, head, view=config.view).to(device)
    frozen_names = [n for n, _ in visual.named_parameters() if n not in set(trainable)]

    my_videos = math.ceil(len(data.ids[TRAIN]) / world.size)
    micro_per_epoch = math.ceil(my_videos / config.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / config.accumulate)
    optimizer = make_optimizer(param_groups(visual, head, config), config)
    scheduler = warmup_cosine(optimizer, warmup_steps=round(config.warmup_epochs * steps_per_epoch),
                              total_steps=config.epochs * steps_per_epoch)  # fmt: skip
    return _Run(
        config=config, data=data, run_dir=run_dir, world=world, device=device, generator=generator, progress=progress,
        head=head, model=model, clip_model=clip_model, visual=visual, trainable=trainable, frozen_names=frozen_names,
        my_videos=my_videos, optimizer=optimizer, scheduler=scheduler,
        metric=_metric_key(config, splits.multi_label),
    )  # fmt: skip


def _start_or_resume(run: _Run, cache_dir, *, resume: bool, command: str) -> None:
    """Record RUN/config.json, or (--resume) check it and load the last epoch's model, optimiser and RNG."""
    config, splits, run_dir = run.config, run.data.splits, run.run_dir
    resolved = {
        "finetune_config": dataclasses.asdict(config),
        "cache": str(Path(cache_dir).resolve()),
        "view_identity": run.data.identity,
        "input_dim": run.data.encoder.feature_dim,
        "head_kind": run.head.kind,
        "vocabulary": splits.vocabulary,
        "task": "multi-label" if splits.multi_label else "single-label",
        "splits": {k: len(v) for k, v in splits.ids.items()},
        "splits_sha1": hashlib.sha1(json.dumps(splits.ids, sort_keys=True).encode()).hexdigest(),
        "val_from_train": splits.val_from_train,
        "trainable_backbone": run.trainable,
        "world_size": run.world.size,
        "command": command,
        "vidcache_version": __version__,
    }
    config_path = run_dir / "config.json"
    state = {"epoch": 0, "step": 0, "best_value": -math.inf, "best_epoch": 0, "bad_epochs": 0,
             "run_id": time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)}  # fmt: skip
    history: list[dict] = []
    if resume and (run_dir / "last.safetensors").exists():
        recorded = json.loads(config_path.read_text())
        same = recorded["finetune_config"] == json.loads(json.dumps(resolved["finetune_config"]))
        if (
            not same
            or recorded["vocabulary"] != splits.vocabulary
            or recorded["splits_sha1"] != resolved["splits_sha1"]
        ):
            raise ConfigError(f"--resume: {run_dir} was fine-tuned with other options, classes or videos; "
                              "use a new --out")  # fmt: skip
        state = load_checkpoint(run_dir, "last", model=run.model, optimizer=run.optimizer, scheduler=run.scheduler)
        _restore_rng(state.pop("rng", {}), run.generator)
        history = [row for row in _read_history(run_dir) if row["epoch"] <= state["epoch"]]
        log.info("resuming %s after epoch %d", run_dir, state["epoch"])
    elif run.world.main:
        config_path.write_text(json.dumps(resolved, indent=2, sort_keys=True, default=str))
    run.resolved, run.state, run.history = resolved, state, history


def _end_epoch(run: _Run, epoch: int, losses: list[float]) -> None:
    """Validate, keep best/last and the history (rank 0), report."""
    config, data, head, state, world = run.config, run.data, run.head, run.state, run.world
    ids, targets = data.ids, data.targets
    val_logits = predict_logits(run.model, data.sources[VAL], ids[VAL], targets[VAL], view=config.view,
                                device=run.device, batch_size=config.batch_size, amp=config.amp)  # fmt: skip
    val_scores = head.scores(torch.from_numpy(val_logits)).numpy()
    val = evaluate(targets[VAL].numpy(), val_scores, multi_label=data.splits.multi_label)
    if run.metric not in val:
        raise ConfigError(f"--early-stop-metric {run.metric!r} is not computed here; choose from {sorted(val)}")
    value = world.broadcast_float(float(val[run.metric]))
    # ties on the metric (a saturated val split) go to the lower val loss, not to the earliest epoch
    val_loss = world.broadcast_float(
        float(head.classification_loss(torch.from_numpy(val_logits), targets[VAL].to(torch.float32)))
    )
    row = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan")}
    row["val_loss"] = val_loss
    row.update({f"val_{k}": float(v) for k, v in val.items()})
    row["lr"] = run.scheduler.get_last_lr()[0]
    run.history.append(row)
    with deferred():  # SIGTERM/Ctrl-C waits until best, last and history agree on this epoch
        state["epoch"] = epoch
        improved = (value, -val_loss) > (state["best_value"], -state.get("best_loss", math.inf))
        if improved:
            state.update(best_value=value, best_loss=val_loss, best_epoch=epoch, bad_epochs=0)
        elif epoch > 0:
            state["bad_epochs"] += 1
        if world.main:
            # `last` goes last: a SIGKILL before it leaves the previous epoch's `last`, from which a
            # resume redoes this epoch and rewrites history (rows past `last`'s epoch are dropped) and best
            _write_history(run.run_dir, run.history)
            if improved:
                save_checkpoint(run.run_dir, "best", model=run.model, state=dict(state))
            save_checkpoint(run.run_dir, "last", model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
                            state={**state, "rng": _rng_state(run.generator)})  # fmt: skip
    world.barrier()
    if run.progress is not None and world.main:
        run.progress(epoch, row)


def _probe_epoch(run: _Run) -> None:
    """LP-FT's epoch 0: the head fitted on the frozen tower's features."""
    config, data, device = run.config, run.data, run.device
    ids, targets = data.ids, data.targets
    features, mask = frozen_features(run.model, data.sources[TRAIN], ids[TRAIN], batch_size=config.batch_size,
                                     device=device)  # fmt: skip
    rows = list(range(len(ids[TRAIN])))
    batch = Batch({}, {config.view: mask}, {config.view: torch.zeros(mask.shape)},
                  {config.view: torch.ones(len(rows), dtype=torch.bool)}, targets[TRAIN], torch.tensor(rows),
                  list(ids[TRAIN]))  # fmt: skip
    fit_head(run.model, features.to(device), _to(batch, device))
    _end_epoch(run, 0, [])


def _train_epoch(run: _Run, train_model, epoch: int) -> list[float]:
    """One epoch of optimiser steps (micro-batches accumulated); the loss of each step."""
    config, data, world, device, generator = run.config, run.data, run.world, run.device, run.generator
    ids, targets, optimizer = data.ids, data.targets, run.optimizer
    train_model.train()
    # per-epoch seeds (shuffle, augmentation, dropout): a resumed run repeats this epoch exactly
    generator.manual_seed(config.seed * 1_000_003 + epoch)
    torch.manual_seed(config.seed * 1_000_003 + epoch * 7919 + world.rank)
    shuffled = torch.randperm(len(ids[TRAIN]), generator=generator).tolist()
    # every process takes the same number of videos (DDP's collectives must pair up): the
    # shuffled order is padded with its own start, as torch's DistributedSampler does
    shuffled += shuffled[: run.my_videos * world.size - len(shuffled)]
    order = shuffled[world.rank :: world.size]
    augment_gen = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch * 104_729 + world.rank)
    losses: list[float] = []
    micro = [order[s : s + config.batch_size] for s in range(0, len(order), config.batch_size)]
    for first in range(0, len(micro), config.accumulate):
        group = micro[first : first + config.accumulate]
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for number, rows in enumerate(group):
            frames, mask, batch = collate(data.sources[TRAIN], [ids[TRAIN][r] for r in rows], rows, targets[TRAIN],
                                          view=config.view, augment=config, generator=augment_gen)  # fmt: skip
            last = number == len(group) - 1
            sync = nullcontext() if last or not world.distributed else train_model.no_sync()
            with sync, _autocast(device, config.amp):
                on_device = _to(batch, device)
                loss, logits, embedding = train_model(frames.to(device), mask.to(device), on_device,
                                                      pos_weight=run.pos_weight)  # fmt: skip
                # every micro-batch weighs by its videos, so accumulation equals one large batch
                share = len(rows) / sum(len(g) for g in group)
                (loss.float() * share).backward()
            run.head.after_step(
                HeadOutput(logits.detach(), None if embedding is None else embedding.detach()), on_device
            )  # fmt: skip  (EMA prototypes: updates outside the gradient)
            step_loss += float(loss.detach()) * share
            run.frames_seen += int(mask.sum())
        if not math.isfinite(step_loss):
            raise TrainingError(f"the loss was not finite at epoch {epoch}; lower --lr")
        torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], config.grad_clip)
        optimizer.step()
        run.scheduler.step()
        run.state["step"] += 1
        losses.append(step_loss)
    return losses


def _final_metrics(run: _Run) -> tuple[np.ndarray, dict, dict]:
    """(val scores, val metrics, test metrics) of the best epoch."""
    config, data, device, head = run.config, run.data, run.device, run.head
    ids, targets, splits = data.ids, data.targets, data.splits
    val_logits = predict_logits(run.model, data.sources[VAL], ids[VAL], targets[VAL], view=config.view, device=device,
                                batch_size=config.batch_size, amp=config.amp)  # fmt: skip
    val_scores = head.scores(torch.from_numpy(val_logits)).numpy()
    at_best = evaluate(targets[VAL].numpy(), val_scores, multi_label=splits.multi_label)
    test_metrics: dict = {}
    if splits.ids[TEST]:  # the held-out split, never looked at while training or choosing the epoch
        test_ids = splits.ids[TEST]
        test_targets = multi_hot(test_ids, splits.labels, splits.vocabulary)
        test_source = data.source(test_ids)
        logits = predict_logits(run.model, test_source, test_ids, test_targets, view=config.view, device=device,
                                batch_size=config.batch_size, amp=config.amp)  # fmt: skip
        scores = head.scores(torch.from_numpy(logits)).numpy()
        test_metrics = {k: float(v) for k, v in evaluate(test_targets.numpy(), scores,
                                                           multi_label=splits.multi_label).items()}  # fmt: skip
    return val_scores, at_best, test_metrics


def _summary(run: _Run, at_best: dict, test_metrics: dict) -> FinetuneSummary:
    config, data, state, visual = run.config, run.data, run.state, run.visual
    return FinetuneSummary(
        run_dir=str(run.run_dir),
        head=config.head,
        view=config.view,
        task=run.resolved["task"],
        classes=len(data.splits.vocabulary),
        train_videos=len(data.ids[TRAIN]),
        val_videos=len(data.ids[VAL]),
        epochs_run=state["epoch"],
        best_epoch=state["best_epoch"],
        best_metric=run.metric,
        best_value=float(state["best_value"]),
        val_metrics={k: float(v) for k, v in at_best.items()},
        test_metrics=test_metrics,
        unfreeze=config.unfreeze,
        trainable_backbone_params=sum(p.numel() for n, p in visual.named_parameters() if n in set(run.trainable)),
        frozen_backbone_params=sum(p.numel() for n, p in visual.named_parameters() if n in set(run.frozen_names)),
        frames_from=config.frames_from,
        steps=state["step"],
        train_frames_per_s=run.frames_seen / run.train_seconds if run.train_seconds > 0 else 0.0,
        world_size=run.world.size,
    )


def _write_outputs(run: _Run, summary: FinetuneSummary, val_scores: np.ndarray, *, started: float) -> None:
    """Rank 0: thresholds, vocabulary, the exported backbone and summary.json."""
    splits, targets, run_dir, state = run.data.splits, run.data.targets, run.run_dir, run.state
    thresholds = (
        tune_thresholds(targets[VAL].numpy(), val_scores)
        if splits.multi_label
        else np.full(len(splits.vocabulary), 0.5)
    )
    (run_dir / "thresholds.json").write_text(
        json.dumps(dict(zip(splits.vocabulary, map(float, thresholds), strict=True)), indent=2)
    )
    (run_dir / "vocabulary.json").write_text(json.dumps(splits.vocabulary))
    if state_dict_sha256(run.visual) == run.data.base_sha256:  # the untouched tower won: nothing new to export
        _not_improved(summary, run.data.identity, run_dir, run.data.cache.path, best_epoch=state["best_epoch"])
    else:
        record = provenance(
            run.data.identity, run_dir.resolve(), run_id=state["run_id"], best_epoch=state["best_epoch"]
        )
        path = export_backbone(run.clip_model, run_dir / BACKBONE_FILE, tag_cfg=run.data.encoder.weights.tag_cfg,
                               record=record)  # fmt: skip
        summary.backbone = str(path)
    summary.seconds = time.perf_counter() - started
    (run_dir / "summary.json").write_text(json.dumps(dataclasses.asdict(summary), indent=2, default=str))
