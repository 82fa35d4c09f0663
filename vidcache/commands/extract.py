"""`vidcache extract`: the options, the config they build, and the run."""

from __future__ import annotations

import json
import sys

import click

from ..config import RunConfig, SamplingConfig, StreamConfig, parse_shard
from ..errors import EXIT_OK, EXIT_SOME_FAILED, ManifestError
from ..extract.config import ExtractConfig
from ..extract.views import VIEWS, sections
from .common import command_line, on_interrupt
from .options import GeneratedOption, add_options, build, field_options


def extract_options() -> list[GeneratedOption]:
    """Every `extract` flag that lands in the config: generated from `ExtractConfig`, the shared
    option dataclasses and each registered view's settings (`--{section}-{field}`)."""
    options = [
        *field_options(ExtractConfig),
        *field_options(SamplingConfig),
        *[o for section, cls in sections().items() for o in field_options(cls, prefix=f"{section}_")],
        *field_options(StreamConfig),
        *field_options(RunConfig),
    ]
    views = next(o for o in options if o.field == "views" and o.owner is ExtractConfig)
    views.option.help = f"Comma-separated views to extract, from: {', '.join(VIEWS.names())}."
    return options


def _command_options(fn):
    """The flags of `extract` that are not config fields: where things are, and how to report."""
    options = [
        click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False), help="Cache directory."),
        click.option(
            "--root",
            type=click.Path(file_okay=False, exists=True),
            default=None,
            help="Folder that relative manifest paths resolve against; paths must stay inside it. "
            "Default: the manifest's folder (not enforced).",
        ),
        click.option(
            "--shard",
            "shard_spec",
            default="0/1",
            show_default=True,
            help="Process the deterministic part K of N (0 <= K < N), e.g. $SLURM_ARRAY_TASK_ID/8.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables."),
        click.option(
            "--splits",
            "declared_splits",
            default="train,val,test",
            show_default=True,
            help="The split names the manifest may use; others are warned about (errors with --strict).",
        ),
        click.option(
            "--strict",
            is_flag=True,
            help="Manifest warnings (unknown columns, undeclared splits) are errors: exit 2, nothing written.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def build_config(*, shard_spec: str = "0/1", **values) -> ExtractConfig:
    """The `ExtractConfig` of parsed `extract` flags (keywords named as the flags: `clip_model`,
    `flow_bound`, ...); flags not given take their defaults, unknown keywords are an error. Without
    `clip_model`, a `clip_pretrained` file that names its architecture (a fine-tuned export) sets it."""
    options = extract_options()
    if "clip_model" not in values and str(values.get("clip_pretrained", "")).endswith(".safetensors"):
        from ..extract.views.clip.files import architecture_of

        recorded = architecture_of(values["clip_pretrained"])
        if recorded:
            values["clip_model"] = recorded
    for option in options:
        values.setdefault(option.dest, option.option.default)
    known = {o.dest for o in options}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"build_config: unknown option(s) {', '.join(unknown)}")
    shard_index, shard_count = parse_shard(shard_spec)
    settings = {section: build(cls, values, options) for section, cls in sections().items()}
    return build(
        ExtractConfig,
        values,
        options,
        sampling=build(SamplingConfig, values, options),
        streams=build(StreamConfig, values, options),
        run=build(RunConfig, values, options, shard_index=shard_index, shard_count=shard_count),
        views_settings=settings,
    )


def run_extract(
    manifest: str,
    *,
    cache_dir: str,
    root: str | None,
    as_json: bool,
    declared_splits: str = "train,val,test",
    strict: bool = False,
    **options,
) -> int:
    from ..extract.api import extract as extract_videos
    from ..report import ExtractProgress, print_extract_summary

    on_interrupt("finished videos are kept; run the same command again to resume")
    config = build_config(**options)
    splits = tuple(s.strip() for s in declared_splits.split(",") if s.strip())
    if not splits:
        raise click.BadParameter("give at least one split name, e.g. train,val,test", param_hint="--splits")
    with ExtractProgress(enabled=not as_json) as progress:
        try:
            summary = extract_videos(
                manifest,
                cache_dir,
                config,
                root=root,
                splits=splits,
                strict=strict,
                progress=progress,
                notify=lambda note: click.echo(note, err=True),
                command=command_line(),
            )
        except ManifestError as error:  # the API says `(strict)`, the command line has a flag
            raise ManifestError(error.path, [p.replace("(strict)", "(--strict)") for p in error.problems]) from None
    if as_json:
        click.echo(json.dumps(summary.as_dict(), sort_keys=True))
    else:
        if summary.random_weights:
            click.echo("NOTE: random model weights (weights 'none'): those features are not semantic.", err=True)
        print_extract_summary(summary)
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@_command_options
def extract(manifest: str, cache_dir: str, root: str | None, as_json: bool, **options) -> None:
    """Decode each video of MANIFEST once and cache its embeddings (resumable, idempotent).

    MANIFEST is a CSV or parquet with a `path` column and optional `video_id`, `labels` (;-separated),
    `split`, `start_s`, `end_s`.
    """
    if click.get_current_context().get_parameter_source("clip_model") == click.core.ParameterSource.DEFAULT:
        options.pop("clip_model")  # not given: the --clip-pretrained file may name it (build_config)
    sys.exit(run_extract(manifest, cache_dir=cache_dir, root=root, as_json=as_json, **options))


add_options(extract, extract_options())
