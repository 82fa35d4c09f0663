"""`linear` and `mlp` probes on frames pooled into one vector (mean by default)."""

from __future__ import annotations

from torch import nn

from .base import Head, HeadOutput, masked_max, masked_mean, register_head


class _Probe(Head):
    def _pool(self, features, mask):
        return masked_max(features, mask) if self.options.frame_pooling == "max" else masked_mean(features, mask)

    def forward(self, features, mask) -> HeadOutput:
        pooled = self._pool(features, mask)
        return HeadOutput(self.classifier(pooled), embedding=pooled)


@register_head("linear")
class LinearHead(_Probe):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.classifier = nn.Linear(self.input_dim, self.num_classes)


@register_head("mlp")
class MlpHead(_Probe):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        hidden = self.options.hidden_dim or self.input_dim
        self.classifier = nn.Sequential(
            nn.Linear(self.input_dim, hidden),
            nn.GELU(),
            nn.Dropout(self.options.dropout),
            nn.Linear(hidden, self.num_classes),
        )
