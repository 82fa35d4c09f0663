"""`vidcache train`, `eval` and `predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .common import command_line, on_interrupt, print_metrics, resume_command
from .options import GeneratedCommand, GeneratedOption, build, field_options, given, params_as_flags, share


def train_options() -> tuple[list[GeneratedOption], list[GeneratedOption]]:
    """The `train` flags: one per `TrainConfig` field, and one per head-option field name across
    every registered head's options dataclass (a name several heads share is one flag)."""
    from ..heads import HEADS, TrainConfig

    common = field_options(TrainConfig)
    heads = share({name: field_options(HEADS.options_class(name)) for name in HEADS.names()})
    clash = {o.dest for o in common} & {o.dest for o in heads}
    if clash:
        raise TypeError(f"head options named like TrainConfig fields: {sorted(clash)}")
    return common, heads


def _all_train_options() -> tuple[list[GeneratedOption], tuple]:
    from ..heads import HEADS

    common, heads = train_options()
    return [*common, *heads], tuple((n, HEADS.options_class(n)) for n in HEADS.names())


def _takes(options_class: type, flag: str, options: list[GeneratedOption]) -> bool:
    return any(o.flag == flag and o.owner is options_class for o in options)


def parse_train(ctx: click.Context, values: dict) -> tuple[Any, Any]:
    """(TrainConfig, the chosen head's options) from the parsed `train` flags. Head options not typed
    keep the head's own default; a head option typed for a head that does not have it is an error."""
    from ..heads import HEADS, TrainConfig

    common, heads = train_options()
    typed = given(ctx, values, heads)
    config = build(TrainConfig, values, common)
    options_class = HEADS.options_class(config.head)
    own = [o for o in heads if o.owner is options_class]
    stray = sorted({o.flag for o in heads if o.dest in typed} - {o.flag for o in own})
    if stray:
        takers = {flag: [n for n in HEADS.names() if _takes(HEADS.options_class(n), flag, heads)] for flag in stray}
        raise click.UsageError(
            "; ".join(f"{f} is not an option of --head {config.head} (heads: {', '.join(takers[f])})" for f in stray)
        )
    return config, build(options_class, typed, own)


