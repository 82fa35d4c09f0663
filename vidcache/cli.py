"""The `vidcache` command line. Exit codes: 0 done, 1 some videos failed, 2 usage/config/input
error, 3 the cache is locked by another running extract."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from . import __version__
from .config import (
    AudioConfig,
    ClipConfig,
    ExtractConfig,
    FlowConfig,
    RunConfig,
    S3dConfig,
    SamplingConfig,
    StreamConfig,
    parse_shard,
)
from .errors import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, VidcacheError


def _command_line() -> str:
    """The command as typed, recorded in every artifact it makes."""
    return shlex.join(["vidcache", *sys.argv[1:]])


def _resume_command() -> str:
    """The command that continues this `train` run: the same one, with --resume."""
    args = sys.argv[1:]
    return shlex.join(["vidcache", *args, *([] if "--resume" in args else ["--resume"])])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vidcache")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Cache frozen video embeddings (extract), then index, mine and train heads on the cache."""
    from .report import configure_logging

    configure_logging(verbose)
    ctx.obj = {"verbose": verbose}


def _extract_options(fn):
    options = [
        click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False), help="Cache directory."),
        click.option(
            "--root",
            type=click.Path(file_okay=False, exists=True),
            default=None,
            help="Folder that relative manifest paths resolve against; paths must stay inside it. "
            "Default: the manifest's folder (not enforced).",
        ),
        click.option("--views", default="clip", show_default=True, help="Comma-separated views to extract."),
        click.option(
            "--clip-model", default="ViT-B-32", show_default=True, help="open_clip architecture or hf-hub:org/repo."
        ),
        click.option(
            "--clip-pretrained",
            default="openai",
            show_default=True,
            help="open_clip tag, local weights file, or 'none' for random weights (recorded).",
        ),
        click.option("--fps", type=float, default=None, help="Sample a frame every 1/FPS s (default 1.0)."),
        click.option("--num-frames", type=int, default=None, help="Sample N frames uniformly instead of --fps."),
        click.option(
            "--s3d-weights",
            default="kinetics400",
            show_default=True,
            help="S3D weights: 'kinetics400' (torchvision's, from the torch hub cache), a local file, or 'none'.",
        ),
        click.option("--s3d-fps", type=float, default=15.0, show_default=True, help="Frame rate of S3D windows."),
        click.option("--s3d-clip-len", type=int, default=32, show_default=True, help="Frames per S3D window."),
        click.option("--s3d-stride", type=int, default=32, show_default=True, help="Frames between window starts."),
        click.option(
            "--audio-encoder",
            type=click.Choice(["logmel-stats", "vggish"]),
            default="logmel-stats",
            show_default=True,
            help="logmel-stats needs no weights; vggish needs --audio-weights.",
        ),
        click.option("--audio-weights", default=None, help="PyTorch VGGish state dict (vggish-10086976.pth)."),
        click.option(
            "--flow-method",
            type=click.Choice(["tvl1", "raft"]),
            default="tvl1",
            show_default=True,
            help="Optical flow.",
        ),
        click.option("--flow-raft-model", type=click.Choice(["small", "large"]), default="small", show_default=True),
        click.option(
            "--flow-weights",
            default="default",
            show_default=True,
            help="RAFT weights: 'default' (torchvision's, from the torch hub cache), a local file, or 'none'.",
        ),
        click.option(
            "--flow-fps", type=float, default=None, help="Flow sample rate (default: the --fps/--num-frames times)."
        ),
        click.option(
            "--flow-step", type=int, default=1, show_default=True, help="Frames between the two frames of a pair."
        ),
        click.option(
            "--flow-short-side", type=int, default=128, show_default=True, help="Flow resolution (short side, px)."
        ),
        click.option("--flow-bound", type=float, default=20.0, show_default=True, help="Quantisation bound (± px)."),
        click.option(
            "--motion-grid", type=int, default=4, show_default=True, help="Motion descriptor grid (cells per side)."
        ),
        click.option(
            "--video-stream",
            type=click.IntRange(min=0),
            default=None,
            help="FFmpeg index of the video stream to read (as ffprobe lists; default: FFmpeg's best stream).",
        ),
        click.option(
            "--audio-stream",
            type=click.IntRange(min=0),
            default=None,
            help="FFmpeg index of the audio stream to read (as ffprobe lists; default: FFmpeg's best stream).",
        ),
        click.option(
            "--dtype",
            type=click.Choice(["float16", "float32"]),
            default="float16",
            show_default=True,
            help="Storage dtype of features.",
        ),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--batch-size", type=int, default=64, show_default=True, help="Frames per model batch."),
        click.option(
            "--workers",
            type=int,
            default=0,
            show_default=True,
            help="Videos decoded in parallel; 0 = auto: 2 on CPU, every core but one on CUDA.",
        ),
        click.option(
            "--decode-in",
            type=click.Choice(["auto", "threads", "processes"]),
            default="auto",
            show_default=True,
            help="Decode workers as threads or processes (processes scale with the cores; auto: processes "
            "when the models run on CUDA, threads on CPU).",
        ),
        click.option(
            "--shard",
            "shard_spec",
            default="0/1",
            show_default=True,
            help="Process the deterministic part K of N (0 <= K < N), e.g. $SLURM_ARRAY_TASK_ID/8.",
        ),
        click.option(
            "--seek",
            type=click.Choice(["auto", "never", "always"]),
            default="auto",
            show_default=True,
            help="Keyframe seeking across long gaps between samples.",
        ),
        click.option(
            "--shard-size-mb", type=float, default=256.0, show_default=True, help="Rotate shard files at this size."
        ),
        click.option(
            "--commit-every-s",
            type=float,
            default=60.0,
            show_default=True,
            help="Commit finished videos at least this often (work lost to a crash is bounded by it).",
        ),
        click.option(
            "--video-timeout-s",
            type=float,
            default=None,
            help="Per-video decode time limit (default: 600 s, or 2 s per second of a longer video); past it "
            "the video fails, and a decoder stuck inside FFmpeg is abandoned after a grace (10%, 5-60 s) "
            "while a fresh worker goes on.",
        ),
        click.option("--retry-failed", is_flag=True, help="Retry videos that failed before even if unchanged."),
        click.option("--download", "allow_download", is_flag=True, help="Allow downloading missing weights."),
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


