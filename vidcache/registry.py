"""One small registry class behind every kind of pluggable thing (views, audio encoders, flow
methods, heads, losses): as timm's `@register_model`, adding one is one new file plus one decorator line,
and tests are generated from `names()`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from .errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


class _Lazy:
    """A factory named "module:attribute", imported when first used."""

    def __init__(self, target: str):
        self.target = target

    def load(self) -> Callable[..., Any]:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


class Registry:
    def __init__(self, kind: str, *, option: str):
        self.kind = kind  # e.g. "flow method", used in error messages
        self.option = option  # the CLI option that picks one, e.g. "--flow-method" (or what names one)
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        def decorate(factory: F) -> F:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorate

    def register_lazy(self, name: str, target: str) -> None:
        """Register `name` now and its factory as "module:attribute", imported when first asked for: the
        names (a setting's choices, the CLI's) are known without importing the implementation (torch)."""
        if name in self._factories:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._factories[name] = _Lazy(target)

    def choices(self) -> Any:
        """The names as a `Literal` type, in registration order: a setting's annotation, so its CLI
        choices and its check come from the registry instead of a second hand-written list."""
        return Literal[tuple(self.in_order())]

    def names(self) -> list[str]:
        return sorted(self._factories)

    def in_order(self) -> list[str]:
        """The names in registration order (the import order of their modules)."""
        return list(self._factories)

    def get(self, name: str) -> Callable[..., Any]:
        try:
            factory = self._factories[name]
        except KeyError:
            raise ConfigError(
                f"{self.option} {name!r}: unknown {self.kind}; choose one of: {', '.join(self.names())}"
            ) from None
        if isinstance(factory, _Lazy):
            factory = self._factories[name] = factory.load()
        return factory

    def create(self, name: str, **options: Any) -> Any:
        return self.get(name)(**options)

    def __contains__(self, name: object) -> bool:
        return name in self._factories
