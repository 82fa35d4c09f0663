"""The optimizer and schedule of the field's recipe: AdamW with the backbone at a fraction of the
head's lr, optional layer-wise lr decay, no weight decay on norms, gains and biases, linear warm-up
then cosine decay to 0 (per optimizer step)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import FinetuneConfig
from .model import block_count, depth_of


def no_decay(name: str, param: torch.Tensor) -> bool:
    """open_clip's training rule: 1-D tensors (norm gains, biases, class embedding), norms, logit scale."""
    return param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name


def param_groups(visual: nn.Module, head: nn.Module, config: FinetuneConfig) -> list[dict]:
    """One group per (lr, weight decay): the head at `lr`; each backbone depth at
    `lr * backbone_lr_ratio * layer_decay ** (top - depth)` (BEiT / ViT fine-tuning's layer decay)."""
    groups: dict[tuple[str, float, float], dict] = {}

    def add(kind: str, name: str, param: torch.Tensor, lr: float) -> None:
        decay = 0.0 if no_decay(name, param) else config.weight_decay
        group = groups.setdefault((kind, lr, decay), {"params": [], "lr": lr, "weight_decay": decay, "kind": kind})
        group["params"].append(param)

    blocks = block_count(visual)
    top = blocks + 1
    for name, param in visual.named_parameters():
        if param.requires_grad:
            add("backbone", name, param, config.backbone_lr * config.layer_decay ** (top - depth_of(name, blocks)))
    for name, param in head.named_parameters():
        if param.requires_grad:
            add("head", name, param, config.lr)
    return list(groups.values())


def make_optimizer(groups: list[dict], config: FinetuneConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay)


def warmup_cosine(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int):
    """Linear warm-up over `warmup_steps`, then half a cosine to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
