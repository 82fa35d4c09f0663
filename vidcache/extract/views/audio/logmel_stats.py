"""`logmel-stats`: a weights-free audio embedding, so the audio view works offline out of the box.

Per 0.96 s example, the mean of each of the 64 log-mel bands over its 96 frames, then each band's
standard deviation (population, ddof=0): 128 numbers that capture spectral envelope and how much
it moves, enough for simple audio probes (tone vs silence, speech vs music)."""

from __future__ import annotations

import numpy as np
import torch

from ...audio.frontend import MEL_BANDS, frontend_identity
from .base import AudioEncoder, check_examples
from .settings import AudioConfig


class LogMelStatsEncoder(AudioEncoder):
    feature_dim = 2 * MEL_BANDS

    def __init__(self, *, config: AudioConfig, device: torch.device, dtype: str = "float16"):
        # statistics are cheap: always on the CPU, so the numbers do not depend on the device
        self.config = config
        self.device = device
        self.store_dtype = dtype

    @torch.inference_mode()
    def encode(self, examples: torch.Tensor) -> np.ndarray:
        examples = check_examples(examples).cpu()
        if not examples.shape[0]:  # std over an empty batch warns
            return np.zeros((0, self.feature_dim), np.float32)
        mean = examples.mean(dim=1)
        std = examples.std(dim=1, correction=0)
        return torch.cat([mean, std], dim=1).numpy()

    def identity(self) -> dict:
        return {
            "encoder": "logmel-stats",
            "features": "per-band mean over the example's frames, then per-band population std (ddof=0)",
            "weights_path": "",
            "weights_sha256": "",
            "frontend": frontend_identity(),
            "dtype": self.store_dtype,
            "normalized": False,
            "feature_dim": self.feature_dim,
        }
