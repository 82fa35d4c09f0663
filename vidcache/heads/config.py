"""Training options as plain, self-validating dataclasses, saved verbatim into every run directory."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from ..config import check_choice
from ..errors import ConfigError

Task = Literal["auto", "multi-label", "single-label"]
FramePooling = Literal["mean", "max"]
PoolMode = Literal["learnable", "mean", "max", "attention"]
PrototypeUpdate = Literal["learned", "ema"]
ContrastiveForm = Literal["infonce", "margin"]
NegativesFrom = Literal["top", "bottom", "random"]
Solver = Literal["lbfgs", "adamw"]
ProbeRefit = Literal["train", "train+val"]


@dataclass(frozen=True)
class HeadOptions:
    """Options of every head in one place (each head reads the ones it uses)."""

    # mlp hidden width; prototype/pool/contrastive projection width (0 = no projection); None: the
    # head's default (512; pool 0: a linear instance classifier on the frames, see heads/pool.py)
    hidden_dim: int | None = None
    dropout: float = 0.1
    frame_pooling: FramePooling = "mean"  # linear/mlp: how frames become one vector
    solver: Solver = "lbfgs"  # linear: solved logistic regression (C chosen on val), or AdamW epochs
    probe_c: float | None = None  # linear/lbfgs: a fixed C (scikit-learn's meaning) instead of the val sweep
    probe_refit: ProbeRefit = "train"  # linear/lbfgs: data of the final fit at the chosen C
    probe_blend: bool = True  # prototype/mlp: blend with a solved linear branch, weight chosen on val
    prototype_update: PrototypeUpdate = "learned"
    ema_momentum: float = 0.99  # α in p_c ← α·p_c + (1−α)·e_v
    temperature: float = 0.1  # τ of the prototype similarities
    contrastive: ContrastiveForm = "infonce"
    margin: float = 0.5  # m of the margin form (cosine distance)
    lambda_con: float = 1.0  # λ1
    lambda_cls: float = 1.0  # λ2
    pool_mode: PoolMode = "learnable"
    instance_lambda: float = 0.5  # λ of the bag + instance loss
    layers: int = 2  # transformer blocks (temporal: M; fusion: encoder layers)
    attention_heads: int = 4
    text_discriminator: bool = False  # temporal: self-attention over [positive text, its negatives]
    projection_dim: int = 128  # contrastive: output embedding width
    crop_fraction: float = 0.5  # contrastive: a temporal crop keeps at least this share of the frames
    ltcl: bool = True  # contrastive: local temporal contrastive loss over 4 segments
    ltcl_weight: float = 1.0  # β (the InfoNCE term has α = 1)

    def width(self, default: int) -> int:
        """`hidden_dim`, or the head's `default` when it was left to None."""
        return default if self.hidden_dim is None else self.hidden_dim

    def __post_init__(self) -> None:
        if self.hidden_dim is not None and self.hidden_dim < 0:
            raise ConfigError(f"--hidden-dim must be >= 0, got {self.hidden_dim}")
        check_choice("--frame-pooling", self.frame_pooling, FramePooling)
        check_choice("--prototype-update", self.prototype_update, PrototypeUpdate)
        check_choice("--contrastive", self.contrastive, ContrastiveForm)
        check_choice("--pool-mode", self.pool_mode, PoolMode)
        check_choice("--solver", self.solver, Solver)
        check_choice("--probe-refit", self.probe_refit, ProbeRefit)
        if self.probe_c is not None and not self.probe_c > 0:
            raise ConfigError(f"--probe-c must be > 0, got {self.probe_c}")
        if not (0 < self.ema_momentum < 1):
            raise ConfigError(f"--ema-momentum must be in (0, 1), got {self.ema_momentum}")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if not (0 <= self.dropout < 1):
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.layers < 0 or self.attention_heads < 1 or self.projection_dim < 1:
            raise ConfigError("--layers must be >= 0, --attention-heads and --projection-dim >= 1")
        if not (0 < self.crop_fraction <= 1):
            raise ConfigError(f"--crop-fraction must be in (0, 1], got {self.crop_fraction}")
        if self.ltcl_weight < 0:
            raise ConfigError(f"--ltcl-weight must be >= 0, got {self.ltcl_weight}")


