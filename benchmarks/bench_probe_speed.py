"""Speed of the solved linear probe (`vidcache/heads/probe.py`) on pooled features already in memory:
the C sweep on a 25 000-video subset (as `heads/solved.py` does above that size), the full solve at
the chosen C, and an optional train+val refit.

    python benchmarks/bench_probe_speed.py                       # 100k x 512, 20 classes, multi-label
    python benchmarks/bench_probe_speed.py --task single --classes 50 --device cuda
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vidcache.heads.probe import Standardiser, solve_logistic, sweep_c
from vidcache.heads.solved import SWEEP_MAX_VIDEOS, SWEEP_TOLERANCE, selection_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--task", choices=["multi", "single"], default="multi")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    multi = args.task == "multi"
    rng = np.random.default_rng(0)
    n, d, k = args.videos, args.dim, args.classes
    centres = rng.normal(size=(k, d)).astype(np.float32)
    if multi:
        y = (rng.random((n, k)) < 0.1).astype(np.float32)
    else:
        y = np.eye(k, dtype=np.float32)[rng.integers(k, size=n)]
    x = torch.from_numpy((y @ centres) * 0.1 + rng.normal(size=(n, d)).astype(np.float32)).to(args.device)
    targets = torch.from_numpy(y).to(args.device)
    val = n // 10
    started = time.perf_counter()
    standardiser = Standardiser.fit(x[val:])
    x = standardiser(x)
    generator = torch.Generator().manual_seed(0)
    subset = torch.randperm(n - val, generator=generator)[:SWEEP_MAX_VIDEOS].to(args.device) + val
    score = selection_score("map_macro" if multi else "top1", multi_label=multi)
    sweep = sweep_c(x[subset], targets[subset], x[:val], targets[:val], multi_label=multi, score=score,
                    tolerance=SWEEP_TOLERANCE)  # fmt: skip
    swept = time.perf_counter()
    init = (sweep.solution.weight, sweep.solution.bias)
    full = solve_logistic(x[val:], targets[val:], multi_label=multi, c=sweep.best_c, init=init)
    solved = time.perf_counter()
    refit = solve_logistic(x, targets, multi_label=multi, c=sweep.best_c, init=(full.weight, full.bias))
    done = time.perf_counter()
    iterations = sum(p.iterations for p in sweep.points)
    print(f"{n} videos x {d}-d, {k} classes ({args.task}-label) on {args.device}: C = {sweep.best_c:.3g}")
    print(f"sweep {swept - started:.1f} s ({len(sweep.points)} C, {iterations} iterations on {len(subset)} videos)")
    print(f"full solve {solved - swept:.1f} s ({full.iterations} iterations, converged {full.converged})")
    print(f"train+val refit {done - solved:.1f} s ({refit.iterations} iterations)")


if __name__ == "__main__":
    main()
