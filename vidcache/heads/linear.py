"""`linear` and `mlp` probes on frames pooled into one vector (mean by default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..fields import check, check_choice, setting
from .base import Head, HeadOutput, masked_max, masked_mean, register_head
from .blend import BlendOptions, add_probe_branch, mix_logits
from .solved import SolvedProbeOptions

FramePooling = Literal["mean", "max"]
Solver = Literal["lbfgs", "adamw"]


@dataclass(frozen=True)
class LinearOptions(SolvedProbeOptions):
    frame_pooling: FramePooling = setting("mean", help="How frames become one vector.")
    solver: Solver = setting(
        "lbfgs",
        help="Logistic regression solved with L-BFGS, C chosen on val (--lr/--epochs unused), or AdamW.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "frame_pooling", self.frame_pooling, FramePooling)
        check_choice(self, "solver", self.solver, Solver)


@dataclass(frozen=True)
class MlpOptions(BlendOptions):
    hidden_dim: int = setting(512, help="Hidden / projection width (0: the input width, or no projection).")
    dropout: float = setting(0.1, help="Dropout probability.")
    frame_pooling: FramePooling = setting("mean", help="How frames become one vector.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, "hidden_dim", self.hidden_dim >= 0, "must be >= 0")
        check(self, "dropout", 0 <= self.dropout < 1, "must be in [0, 1)")
        check_choice(self, "frame_pooling", self.frame_pooling, FramePooling)


class _Probe(Head):
    @property
    def mean_pooled(self) -> bool:
        """Frames pooled by their mean: the cache's stored mean rows are the pooled features."""
        return self.options.frame_pooling == "mean"

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

    Options = LinearOptions
    sweep_axis = ("frame_pooling", ("mean", "max"))

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

    Options = MlpOptions
    sweep_axis = ("hidden_dim", (128, 512))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.probe: nn.Linear | None = None
        if self.options.probe_blend:
            add_probe_branch(self)
        hidden = self.options.hidden_dim or self.input_dim
        self.classifier = nn.Sequential(
            nn.Linear(self.input_dim, hidden),
            nn.GELU(),
            nn.Dropout(self.options.dropout),
            nn.Linear(hidden, self.num_classes),
        )