def _print_sweep(records: list[dict]) -> None:
    from rich.table import Table

    from ..report import output_console

    option = records[0]["option"]
    table = Table(title=f"sweep: {len(records)} configs (val {records[0]['metric'] or 'metric'})")
    for column in ("config", "lr", "weight decay", option or "option", "val", "best epoch", "s"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for r in records:
        mark = " ← kept" if r["chosen"] else ""
        table.add_row(
            r["name"] + mark, f"{r['lr']:g}", f"{r['weight_decay']:g}", str(r["option_value"]),
            f"{r['value']:.4f}", str(r["best_epoch"]), f"{r['seconds']:.1f}",
        )  # fmt: skip
    output_console().print(table)


@params_as_flags
@click.command(cls=GeneratedCommand, generate=_all_train_options)
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue a run from its last checkpoint.")
@click.option(
    "--sweep",
    is_flag=True,
    help="Train a grid (lr × weight decay × the head's key option), keep the best on val; all in RUN/sweep.csv.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def train(ctx: click.Context, cache_dir: str, run_dir: str, resume: bool, sweep: bool, as_json: bool, **values) -> None:
    """Train a head on a cached view; writes checkpoints, history, plots and a summary to --out.
    Each head's own options are listed with the heads that take them in brackets."""
    import dataclasses

    from ..errors import ConfigError

    out = Path(run_dir)
    if out.is_dir() and any(out.iterdir()) and not resume:  # as heads.train says, before torch loads
        raise ConfigError(f"run directory {run_dir} is not empty; use another --out or add --resume")
    from ..heads import api

    config, options = parse_train(ctx, values)
    on_interrupt(f"finished epochs are kept in {run_dir}; resume with: {resume_command()}")
    from ..report import TrainProgress

    with TrainProgress(f"train {config.head}", enabled=not as_json) as progress:
        result = api.train(
            cache_dir, run_dir, options=options, config=config, sweep=sweep, resume=resume,
            progress=progress, command=command_line(),
        )  # fmt: skip
    summary = result.summary
    info = dataclasses.asdict(summary)
    info["warnings"] = list(result.warnings)
    for warning in result.warnings:
        click.echo(f"vidcache: warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True, default=str))
        return
    if result.sweep is not None:
        _print_sweep(result.sweep)
        click.echo(f"kept {summary.sweep['chosen']} (best val {summary.best_metric}) → {run_dir}")
    print_metrics(
        f"val metrics of epoch {summary.best_epoch}",
        {**summary.val_metrics, **summary.val_metrics_tuned, "samples/s": summary.samples_per_s},
        split="val",
        header=f"{config.head} on {','.join(config.all_views)}: best val {summary.best_metric} "
        f"{summary.best_value:.4f} at epoch {summary.best_epoch} of {summary.epochs_run} → {run_dir} "
        f"(every epoch: {Path(run_dir) / 'train.log'})",
    )


@params_as_flags
@click.command("eval")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--items",
    default=None,
    type=click.Choice(["videos", "shots"]),
    help="videos, or shots of the shots view (default: what the run was trained on).",
)
@click.option(
    "--retrieval-queries",
    default=10_000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Retrieval R@k over at most this many query videos (a seeded sample above it; 0: all). "
    "Exact R@k costs queries x training videos.",
)
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(
    run_dir: str, cache_dir: str, split: str, device: str, items: str | None, retrieval_queries: int, as_json: bool
) -> None:
    """Metrics of a trained head on a split (mAP, GAP@20, F1 at 0.5 and tuned, top-k, retrieval R@k)."""
    from ..heads import api

    metrics = api.evaluate(
        run_dir, cache_dir, split=split, device=device, items=items, retrieval_queries=retrieval_queries
    )  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps(metrics, sort_keys=True))
    else:
        print_metrics(f"{split} metrics", metrics, split=split, header=f"eval {run_dir} on the {split} split")


@params_as_flags
@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False), help="FILE.parquet")
@click.option("--split", default=None, type=click.Choice(["train", "val", "test"]), help="Default: every video.")
@click.option("--top-k", type=int, default=None, help="Keep the K best labels per video (default: all).")
@click.option(
    "--write-view",
    default=None,
    help="Store the head's video embeddings in the cache as this new view (index and mine it like any view).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--items",
    default=None,
    type=click.Choice(["videos", "shots"]),
    help="videos, or shots of the shots view (default: what the run was trained on).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def predict(
    run_dir: str,
    cache_dir: str,
    out_path: str | None,
    split: str | None,
    top_k: int | None,
    write_view: str | None,
    device: str,
    items: str | None,
    as_json: bool,
) -> None:
    """Scores per (video, label) to --out FILE.parquet (video_id, label, score, predicted); --items
    shots: one row per shot (video_id, shot_index, start_s, end_s, predicted, score_<label> per class).
    For a representation head (contrastive) --out holds video_id, embedding. --write-view NAME stores
    the embeddings in the cache as a view."""
    if out_path is None and write_view is None:  # before torch loads: a usage error is instant
        raise click.UsageError("give --out FILE.parquet, --write-view NAME, or both")
    from ..extract.views import VIEWS

    if write_view in VIEWS:  # a later `extract --views NAME` would meet a head's rows under its name
        raise click.BadParameter(
            f"{write_view!r} is an extractor's view name ({', '.join(VIEWS.names())}); choose another, e.g. clip_cvtcl",
            param_hint="--write-view",
        )
    from ..heads import api

    info: dict = {"run": run_dir, "cache": cache_dir}
    if write_view is not None:
        count = api.write_view(run_dir, cache_dir, name=write_view, split=split, device=device, command=command_line())
        info.update(view=write_view, view_videos=count)
        if not as_json:
            click.echo(f"{count} video embeddings → view {write_view!r} of {cache_dir}")
    if out_path is not None:
        frame = api.predict(run_dir, cache_dir, split=split, top_k=top_k, device=device, out=out_path, items=items)  # type: ignore[arg-type]
        if "shot_index" in frame:
            info.update(videos=int(frame["video_id"].nunique()), shots=len(frame))
            what = f"{len(frame)} shots of {info['videos']} videos"
        elif "label" in frame:
            fallback, warnings = api.threshold_fallback(run_dir)
            info.update(threshold_fallback=fallback, warnings=warnings)
            for warning in warnings:
                click.echo(f"vidcache: warning: {warning}", err=True)
            info.update(videos=int(frame["video_id"].nunique()), labels=int(frame["label"].nunique()))
            what = f"{info['videos']} videos × {info['labels']} labels"
        else:
            width = len(frame["embedding"].iloc[0]) if len(frame) else 0
            info.update(videos=len(frame), embedding_dim=width)
            what = f"{len(frame)} video embeddings of width {width}"
        info.update(out=str(out_path), rows=len(frame))
        if not as_json:
            click.echo(f"{what} → {out_path}")
    if as_json:
        click.echo(json.dumps(info, sort_keys=True, default=str))
