"""`vidcache train`, `eval` and `predict`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import command_line, on_interrupt, print_metrics, resume_command


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
    from ..errors import ConfigError
    from ..index.mining import MINED_DIR, labels_digest

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


@click.command()
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

    from ..errors import ConfigError

    out = Path(run_dir)
    if out.is_dir() and any(out.iterdir()) and not resume:  # as heads.train says, before torch loads
        raise ConfigError(f"run directory {run_dir} is not empty; use another --out or add --resume")
    if options["hard_negatives"]:
        _check_mined_is_current(cache_dir, options["hard_negatives_file"])
    from ..heads import HeadOptions, TrainConfig
    from ..heads.train import train as train_head

    on_interrupt(f"finished epochs are kept in {run_dir}; resume with: {resume_command()}")
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
        command=command_line(),
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
        print_metrics(
            f"{config.head} on {','.join(config.all_views)}: best {summary.best_metric} {summary.best_value:.4f} "
            f"at epoch {summary.best_epoch} → {run_dir}",
            {**summary.val_metrics, **summary.val_metrics_tuned, "samples/s": summary.samples_per_s},
        )


@click.command("eval")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--cache", "cache_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(run_dir: str, cache_dir: str, split: str, device: str, as_json: bool) -> None:
    """Metrics of a trained head on a split (mAP, GAP@20, F1 at 0.5 and tuned, top-k, retrieval R@k)."""
    from ..heads.predict import evaluate_run

    metrics = evaluate_run(run_dir, cache_dir, split=split, device=device)
    if as_json:
        click.echo(json.dumps(metrics, sort_keys=True))
    else:
        print_metrics(f"eval {run_dir} on {split}", metrics)


@click.command()
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

    from ..heads.predict import predict_embeddings, predict_run, write_embeddings

    info: dict = {"run": run_dir, "cache": cache_dir}
    if write_view is not None:
        count = write_embeddings(
            run_dir,
            cache_dir,
            view_name=write_view,
            split=split,
            device=device,
            command=command_line(),
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
