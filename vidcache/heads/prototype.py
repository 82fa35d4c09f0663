"""`prototype` (seeds 000/001): one prototype per class, cosine similarity with temperature; a
multi-label contrastive loss (InfoNCE averaged over positives, or the margin form) plus a
classifier loss on scaled similarities, weighted λ1 and λ2. Prototypes are learned parameters, or
kept as an EMA of the class's video embeddings (p_c ← α·p_c + (1−α)·ē_c per batch, ē_c the mean
unit embedding of the batch's videos with label c)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import Head, HeadOutput, masked_mean, register_head
from .blend import add_probe_branch, mix_logits
from .losses import LOSSES


@register_head("prototype")
class PrototypeHead(Head):
    """Subclasses (fusion) replace `build_encoder` / `encode` and keep the prototypes and losses.

    With `--probe-blend` (default; not for fusion) a linear branch on the mean-pooled frames is solved
    after the epochs and blended with the prototype scores by a weight chosen on val (`heads/blend.py`)."""

    blends_probe: ClassVar[bool] = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.probe: nn.Linear | None = None
        if type(self).blends_probe and self.options.probe_blend:
            add_probe_branch(self)
        width = self.options.width(512) or self.input_dim
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
