"""heads/: small models trained over the cache (linear, mlp, prototype, learnable pooling, temporal,
fusion, contrastive), their training loop, metrics, checkpoints, evaluation and prediction. Reads features only through
`vidcache.Cache`; one registry line per head."""

from . import contrastive, fusion, linear, pool, prototype, temporal  # noqa: F401  register the heads
from .base import HEADS, Head, HeadOutput, NoOptions, register_head
from .config import TrainConfig

__all__ = ["HEADS", "Head", "HeadOutput", "NoOptions", "TrainConfig", "register_head"]
