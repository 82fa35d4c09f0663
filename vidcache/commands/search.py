"""`vidcache search`: videos (or moments) by text, videos by video."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--text", default=None, help="Find videos matching this text (through the view's CLIP text tower).")
@click.option("--video", "video_id", default=None, help="Find videos nearest this video_id.")
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
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--download", "allow_download", is_flag=True, help="Allow downloading missing weights.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def search(
    cache_dir: str,
    text: str | None,
    video_id: str | None,
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
    """Text → videos or video → videos over one view of the cache (give --text or --video)."""
    from ..errors import ConfigError
    from ..search import search_text, search_video

    if (text is None) == (video_id is None):
        raise ConfigError("give exactly one of --text TEXT or --video VIDEO_ID")
    if by == "rows" and text is None:
        raise ConfigError("--by rows ranks moments for a --text query; --video ranks videos only")
    if to_view is not None and text is not None:
        raise ConfigError("--to-view ranks a --video query's neighbours in another view; leave it out with --text")
    if text is not None:
        hits = search_text(
            cache_dir,
            text,
            view=view,
            k=k,
            pooling=pooling,
            query_form=query_form,
            templates=list(templates) or None,
            device=device,
            allow_download=allow_download,
            by=by,
        )
    else:
        hits = search_video(cache_dir, video_id, view=view, to_view=to_view, k=k, pooling=pooling)  # type: ignore[arg-type]
    query = {"text": text} if text is not None else {"video": video_id}
    if as_json:
        out = {**query, "view": view, "to_view": to_view, "k": k, "by": by, "hits": [h.as_dict() for h in hits]}
        click.echo(json.dumps(out, sort_keys=True))
        return
    for hit in hits:
        where = "" if hit.start_s is None else f"  {hit.start_s:.2f}-{hit.end_s:.2f}s"
        row = "" if hit.row is None else f"  row {hit.row}"
        other = ""
        if to_view is not None:  # the hit's cosine in the query's own view, next to the one it ranked by
            other = f"  {view} " + ("-" if hit.view_score is None else f"{hit.view_score:+.4f}")
        click.echo(f"{hit.rank:>3}  {hit.score:+.4f}  {hit.video_id}{where}{row}{other}  [{';'.join(hit.labels)}]")
