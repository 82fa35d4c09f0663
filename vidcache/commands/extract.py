"""`vidcache extract`: the options, the config they build, and the run."""

from __future__ import annotations

import json
import sys

import click

from ..config import (
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
from ..errors import EXIT_OK, EXIT_SOME_FAILED
from .common import command_line, on_interrupt


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
            help="Videos decoded in parallel; 0 = auto: 2 on CPU, every core but one on CUDA, every CPU of the "
            "cluster with --engine ray.",
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
            "--engine",
            type=click.Choice(["local", "ray"]),
            default="local",
            show_default=True,
            help="Where the work runs: local = decode threads/processes and models on this machine; ray = decode "
            "tasks and model actors on a Ray cluster (pip install 'vidcache[ray]'; the cache on a shared filesystem).",
        ),
        click.option(
            "--ray-address",
            default=None,
            help="--engine ray: the cluster to join ('auto' on a cluster node, host:6379, ray://host:10001); "
            "default: start Ray on this machine.",
        ),
        click.option(
            "--gpus-per-model",
            type=float,
            default=None,
            help="--engine ray: GPUs each model actor asks for (0.5 puts two on one GPU); default 1 when the "
            "cluster has GPUs, else 0.",
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
    engine: str = "local",
    ray_address: str | None = None,
    gpus_per_model: float | None = None,
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
            engine=engine,  # type: ignore[arg-type]
            ray_address=ray_address,
            gpus_per_model=gpus_per_model,
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

    from ..errors import ManifestError
    from ..extract.plan import nothing_to_do
    from ..manifest import manifest_warnings, read_manifest, select_shard
    from ..report import ExtractProgress, print_extract_summary

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
    command = command_line()
    vocabulary = sorted({label for entry in entries for label in entry.labels})  # whole manifest, every shard
    # the lock and the catalog before any model (or torch) loads: a locked cache or a re-run with nothing
    # to do ends in a fraction of a second
    summary = nothing_to_do(cache_dir, config, mine, vocabulary=vocabulary, command=command)
    if summary is None:
        from ..extract.runner import Extractor

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


@click.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@_extract_options
def extract(manifest: str, cache_dir: str, root: str | None, as_json: bool, **options) -> None:
    """Decode each video of MANIFEST once and cache its embeddings (resumable, idempotent).

    MANIFEST is a CSV or parquet with a `path` column and optional `video_id`, `labels` (;-separated),
    `split`, `start_s`, `end_s`.
    """
    sys.exit(run_extract(manifest, cache_dir=cache_dir, root=root, as_json=as_json, **options))
