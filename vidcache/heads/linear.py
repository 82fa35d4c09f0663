"""`linear` and `mlp` probes on frames pooled into one vector (mean by default)."""

from __future__ import annotations

from torch import nn

from .base import Head, HeadOutput, masked_max, masked_mean, register_head
from .blend import add_probe_branch, mix_logits


class _Probe(Head):
    def pool(self, features, mask):
        return masked_max(features, mask) if self.options.frame_pooling == "max" else masked_mean(features, mask)

    def probe_pool(self, features, mask):
        return self.pool(features, mask)

    def forward(self, features, mask) -> HeadOutput:
        pooled = self.pool(features, mask)
        logits, extras = self.classifier(pooled), {}
        if getattr(self, "probe", None) is not None and not self.training:  # β = 0 while training
            logits = mix_logits(self, logits, pooled, extras)
        return HeadOutput(logits, embedding=pooled, extras=extras)


@register_head("linear")
class LinearHead(_Probe):
    """With `--solver lbfgs` (default) the loop does not train it by steps: `heads/solved.py` solves
    the logistic regression on pooled, standardised features and writes the result into `classifier`
    (standardisation folded in, so the checkpoint is a plain linear layer on raw pooled features)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.classifier = nn.Linear(self.input_dim, self.num_classes)

    @property
    def solves(self) -> bool:
        return self.options.solver == "lbfgs"

    @classmethod
    def trains_by_steps(cls, options) -> bool:
        return options.solver != "lbfgs"


@register_head("mlp")
class MlpHead(_Probe):
    """With `--probe-blend` (default) a linear branch on the same pooled frames is solved after the
    epochs and blended with the MLP's logits by a weight chosen on val (`heads/blend.py`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.probe: nn.Linear | None = None
        if self.options.probe_blend:
            add_probe_branch(self)
        hidden = self.options.width(512) or self.input_dim
        self.classifier = nn.Sequential(
            nn.Linear(self.input_dim, hidden),
            nn.GELU(),
            nn.Dropout(self.options.dropout),
            nn.Linear(hidden, self.num_classes),
        )
