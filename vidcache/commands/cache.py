"""Commands that look after a cache: status, verify, remove, compact, embed-text."""

from __future__ import annotations

import json
import sys

import click

from ..errors import EXIT_OK, EXIT_SOME_FAILED
from .common import command_line, on_interrupt


def stream_counts(catalog, view: str) -> dict[str, int]:
    """{FFmpeg stream index: videos} of the stream each done video's rows of `view` were read from
    (`video_stream` / `audio_stream` in its info_json; "?" for rows made before it was recorded)."""
    from ..extract.views import VIEWS

    audio = view in VIEWS and VIEWS.get(view).source == "audio"
    return dict(sorted(catalog.stream_counts(view, "audio_stream" if audio else "video_stream").items()))


def decode_device_counts(catalog, view: str) -> dict[str, int]:
    """{decode device: videos} for a video view's done videos (`decode_device` in their info_json, written
    by a --decode-device cuda run; CPU before), with `cpu (fallback)` for videos NVDEC left to the CPU;
    counted by SQLite, as the stream counts."""
    from ..extract.views import VIEWS

    if view not in VIEWS or VIEWS.get(view).source != "video":
        return {}
    return catalog.decode_device_counts(view)


def source_counts(catalog, view: str) -> dict:
    """{"streams": stream_counts, "decode_devices": decode_device_counts (a video view's, when any)},
    counted in one pass of SQLite over the view's items (a 1M-video status reads them once)."""
    from ..extract.views import VIEWS

    source = VIEWS.get(view).source if view in VIEWS else None
    streams, devices = catalog.source_counts(view, "audio_stream" if source == "audio" else "video_stream")
    return {
        "streams": dict(sorted(streams.items())),
        **({"decode_devices": devices} if source == "video" and devices else {}),
    }


def cache_status(cache_dir: str) -> dict:
    from ..cache.catalog import Catalog
    from ..cache.layout import STATUS_ABSENT, STATUS_DONE, STATUS_FAILED, failed_item, failure_text
    from ..extract.views import VIEWS

    def describe(view: str, identity: dict) -> tuple[str, str, str]:
        """(model, weights, sampling) of a view's identity, in words: the view's own words when it is
        registered and made here, generic ones for imported features."""
        if view in VIEWS and "imported_from" not in identity:
            try:
                return VIEWS.get(view)().describe(identity)
            except (KeyError, TypeError):
                pass  # an identity from another version: the generic words below
        sampling = identity.get("sampling", {})
        if isinstance(sampling, dict) and sampling:
            every = f"{sampling['fps']} fps" if sampling.get("fps") else f"{sampling.get('num_frames')} frames"
        elif isinstance(sampling, (int, float)):
            every = f"{sampling} fps"
        else:
            every = ""
        return identity.get("model", ""), identity.get("pretrained", ""), every

    catalog = Catalog.open(cache_dir)
    try:
        views = {}
        for view, identity in catalog.views().items():
            counts = catalog.status_counts(view)  # aggregate SQL: a status of 1M videos stays under a second
            model, weights, every = describe(view, identity)
            views[view] = {
                "model": model,
                "pretrained": weights,
                "weights_sha256": identity.get("weights_sha256", ""),
                "dtype": identity.get("dtype", ""),
                "sampling": every,
                "done": counts.get(STATUS_DONE, (0, 0))[0],
                "absent": counts.get(STATUS_ABSENT, (0, 0))[0],
                "failed": counts.get(STATUS_FAILED, (0, 0))[0],
                "rows": counts.get(STATUS_DONE, (0, 0))[1],
                **source_counts(catalog, view),
            }
        if "shots" in views:  # how many shots each video has (its rows of the shots view)
            views["shots"]["per_video"] = {
                i.video_id: i.row_count or 0 for i in catalog.items("shots") if i.status == STATUS_DONE
            }
        failed_items = catalog.items(status=STATUS_FAILED)
        failed: dict[str, dict[str, str]] = {}
        for item in failed_items:
            failed.setdefault(item.video_id, {})[item.view] = item.reason or "failed"
        return {
            "cache": str(cache_dir),
            "views": views,
            "shards": catalog.count("shards"),
            "bytes": catalog.shard_bytes(),
            "entries": catalog.count("entries"),
            "failures": {video: failure_text(why, several_views=len(views) > 1) for video, why in failed.items()},
            "failed_items": [failed_item(i.video_id, i.view, i.reason or "failed") for i in failed_items],
            "runs": catalog.count("runs"),
        }
    finally:
        catalog.close()


