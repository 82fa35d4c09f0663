"""Training options as plain, self-validating dataclasses, saved verbatim into every run directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import check_choice
from ..errors import ConfigError

Task = Literal["auto", "multi-label", "single-label"]
FramePooling = Literal["mean", "max"]
PoolMode = Literal["learnable", "mean", "max", "attention"]
PrototypeUpdate = Literal["learned", "ema"]
ContrastiveForm = Literal["infonce", "margin"]


@dataclass(frozen=True)
class HeadOptions:
    """Options of every head in one place (each head reads the ones it uses)."""

    hidden_dim: int = 512  # mlp hidden width; prototype/pool projection width (0 = no projection)
    dropout: float = 0.1
    frame_pooling: FramePooling = "mean"  # linear/mlp: how frames become one vector
    prototype_update: PrototypeUpdate = "learned"
    ema_momentum: float = 0.99  # α in p_c ← α·p_c + (1−α)·e_v
    temperature: float = 0.1  # τ of the prototype similarities
    contrastive: ContrastiveForm = "infonce"
    margin: float = 0.5  # m of the margin form (cosine distance)
    lambda_con: float = 1.0  # λ1
    lambda_cls: float = 1.0  # λ2
    pool_mode: PoolMode = "learnable"
    instance_lambda: float = 0.5  # λ of the bag + instance loss

    def __post_init__(self) -> None:
        check_choice("--frame-pooling", self.frame_pooling, FramePooling)
        check_choice("--prototype-update", self.prototype_update, PrototypeUpdate)
        check_choice("--contrastive", self.contrastive, ContrastiveForm)
        check_choice("--pool-mode", self.pool_mode, PoolMode)
        if not (0 < self.ema_momentum < 1):
            raise ConfigError(f"--ema-momentum must be in (0, 1), got {self.ema_momentum}")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if not (0 <= self.dropout < 1):
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TrainConfig:
    head: str = "linear"
    view: str = "clip"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    task: Task = "auto"
    early_stop_metric: str = "auto"  # map_macro (multi-label) / top1 (single-label)
    patience: int = 10
    grad_clip: float = 1.0
    pos_weight: bool = False
    max_frames: int = 64  # frames per video, sampled uniformly when a video has more
    val_fraction: float = 0.1  # carved deterministically from train when the manifest has no val split
    memory_budget_gb: float = 4.0  # above it, the view is streamed from the cache in contiguous blocks
    max_bad_steps: int = 10  # consecutive non-finite losses before training stops
    options: HeadOptions = field(default_factory=HeadOptions)

    def __post_init__(self) -> None:
        check_choice("--task", self.task, Task)
        for name in ("epochs", "batch_size", "max_frames", "patience", "max_bad_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0 or self.grad_clip <= 0:
            raise ConfigError("--lr and --grad-clip must be > 0, --weight-decay and --warmup-epochs >= 0")
        if not (0 < self.val_fraction < 1):
            raise ConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
