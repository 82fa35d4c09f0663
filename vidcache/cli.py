"""The `vidcache` command line. Exit codes: 0 done, 1 some videos failed, 2 usage/config/input
error, 3 the cache is locked by another running extract."""

from __future__ import annotations

import os
import sys

from . import signals

if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "vidcache":  # the program, not an import
    signals.install(early=True)  # first thing: a SIGTERM during the imports below ends vidcache (exit 143)

import json

import click

from .commands.common import interrupt_hint
from .errors import EXIT_OK, VidcacheError
from .version import __version__

_PROGRAM = __name__ == "__main__" or os.path.basename(sys.argv[0]) == "vidcache"  # the program, not an import

# every command lives in its own module of `vidcache.commands`; this is the whole list. A module is
# imported only when its command runs (or help lists them all): `vidcache status` never loads the
# view registry, numpy-heavy extract options, torch or h5py (issue 29: status <= 1 s at 1M videos)
COMMANDS: dict[str, str] = {
    "extract": "extract:extract",
    "status": "cache:status",
    "verify": "cache:verify",
    "remove": "cache:remove",
    "compact": "cache:compact",
    "embed-text": "cache:embed_text",
    "export": "export:export",
    "demo": "demo:demo",
    "index": "mining:index",
    "mine": "mining:mine",
    "import": "importing:import_cmd",
    "train": "heads:train",
    "eval": "heads:eval_cmd",
    "predict": "heads:predict",
    "finetune": "finetune:finetune",
    "search": "search:search",
    "report": "report:report",
    "models": "models:models",
    "shots": "shots:shots",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (click's documented lazy-loading
    pattern): start-up costs what the one command run needs, not what all of them import."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(name for name in self.commands if name not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            import importlib

            module, attr = COMMANDS[cmd_name].split(":")
            self.add_command(getattr(importlib.import_module(f".commands.{module}", __package__), attr), cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vidcache")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Cache frozen video embeddings (extract), then index, mine and train heads on the cache."""
    from .report import configure_logging

    configure_logging(verbose)
    ctx.obj = {"verbose": verbose}


EXIT_INTERNAL = 70  # an unexpected error: a bug (traceback on stderr); 1 stays "some videos failed"


def _wants_json(args: list[str]) -> bool:
    return "--json" in args[: args.index("--")] if "--" in args else "--json" in args


def _exit(code: int) -> None:
    """End the command with `code`. As the `vidcache` program with torch loaded, do what the interpreter's
    exit does that matters (wait for non-daemon threads, run the atexit handlers: logging, multiprocessing,
    Ray, temporary directories; close HDF5 files still open, flush the output) and skip the rest:
    finalising torch and open_clip takes 1.2-1.3 s here, a tenth of a short `extract` and more than a
    text query (issue 29). Called as a function (tests, embedding): `sys.exit` as ever."""
    if not (_PROGRAM and "torch" in sys.modules):
        sys.exit(code)
    import atexit
    import threading

    getattr(threading, "_shutdown", lambda: None)()  # CPython's own first step of exiting
    atexit._run_exitfuncs()
    if "h5py" in sys.modules:  # HDF5 flushes a file open for writing only when it is closed
        import h5py

        for file_id in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE):
            try:
                h5py.File(file_id).close()  # its datasets and groups first, as File.close does
            except Exception:
                pass
    signals.exit_now(code)


def _finish_error(message: str, code: int, *, as_json: bool) -> None:
    """Every failure ends here: one line on stderr and, with --json, one JSON object on stdout
    (`{"error": message, "exit_code": code}`, the same for every command)."""
    from .redact import redact_text

    message = redact_text(message)
    click.echo(f"vidcache: error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}, sort_keys=True))
    _exit(code)


def main(argv: list[str] | None = None) -> None:
    from .redact import redact_standard_streams, redact_text
    from .threads import configure_threads

    configure_threads()  # before torch or FAISS is imported: they size their pools when loaded
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(args)
    signals.install()  # SIGTERM (Slurm, timeout, systemd, Kubernetes) stops a command exactly as Ctrl-C
    redact_standard_streams()  # no credential of a URL leaves the process (docs/security.md)
    try:
        cli.main(args=args, prog_name="vidcache", standalone_mode=False)
    except SystemExit as exc:  # a command's own exit code (extract, import, verify): ended like the others
        if exc.code is None or isinstance(exc.code, int):
            _exit(exc.code or 0)
        raise
    except (click.exceptions.Abort, KeyboardInterrupt):
        message = f"interrupted by {signals.name()}; {interrupt_hint()}"
        if signals.stopped_by_signal():  # every cleanup ran while the exception unwound: exit now
            click.echo(f"vidcache: error: {message}", err=True)
            if as_json:
                click.echo(json.dumps({"error": message, "exit_code": signals.exit_code()}, sort_keys=True))
            signals.exit_now(signals.exit_code())
        _finish_error(message, signals.exit_code(), as_json=as_json)
    except click.ClickException as exc:
        if as_json:
            _finish_error(exc.format_message(), exc.exit_code, as_json=True)
        exc.show()
        _exit(exc.exit_code)
    except VidcacheError as exc:
        _finish_error(str(exc), exc.exit_code, as_json=as_json)
    except Exception as exc:  # a bug: the traceback goes to stderr, --json still gets its one object
        import traceback

        sys.stderr.write(redact_text(traceback.format_exc()))  # a frame's text may quote a URL
        first = redact_text((str(exc).strip().splitlines() or [""])[0])
        _finish_error(
            f"unexpected {type(exc).__name__}: {first} (a bug; please report it)", EXIT_INTERNAL, as_json=as_json
        )
    _exit(EXIT_OK)


if __name__ == "__main__":
    main()
