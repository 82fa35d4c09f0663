"""View plugins: one module per view, one import line each here (the registration)."""

from . import audio, clip, flow, s3d, timm_image  # noqa: F401  registers clip, s3d, audio, flow, motion, timm
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
