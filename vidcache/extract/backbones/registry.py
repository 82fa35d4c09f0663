"""One registry of frame encoders, as timm's `@register_model`: a new backbone is one file plus one
`@register_backbone("name")` line, and the tests are generated from `list_backbones()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ...errors import ConfigError

_BACKBONES: dict[str, Callable] = {}
F = TypeVar("F", bound=Callable)


def register_backbone(name: str) -> Callable[[F], F]:
    def decorate(factory: F) -> F:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        _BACKBONES[name] = factory
        return factory

    return decorate


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def create_backbone(name: str, **options):
    try:
        factory = _BACKBONES[name]
    except KeyError:
        raise ConfigError(f"unknown view {name!r}; choose from: {', '.join(list_backbones())}") from None
    return factory(**options)
