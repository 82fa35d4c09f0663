"""Frame encoders, one registry line each (see registry.py)."""

from . import clip  # noqa: F401  registers "clip"
from .registry import create_backbone, list_backbones, register_backbone

__all__ = ["create_backbone", "list_backbones", "register_backbone"]