@click.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(cache_dir: str, as_json: bool) -> None:
    """What a cache holds: views, models, counts, failures."""
    from ..report import print_status

    info = cache_status(cache_dir)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
    else:
        print_status(info)


@click.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option(
    "--quarantine",
    is_flag=True,
    help="Drop the damaged (video, view) pairs from the catalog (an unreadable shard moves to CACHE/quarantine/) "
    "so the next extract redoes exactly them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def verify(cache_dir: str, quarantine: bool, as_json: bool) -> None:
    """Check every (video, view) against the catalog (row ranges, CRC32). Exit 1 if any is damaged."""
    import dataclasses

    from ..cache.verify import verify_cache

    report = verify_cache(cache_dir, quarantine=quarantine)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), sort_keys=True))
    else:
        click.echo(f"{report.shards_checked} shard(s), {report.videos_checked} (video, view) rows checked")
        for name, problem in report.broken.items():
            if name in report.quarantined:
                click.echo(f"  quarantined whole (moved to quarantine/): {name}: {problem}")
        state = "quarantined" if quarantine else "damaged"
        for pair in report.damaged:
            if pair["shard"] not in report.quarantined:
                click.echo(f"  {state}: {pair['video_id']} [{pair['view']}] in {pair['shard']}: {pair['problem']}")
        for what in report.repaired:
            click.echo(f"  repaired: {what}")
        for name in report.unrecorded:
            click.echo(f"  complete but unrecorded (the next extract adopts it): {name}")
        if report.broken and not quarantine:
            click.echo("run again with --quarantine to set the damaged rows aside; the next extract redoes them")
    sys.exit(EXIT_SOME_FAILED if report.broken and not quarantine else EXIT_OK)


@click.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.argument("video_ids", nargs=-1)
@click.option(
    "--not-in",
    "manifest",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Remove every video that is not in this manifest (its complement) instead of VIDEO_IDS.",
)
@click.option(
    "--duplicates",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Remove near-duplicates: every video of this `mine duplicates` table but each group's representative.",
)
@click.option("--root", type=click.Path(file_okay=False, exists=True), default=None, help="As for extract.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def remove(
    cache_dir: str,
    video_ids: tuple[str, ...],
    manifest: str | None,
    duplicates: str | None,
    root: str | None,
    as_json: bool,
) -> None:
    """Drop VIDEO_IDS (or the videos not in --not-in MANIFEST, or the duplicates of --duplicates FILE)
    from the cache, every view; `vidcache compact` then reclaims their rows' space. A later extract of
    the same videos redoes them."""
    from ..cache.housekeeping import as_dict, remove_videos

    if sum(map(bool, (video_ids, manifest, duplicates))) != 1:
        raise click.UsageError("give VIDEO_ID..., --not-in MANIFEST or --duplicates FILE (one of the three)")
    if duplicates:
        from ..index.duplicates import read_duplicates, videos_to_drop

        summary = remove_videos(cache_dir, video_ids=videos_to_drop(read_duplicates(duplicates)))
    elif manifest:
        from ..manifest import read_manifest

        keep = [entry.video_id for entry in read_manifest(manifest, root=root, require_path=False)]
        summary = remove_videos(cache_dir, keep_only=keep)
    else:
        summary = remove_videos(cache_dir, video_ids=list(video_ids))
    if as_json:
        click.echo(json.dumps(as_dict(summary), sort_keys=True))
    else:
        click.echo(f"removed {len(summary.removed)} video(s) from {cache_dir}; {summary.kept} kept")
        for video_id in summary.not_found:
            click.echo(f"  not in the cache: {video_id}")
        if summary.removed:
            click.echo(f"run `vidcache compact --cache {cache_dir}` to reclaim their space")


