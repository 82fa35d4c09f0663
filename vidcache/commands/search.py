"""`vidcache search`: videos (or moments) by text, videos by video."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option(
    "--text",
    "texts",
    multiple=True,
    help="Find videos matching this text (through the view's CLIP text tower); repeatable.",
)
@click.option("--video", "video_ids", multiple=True, help="Find videos nearest this video_id; repeatable.")
@click.option(
    "--text-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="More --text queries, one per line (blank lines skipped): one process loads the model and the index "
    "once for all of them.",
)
@click.option(
    "--video-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="More --video queries, one video_id per line.",
)
@click.option("--view", default="clip", show_default=True)
@click.option(
    "--to-view",
    default=None,
    help="--video: its neighbours ranked in this view's space instead (cross-view neighbours), each hit also "
    "scored in --view.",
)
@click.option("--k", "k", type=int, default=10, show_default=True, help="How many videos (or rows with --by rows).")
@click.option(
    "--by",
    type=click.Choice(["videos", "rows"]),
    default="videos",
    show_default=True,
    help="--text ranks videos (each with the span of its best-matching rows) or single rows (moments).",
)
@click.option("--pooling", type=click.Choice(["mean", "max", "first", "middle"]), default="mean", show_default=True)
@click.option(
    "--query-form",
    type=click.Choice(["best", "ensemble", "raw"]),
    default="best",
    show_default=True,
    help="--text as typed (raw), in the prompt templates' ensemble, or the best cosine over raw, each template "
    "and the ensemble.",
)
@click.option(
    "--template",
    "templates",
    multiple=True,
    help="--text prompt template with {}; repeatable (default: those of CACHE/text.h5).",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where a --text query's text tower runs. auto and cpu: a standard CLIP tower as exported for NumPy "
    "(CACHE/text_towers/, no torch), other towers on the GPU when there is one; cuda: torch on the GPU, "
    "in the rows' autocast precision.",
)
@click.option("--download", "allow_download", is_flag=True, help="Allow downloading missing weights.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per query (one per line) instead of a table."
)
def search(
    cache_dir: str,
    texts: tuple[str, ...],
    video_ids: tuple[str, ...],
    text_file: str | None,
    video_file: str | None,
    view: str,
    to_view: str | None,
    k: int,
    by: str,
    pooling: str,
    query_form: str,
    templates: tuple[str, ...],
    device: str,
    allow_download: bool,
    as_json: bool,
) -> None:
    """Text → videos or video → videos over one view of the cache (give --text or --video, each
    repeatable, or a file of them). Several queries: one table, or one JSON object per line, each."""
    from ..errors import ConfigError
    from ..search import search_texts, search_videos

    text_queries = [*texts, *_lines(text_file, "--text-file")]
    video_queries = [*video_ids, *_lines(video_file, "--video-file")]
    if bool(text_queries) == bool(video_queries):
        raise ConfigError("give exactly one of --text TEXT (or --text-file) or --video VIDEO_ID (or --video-file)")
    if by == "rows" and not text_queries:
        raise ConfigError("--by rows ranks moments for a --text query; --video ranks videos only")
    if to_view is not None and text_queries:
        raise ConfigError("--to-view ranks a --video query's neighbours in another view; leave it out with --text")
    if text_queries:
        results = search_texts(
            cache_dir,
            text_queries,
            view=view,
            k=k,
            pooling=pooling,
            query_form=query_form,
            templates=list(templates) or None,
            device=device,
            allow_download=allow_download,
            by=by,
        )
        queries = [{"text": text} for text in text_queries]
    else:
        results = search_videos(cache_dir, video_queries, view=view, to_view=to_view, k=k, pooling=pooling)
        queries = [{"video": video_id} for video_id in video_queries]
    for query, hits in zip(queries, results, strict=True):
        if as_json:  # one object per query: JSON Lines when there are several
            out = {**query, "view": view, "to_view": to_view, "k": k, "by": by, "hits": [h.as_dict() for h in hits]}
            click.echo(json.dumps(out, sort_keys=True))
            continue
        if len(queries) > 1:
            click.echo(f"== {next(iter(query.values()))}")
        _echo_hits(hits, view, to_view)


def _lines(path: str | None, option: str) -> list[str]:
    """The non-blank lines of a query file, stripped."""
    from ..errors import ConfigError

    if path is None:
        return []
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{option} {path}: cannot be read as UTF-8 text ({exc.__class__.__name__})") from None
    found = [line for line in lines if line]
    if not found:
        raise ConfigError(f"{option} {path} has no queries (one per line)")
    return found


def _echo_hits(hits: list, view: str, to_view: str | None) -> None:
    for hit in hits:
        where = "" if hit.start_s is None else f"  {hit.start_s:.2f}-{hit.end_s:.2f}s"
        row = "" if hit.row is None else f"  row {hit.row}"
        other = ""
        if to_view is not None:  # the hit's cosine in the query's own view, next to the one it ranked by
            other = f"  {view} " + ("-" if hit.view_score is None else f"{hit.view_score:+.4f}")
        click.echo(f"{hit.rank:>3}  {hit.score:+.4f}  {hit.video_id}{where}{row}{other}  [{';'.join(hit.labels)}]")
