"""The `video` view: any transformers video encoder (VideoMAE, V-JEPA 2, X-CLIP, TimeSformer, ViViT) on
clip windows, one row per clip, with the family's own processor. Settings (`settings`), the families
vidcache knows (`families`), the model wrapper (`model`), the decode-side windows (`consumer`) and the
registered view (`view`); light at import time (transformers loads with the model)."""

from .settings import VideoConfig
from .view import VideoView

__all__ = ["VideoConfig", "VideoView"]
