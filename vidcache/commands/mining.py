"""`vidcache index build` and `vidcache mine ...`."""

from __future__ import annotations

import json

import click

from .common import command_line
from .options import params_as_flags


def _mining_options(fn):
    options = [
        click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True)),
        click.option("--k", "k", type=int, required=True, help="How many per video."),
        click.option(
            "--pooling", type=click.Choice(["mean", "max", "first", "middle"]), default="mean", show_default=True
        ),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON summary instead of a table."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _search_options(fn):
    options = [
        click.option(
            "--index-type",
            type=click.Choice(["auto", "flat", "hnsw", "ivf", "ivfsq", "ivfpq"]),
            default="auto",
            show_default=True,
            help="auto: a stored up-to-date index (vidcache index build), else Flat up to 50k videos.",
        ),
        click.option("--memory-budget-gb", type=float, default=4.0, show_default=True),
        click.option(
            "--min-recall", type=float, default=0.9, show_default=True, help="Warn below this sampled recall."
        ),
        click.option(
            "--recall-sample", type=int, default=1000, show_default=True, help="Queries to measure recall on."
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _print_mined(mined, as_json: bool) -> None:
    import dataclasses

    from ..report import print_mining_summary

    info = dataclasses.asdict(mined.summary)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True, default=str))
    else:
        print_mining_summary(info)


def _progress(cache_dir: str, view: str, title: str, as_json: bool):
    from ..cache.reader import Cache
    from ..report import TaskProgress

    with Cache(cache_dir) as cache:
        total = len(cache.video_ids(view))
    return TaskProgress(title, total, enabled=not as_json)


@click.group()
def index() -> None:
    """FAISS indexes over video-level embeddings of a view."""


@params_as_flags
@index.command("build")
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--view", default="clip", show_default=True)
@click.option("--pooling", type=click.Choice(["mean", "max", "first", "middle"]), default="mean", show_default=True)
@click.option("--index-type", type=click.Choice(["auto", "flat", "hnsw", "ivf", "ivfsq", "ivfpq"]), default="auto")
@click.option("--memory-budget-gb", type=float, default=4.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def index_build(cache_dir: str, view: str, pooling: str, index_type: str, memory_budget_gb: float, as_json: bool):
    """Pool each video's rows, L2-normalise, build and store CACHE/index/VIEW.faiss with provenance."""
    import dataclasses

    from ..index import api

    built = api.index_view(
        cache_dir, view=view, pooling=pooling, index_type=index_type, memory_budget_gb=memory_budget_gb
    )
    provenance = built.provenance
    info = {**dataclasses.asdict(provenance), "path": str(built.path), "seconds": round(built.seconds, 3)}
    info.pop("view_identity")
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
    else:
        click.echo(f"{provenance.index_type} index ({provenance.factory}) of {provenance.n_vectors} videos × "
                   f"{info['dim']} → {built.path}")  # fmt: skip
        click.echo(f"  why: {provenance.reason}")


@click.group()
def mine() -> None:
    """Mined lists for training: hard-negative labels and videos, cross-view neighbours."""


@params_as_flags
@mine.command("hard-negatives")
@_mining_options
@click.option("--view", default="clip", show_default=True)
@click.option("--label-corpus", type=click.Path(dir_okay=False, exists=True), default=None, help="One label per line.")
@click.option(
    "--text-embeddings",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help=".npy [L, D] aligned with --label-corpus (default: CACHE/text.h5).",
)
@click.option("--range-min", type=int, default=0, show_default=True, help="First rank kept (0 = hardest).")
@click.option("--range-max", type=int, default=None, help="Ranks from --range-min up to this one (exclusive).")
@click.option("--margin", type=float, default=None, help="Keep negatives scoring below s_pos - M.")
@click.option("--relative-margin", type=float, default=None, help="Keep negatives scoring below RM * s_pos.")
@click.option("--sampling", type=click.Choice(["top", "random"]), default="top", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def mine_hard_negatives(cache_dir: str, k: int, pooling: str, as_json: bool, view: str, **options) -> None:
    """Per video, the K label-corpus entries CLIP ranks highest that are not its labels."""
    from ..index import api

    with _progress(cache_dir, view, "mine hard negatives", as_json) as progress:
        mined = api.mine_hard_negatives(
            cache_dir, k=k, view=view, pooling=pooling, progress=progress, command=command_line(), **options
        )
    _print_mined(mined, as_json)


@params_as_flags
@mine.command("hard-negative-videos")
@_mining_options
@_search_options
@click.option("--view", default="clip", show_default=True)
@click.option("--exclude-same-group", is_flag=True, help="Also skip videos in the query's folder (of video_id).")
def mine_hard_negative_videos(cache_dir: str, k: int, pooling: str, as_json: bool, view: str, **options) -> None:
    """Per video, the K nearest videos that share no label with it."""
    from ..index import api

    with _progress(cache_dir, view, "mine hard-negative videos", as_json) as progress:
        mined = api.mine_hard_negative_videos(
            cache_dir, k=k, view=view, pooling=pooling, progress=progress, command=command_line(), **options
        )
    _print_mined(mined, as_json)


@params_as_flags
@mine.command("neighbours")
@_mining_options
@_search_options
@click.option("--view", required=True, help="Whose space the neighbours come from (e.g. motion, audio, clip).")
def mine_neighbours(cache_dir: str, k: int, pooling: str, as_json: bool, view: str, **options) -> None:
    """Per video, its K nearest videos in VIEW (itself excluded): positives for training on another view."""
    from ..index import api

    with _progress(cache_dir, view, f"mine neighbours ({view})", as_json) as progress:
        mined = api.mine_neighbours(
            cache_dir, k=k, view=view, pooling=pooling, progress=progress, command=command_line(), **options
        )
    _print_mined(mined, as_json)


@params_as_flags
@mine.command("duplicates")
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--view", default="clip", show_default=True)
@click.option(
    "--threshold",
    type=click.FloatRange(-1.0, 1.0),
    required=True,
    help="Cosine similarity of pooled unit vectors at or above which two videos are duplicates (e.g. 0.95).",
)
@click.option("--pooling", type=click.Choice(["mean", "max", "first", "middle"]), default="mean", show_default=True)
@click.option(
    "--max-neighbours",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Candidates looked at per video (a group larger than this + 1 may be found in parts).",
)
@click.option(
    "--index-type",
    type=click.Choice(["auto", "flat", "hnsw", "ivf", "ivfsq", "ivfpq"]),
    default="auto",
    show_default=True,
    help="auto: a stored up-to-date index (vidcache index build), else Flat up to 50k videos.",
)
@click.option("--memory-budget-gb", type=float, default=4.0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write it here (.csv, .parquet).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary instead of a table.")
def mine_duplicates(cache_dir: str, view: str, as_json: bool, **options) -> None:
    """Groups of near-duplicate videos (group_id, video_id, similarity to the group's representative,
    representative): CACHE/mined/duplicates_VIEW.parquet; `vidcache remove --duplicates FILE` keeps one per group."""
    from ..index import api

    with _progress(cache_dir, view, f"mine duplicates ({view})", as_json) as progress:
        mined = api.mine_duplicates(cache_dir, view=view, progress=progress, command=command_line(), **options)
    _print_mined(mined, as_json)