def build_config(
    *,
    views: str = "clip",
    clip_model: str = "ViT-B-32",
    clip_pretrained: str = "openai",
    fps: float | None = None,
    num_frames: int | None = None,
    dtype: str = "float16",
    s3d_weights: str = "kinetics400",
    s3d_fps: float = 15.0,
    s3d_clip_len: int = 32,
    s3d_stride: int = 32,
    audio_encoder: str = "logmel-stats",
    audio_weights: str | None = None,
    flow_method: str = "tvl1",
    flow_raft_model: str = "small",
    flow_weights: str = "default",
    flow_fps: float | None = None,
    flow_step: int = 1,
    flow_short_side: int = 128,
    flow_bound: float = 20.0,
    motion_grid: int = 4,
    video_stream: int | None = None,
    audio_stream: int | None = None,
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    decode_in: str = "auto",
    shard_spec: str = "0/1",
    seek: str = "auto",
    shard_size_mb: float = 256.0,
    commit_every_s: float = 60.0,
    video_timeout_s: float | None = None,
    retry_failed: bool = False,
    allow_download: bool = False,
) -> ExtractConfig:
    if fps is None and num_frames is None:
        fps = 1.0
    shard_index, shard_count = parse_shard(shard_spec)
    return ExtractConfig(
        views=tuple(v.strip() for v in views.split(",") if v.strip()),
        sampling=SamplingConfig(fps=fps, num_frames=num_frames),
        clip=ClipConfig(model=clip_model, pretrained=clip_pretrained, dtype=dtype),  # type: ignore[arg-type]
        s3d=S3dConfig(weights=s3d_weights, fps=s3d_fps, clip_len=s3d_clip_len, stride=s3d_stride),
        audio=AudioConfig(encoder=audio_encoder, weights=audio_weights),  # type: ignore[arg-type]
        flow=FlowConfig(
            method=flow_method,  # type: ignore[arg-type]
            raft_model=flow_raft_model,  # type: ignore[arg-type]
            weights=flow_weights,
            fps=flow_fps,
            step=flow_step,
            short_side=flow_short_side,
            bound_px=flow_bound,
            motion_grid=motion_grid,
        ),
        streams=StreamConfig(video=video_stream, audio=audio_stream),
        run=RunConfig(
            device=device,  # type: ignore[arg-type]
            batch_size=batch_size,
            workers=workers,
            decode_in=decode_in,  # type: ignore[arg-type]
            shard_index=shard_index,
            shard_count=shard_count,
            seek=seek,  # type: ignore[arg-type]
            shard_size_mb=shard_size_mb,
            commit_every_s=commit_every_s,
            video_timeout_s=video_timeout_s,
            retry_failed=retry_failed,
            allow_download=allow_download,
        ),
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
    import logging

    from .errors import ManifestError
    from .extract.plan import nothing_to_do
    from .manifest import manifest_warnings, read_manifest, select_shard
    from .report import ExtractProgress, print_extract_summary

    on_interrupt("finished videos are kept; run the same command again to resume")
    config = build_config(**options)
    entries = read_manifest(manifest, root=root)  # validated before anything is written
    splits = tuple(s.strip() for s in declared_splits.split(",") if s.strip())
    if not splits:
        raise click.BadParameter("give at least one split name, e.g. train,val,test", param_hint="--splits")
    warnings = manifest_warnings(manifest, entries, splits=splits)
    if warnings and strict:
        raise ManifestError(manifest, [w.split(": ", 1)[1] + " (--strict)" for w in warnings])
    for warning in warnings:
        logging.getLogger("vidcache").warning("%s", warning)
    mine = select_shard(entries, config.run.shard_index, config.run.shard_count)
    command = _command_line()
    vocabulary = sorted({label for entry in entries for label in entry.labels})  # whole manifest, every shard
    # the lock and the catalog before any model (or torch) loads: a locked cache or a re-run with nothing
    # to do ends in a fraction of a second
    summary = nothing_to_do(cache_dir, config, mine, vocabulary=vocabulary, command=command)
    if summary is None:
        from .extract.runner import Extractor

        with ExtractProgress(enabled=not as_json) as progress:
            summary = Extractor(cache_dir, config, command=command, progress=progress).run(mine, vocabulary=vocabulary)
    summary.warnings = warnings
    if as_json:
        click.echo(json.dumps(summary.as_dict(), sort_keys=True))
    else:
        if summary.random_weights:
            click.echo("NOTE: random model weights (weights 'none'): those features are not semantic.", err=True)
        print_extract_summary(summary)
    return EXIT_SOME_FAILED if summary.failed else EXIT_OK


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@_extract_options
def extract(manifest: str, cache_dir: str, root: str | None, as_json: bool, **options) -> None:
    """Decode each video of MANIFEST once and cache its embeddings (resumable, idempotent).

    MANIFEST is a CSV or parquet with a `path` column and optional `video_id`, `labels` (;-separated),
    `split`, `start_s`, `end_s`.
    """
    sys.exit(run_extract(manifest, cache_dir=cache_dir, root=root, as_json=as_json, **options))


def stream_counts(view: str, items: list) -> dict[str, int]:
    """{FFmpeg stream index: videos} of the stream each done video's rows of `view` were read from
    (`video_stream` / `audio_stream` in its info_json; "?" for rows made before it was recorded)."""
    key = "audio_stream" if view == "audio" else "video_stream"
    counts: dict[str, int] = {}
    for item in items:
        if item.status != "done":
            continue
        info = json.loads(item.info_json or "{}")
        if "imported_from" in info or "feature_file" in info:
            continue  # imported rows: no stream was read
        index = str(info.get(key, "?"))
        counts[index] = counts.get(index, 0) + 1
    return dict(sorted(counts.items()))


def cache_status(cache_dir: str) -> dict:
    from .cache.catalog import Catalog
    from .cache.layout import STATUS_ABSENT, STATUS_DONE, STATUS_FAILED, failed_item, failure_text

    def describe(view: str, identity: dict) -> tuple[str, str, str]:
        """(model, weights, sampling) of a view's identity, in words."""
        sampling = identity.get("sampling", {})
        if isinstance(sampling, dict) and sampling:
            every = f"{sampling['fps']} fps" if sampling.get("fps") else f"{sampling.get('num_frames')} frames"
        elif isinstance(sampling, (int, float)):
            every = f"{sampling} fps"
        else:
            every = ""
        if view == "s3d":
            every = f"{identity['clip_len']} frames at {identity['fps']} fps, stride {identity['stride']}"
            return "s3d", identity.get("weights", ""), every
        if view == "audio":
            return identity.get("encoder", ""), identity.get("weights_path", "") or "-", "0.96 s examples"
        if view in ("flow", "motion"):
            flow = identity.get("flow", {})
            return f"{flow.get('method', '')} @{identity.get('short_side')}px", flow.get("weights", "") or "-", every
        return identity.get("model", ""), identity.get("pretrained", ""), every

    catalog = Catalog.open(cache_dir)
    try:
        views = {}
        for view, identity in catalog.views().items():
            items = catalog.items(view)
            model, weights, every = describe(view, identity)
            views[view] = {
                "model": model,
                "pretrained": weights,
                "weights_sha256": identity.get("weights_sha256", ""),
                "dtype": identity.get("dtype", ""),
                "sampling": every,
                "done": sum(i.status == STATUS_DONE for i in items),
                "absent": sum(i.status == STATUS_ABSENT for i in items),
                "failed": sum(i.status == STATUS_FAILED for i in items),
                "rows": sum(i.row_count or 0 for i in items if i.status == STATUS_DONE),
                "streams": stream_counts(view, items),
            }
        shards = catalog.shards()
        failed_items = catalog.items(status=STATUS_FAILED)
        failed: dict[str, dict[str, str]] = {}
        for item in failed_items:
            failed.setdefault(item.video_id, {})[item.view] = item.reason or "failed"
        return {
            "cache": str(cache_dir),
            "views": views,
            "shards": len(shards),
            "bytes": sum(s["bytes"] for s in shards),
            "entries": len(catalog.entries()),
            "failures": {video: failure_text(why, several_views=len(views) > 1) for video, why in failed.items()},
            "failed_items": [failed_item(i.video_id, i.view, i.reason or "failed") for i in failed_items],
            "runs": len(catalog.runs()),
        }
    finally:
        catalog.close()


@cli.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(cache_dir: str, as_json: bool) -> None:
    """What a cache holds: views, models, counts, failures."""
    from .report import print_status

    info = cache_status(cache_dir)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
    else:
        print_status(info)


@cli.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--quarantine", is_flag=True, help="Move broken shards to CACHE/quarantine/ so extract redoes them.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def verify(cache_dir: str, quarantine: bool, as_json: bool) -> None:
    """Check every shard against the catalog (rows, checksums). Exit 1 if any shard is broken."""
    import dataclasses

    from .cache.verify import verify_cache

    report = verify_cache(cache_dir, quarantine=quarantine)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(report), sort_keys=True))
    else:
        click.echo(f"{report.shards_checked} shard(s), {report.videos_checked} video rows checked")
        for name, problem in report.broken.items():
            state = "quarantined" if name in report.quarantined else "broken"
            click.echo(f"  {state}: {name}: {problem}")
        for name in report.unrecorded:
            click.echo(f"  complete but unrecorded (the next extract adopts it): {name}")
        if report.broken and not quarantine:
            click.echo("run again with --quarantine to set broken shards aside; the next extract redoes their videos")
    sys.exit(EXIT_SOME_FAILED if report.broken and not quarantine else EXIT_OK)


