"""What every head gives the training loop: scores per class from padded frame sequences, its loss,
and an optional embedding (for retrieval and for writing back into the cache)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..registry import Registry
from .config import HeadOptions

HEADS = Registry("head", option="--head")
register_head = HEADS.register


@dataclass
class HeadOutput:
    logits: torch.Tensor  # [N, C]; sigmoid (multi-label) or softmax (single-label) gives the scores
    embedding: torch.Tensor | None = None  # [N, E] video embedding, when the head has one
    extras: dict = field(default_factory=dict)


def masked_mean(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(features.dtype)
    return (features * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def masked_max(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return features.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)


class Head(nn.Module):
    def __init__(self, *, input_dim: int, num_classes: int, multi_label: bool, options: HeadOptions):
        super().__init__()
        self.input_dim, self.num_classes, self.multi_label, self.options = input_dim, num_classes, multi_label, options

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> HeadOutput:  # [N, T, D], [N, T] bool
        raise NotImplementedError

    def classification_loss(self, logits: torch.Tensor, targets: torch.Tensor, pos_weight=None) -> torch.Tensor:
        from .losses import LOSSES

        if self.multi_label:
            return LOSSES.create("bce", logits=logits, targets=targets, pos_weight=pos_weight)
        return LOSSES.create("softmax", logits=logits, targets=targets)

    def loss(self, output: HeadOutput, targets: torch.Tensor, *, pos_weight=None) -> tuple[torch.Tensor, dict]:
        loss = self.classification_loss(output.logits, targets, pos_weight)
        return loss, {"cls": float(loss.detach())}

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)

    @torch.no_grad()
    def after_step(self, output: HeadOutput, targets: torch.Tensor) -> None:
        """Updates outside the gradient (EMA prototypes)."""

    def report(self) -> dict:
        """Learned quantities worth logging and saving (e.g. pooling exponents)."""
        return {}
