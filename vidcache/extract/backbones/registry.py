"""The registry of video backbones (one per frame/clip view): a new backbone is one file plus one
`@register_backbone("name")` line, and the tests are generated from `list_backbones()`."""

from __future__ import annotations

from ...registry import Registry

BACKBONES = Registry("backbone", option="--views")
register_backbone = BACKBONES.register


def list_backbones() -> list[str]:
    return BACKBONES.names()


def create_backbone(name: str, **options):
    return BACKBONES.create(name, **options)
