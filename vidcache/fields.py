"""Config fields that describe themselves, and errors that name the parameter.

A setting is declared once, on its dataclass: `setting(default, help=...)` keeps its help text (and,
where the command line spells it otherwise, its flag) in the field's metadata. The command line is
generated from those fields (`vidcache.commands.options`), and the Python API takes the same
dataclasses, so a setting has one name, one default and one help text everywhere.

Validation raises `ParamError`, which names the dataclass field (`SamplingConfig.fps=-1.0: must be
> 0`) so a Python caller reads the name it typed; the CLI translates the field into its flag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, get_args

from .errors import ConfigError

_MISSING: Any = dataclasses.MISSING


def setting(
    default: Any = _MISSING,
    *,
    help: str,
    flag: str | None = None,
    default_factory: Callable[[], Any] = _MISSING,
    choices: Callable[[], Iterable[str]] | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with its help text. `flag` overrides the generated `--prefix-name`;
    `choices` lists the allowed values where a registry, not a `Literal`, holds them; `cli=False`
    keeps a field out of the command line (set by the program, e.g. a resolved default)."""
    metadata = {"help": help, "flag": flag, "choices": choices, "cli": cli}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class ParamError(ConfigError):
    """A value a parameter cannot take: `owner.param=value: rule`."""

    def __init__(self, owner: str, param: str, value: Any, rule: str):
        self.owner, self.param, self.value, self.rule = owner, param, value, rule
        super().__init__(f"{owner}.{param}={value!r}: {rule}" if owner else f"{param}={value!r}: {rule}")


def _owner(obj: Any) -> str:
    return obj if isinstance(obj, str) else type(obj).__name__


def check(obj: Any, param: str, ok: bool, rule: str, *, value: Any = _MISSING) -> None:
    """Raise `ParamError` for `obj.param` unless `ok`; `rule` says what is allowed (\"must be > 0\").
    `obj` may be a name (a function checking its arguments): then give the argument's `value`."""
    if not ok:
        if value is _MISSING:
            value = getattr(obj, param, None) if not isinstance(obj, str) else None
        raise ParamError(_owner(obj), param, value, rule)


def check_choice(obj: Any, param: str, value: Any, allowed: Any) -> None:
    """`value` must be one of `allowed` (a `Literal` type or an iterable of names)."""
    choices = get_args(allowed) or tuple(allowed)
    if value not in choices:
        raise ParamError(_owner(obj), param, value, "choose one of: " + ", ".join(map(str, choices)))
