"""`vidcache export`: one view of a cache as per-video .npy files, a parquet table or webdataset shards."""

from __future__ import annotations

import json

import click

from .options import add_options, build, field_options


def _options():
    from ..export.config import ExportConfig

    return field_options(ExportConfig)


@click.command("export")
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(dir_okay=True, file_okay=False), help="Folder.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def export(ctx: click.Context, cache_dir: str, out_dir: str, as_json: bool, **values) -> None:
    """Write one view of the cache under --out: per-video .npy files (video_features' layout), one
    parquet table, or webdataset tar shards. Re-running keeps the files already written from the same
    rows; every file appears complete or not at all."""
    from ..export.api import export_view
    from ..export.config import ExportConfig
    from .common import on_interrupt

    on_interrupt("files already written are complete and kept; run the same command again to finish")
    config = build(ExportConfig, values, _options())
    summary = export_view(cache_dir, out_dir, config)
    if as_json:
        click.echo(json.dumps(summary.as_dict(), sort_keys=True))
        return
    click.echo(
        f"{summary.videos} video(s), {summary.rows} rows of {summary.view} → {summary.out} ({summary.format}): "
        f"{len(summary.files_written)} file(s) written, {len(summary.files_kept)} kept from an earlier export"
    )


add_options(export, _options())
