"""`vidcache demo`: the main job on the bundled demo corpus."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .extract import run_extract


@click.command()
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
    from ..demo import make_demo_corpus, pick_demo_model

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

    from ..cache.reader import Cache
    from ..heads import TrainConfig
    from ..heads.predict import evaluate_run
    from ..heads.train import train as train_head
    from ..index import hard_negative_labels, write_mined

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
