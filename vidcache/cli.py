"""The `vidcache` command line. Exit codes: 0 done, 1 some videos failed, 2 usage/config/input
error, 3 the cache is locked by another running extract."""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .commands.common import interrupt_hint
from .errors import EXIT_OK, VidcacheError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vidcache")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Cache frozen video embeddings (extract), then index, mine and train heads on the cache."""
    from .report import configure_logging

    configure_logging(verbose)
    ctx.obj = {"verbose": verbose}


EXIT_INTERNAL = 70  # an unexpected error: a bug (traceback on stderr); 1 stays "some videos failed"


def _add_commands() -> None:
    """Every command lives in its own module of `vidcache.commands`; this is the whole list."""
    from .commands import cache, demo, extract, finetune, heads, importing, mining, report, search

    for command in (
        extract.extract,
        cache.status,
        cache.verify,
        cache.remove,
        cache.compact,
        cache.embed_text,
        demo.demo,
        mining.index,
        mining.mine,
        importing.import_cmd,
        heads.train,
        heads.eval_cmd,
        heads.predict,
        finetune.finetune,
        search.search,
        report.report,
    ):
        cli.add_command(command)


_add_commands()


def _wants_json(args: list[str]) -> bool:
    return "--json" in args[: args.index("--")] if "--" in args else "--json" in args


def _finish_error(message: str, code: int, *, as_json: bool) -> None:
    """Every failure ends here: one line on stderr and, with --json, one JSON object on stdout
    (`{"error": message, "exit_code": code}`, the same for every command)."""
    click.echo(f"vidcache: error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}, sort_keys=True))
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    from . import signals
    from .threads import configure_threads

    configure_threads()  # before torch or FAISS is imported: they size their pools when loaded
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(args)
    signals.install()  # SIGTERM (Slurm, timeout, systemd, Kubernetes) stops a command exactly as Ctrl-C
    try:
        cli.main(args=args, prog_name="vidcache", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _finish_error(f"interrupted by {signals.name()}; {interrupt_hint()}", signals.exit_code(), as_json=as_json)
    except click.ClickException as exc:
        if as_json:
            _finish_error(exc.format_message(), exc.exit_code, as_json=True)
        exc.show()
        sys.exit(exc.exit_code)
    except VidcacheError as exc:
        _finish_error(str(exc), exc.exit_code, as_json=as_json)
    except Exception as exc:  # a bug: the traceback goes to stderr, --json still gets its one object
        import traceback

        traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        _finish_error(
            f"unexpected {type(exc).__name__}: {first} (a bug; please report it)", EXIT_INTERNAL, as_json=as_json
        )
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
