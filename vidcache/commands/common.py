"""Helpers every command shares: the command line as typed, the interrupt hint, metric tables."""

from __future__ import annotations

import shlex
import sys


def command_line() -> str:
    """The command as typed, recorded in every artifact it makes (any URL credential redacted)."""
    from ..redact import redact_text

    return redact_text(shlex.join(["vidcache", *sys.argv[1:]]))


def resume_command() -> str:
    """The command that continues this `train` run: the same one, with --resume."""
    args = sys.argv[1:]
    return shlex.join(["vidcache", *args, *([] if "--resume" in args else ["--resume"])])


def print_metrics(title: str, metrics: dict, *, split: str | None = None, header: str = "") -> None:
    """A metric table; with `split`, every metric row names it (`val map_macro`), so a train run's
    val numbers are never read as test ones. `header` (a line that may hold paths) prints above the
    table, not in its title, where a narrow table would wrap it mid-path."""
    from rich.table import Table

    from ..report import output_console

    console = output_console()
    if header:
        console.print(header, soft_wrap=True, highlight=False)
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        name = f"{split} {key}" if split and not key.endswith("/s") else key
        if isinstance(value, float):
            table.add_row(name, f"{value:.4f}")
        elif isinstance(value, (int, str, bool)):
            table.add_row(name, str(value))
    console.print(table)


DEFAULT_INTERRUPT_HINT = "nothing half-written was kept; run the same command again"
_interrupt_hint = DEFAULT_INTERRUPT_HINT


def on_interrupt(hint: str) -> None:
    """What the message after SIGINT/SIGTERM tells the user to do, set by the running command."""
    global _interrupt_hint
    _interrupt_hint = hint


def interrupt_hint() -> str:
    return _interrupt_hint
