"""`prototype` (seeds 000/001): one prototype per class, cosine similarity with temperature; a
multi-label contrastive loss (InfoNCE averaged over positives, or the margin form) plus a
classifier loss on scaled similarities, weighted λ1 and λ2. Prototypes are learned parameters, or
kept as an EMA of the class's video embeddings (p_c ← α·p_c + (1−α)·ē_c per batch, ē_c the mean
unit embedding of the batch's videos with label c)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..fields import check, check_choice, setting
from .base import Head, HeadOutput, masked_mean, register_head
from .blend import BlendOptions, add_probe_branch, mix_logits
from .losses import LOSSES

PrototypeUpdate = Literal["learned", "ema"]
ContrastiveForm = Literal["infonce", "margin"]


def _parent_checks(obj: object, cls: type) -> None:
    """Run the next `__post_init__` in the MRO, if any: option dataclasses are combined by inheritance."""
    parent = getattr(super(cls, obj), "__post_init__", None)
    if parent is not None:
        parent()


@dataclass(frozen=True)
class PrototypeCoreOptions:
    """The prototypes' options, shared by `prototype` and `fusion`."""

    hidden_dim: int = setting(512, help="Hidden / projection width (0: the input width, or no projection).")
    dropout: float = setting(0.1, help="Dropout probability.")
    prototype_update: PrototypeUpdate = setting("learned", help="Prototypes learned by gradient, or an EMA.")
    ema_momentum: float = setting(0.99, help="α in p_c ← α·p_c + (1−α)·e_v (--prototype-update ema).")
    temperature: float = setting(0.1, help="τ of the similarities.")
    contrastive: ContrastiveForm = setting("infonce", help="The prototype contrastive loss.")
    margin: float = setting(0.5, help="m of the margin form (cosine distance).")
    lambda_con: float = setting(1.0, help="λ1, weight of the contrastive loss.")
    lambda_cls: float = setting(1.0, help="λ2, weight of the classifier loss.")

    def __post_init__(self) -> None:
        check(self, "hidden_dim", self.hidden_dim >= 0, "must be >= 0")
        check(self, "dropout", 0 <= self.dropout < 1, "must be in [0, 1)")
        check_choice(self, "prototype_update", self.prototype_update, PrototypeUpdate)
        check_choice(self, "contrastive", self.contrastive, ContrastiveForm)
        check(self, "ema_momentum", 0 < self.ema_momentum < 1, "must be in (0, 1)")
        check(self, "temperature", self.temperature > 0, "must be > 0")
        _parent_checks(self, PrototypeCoreOptions)


@dataclass(frozen=True)
class PrototypeOptions(PrototypeCoreOptions, BlendOptions):
    """`prototype`: the prototypes and the solved linear branch blended in."""


@register_head("prototype")
class PrototypeHead(Head):
    """Subclasses (fusion) replace `build_encoder` / `encode` and keep the prototypes and losses.

    With `--probe-blend` (default; not for fusion) a linear branch on the mean-pooled frames is solved
    after the epochs and blended with the prototype scores by a weight chosen on val (`heads/blend.py`)."""

    blends_probe: ClassVar[bool] = True
    Options = PrototypeOptions
    sweep_axis = ("temperature", (0.05, 0.1))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.probe: nn.Linear | None = None
        if type(self).blends_probe and self.options.probe_blend:
            add_probe_branch(self)
        width = self.options.hidden_dim or self.input_dim
        self.encoder = self.build_encoder(width)
        prototypes = F.normalize(torch.randn(self.num_classes, width), dim=1)
        if self.options.prototype_update == "learned":
            self.prototypes = nn.Parameter(prototypes)
        else:
            self.register_buffer("prototypes", prototypes)
        self.logit_scale = nn.Parameter(torch.tensor(10.0))  # classifier on cosine: s·cos + b_c
        self.logit_bias = nn.Parameter(torch.zeros(self.num_classes))

    def build_encoder(self, width: int) -> nn.Module:
        return nn.Sequential(
            nn.Linear(self.input_dim, width), nn.GELU(), nn.Dropout(self.options.dropout), nn.Linear(width, width)
        )

    def encode(self, batch) -> torch.Tensor:
        return self.encoder(masked_mean(batch.feature, batch.mask))

    def classify(self, embedding: torch.Tensor, pooled: torch.Tensor | None = None) -> HeadOutput:
        embedding = F.normalize(embedding, dim=1)
        similarity = embedding @ F.normalize(self.prototypes, dim=1).T
        logits = similarity * self.logit_scale + self.logit_bias
        extras = {"similarity": similarity}
        if self.probe is not None and pooled is not None and not self.training:  # β = 0 while training
            logits = mix_logits(self, logits, pooled, extras)
        return HeadOutput(logits, embedding=embedding, extras=extras)

    def probe_pool(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(features, mask)

    @property
    def mean_pooled(self) -> bool:
        """The prototypes and the probe branch see a video's frames only through their mean (fusion
        encodes the frames themselves): the cache's stored mean rows are all it needs."""
        return type(self).encode is PrototypeHead.encode

    def forward_batch(self, batch) -> HeadOutput:
        pooled = masked_mean(batch.feature, batch.mask) if self.probe is not None and not self.training else None
        return self.classify(self.encode(batch), pooled)

    def forward(self, features, mask) -> HeadOutput:
        pooled = masked_mean(features, mask)
        return self.classify(self.encoder(pooled), pooled)

    def loss(self, output, batch, *, pos_weight=None):
        targets = batch.targets
        options = self.options
        similarity = output.extras["similarity"]
        if options.contrastive == "infonce":
            contrastive = LOSSES.create(
                "prototype-infonce", similarity=similarity, targets=targets, temperature=options.temperature
            )
        else:
            contrastive = LOSSES.create(
                "prototype-margin", similarity=similarity, targets=targets, margin=options.margin
            )
        classification = self.classification_loss(output.logits, targets, pos_weight)
        total = options.lambda_con * contrastive + options.lambda_cls * classification
        return total, {"con": float(contrastive.detach()), "cls": float(classification.detach())}

    @torch.no_grad()
    def after_step(self, output, batch) -> None:
        if self.options.prototype_update != "ema":
            return
        targets = batch.targets
        counts = targets.sum(dim=0)
        present = counts > 0
        if not present.any():
            return
        means = (targets.T @ output.embedding.detach()) / counts.clamp(min=1).unsqueeze(1)
        alpha = self.options.ema_momentum
        updated = alpha * self.prototypes[present] + (1 - alpha) * means[present]
        self.prototypes[present] = F.normalize(updated, dim=1)