@dataclass(frozen=True)
class TrainConfig:
    head: str = "linear"
    view: str = "clip"
    views: tuple[str, ...] = ()  # several views for multi-view heads (fusion); empty = (view,)
    epochs: int | None = None  # None: auto, see `resolve_schedule`
    batch_size: int = 64
    lr: float | None = None  # None: chosen on val by a short search (heads/search.py)
    weight_decay: float | None = None  # None: likewise
    warmup_epochs: float = 1.0
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    task: Task = "auto"
    early_stop_metric: str = "auto"  # map_macro (multi-label) / top1 (single-label)
    patience: int | None = None  # None: max(10, a third of the epochs)
    grad_clip: float = 1.0
    pos_weight: bool = False
    max_frames: int = 64  # frames per video, sampled uniformly when a video has more
    val_fraction: float = 0.1  # carved deterministically from train when the manifest has no val split
    memory_budget_gb: float = 4.0  # above it, the view is streamed from the cache in contiguous blocks
    max_bad_steps: int = 10  # consecutive non-finite losses before training stops
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    hard_negatives: int = 0  # temporal: K mined hard-negative labels per video (0 = in-batch only)
    hard_negatives_from: NegativesFrom = "top"  # which K of the mined ranking: hardest, easiest, random
    hard_negatives_file: str = "hard_negatives"  # CACHE/mined/NAME.parquet (`vidcache mine hard-negatives`)
    cross_view_k: int = 0  # contrastive: K mined neighbours of the other view as extra positives
    cross_view_from: str = ""  # contrastive: the view whose neighbours are used (CACHE/mined/neighbours_VIEW)
    label_corpus: str = ""  # text side of the temporal head: default CACHE/text.h5
    text_embeddings: str = ""  # .npy [L, D] aligned with label_corpus
    options: HeadOptions = field(default_factory=HeadOptions)

    @property
    def all_views(self) -> tuple[str, ...]:
        return tuple(self.views) or (self.view,)

    def __post_init__(self) -> None:
        check_choice("--task", self.task, Task)
        check_choice("--hard-negatives-from", self.hard_negatives_from, NegativesFrom)
        object.__setattr__(self, "views", tuple(self.views))  # JSON round trips give lists
        if self.views:  # the first of several views is the one single-view code reads
            object.__setattr__(self, "view", self.views[0])
        if len(set(self.all_views)) != len(self.all_views):
            raise ConfigError(f"--views lists a view twice: {','.join(self.all_views)}")
        if self.hard_negatives < 0 or self.cross_view_k < 0:
            raise ConfigError("--hard-negatives and --cross-view-k must be >= 0")
        if self.cross_view_k and not self.cross_view_from:
            raise ConfigError(
                "--cross-view-k needs --cross-view-from VIEW (mine it: vidcache mine neighbours --view VIEW)"
            )
        if self.text_embeddings and not self.label_corpus:
            raise ConfigError("--text-embeddings needs --label-corpus FILE (one label per line, in the .npy's order)")
        for name in ("epochs", "batch_size", "max_frames", "patience", "max_bad_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        lr, weight_decay = self.lr or 1.0, self.weight_decay or 0.0  # None: chosen on val
        if lr <= 0 or weight_decay < 0 or self.warmup_epochs < 0 or self.grad_clip <= 0:
            raise ConfigError("--lr and --grad-clip must be > 0, --weight-decay and --warmup-epochs >= 0")
        if not (0 < self.val_fraction < 1):
            raise ConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")


AUTO_MIN_EPOCHS = 30
AUTO_MIN_STEPS = 600  # small training sets: enough optimizer steps for a transformer head to converge
AUTO_MAX_EPOCHS = 500


def resolve_schedule(config: TrainConfig, *, train_videos: int) -> TrainConfig:
    """The config with `epochs` and `patience` filled in when left to auto.

    Auto epochs: 30, or more on a small training set, so the head gets at least 600 optimizer steps
    (at most 500 epochs). Counting epochs alone starved small sets: 300 videos at batch 64 are 5 steps
    an epoch, 150 steps in 30 epochs, and the temporal head stopped at 0.5-0.8 on order tasks it
    solves (>= 0.99) with enough steps. Auto patience: a third of the epochs, at least 10."""
    epochs = config.epochs
    if epochs is None:
        steps_per_epoch = max(1, math.ceil(train_videos / config.batch_size))
        epochs = min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, math.ceil(AUTO_MIN_STEPS / steps_per_epoch)))
    patience = config.patience if config.patience is not None else max(10, round(epochs / 3))
    return dataclasses.replace(config, epochs=epochs, patience=patience)