@cli.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.argument("video_ids", nargs=-1)
@click.option(
    "--not-in",
    "manifest",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Remove every video that is not in this manifest (its complement) instead of VIDEO_IDS.",
)
@click.option("--root", type=click.Path(file_okay=False, exists=True), default=None, help="As for extract.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def remove(cache_dir: str, video_ids: tuple[str, ...], manifest: str | None, root: str | None, as_json: bool) -> None:
    """Drop VIDEO_IDS (or the videos not in --not-in MANIFEST) from the cache, every view; `vidcache
    compact` then reclaims their rows' space. A later extract of the same videos redoes them."""
    from .cache.housekeeping import as_dict, remove_videos

    if bool(video_ids) == bool(manifest):
        raise click.UsageError("give VIDEO_ID... or --not-in MANIFEST (one of the two)")
    if manifest:
        from .manifest import read_manifest

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


@cli.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option(
    "--shard-size-mb", type=click.FloatRange(min=1), default=256.0, show_default=True, help="Size of the new shards."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def compact(cache_dir: str, shard_size_mb: float, as_json: bool) -> None:
    """Rewrite the live rows of small or partly removed shards into fewer, larger ones (crash-safe:
    new shards are committed and read back before an old one is deleted)."""
    from .cache.housekeeping import as_dict, compact_cache

    on_interrupt("the cache is consistent (old or new rows); run the same command again to finish")
    summary = compact_cache(cache_dir, shard_size_mb=shard_size_mb, command=_command_line())
    if as_json:
        click.echo(json.dumps(as_dict(summary), sort_keys=True))
    else:
        click.echo(
            f"{summary.shards_before} → {summary.shards_after} shard(s), {summary.bytes_before / 2**20:.1f} → "
            f"{summary.bytes_after / 2**20:.1f} MiB; {summary.videos_moved} video(s), {summary.rows_moved} rows "
            f"moved and verified in {summary.seconds:.1f} s"
        )


@cli.command("embed-text")
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
    """Embed the label vocabulary with the cache's CLIP model into CACHE/text.h5."""
    from .cache.catalog import Catalog
    from .errors import CacheError, ConfigError
    from .extract.text import DEFAULT_TEMPLATES, MADE_FROM_FILE, MADE_FROM_MANIFEST, read_labels_file

    catalog = Catalog.open(cache_dir)  # every check before torch and the model load
    identity, entries = catalog.view_identity("clip"), catalog.entries()
    catalog.close()
    if identity is None:
        raise CacheError(f"cache {cache_dir} has no clip view; run `vidcache extract` first")
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
    from .extract.device import resolve_device
    from .extract.runner import embed_labels
    from .extract.text import clip_for_identity

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


@cli.command()
@click.option(
    "--out",
    "out_dir",
    default="demo_out",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the generated corpus and its cache go.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def demo(out_dir: str, device: str, as_json: bool) -> None:
    """Generate a small labelled corpus (colour, motion, tone), extract it, print the summary."""
    from .demo import make_demo_corpus, pick_demo_model

    manifest = make_demo_corpus(out_dir)
    model, pretrained, is_random = pick_demo_model()
    if is_random:
        click.secho(
            "=" * 100 + "\nDEMO WITH RANDOM WEIGHTS: ViT-B-32/openai is not in the local cache, so the tiny "
            "'vidcache-tiny' model\nwith random weights is used. The pipeline is real; the features "
            "are not semantic.\nCache ViT-B-32 weights (hf download "
            "timm/vit_base_patch32_clip_224.openai) for real ones.\n" + "=" * 100,
            fg="yellow",
            err=True,
        )
    cache_dir = str(Path(out_dir) / ("cache-" + model.lower()))
    options = dict(views="clip,audio", clip_model=model, clip_pretrained=pretrained, fps=4.0, device=device)
    code = run_extract(str(manifest), cache_dir=cache_dir, root=None, as_json=as_json, **options)
    if not as_json:
        _demo_downstream(Path(out_dir), cache_dir, device=device)
        click.echo(
            f'cache: {cache_dir}   read it with: python -c "from vidcache import Cache; '
            f"c = Cache('{cache_dir}'); print(c.read(c.video_ids()[0], 'clip')[0].shape)\""
        )
    sys.exit(code)


def _demo_downstream(out_dir: Path, cache_dir: str, *, device: str) -> None:
    """The rest of the pipeline on the demo cache: mine hard negatives, train and evaluate a head."""
    import shutil

    from .cache.reader import Cache
    from .heads import TrainConfig
    from .heads.predict import evaluate_run
    from .heads.train import train as train_head
    from .index import hard_negative_labels, write_mined

    with Cache(cache_dir) as cache:
        frame, summary = hard_negative_labels(cache, k=2)
    path = write_mined(cache_dir, "hard_negatives", frame, summary, command="vidcache demo")
    example = frame[frame.video_id == frame.video_id.iloc[0]]
    click.echo(
        f"mined 2 hard-negative labels per video → {path}; e.g. {example.video_id.iloc[0]}: {list(example.label)}"
    )
    run_dir = out_dir / "runs" / "linear"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = TrainConfig(head="linear", epochs=20, val_fraction=0.25, device=device)
    trained = train_head(cache_dir, config, run_dir, command="vidcache demo")
    metrics = evaluate_run(run_dir, cache_dir, split="test", device=device)
    shown = {k: round(v, 3) for k, v in metrics.items() if k in ("map_macro", "gap_at_20", "f1_macro_tuned")}
    click.echo(
        f"trained a linear head in {trained.seconds:.1f} s → {run_dir} (loss.png, per_class_ap.png); test: {shown}"
    )


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
            type=click.Choice(["auto", "flat", "hnsw", "ivf", "ivfpq"]),
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


def _finish_mining(cache_dir: str, name: str, frame, summary, as_json: bool) -> None:
    import dataclasses

    from .index import write_mined
    from .report import print_mining_summary

    write_mined(cache_dir, name, frame, summary, command=_command_line())
    info = dataclasses.asdict(summary)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True, default=str))
    else:
        print_mining_summary(info)


@cli.group()
def index() -> None:
    """FAISS indexes over video-level embeddings of a view."""


@index.command("build")
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--view", default="clip", show_default=True)
@click.option("--pooling", type=click.Choice(["mean", "max", "first", "middle"]), default="mean", show_default=True)
@click.option("--index-type", type=click.Choice(["auto", "flat", "hnsw", "ivf", "ivfpq"]), default="auto")
@click.option("--memory-budget-gb", type=float, default=4.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def index_build(cache_dir: str, view: str, pooling: str, index_type: str, memory_budget_gb: float, as_json: bool):
    """Pool each video's rows, L2-normalise, build and store CACHE/index/VIEW.faiss with provenance."""
    import dataclasses
    import time

    from .cache.reader import Cache
    from .index import build_index, choose_index, save_index, video_vectors
    from .index.build import IndexProvenance, cache_fingerprint, gpu_available

    started = time.perf_counter()
    with Cache(cache_dir) as cache:
        fingerprint = cache_fingerprint(cache, view)  # before reading: a later change makes it stale, not wrong
        vectors = video_vectors(cache, view, pooling=pooling)
        choice = choose_index(
            len(vectors), vectors.vectors.shape[1], memory_budget_bytes=memory_budget_gb * 2**30, requested=index_type
        )
        built = build_index(vectors.vectors, choice)
        provenance = IndexProvenance(
            view=view,
            pooling=pooling,
            index_type=choice.kind,
            factory=choice.factory,
            reason=choice.reason,
            n_vectors=len(vectors),
            dim=int(vectors.vectors.shape[1]),
            fingerprint=fingerprint,
            view_identity=cache.view_info(view),
            parameters={"memory_budget_gb": memory_budget_gb, "gpu": gpu_available()},
        )
        path = save_index(cache_dir, built, vectors, provenance)
    info = {**dataclasses.asdict(provenance), "path": str(path), "seconds": round(time.perf_counter() - started, 3)}
    info.pop("view_identity")
    if as_json:
        click.echo(json.dumps(info, sort_keys=True))
    else:
        click.echo(f"{choice.kind} index ({choice.factory}) of {len(vectors)} videos × {info['dim']} → {path}")
        click.echo(f"  why: {choice.reason}")


@cli.group()
def mine() -> None:
    """Mined lists for training: hard-negative labels and videos, cross-view neighbours."""


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
    from .cache.reader import Cache
    from .index import hard_negative_labels
    from .report import TaskProgress

    with Cache(cache_dir) as cache:
        with TaskProgress("mine hard negatives", len(cache.video_ids(view)), enabled=not as_json) as progress:
            frame, summary = hard_negative_labels(cache, k=k, view=view, pooling=pooling, progress=progress, **options)
    _finish_mining(cache_dir, "hard_negatives", frame, summary, as_json)


@mine.command("hard-negative-videos")
@_mining_options
@_search_options
@click.option("--view", default="clip", show_default=True)
@click.option("--exclude-same-group", is_flag=True, help="Also skip videos in the query's folder (of video_id).")
def mine_hard_negative_videos(cache_dir: str, k: int, pooling: str, as_json: bool, view: str, **options) -> None:
    """Per video, the K nearest videos that share no label with it."""
    from .cache.reader import Cache
    from .index import nearest_videos
    from .report import TaskProgress

    with Cache(cache_dir) as cache:
        with TaskProgress("mine hard-negative videos", len(cache.video_ids(view)), enabled=not as_json) as progress:
            frame, summary = nearest_videos(
                cache, k=k, view=view, pooling=pooling, exclude_shared_labels=True, progress=progress, **options
            )
    frame = frame.rename(columns={"neighbour_id": "negative_id"})
    _finish_mining(cache_dir, "hard_negative_videos", frame, summary, as_json)


@mine.command("neighbours")
@_mining_options
@_search_options
@click.option("--view", required=True, help="Whose space the neighbours come from (e.g. motion, audio, clip).")
def mine_neighbours(cache_dir: str, k: int, pooling: str, as_json: bool, view: str, **options) -> None:
    """Per video, its K nearest videos in VIEW (itself excluded): positives for training on another view."""
    from .cache.reader import Cache
    from .index import nearest_videos
    from .report import TaskProgress

    with Cache(cache_dir) as cache:
        with TaskProgress(f"mine neighbours ({view})", len(cache.video_ids(view)), enabled=not as_json) as progress:
            frame, summary = nearest_videos(cache, k=k, view=view, pooling=pooling, progress=progress, **options)
    _finish_mining(cache_dir, f"neighbours_{view}", frame, summary, as_json)


@cli.command("import")
@click.argument("feature_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--manifest", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False))
@click.option("--view", required=True, help="Name of the view the features become (e.g. clip, i3d).")
@click.option(
    "--feature",
    default=None,
    help="video_features layout: the <feature> in <stem>_<feature>.npy, or two joined by '+' (i3d: rgb+flow).",
)
@click.option(
    "--layout",
    type=click.Choice(["plain", "video_features"]),
    default=None,
    help="How files are named (default: the layout that explains more manifest videos; a tie is refused).",
)
@click.option(
    "--i3d-stack-frames",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="video_features i3d --stack_size: its timestamps are stack ends, a row starts this many frames earlier.",
)
@click.option("--root", type=click.Path(file_okay=False, exists=True), default=None)
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def import_cmd(feature_dir, manifest, cache_dir, view, feature, layout, i3d_stack_frames, root, dtype, as_json) -> None:
    """Bring per-video features made elsewhere (FEATURE_DIR/<video_id>.npy, or video_features'
    <stem>_<feature>.npy + <stem>_timestamps_ms.npy) into a cache: same catalog, same read API.
    The manifest needs a path or a video_id per row; no video is opened."""
    import dataclasses

    from .cache.importer import import_features

    summary = import_features(
        feature_dir,
        manifest=manifest,
        cache_dir=cache_dir,
        view=view,
        feature=feature,
        layout=layout,
        i3d_stack_frames=i3d_stack_frames,
        root=root,
        dtype=dtype,
        command=_command_line(),
    )
    info = dataclasses.asdict(summary)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True, default=str))
    else:
        click.echo(f"imported {summary.imported} video(s) into view {view!r} of {cache_dir}; {summary.failed} failed")
        for video_id, reason in sorted(summary.failures.items()):
            click.echo(f"  failed {video_id}: {reason}")
    sys.exit(EXIT_SOME_FAILED if summary.failed else EXIT_OK)


