"""Video backbones, one registry line each (see registry.py)."""

from . import clip, s3d  # noqa: F401  register "clip" and "s3d"
from .registry import BACKBONES, create_backbone, list_backbones, register_backbone

__all__ = ["BACKBONES", "create_backbone", "list_backbones", "register_backbone"]
