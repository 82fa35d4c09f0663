"""What every head gives the training loop: scores per class from a `Batch` of padded frame
sequences (one or several views), its loss, and an optional embedding (for retrieval and for writing
back into the cache).

Each head declares, next to its code, what it is configured with and what it reads:

- `Options`: a frozen dataclass of its own options (fields made with `vidcache.fields.setting`,
  validated in `__post_init__` with `check`); the `train` command's flags are generated from it, and
  the chosen head's options are saved verbatim in RUN/config.json;
- `inputs(options)`: what the loop loads for it besides the features (label texts, mined hard
  negatives, mined neighbours of another view: `heads/context.py`);
- `sweep_axis`: its key option and the values `vidcache train --sweep` tries.

Adding a head is one new module with `@register_head("name")` on its class plus one import line in
`heads/__init__.py` (or an import of the module before the registry is read, as a test does).

A single-view head implements `forward(features, mask)`; a head that needs more (several views, the
videos' ids for mined lists, timestamps) overrides `forward_batch`. `kind = "embed"` heads learn a
representation without a classifier: the loop validates them by retrieval R@1 instead of class scores."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from ..errors import VidcacheError
from ..fields import ParamError
from ..registry import Registry

if TYPE_CHECKING:
    from .context import HeadContext, HeadInput
    from .data import Batch


@dataclass(frozen=True)
class NoOptions:
    """The options of a head that has none."""


class HeadRegistry(Registry):
    """`HEADS`: head classes by name, and what each declares (its options dataclass, its sweep axis)."""

    def options_class(self, name: str) -> type:
        return self.get(name).Options

    def options(self, name: str, **values: Any) -> Any:
        """The head's options dataclass with `values` set (the others at the head's defaults)."""
        cls = self.options_class(name)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParamError(
                cls.__name__,
                unknown[0],
                values[unknown[0]],
                f"not an option of head {name!r}; its options: " + (", ".join(sorted(known)) or "none"),
            )
        return cls(**values)

    def options_from(self, name: str, values: dict[str, Any]) -> Any:
        """The head's options with those of `values` it has (the rest ignored): one settings dict
        applied to every head, as the registry-generated tests and the CLI's shared flags do."""
        known = {f.name for f in dataclasses.fields(self.options_class(name))}
        return self.options(name, **{k: v for k, v in values.items() if k in known})

    def needs(self, name: str, kind: type, options: Any = None) -> bool:
        """Whether the head (with `options`, default its defaults) declares an input of type `kind`."""
        head = self.get(name)
        return any(isinstance(i, kind) for i in head.inputs(options if options is not None else head.Options()))


HEADS = HeadRegistry("head", option="--head")


class TrainingError(VidcacheError):
    """Training cannot go on (e.g. the loss stayed non-finite)."""


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
    kind: ClassVar[Literal["classify", "embed"]] = "classify"
    multi_view: ClassVar[bool] = False  # accepts several --views
    Options: ClassVar[type] = NoOptions  # the head's own options dataclass (see the module docstring)
    # `vidcache train --sweep`: the head's key option and the values tried (None: lr × weight decay only)
    sweep_axis: ClassVar[tuple[str, tuple] | None] = None

    @classmethod
    def inputs(cls, options: Any) -> tuple[HeadInput, ...]:
        """What the loop loads into `HeadContext` for this head besides the features (heads/context.py)."""
        return ()

    def __init__(
        self,
        *,
        input_dim: int,
        num_classes: int,
        multi_label: bool,
        options: Any = None,
        input_dims: dict[str, int] | None = None,
        context: HeadContext | None = None,
    ):
        super().__init__()
        if options is None:
            options = type(self).Options()
        elif not isinstance(options, type(self).Options):
            raise ParamError(
                type(self).__name__, "options", type(options).__name__, f"must be a {type(self).Options.__name__}"
            )
        self.input_dim, self.num_classes, self.multi_label, self.options = input_dim, num_classes, multi_label, options
        self.input_dims = dict(input_dims or {"": input_dim})  # view → width, in --views order
        self.context = context

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> HeadOutput:  # [N, T, D], [N, T] bool
        raise NotImplementedError

    def forward_batch(self, batch: Batch) -> HeadOutput:
        return self(batch.feature, batch.mask)

    @classmethod
    def trains_by_steps(cls, options: Any) -> bool:
        """False for a head the loop solves instead (the `linear` probe with L-BFGS): no lr search."""
        return True

    def companions(self, video_ids: list[str], generator: torch.Generator) -> list[str]:
        """Extra training videos the loop adds to a batch (e.g. mined neighbours as positives)."""
        return []

    def classification_loss(self, logits: torch.Tensor, targets: torch.Tensor, pos_weight=None) -> torch.Tensor:
        from .losses import LOSSES

        if self.multi_label:
            return LOSSES.create("bce", logits=logits, targets=targets, pos_weight=pos_weight)
        return LOSSES.create("softmax", logits=logits, targets=targets)

    def loss(self, output: HeadOutput, batch: Batch, *, pos_weight=None) -> tuple[torch.Tensor, dict]:
        loss = self.classification_loss(output.logits, batch.targets, pos_weight)
        return loss, {"cls": float(loss.detach())}

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)

    @torch.no_grad()
    def after_step(self, output: HeadOutput, batch: Batch) -> None:
        """Updates outside the gradient (EMA prototypes)."""

    def report(self) -> dict:
        """Learned quantities worth logging and saving (e.g. pooling exponents)."""
        return {}
