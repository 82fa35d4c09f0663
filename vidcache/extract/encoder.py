"""The encoder contract: what a view's model (`View.load_model`) gives the shared extract machinery.

Written down as a typed `Protocol`: the machinery (consumers, decode processes, the model stage) only
uses these names, so a view's model is any class that has them (clip, s3d and timm implement it; the
explicit subclasses below are documentation, not a requirement). `PrepareOnly` is the model-free twin
a decode process gets in place of an encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class FrameEncoder(Protocol):
    """Encodes the sampled RGB frames of one view.

    - `view`: the cache view its rows go to.
    - `prepare(rgb)`: one decoded frame (uint8 HxWx3, as displayed) → the model input of that frame
      (resize, crop, to tensor). Runs in the decode worker threads, so it must be cheap and thread-safe.
    - `process_prepare`: the same function without a reference to the model (picklable), run in decode
      *processes* (`--decode-processes`); an encoder without it cannot decode in a process.
    - `encode(batch)`: a batch of prepared inputs → float rows [N, feature_dim] (numpy), run batched in
      the model thread on the run's device.
    - `identity()`: everything that determines the numbers (model, weights hash, preprocessing, dtype),
      recorded in the catalog and in every shard; a changed identity makes the cached rows stale.
    - `store_dtype`: the dtype its rows are stored in (the run's `--dtype` unless the view says otherwise).
    - `max_short_side`: the largest short side `prepare` needs (None or absent: any); the decode stage shrinks
      larger frames to about twice this before RGB conversion, which saves time on HD video.
    - `feature_dim`: the width of a row.
    """

    view: str
    feature_dim: int
    store_dtype: str
    max_short_side: int | None

    def prepare(self, rgb: np.ndarray) -> torch.Tensor: ...

    @property
    def process_prepare(self) -> Callable[[np.ndarray], torch.Tensor]: ...

    def encode(self, batch: torch.Tensor) -> np.ndarray: ...

    def identity(self) -> dict: ...


@dataclass(frozen=True)
class PrepareOnly:
    """What the decode side uses of an encoder (its view name and per-frame `prepare`), without the
    model: sent to decode processes in its place."""

    view: str
    prepare: Callable[[np.ndarray], torch.Tensor]
    preprocess: Any = None
    max_short_side: int | None = None

    @classmethod
    def of(cls, encoder) -> PrepareOnly | None:
        """The twin of `encoder`; its `process_prepare` is `prepare` without a reference to the model
        (a bound `prepare` would pickle the whole model into every process)."""
        if encoder is None:
            return None
        prepare = encoder.process_prepare
        return cls(
            view=encoder.view,
            prepare=prepare,
            preprocess=getattr(encoder, "preprocess", None),
            max_short_side=getattr(encoder, "max_short_side", None),
        )
