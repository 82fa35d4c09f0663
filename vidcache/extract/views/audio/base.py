"""What every audio encoder provides to the extract loop."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from ...audio.frontend import EXAMPLE_FRAMES, MEL_BANDS


class AudioEncoder(ABC):
    """Encodes 0.96 s log-mel examples (see frontend.py) of the `audio` view, one row per example.

    `encode` runs in the model thread on the run's device; it batches internally, so any number of
    examples may be passed at once.
    """

    view = "audio"
    feature_dim: int
    store_dtype: str = "float16"

    @abstractmethod
    def encode(self, examples: torch.Tensor) -> np.ndarray:
        """[N, 96, 64] float32 log-mel examples → [N, feature_dim] float32."""

    @abstractmethod
    def identity(self) -> dict:
        """Everything that determines the numbers (encoder, weights hash, front end, dtype)."""


def check_examples(examples: torch.Tensor) -> torch.Tensor:
    """`examples` as float32 after checking it is [N, 96, 64]."""
    examples = torch.as_tensor(examples)
    if examples.ndim != 3 or tuple(examples.shape[1:]) != (EXAMPLE_FRAMES, MEL_BANDS):
        raise ValueError(f"expected log-mel examples [N, {EXAMPLE_FRAMES}, {MEL_BANDS}], got {tuple(examples.shape)}")
    return examples.to(torch.float32)
