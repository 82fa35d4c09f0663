"""`vidcache import`: features made by other tools into a cache view."""

from __future__ import annotations

import json
import sys

import click

from ..errors import EXIT_OK, EXIT_SOME_FAILED
from .common import command_line


@click.command("import")
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

    from ..cache.importer import import_features

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
        command=command_line(),
    )
    info = dataclasses.asdict(summary)
    if as_json:
        click.echo(json.dumps(info, sort_keys=True, default=str))
    else:
        click.echo(f"imported {summary.imported} video(s) into view {view!r} of {cache_dir}; {summary.failed} failed")
        for video_id, reason in sorted(summary.failures.items()):
            click.echo(f"  failed {video_id}: {reason}")
    sys.exit(EXIT_SOME_FAILED if summary.failed else EXIT_OK)
