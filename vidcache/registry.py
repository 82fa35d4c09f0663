"""One small registry class behind every kind of pluggable thing (backbones, audio encoders, flow
methods, heads): as timm's `@register_model`, adding one is one new file plus one decorator line,
and tests are generated from `names()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    def __init__(self, kind: str, *, option: str):
        self.kind = kind  # e.g. "flow method", used in error messages
        self.option = option  # the CLI option that picks one, e.g. "--flow-method"
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def decorate(factory: F) -> F:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def names(self) -> list[str]:
        return sorted(self._factories)

    def in_order(self) -> list[str]:
        """The names in registration order (the import order of their modules)."""
        return list(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(
                f"{self.option} {name!r}: unknown {self.kind}; choose one of: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, **options: Any) -> Any:
        return self.get(name)(**options)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
