"""Heads at their defaults on task families with known answers, next to the references a user would
write (scikit-learn) and the oracle / supervised ceiling: one table, family × head.

Every instance goes through the real data path: one `.npy` per video and a manifest, imported with
`vidcache.cache.importer.import_features` (what `vidcache import` runs), then `vidcache.heads.train`
with `TrainConfig(head=H)` (the defaults of `vidcache train --head H --view clip`) and `evaluate_run`
on the test split (what `vidcache eval` runs). Contrastive: neighbours mined in the clean view with
`nearest_videos` (`vidcache mine neighbours --view motion --k 5`), then K=5 vs K=0.

    python benchmarks/bench_heads_quality.py                 # report seeds (3000, 3100, 3200)
    python benchmarks/bench_heads_quality.py --seeds tune    # the seeds defaults may be tuned on
    python benchmarks/bench_heads_quality.py --families sparse,fine --json

Columns: vidcache (test mAP for multi-label, top-1 single-label, R@1 for contrastive), sklearn
(LogisticRegression on mean-pooled standardised frames, C chosen on val; for contrastive the K=0 run),
oracle (sparse: frames scored with the true class directions; weak-view: LDA with the true labels),
seconds (training + evaluation of the head).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_tasks import Task, families, lda_ceiling, oracle_score, sklearn_probe

from vidcache.cache.importer import import_features
from vidcache.heads import HEADS, TrainConfig
from vidcache.heads.predict import evaluate_run
from vidcache.heads.train import train

SEEDS = {"report": [3000, 3100, 3200], "tune": [2000, 2100]}


def import_task(task: Task, root: Path) -> Path:
    """`vidcache import` of the task's frames (and of its extra views) into root/cache."""
    features = root / "features"
    features.mkdir(parents=True)
    rows = ["path,labels,split"]
    for video_id, (frames, labels, split) in task.videos.items():
        np.save(features / f"{video_id}.npy", frames)
        rows.append(f"{video_id}.mp4,{';'.join(labels)},{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    cache = root / "cache"
    import_features(features, manifest=root / "manifest.csv", cache_dir=cache, view="clip", dtype="float16")
    for view, frames_of in task.views.items():
        folder = root / f"features_{view}"
        folder.mkdir()
        for video_id, frames in frames_of.items():
            np.save(folder / f"{video_id}.npy", frames)
        import_features(folder, manifest=root / "manifest.csv", cache_dir=cache, view=view, dtype="float16")
    return cache


def run_head(cache: Path, run_dir: Path, config: TrainConfig, key: str) -> tuple[float, float, dict]:
    started = time.perf_counter()
    summary = train(cache, config, run_dir)
    value = evaluate_run(run_dir, cache, split="test")[key]
    return value, time.perf_counter() - started, summary.report


def run_task(task: Task, root: Path, heads: set[str] | None = None) -> list[dict]:
    cache = import_task(task, root)
    rows = []
    if task.family == "weak-view":
        if heads and "contrastive" not in heads:
            return rows
        from vidcache import Cache
        from vidcache.index.mining import nearest_videos, write_mined

        with Cache(cache) as opened:
            frame, summary = nearest_videos(opened, k=5, view="motion")
        write_mined(cache, "neighbours_motion", frame, summary, command="bench_heads_quality")
        k0, k0_s, _ = run_head(cache, root / "k0", TrainConfig(head="contrastive"), "recall_at_1")
        k5_options = HEADS.options("contrastive", cross_view_k=5, cross_view_from="motion")
        k5_config = TrainConfig(head="contrastive", options=k5_options)
        k5, k5_s, _ = run_head(cache, root / "k5", k5_config, "recall_at_1")
        ceiling = lda_ceiling(task, _vocabulary(root / "k0"))
        rows.append(_row(task, "contrastive K=5", k5, k0, ceiling, k5_s))
        rows.append(_row(task, "contrastive K=0", k0, None, ceiling, k0_s))
        return rows
    key = "map_macro" if task.multi_label else "top1"
    results = {}
    for head in [h for h in task.heads if not heads or h in heads]:
        results[head] = run_head(cache, root / head, TrainConfig(head=head), key)
    if not results:
        return rows
    vocabulary = _vocabulary(root / next(iter(results)))
    started = time.perf_counter()
    reference = sklearn_probe(task, vocabulary)
    sklearn_seconds = time.perf_counter() - started
    oracle = oracle_score(task, vocabulary)
    for head, (value, seconds, _report) in results.items():
        rows.append(_row(task, head, value, reference, oracle, seconds))
    rows.append(_row(task, "sklearn LR (C on val)", reference, reference, oracle, sklearn_seconds))
    return rows


def _vocabulary(run_dir: Path) -> list[str]:
    return json.loads((run_dir / "vocabulary.json").read_text())


def _row(task: Task, head: str, value: float, sklearn: float | None, oracle: float | None, seconds: float) -> dict:
    return {
        "family": task.family,
        "instance": task.name,
        "head": head,
        "vidcache": round(value, 4),
        "sklearn": None if sklearn is None else round(sklearn, 4),
        "oracle": None if oracle is None else round(oracle, 4),
        "seconds": round(seconds, 1),
    }


def table(rows: list[dict]) -> str:
    columns = ["family", "instance", "head", "vidcache", "sklearn", "oracle", "seconds"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join("" if row[c] is None else str(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="report", help="report, tune, or comma-separated integers")
    parser.add_argument("--families", default="", help="comma-separated subset (probe-multi, fine, sparse, ...)")
    parser.add_argument("--heads", default="", help="comma-separated subset of heads (e.g. linear)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    seeds = SEEDS.get(args.seeds) or [int(s) for s in args.seeds.split(",")]
    wanted = {f for f in args.families.split(",") if f}
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidcache-quality-") as tmp:
        for number, task in enumerate(t for t in families(seeds) if not wanted or t.family in wanted):
            task_rows = run_task(task, Path(tmp) / f"task{number}", {h for h in args.heads.split(",") if h})
            rows += task_rows
            for row in task_rows:
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
