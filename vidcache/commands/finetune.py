"""`vidcache finetune`: the flags are FinetuneConfig's fields (generated), plus where to read and write."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import click

from ..finetune.config import FinetuneConfig
from .common import command_line, on_interrupt, print_metrics, resume_command
from .options import add_options, build, field_options

OPTIONS = field_options(FinetuneConfig)


@click.command()
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue a run from its last checkpoint (exactly).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def finetune(cache_dir: str, run_dir: str, resume: bool, as_json: bool, **values) -> None:
    """Fine-tune the CLIP image tower of a cached view jointly with a head; writes the run directory
    (as `train` does) and RUN/backbone.safetensors for `extract --clip-pretrained`. Under torchrun
    (WORLD_SIZE > 1) it trains with DDP."""
    from ..errors import ConfigError

    out = Path(run_dir)
    if out.is_dir() and any(out.iterdir()) and not resume:  # before torch loads: instant
        raise ConfigError(f"run directory {run_dir} is not empty; use another --out or add --resume")
    config = build(FinetuneConfig, values, OPTIONS)
    from ..finetune.loop import finetune as run

    on_interrupt(f"finished epochs are kept in {run_dir}; resume with: {resume_command()}")

    def progress(epoch: int, row: dict) -> None:
        if not as_json:
            shown = {k: round(v, 4) for k, v in row.items() if k not in ("epoch", "lr")}
            click.echo(f"epoch {epoch} {shown}", err=True)

    summary = run(cache_dir, config, run_dir, resume=resume, command=command_line(), progress=progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    for warning in summary.warnings:  # with --json too: stdout holds the JSON, stderr says it in words
        click.echo(f"WARNING: {warning}", err=True)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(summary), sort_keys=True, default=str))
    else:
        print_metrics(
            f"fine-tuned {config.view} + {config.head}: best {summary.best_metric} {summary.best_value:.4f} at epoch "
            f"{summary.best_epoch} → {run_dir}",
            {
                **summary.val_metrics,
                "train frames/s": summary.train_frames_per_s,
                "backbone": summary.backbone or f"none exported (not improved): use {summary.base_weights}",
            },
        )


add_options(finetune, OPTIONS)
