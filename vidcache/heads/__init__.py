"""heads/: small models trained over the cache (linear, mlp, prototype, learnable pooling), their
training loop, metrics, checkpoints, evaluation and prediction. Reads features only through
`vidcache.Cache`; one registry line per head."""

from . import linear, pool, prototype  # noqa: F401  register the heads
from .base import HEADS, Head, HeadOutput, register_head
from .config import HeadOptions, TrainConfig

__all__ = ["HEADS", "Head", "HeadOptions", "HeadOutput", "TrainConfig", "register_head"]
