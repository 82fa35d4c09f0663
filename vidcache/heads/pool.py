"""`pool` (seed 004): per-frame class probabilities q_t^c and a bag probability by a generalised
mean with a learnable exponent per class, p^c = ((1/n) Σ_t (q_t^c)^{r_c})^{1/r_c}, r_c = 1 + softplus(ρ_c)
≥ 1 (r = 1 is mean pooling, r → ∞ max pooling), computed in log space over unpadded frames.
Trained with the bag + instance loss. `mean`, `max` and `attention` pooling are the alternatives."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..fields import check, check_choice, setting
from .base import Head, HeadOutput, register_head
from .losses import LOSSES

EPS = 1e-6
PoolMode = Literal["learnable", "mean", "max", "attention"]


@dataclass(frozen=True)
class PoolOptions:
    # 0: a linear instance classifier on the raw frames (what the oracle is: class directions)
    hidden_dim: int = setting(0, help="Hidden / projection width (0: the input width, or no projection).")
    dropout: float = setting(0.1, help="Dropout probability.")
    pool_mode: PoolMode = setting("learnable", help="How frame probabilities become the video's.")
    instance_lambda: float = setting(0.5, help="λ of the bag + instance loss.")

    def __post_init__(self) -> None:
        check(self, "hidden_dim", self.hidden_dim >= 0, "must be >= 0")
        check(self, "dropout", 0 <= self.dropout < 1, "must be in [0, 1)")
        check_choice(self, "pool_mode", self.pool_mode, PoolMode)
        check(self, "instance_lambda", self.instance_lambda >= 0, "must be >= 0")


@register_head("pool")
class PoolHead(Head):
    Options = PoolOptions
    sweep_axis = ("pool_mode", ("learnable", "attention"))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        width = self.options.hidden_dim
        self.frame_encoder = (
            nn.Sequential(nn.Linear(self.input_dim, width), nn.GELU(), nn.Dropout(self.options.dropout))
            if width
            else nn.Identity()
        )
        self.classifier = nn.Linear(width or self.input_dim, self.num_classes)
        # Zero init: every frame starts at the same q, so the first gradients follow the difference
        # between positive and negative bags; a random start can settle on the wrong sign for a class
        # (its noise frames raising the bag) and never recover.
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)
        self.rho = nn.Parameter(torch.full((self.num_classes,), math.log(math.e - 1)))  # r starts at 2
        self.attention = nn.Linear(width or self.input_dim, 1) if self.options.pool_mode == "attention" else None

    @property
    def exponents(self) -> torch.Tensor:
        return 1 + F.softplus(self.rho)

    def forward(self, features, mask) -> HeadOutput:
        hidden = self.frame_encoder(features)
        instance = torch.sigmoid(self.classifier(hidden)).clamp(EPS, 1 - EPS)  # [N, T, C]
        frames = mask.unsqueeze(-1)
        mode = self.options.pool_mode
        if mode == "learnable":
            r = self.exponents
            terms = (r * torch.log(instance)).masked_fill(~frames, float("-inf"))
            count = mask.sum(dim=1, keepdim=True).clamp(min=1).to(instance.dtype)
            bag = torch.exp((torch.logsumexp(terms, dim=1) - torch.log(count)) / r)
        elif mode == "mean":
            bag = (instance * frames).sum(dim=1) / frames.sum(dim=1).clamp(min=1)
        elif mode == "max":
            bag = instance.masked_fill(~frames, 0.0).amax(dim=1)
        else:
            weights = torch.softmax(self.attention(hidden).squeeze(-1).masked_fill(~mask, float("-inf")), dim=1)
            bag = (weights.unsqueeze(-1) * instance).sum(dim=1)
        bag = bag.clamp(EPS, 1 - EPS)
        logits = torch.log(bag) - torch.log1p(-bag)  # sigmoid(logits) == bag
        return HeadOutput(logits, embedding=None, extras={"bag": bag, "instance": instance, "mask": mask})

    def loss(self, output, batch, *, pos_weight=None):
        if not self.multi_label:
            return super().loss(output, batch, pos_weight=pos_weight)
        targets = batch.targets
        loss = LOSSES.create(
            "bag-instance",
            bag_prob=output.extras["bag"],
            instance_prob=output.extras["instance"],
            mask=output.extras["mask"],
            targets=targets,
            instance_lambda=self.options.instance_lambda,
        )
        return loss, {"bag_instance": float(loss.detach())}

    def report(self) -> dict:
        if self.options.pool_mode != "learnable":
            return {}
        return {"pooling_exponents": [round(float(r), 4) for r in self.exponents.detach().cpu()]}
