"""`vidcache models`: per view, which weights are in the local caches (extract loads them offline) and
which would need `--download`. Local lookups only: it never touches the network."""

from __future__ import annotations

import dataclasses
import json
import os

import click


def local_models(*, every_tag: bool = False) -> dict:
    """{"caches": {...}, "views": {view: [entry...]}, "no_weights": [...], "cached": n, "need_download": m}."""
    import torch

    from ..extract.views import VIEWS
    from ..extract.weights import hf_cache_dir

    views, no_weights = {}, []
    for name in VIEWS.names():
        entries = VIEWS.get(name)().local_weights(every_tag=every_tag)
        if entries is None:
            no_weights.append(name)
        else:
            views[name] = [dataclasses.asdict(e) for e in entries]
    every = [e for entries in views.values() for e in entries]
    return {
        "caches": {
            "huggingface": hf_cache_dir(),
            "torch_hub": os.path.join(torch.hub.get_dir(), "checkpoints"),
            "clip": os.path.expanduser("~/.cache/clip"),
        },
        "views": views,
        "no_weights": no_weights,
        "cached": sum(e["cached"] for e in every),
        "need_download": sum(not e["cached"] for e in every),
    }


def print_models(found: dict) -> None:
    from rich.table import Table

    from ..report import output_console

    console = output_console()
    table = Table(title="model weights on this machine (extract loads 'cached' ones offline)")
    for column in ("view", "model", "weights", "status", "MiB", "extract flags / source"):
        table.add_column(column)
    for view, entries in found["views"].items():
        for e in entries:
            status = "cached" if e["cached"] else "needs --download"
            where = e["flags"] if e["cached"] else f"{e['flags']}  (from {e['source']})"
            table.add_row(view, e["model"], e["weights"], status, f"{e['size_bytes'] / 2**20:.1f}", where)
    console.print(table)
    caches = found["caches"]
    console.print(f"caches: Hugging Face {caches['huggingface']}, torch hub {caches['torch_hub']}, "
                  f"CLIP {caches['clip']}; views without managed weights: {', '.join(found['no_weights'])} "
                  "(audio's vggish takes --audio-weights FILE)")  # fmt: skip


@click.command("models")
@click.option("--all", "every_tag", is_flag=True, help="Also list every known open_clip tag not in a local cache.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def models(every_tag: bool, as_json: bool) -> None:
    """Which model weights each view finds in the local caches (Hugging Face hub, ~/.cache/clip, torch
    hub) and which need `extract --download`; looks on disk only."""
    found = local_models(every_tag=every_tag)
    if as_json:
        click.echo(json.dumps(found, sort_keys=True))
    else:
        print_models(found)