def _head_options(fn):
    options = [
        click.option(
            "--hidden-dim", type=int, default=None, help="Default: 512 (pool: 0, a linear instance classifier)."
        ),
        click.option("--dropout", type=float, default=0.1, show_default=True),
        click.option("--frame-pooling", type=click.Choice(["mean", "max"]), default="mean", show_default=True),
        click.option(
            "--solver",
            type=click.Choice(["lbfgs", "adamw"]),
            default="lbfgs",
            show_default=True,
            help="linear: logistic regression solved with L-BFGS, C chosen on val (--lr/--epochs unused), or AdamW.",
        ),
        click.option("--probe-c", type=float, default=None, help="linear/lbfgs: fixed C instead of the val sweep."),
        click.option(
            "--probe-refit",
            type=click.Choice(["train", "train+val"]),
            default="train",
            show_default=True,
            help="linear/lbfgs: the final fit at the chosen C on train (as chosen on val) or train+val (CLIP).",
        ),
        click.option(
            "--probe-blend/--no-probe-blend",
            default=True,
            show_default=True,
            help="prototype/mlp: blend with a solved linear probe, its weight chosen on val (0: the head alone).",
        ),
        click.option("--prototype-update", type=click.Choice(["learned", "ema"]), default="learned", show_default=True),
        click.option("--ema-momentum", type=float, default=0.99, show_default=True),
        click.option("--temperature", type=float, default=0.1, show_default=True),
        click.option("--contrastive", type=click.Choice(["infonce", "margin"]), default="infonce", show_default=True),
        click.option("--margin", type=float, default=0.5, show_default=True),
        click.option("--lambda-con", type=float, default=1.0, show_default=True),
        click.option("--lambda-cls", type=float, default=1.0, show_default=True),
        click.option(
            "--pool-mode",
            type=click.Choice(["learnable", "mean", "max", "attention"]),
            default="learnable",
            show_default=True,
        ),
        click.option("--instance-lambda", type=float, default=0.5, show_default=True),
        click.option("--layers", type=int, default=2, show_default=True, help="temporal/fusion: transformer blocks."),
        click.option("--attention-heads", type=int, default=4, show_default=True),
        click.option(
            "--text-discriminator/--no-text-discriminator",
            default=False,
            show_default=True,
            help="temporal: self-attention over [positive text, its hard negatives].",
        ),
        click.option("--projection-dim", type=int, default=128, show_default=True, help="contrastive: output width."),
        click.option(
            "--crop-fraction", type=float, default=0.5, show_default=True, help="contrastive: shortest crop share."
        ),
        click.option(
            "--ltcl/--no-ltcl", default=True, show_default=True, help="contrastive: local temporal contrastive loss."
        ),
        click.option("--ltcl-weight", type=float, default=1.0, show_default=True),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _check_mined_is_current(cache_dir: str, name: str) -> None:
    """Refuse hard negatives mined before the manifest's labels changed (a negative may now be one of
    the video's own labels), naming the command that mined them: it refreshes them."""
    from .errors import ConfigError
    from .index.mining import MINED_DIR, labels_digest

    meta_path = Path(cache_dir) / MINED_DIR / f"{name}.json"
    if not meta_path.exists():
        return  # missing lists are reported by the head's context, with the command that mines them
    meta = json.loads(meta_path.read_text())
    recorded = meta.get("labels_sha256")
    if recorded and recorded != labels_digest(cache_dir):
        again = meta.get("command") or f"vidcache mine hard-negatives --cache {cache_dir} --k K"
        raise ConfigError(
            f"{meta_path.with_suffix('.parquet')} was mined before the manifest's labels changed; refresh it "
            f"with `{again}` and train again"
        )


MIN_VAL_VIDEOS = 5  # below this, train warns that its model selection on val is noise


def _print_metrics(title: str, metrics: dict) -> None:
    from rich.table import Table

    from .report import output_console

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
        elif isinstance(value, (int, str, bool)):
            table.add_row(key, str(value))
    output_console().print(table)


@cli.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option(
    "--head", default="linear", show_default=True, help="linear, mlp, prototype, pool, temporal, fusion or contrastive."
)
@click.option("--view", default="clip", show_default=True)
@click.option("--views", default=None, help="Several views for the fusion head, e.g. clip,audio,motion.")
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option(
    "--epochs",
    type=int,
    default=None,
    help="Default: auto, 30 or more so a small training set still gets 600 optimizer steps (at most 500).",
)
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option(
    "--lr", type=float, default=None, help="Default: chosen on val from 1e-3, 3e-3, 1e-2, 3e-2 by short runs."
)
@click.option(
    "--weight-decay",
    type=float,
    default=None,
    help="Default: chosen on val from 1e-4, 1e-2 with the lr; 1e-4 when --lr is given.",
)
@click.option("--warmup-epochs", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--deterministic", is_flag=True, help="torch deterministic algorithms (slower on GPU).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--task", type=click.Choice(["auto", "multi-label", "single-label"]), default="auto", show_default=True)
@click.option("--early-stop-metric", default="auto", show_default=True, help="auto: map_macro / top1.")
@click.option(
    "--patience", type=int, default=None, help="Epochs without improvement before stopping (default: epochs/3, >= 10)."
)
@click.option("--grad-clip", type=float, default=1.0, show_default=True)
@click.option("--pos-weight", is_flag=True, help="Weight positives by (negatives/positives) per class.")
@click.option("--max-frames", type=int, default=64, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True, help="Used when there is no val split.")
@click.option("--memory-budget-gb", type=float, default=4.0, show_default=True)
@click.option("--amp/--no-amp", default=True, show_default=True, help="bfloat16 autocast on CUDA.")
@click.option("--hard-negatives", type=int, default=0, show_default=True, help="temporal: K mined negatives (0 = off).")
@click.option(
    "--hard-negatives-from",
    type=click.Choice(["top", "bottom", "random"]),
    default="top",
    show_default=True,
    help="Which K of each video's mined ranking: hardest, easiest or random.",
)
@click.option("--hard-negatives-file", default="hard_negatives", show_default=True, help="Name in CACHE/mined/.")
@click.option("--cross-view-k", type=int, default=0, show_default=True, help="contrastive: K neighbours (0 = off).")
@click.option("--cross-view-from", default="", help="contrastive: the view whose mined neighbours are positives.")
@click.option("--label-corpus", type=click.Path(dir_okay=False, exists=True), default=None, help="temporal: labels.")
@click.option(
    "--text-embeddings",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="temporal: .npy [L, D] aligned with --label-corpus (default: CACHE/text.h5).",
)
@click.option("--resume", is_flag=True, help="Continue a run from its last checkpoint.")
@_head_options
@click.option("--json", "as_json", is_flag=True)
def train(cache_dir: str, run_dir: str, resume: bool, as_json: bool, **options) -> None:
    """Train a head on a cached view; writes checkpoints, history, plots and a summary to --out."""
    import dataclasses

    from .errors import ConfigError

    out = Path(run_dir)
    if out.is_dir() and any(out.iterdir()) and not resume:  # as heads.train says, before torch loads
        raise ConfigError(f"run directory {run_dir} is not empty; use another --out or add --resume")
    if options["hard_negatives"]:
        _check_mined_is_current(cache_dir, options["hard_negatives_file"])
    from .heads import HeadOptions, TrainConfig
    from .heads.train import train as train_head

    on_interrupt(f"finished epochs are kept in {run_dir}; resume with: {_resume_command()}")
    head_keys = {f.name for f in dataclasses.fields(HeadOptions)}
    head_options = HeadOptions(**{k: v for k, v in options.items() if k in head_keys})
    views = options.pop("views")
    options["views"] = tuple(v.strip() for v in views.split(",") if v.strip()) if views else ()
    for key in ("label_corpus", "text_embeddings"):  # recorded as given, resolved: runs move with their files
        options[key] = str(Path(options[key]).resolve()) if options[key] is not None else ""
    config = TrainConfig(**{k: v for k, v in options.items() if k not in head_keys}, options=head_options)

    def progress(epoch: int, row: dict) -> None:
        if not as_json:
            shown = {k: round(v, 4) for k, v in row.items() if k not in ("epoch", "lr")}
            click.echo(f"epoch {epoch} {shown}", err=True)

    summary = train_head(
        cache_dir,
        config,
        run_dir,
        resume=resume,
        command=_command_line(),
        progress=progress,
    )
    info = dataclasses.asdict(summary)
    # the train summary's own warnings (val too small to choose on, …), then the CLI's check of val's size
    info["warnings"] = []
    if summary.val_videos < MIN_VAL_VIDEOS:  # the best epoch and the thresholds are picked on val
        info["warnings"].append(
            f"val holds only {summary.val_videos} video(s): the best epoch ({summary.best_epoch}) and the "
            "thresholds were chosen on too few to mean much; add split=val rows or raise --val-fraction"
        )
    info["warnings"] += list(summary.warnings)
    for warning in info["warnings"]:
        click.echo(f"vidcache: warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True, default=str))
    else:
        _print_metrics(
            f"{config.head} on {','.join(config.all_views)}: best {summary.best_metric} {summary.best_value:.4f} "
            f"at epoch {summary.best_epoch} → {run_dir}",
            {**summary.val_metrics, **summary.val_metrics_tuned, "samples/s": summary.samples_per_s},
        )


@cli.command("eval")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(run_dir: str, cache_dir: str, split: str, device: str, as_json: bool) -> None:
    """Metrics of a trained head on a split (mAP, GAP@20, F1 at 0.5 and tuned, top-k, retrieval R@k)."""
    from .heads.predict import evaluate_run

    metrics = evaluate_run(run_dir, cache_dir, split=split, device=device)
    if as_json:
        click.echo(json.dumps(metrics, sort_keys=True))
    else:
        _print_metrics(f"eval {run_dir} on {split}", metrics)


@cli.command()
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
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def predict(
    run_dir: str,
    cache_dir: str,
    out_path: str | None,
    split: str | None,
    top_k: int | None,
    write_view: str | None,
    device: str,
    as_json: bool,
) -> None:
    """Scores per (video, label) to --out FILE.parquet (video_id, label, score, predicted); for a
    representation head (contrastive) --out holds video_id, embedding. --write-view NAME stores the
    embeddings in the cache as a view."""
    if out_path is None and write_view is None:  # before torch loads: a usage error is instant
        raise click.UsageError("give --out FILE.parquet, --write-view NAME, or both")
    import numpy as np
    import pandas as pd

    from .heads.predict import predict_embeddings, predict_run, write_embeddings

    info: dict = {"run": run_dir, "cache": cache_dir}
    if write_view is not None:
        count = write_embeddings(
            run_dir,
            cache_dir,
            view_name=write_view,
            split=split,
            device=device,
            command=_command_line(),
        )
        info.update(view=write_view, view_videos=count)
        if not as_json:
            click.echo(f"{count} video embeddings → view {write_view!r} of {cache_dir}")
    if out_path is not None:
        kind = json.loads((Path(run_dir) / "config.json").read_text()).get("head_kind", "classify")
        if kind == "classify":
            frame = predict_run(run_dir, cache_dir, split=split, top_k=top_k, device=device)
            info.update(videos=int(frame["video_id"].nunique()), labels=int(frame["label"].nunique()))
            what = f"{info['videos']} videos × {info['labels']} labels"
        else:
            video_ids, embeddings, _ = predict_embeddings(run_dir, cache_dir, split=split, device=device)
            frame = pd.DataFrame({"video_id": video_ids, "embedding": list(embeddings.astype(np.float32))})
            info.update(videos=len(video_ids), embedding_dim=int(embeddings.shape[1]))
            what = f"{len(video_ids)} video embeddings of width {embeddings.shape[1]}"
        out = Path(out_path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        frame.to_parquet(tmp, index=False)
        tmp.replace(out)
        info.update(out=str(out), rows=len(frame))
        if not as_json:
            click.echo(f"{what} → {out}")
    if as_json:
        click.echo(json.dumps(info, sort_keys=True, default=str))


EXIT_INTERNAL = 70  # an unexpected error: a bug (traceback on stderr); 1 stays "some videos failed"
DEFAULT_INTERRUPT_HINT = "nothing half-written was kept; run the same command again"
_interrupt_hint = DEFAULT_INTERRUPT_HINT


def on_interrupt(hint: str) -> None:
    """What the message after SIGINT/SIGTERM tells the user to do, set by the running command."""
    global _interrupt_hint
    _interrupt_hint = hint


def _wants_json(args: list[str]) -> bool:
    return "--json" in args[: args.index("--")] if "--" in args else "--json" in args


def _finish_error(message: str, code: int, *, as_json: bool) -> None:
    """Every failure ends here: one line on stderr and, with --json, one JSON object on stdout
    (`{"error": message, "exit_code": code}`, the same for every command)."""
    click.echo(f"vidcache: error: {message}", err=True)
    if as_json:
        click.echo(json.dumps({"error": message, "exit_code": code}, sort_keys=True))
    sys.exit(code)


@cli.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--text", default=None, help="Find videos matching this text (through the view's CLIP text tower).")
@click.option("--video", "video_id", default=None, help="Find videos nearest this video_id.")
@click.option("--view", default="clip", show_default=True)
@click.option("--k", "k", type=int, default=10, show_default=True, help="How many videos.")
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
    k: int,
    pooling: str,
    query_form: str,
    templates: tuple[str, ...],
    device: str,
    allow_download: bool,
    as_json: bool,
) -> None:
    """Text → videos or video → videos over one view of the cache (give --text or --video)."""
    from .errors import ConfigError
    from .search import search_text, search_video

    if (text is None) == (video_id is None):
        raise ConfigError("give exactly one of --text TEXT or --video VIDEO_ID")
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
        )
    else:
        hits = search_video(cache_dir, video_id, view=view, k=k, pooling=pooling)  # type: ignore[arg-type]
    query = {"text": text} if text is not None else {"video": video_id}
    if as_json:
        click.echo(json.dumps({**query, "view": view, "k": k, "hits": [h.as_dict() for h in hits]}, sort_keys=True))
        return
    for hit in hits:
        click.echo(f"{hit.rank:>3}  {hit.score:+.4f}  {hit.video_id}  [{';'.join(hit.labels)}]")


@cli.command()
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

    from .htmlreport import write_report

    summary = write_report(cache_dir, out=out_path, runs=list(runs), **options)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(summary), sort_keys=True))
    else:
        click.echo(
            f"{summary.out}: {summary.bytes / 2**20:.1f} MiB, {summary.videos} videos, "
            f"{summary.failures_shown}/{summary.failures_total} failures shown, {summary.mined_sample} mined videos, "
            f"{summary.runs} run(s)"
        )


def main(argv: list[str] | None = None) -> None:
    from . import signals

    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(args)
    signals.install()  # SIGTERM (Slurm, timeout, systemd, Kubernetes) stops a command exactly as Ctrl-C
    try:
        cli.main(args=args, prog_name="vidcache", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _finish_error(f"interrupted by {signals.name()}; {_interrupt_hint}", signals.exit_code(), as_json=as_json)
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

_ = EXIT_USAGE
