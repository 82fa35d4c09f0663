"""`vidcache shots`: the cached shots of every video as a manifest of segments (one row per shot),
optionally with each shot's rows of a frame-level view pooled, without decoding anything."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import CacheError, ConfigError


def shots_table(cache_dir: str, *, view: str | None, pooling: str):
    """One row per shot: video_id (`<video>#shot<k>`), source_video_id, shot, path, labels, split,
    start_s, end_s (a manifest `extract` accepts), mean/max cut probability, optional embedding."""
    import pandas as pd

    from ..cache.reader import Cache
    from ..cache.shots import POOLINGS

    if pooling not in POOLINGS:
        raise ConfigError(f"--pooling {pooling!r}: must be one of {', '.join(POOLINGS)}")
    with Cache(cache_dir) as cache:
        if "shots" not in cache.views():
            raise CacheError(f"{cache_dir} has no shots view; run `vidcache extract --views shots ...` first")
        if view is not None and view not in cache.views():
            raise CacheError(f"--view {view!r} is not in {cache_dir}; views: {', '.join(cache.views())}")
        entries = cache.entries().set_index("video_id")
        done = set(cache.video_ids(view)) if view is not None else None
        records = []
        for video_id in cache.video_ids("shots"):
            if done is not None and video_id not in done:
                continue  # its frames were not embedded (failed or absent): no pooled rows to give
            shots = cache.read_shots(video_id, view, pooling=pooling)
            entry = entries.loc[video_id] if video_id in entries.index else None
            for k in range(len(shots)):
                record = {
                    "video_id": f"{video_id}#shot{k:04d}",
                    "source_video_id": video_id,
                    "shot": k,
                    "path": entry["path"] if entry is not None else "",
                    "labels": entry["labels"] if entry is not None else "",
                    "split": entry["split"] if entry is not None else None,
                    "start_s": float(shots.start_s[k]),
                    "end_s": float(shots.end_s[k]),
                    "mean_prob": float(shots.columns["mean_prob"][k]),
                    "max_prob": float(shots.columns["max_prob"][k]),
                }
                if shots.embeddings is not None:
                    record["embedding"] = shots.embeddings[k].tolist()
                records.append(record)
    return pd.DataFrame.from_records(records)


@click.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="shots.parquet or .csv")
@click.option("--view", default=None, help="Frame-level view pooled per shot (clip, timm, audio, motion).")
@click.option("--pooling", default="mean", show_default=True, type=click.Choice(["mean", "max"]))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def shots(cache_dir: str, out_path: str, view: str | None, pooling: str, as_json: bool) -> None:
    """Write the cached shots as a segments manifest (one row per shot) that extract accepts."""
    out = Path(out_path)
    if out.suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise ConfigError(f"--out {out_path}: give a .parquet or .csv file")
    table = shots_table(cache_dir, view=view, pooling=pooling)
    if out.suffix.lower() == ".csv":
        if "embedding" in table.columns:
            raise ConfigError("--out .csv cannot hold the pooled embeddings; give a .parquet file")
        table.to_csv(out, index=False)
    else:
        table.to_parquet(out, index=False)
    summary = {
        "out": str(out),
        "shots": len(table),
        "videos": int(table["source_video_id"].nunique()) if len(table) else 0,
    }
    summary["view"], summary["pooling"] = view, pooling
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        click.echo(f"{summary['shots']} shot(s) of {summary['videos']} video(s) -> {out}")
