"""View plugins: one module per view, one import line each here (the registration)."""

from . import audio, clip, flow, frames, s3d, shots, timm_image, video  # noqa: F401  registers every view
from .base import VIEWS, SampledFramesView, View, ViewContext, default_views, register_view, sections, view

__all__ = [
    "VIEWS",
    "SampledFramesView",
    "View",
    "ViewContext",
    "default_views",
    "register_view",
    "sections",
    "view",
]
