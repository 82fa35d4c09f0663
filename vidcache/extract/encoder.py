"""What every frame encoder provides to the extract loop."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch


class FrameEncoder(ABC):
    """Encodes sampled RGB frames of one view.

    `prepare` runs in decode worker threads on each sampled frame and must be cheap and
    thread-safe; `encode` runs batched in the model thread on the run's device.
    """

    view: str
    feature_dim: int
    store_dtype: str

    @abstractmethod
    def prepare(self, rgb: np.ndarray) -> torch.Tensor: ...

    @abstractmethod
    def encode(self, batch: torch.Tensor) -> np.ndarray: ...

    @abstractmethod
    def identity(self) -> dict:
        """Everything that determines the numbers (model, weights hash, preprocessing, dtype)."""
