"""`vidcache report`: the HTML report."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option(
    "--run",
    "runs",
    multiple=True,
    type=click.Path(file_okay=False, exists=True),
    help="A train --out directory; repeatable.",
)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@click.option("--sample", type=int, default=24, show_default=True, help="Mined videos shown (a seeded sample).")
@click.option("--labels-per-video", type=int, default=5, show_default=True, help="Hard-negative labels per video.")
@click.option("--videos-per-video", type=int, default=4, show_default=True, help="Hard-negative videos per video.")
@click.option("--max-failures", type=int, default=200, show_default=True, help="Rows of the failure table.")
@click.option("--max-classes", type=int, default=60, show_default=True, help="Classes per run in charts and tables.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary.")
def report(cache_dir: str, runs: tuple[str, ...], out_path: str, as_json: bool, **options) -> None:
    """One self-contained HTML page (opens offline): cache, failures, mining sample, training runs."""
    import dataclasses

    from ..htmlreport import write_report

    summary = write_report(cache_dir, out=out_path, runs=list(runs), **options)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(summary), sort_keys=True))
    else:
        click.echo(
            f"{summary.out}: {summary.bytes / 2**20:.1f} MiB, {summary.videos} videos, "
            f"{summary.failures_shown}/{summary.failures_total} failures shown, {summary.mined_sample} mined videos, "
            f"{summary.runs} run(s)"
        )
