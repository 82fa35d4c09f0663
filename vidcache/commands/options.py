"""Click options generated from config dataclasses, and the dataclasses built back from them.

Every field of a config dataclass becomes one flag: its name (`--{prefix}{field}` with dashes, or the
field's `flag` metadata), help and default come from the field (`vidcache.fields.setting`), its
choices from a `Literal` annotation or the field's `choices` (a registry's names). `build` turns the
parsed values back into the dataclass and translates a `ParamError` into the flag's name, so the CLI
never writes an option three times and the library never speaks in flags.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

import click

from ..errors import ConfigError
from ..fields import ParamError


@dataclass(frozen=True)
class GeneratedOption:
    """One flag made from one dataclass field."""

    owner: type
    field: str
    dest: str  # the click parameter name (the key in the command's keyword arguments)
    flag: str
    option: click.Option
    parse: Callable[[Any], Any] | None = None  # text → field value (tuples given as "a,b,c")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _split_tuple(item_type: type) -> Callable[[Any], Any]:
    def parse(text: Any) -> Any:
        if text is None or isinstance(text, tuple):
            return text
        return tuple(item_type(part.strip()) for part in str(text).split(",") if part.strip())

    return parse


def field_options(cls: type, *, prefix: str = "", skip: tuple[str, ...] = ()) -> list[GeneratedOption]:
    """One `GeneratedOption` per CLI field of the dataclass `cls` (nested dataclasses are not expanded)."""
    hints = get_type_hints(cls)
    out: list[GeneratedOption] = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in skip or not meta.get("cli", True) or "help" not in meta:
            continue
        annotation, optional = _unwrap_optional(hints[f.name])
        flag = meta.get("flag") or "--" + f"{prefix}{f.name}".replace("_", "-")
        dest = flag[2:].replace("-", "_")  # the keyword is the flag's name: --flow-bound → flow_bound
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        kwargs: dict[str, Any] = {"help": meta["help"], "default": default, "show_default": default is not None}
        parse = None
        if get_origin(annotation) is Literal:
            kwargs["type"] = click.Choice([str(a) for a in get_args(annotation)])
        elif meta.get("choices") is not None:
            kwargs["type"] = click.Choice(list(meta["choices"]()))
        elif annotation is bool:
            flag = f"{flag}/--no-{flag[2:]}"
        elif get_origin(annotation) is tuple:
            item = get_args(annotation)[0]
            parse = _split_tuple(item)
            kwargs["type"] = str
            kwargs["default"] = None if default is None else ",".join(map(str, default))
        elif annotation in (int, float, str):
            kwargs["type"] = annotation
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no CLI type for {annotation!r}")
        if optional and default is not None:
            kwargs["show_default"] = True
        option = click.Option([flag, dest], **kwargs)
        out.append(GeneratedOption(cls, f.name, dest, flag.split("/")[0], option, parse))
    return out


def _unique(options: list[GeneratedOption]) -> list[click.Option]:
    """Each click option once: a flag shared by several dataclasses (`share`) is one option."""
    seen: dict[int, click.Option] = {}
    for o in options:
        seen.setdefault(id(o.option), o.option)
    return list(seen.values())


def add_options(fn: Callable, options: list[GeneratedOption]) -> Callable:
    """Attach the generated options to a click command (or to its function, below `@click.command`)."""
    if isinstance(fn, click.Command):
        fn.params.extend(_unique(options))
        return fn
    params = getattr(fn, "__click_params__", [])
    params.extend(reversed(_unique(options)))
    fn.__click_params__ = params  # type: ignore[attr-defined]
    return fn


def _type_key(option: click.Option) -> tuple:
    kind = option.type
    return (type(kind).__name__, tuple(getattr(kind, "choices", ()) or ()), option.is_flag)


def share(groups: dict[str, list[GeneratedOption]]) -> list[GeneratedOption]:
    """One flag per field name across several dataclasses (e.g. every head's options, keyed by head).

    The same field in several dataclasses becomes one click option (it must have the same type and
    choices in all of them); its default is None, because each dataclass keeps its own default and
    only values given on the command line are passed on (`given`). The help names each owner's
    default where they differ. Returns one `GeneratedOption` per (dataclass, field), the shared ones
    pointing at the same click option, so `build` and `translate` work per dataclass as before."""
    by_dest: dict[str, list[tuple[str, GeneratedOption]]] = {}
    for owner_name, options in groups.items():
        for o in options:
            by_dest.setdefault(o.dest, []).append((owner_name, o))
    merged: dict[str, click.Option] = {}
    for dest, owned in by_dest.items():
        first = owned[0][1].option
        if len({_type_key(o.option) for _, o in owned}) != 1 or len({o.flag for _, o in owned}) != 1:
            names = ", ".join(f"{o.owner.__name__}.{o.field}" for _, o in owned)
            raise TypeError(f"{names}: one flag, but different types, choices or flag names")
        defaults = {name: o.option.default for name, o in owned}
        shown = sorted({repr(v) for v in defaults.values()})
        if len(shown) == 1:
            note = f"Default: {_shown(next(iter(defaults.values())))}."
        else:
            note = "Default: " + ", ".join(f"{name} {_shown(v)}" for name, v in defaults.items()) + "."
        used = ", ".join(defaults)
        help_text = f"{first.help} [{used}] {note}" if len(groups) > 1 else f"{first.help} {note}"
        decls = [*first.opts, *first.secondary_opts] if first.is_flag and first.secondary_opts else first.opts
        flag = "/".join(decls) if first.is_flag and first.secondary_opts else decls[0]
        kwargs: dict[str, Any] = {"help": help_text, "default": None, "show_default": False}
        if not first.is_flag:
            kwargs["type"] = first.type
        merged[dest] = click.Option([flag, dest], **kwargs)
    return [dataclasses.replace(o, option=merged[o.dest]) for options in groups.values() for o in options]


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None or value == "" else str(value)


def given(ctx: click.Context, values: dict[str, Any], options: list[GeneratedOption]) -> dict[str, Any]:
    """The values of `options` typed on the command line (or set in the environment), not defaults:
    what a shared flag passes on, so every other field keeps its own dataclass's default."""
    from click.core import ParameterSource

    dests = {o.dest for o in options}
    return {
        dest: value
        for dest, value in values.items()
        if dest in dests and ctx.get_parameter_source(dest) not in (ParameterSource.DEFAULT, None)
    }


class GeneratedCommand(click.Command):
    """A command whose flags are generated from dataclasses the first time they are needed (parsing
    or --help of this command), so `vidcache` starts without importing torch and every head module.
    `generate()` returns (the options, a key); they are attached again when the key changes (e.g. a
    head registered later by a plugin or a test)."""

    def __init__(self, *args: Any, generate: Callable[[], tuple[list[GeneratedOption], Any]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._generate, self._static, self._key = generate, list(self.params), None

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        options, key = self._generate()
        if key != self._key:
            self.params = list(self._static)
            add_options(self, options)
            self._key = key
        return super().get_params(ctx)


def translate(error: ParamError, options: list[GeneratedOption]) -> ConfigError:
    """`SamplingConfig.fps=-1.0: must be > 0` → `--fps -1.0: must be > 0`, field names in the rule as flags."""
    flags = {o.field: o.flag for o in options if o.owner.__name__ == error.owner}
    if error.param not in flags:
        return error
    rule = re.sub(r"\b(\w+)\b", lambda m: flags.get(m.group(1), m.group(1)), error.rule)
    value = error.value
    shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
    return ConfigError(f"{flags[error.param]} {shown}: {rule}")


def params_as_flags(command: click.Command) -> click.Command:
    """A `ParamError` raised by the Python API under this command (`mine_neighbours.k=0: must be >= 1`)
    reported with the command's flag of that name (`--k 0: must be >= 1`); the API's own messages name
    its parameters, the command line's its flags."""
    callback = command.callback
    assert callback is not None

    @functools.wraps(callback)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except ParamError as error:
            wanted = "--" + error.param.replace("_", "-")
            flags = {opt for p in command.params if isinstance(p, click.Option) for opt in p.opts}
            if wanted not in flags:
                raise
            value = ",".join(map(str, error.value)) if isinstance(error.value, tuple) else error.value
            raise ConfigError(f"{wanted} {value}: {error.rule}") from None

    command.callback = wrapped
    return command


def build(cls: type, values: dict[str, Any], options: list[GeneratedOption], **fixed: Any) -> Any:
    """`cls(...)` from the parsed CLI values of its options (taken out of `values`) and `fixed` fields."""
    kwargs = dict(fixed)
    for option in options:
        if option.owner is not cls or option.dest not in values:
            continue
        value = values.pop(option.dest)
        kwargs[option.field] = option.parse(value) if option.parse else value
    try:
        return cls(**kwargs)
    except ParamError as error:
        raise translate(error, options) from None