@click.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option(
    "--shard-size-mb", type=click.FloatRange(min=1), default=256.0, show_default=True, help="Size of the new shards."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def compact(cache_dir: str, shard_size_mb: float, as_json: bool) -> None:
    """Rewrite the live rows of small or partly removed shards into fewer, larger ones (crash-safe:
    new shards are committed and read back before an old one is deleted)."""
    from ..cache.housekeeping import as_dict, compact_cache

    on_interrupt("the cache is consistent (old or new rows); run the same command again to finish")
    summary = compact_cache(cache_dir, shard_size_mb=shard_size_mb, command=command_line())
    if as_json:
        click.echo(json.dumps(as_dict(summary), sort_keys=True))
    else:
        click.echo(
            f"{summary.shards_before} → {summary.shards_after} shard(s), {summary.bytes_before / 2**20:.1f} → "
            f"{summary.bytes_after / 2**20:.1f} MiB; {summary.videos_moved} video(s), {summary.rows_moved} rows "
            f"moved and verified in {summary.seconds:.1f} s"
        )


@click.command("embed-text")
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option(
    "--labels-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="One label per line (default: the labels of the cached manifest).",
)
@click.option(
    "--template",
    "templates",
    multiple=True,
    help='Prompt template with {} for the label; repeatable. Default: "a video of {}." and "This is a video about {}".',
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--download", "allow_download", is_flag=True, help="Allow downloading missing weights.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def embed_text(
    cache_dir: str,
    labels_file: str | None,
    templates: tuple[str, ...],
    device: str,
    allow_download: bool,
    as_json: bool,
) -> None:
    """Embed the label vocabulary with the cache's CLIP model (or the video view's X-CLIP) into CACHE/text.h5."""
    from ..cache.catalog import Catalog
    from ..cache.text import DEFAULT_TEMPLATES, MADE_FROM_FILE, MADE_FROM_MANIFEST, read_labels_file
    from ..errors import CacheError, ConfigError

    catalog = Catalog.open(cache_dir)  # every check before torch and the model load
    identity, entries = catalog.view_identity("clip"), catalog.entries()
    if identity is None:  # no clip view: the video view's text tower (X-CLIP), if it has one
        video = catalog.view_identity("video")
        identity = video if video and video.get("backbone") == "transformers" and video.get("text_tower") else None
    catalog.close()
    if identity is None:
        raise CacheError(
            f"cache {cache_dir} has no clip view (nor a video view made by X-CLIP); run `vidcache extract` first"
        )
    if not identity.get("weights_sha256") and identity.get("pretrained") != "none":
        raise CacheError(
            f"view 'clip' of cache {cache_dir} was not made by `vidcache extract` (imported features?): "
            "embed-text needs the CLIP model that made it; pass --label-corpus and --text-embeddings to the "
            "commands that need label texts instead"
        )
    labels = read_labels_file(labels_file) if labels_file else sorted({lab for e in entries for lab in e["labels"]})
    if not labels:
        raise ConfigError("no labels: the manifest had no `labels` column; pass --labels-file FILE")
    for template in templates:
        if "{}" not in template:
            raise ConfigError(f"--template {template!r} has no {{}} where the label goes")
    from ..device import resolve_device
    from ..extract.runner import embed_labels
    from ..extract.views.clip.model import clip_for_identity

    if identity.get("backbone") == "transformers":
        from ..extract.views.video.model import video_for_identity

        encoder = video_for_identity(
            identity, device=resolve_device(device), allow_download=allow_download, cache_dir=cache_dir
        )
    else:
        encoder = clip_for_identity(
            identity, device=resolve_device(device), allow_download=allow_download, cache_dir=cache_dir
        )
    used = list(templates or DEFAULT_TEMPLATES)
    path = embed_labels(
        cache_dir, encoder, labels, used, made_from=MADE_FROM_FILE if labels_file else MADE_FROM_MANIFEST
    )
    if as_json:
        click.echo(json.dumps({"labels": len(labels), "templates": used, "path": str(path)}, sort_keys=True))
    else:
        click.echo(f"{len(labels)} labels × {len(used)} templates → {path}")
