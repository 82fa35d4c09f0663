"""The clip view's --clip-precision / --compile against fp32: the cosine of each row with the fp32 row
of the same image, through vidcache's own `ClipEncoder` (random weights of the real architecture).

    .venv/bin/python benchmarks/bench_clip_precision.py --model ViT-B-32 [--compile] [--images 4]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from vidcache.device import resolve_device
from vidcache.extract.views.clip.model import ClipEncoder
from vidcache.extract.views.clip.settings import ClipConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", action="store_true", help="also fp32 + torch.compile (minutes on a CPU)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (args.images, 3, 224, 224), dtype=np.uint8))
    variants = [("fp32", False), ("autocast", False), ("bf16-weights", False)] + ([("fp32", True)] * args.compile)
    rows = {}
    for precision, compiled in variants:
        started = time.perf_counter()
        config = ClipConfig(model=args.model, pretrained="none", precision=precision, compile=compiled)
        rows[(precision, compiled)] = ClipEncoder(config=config, device=device).encode(frames)
        print(f"{precision}{' +compile' if compiled else ''}: {time.perf_counter() - started:.1f} s", flush=True)
    ref = rows[("fp32", False)]
    for (precision, compiled), got in rows.items():
        cosine = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        name = f"{precision}{' +compile' if compiled else ''}"
        print(f"{args.model} on {device.type}: {name:<16} min cosine vs fp32 {cosine.min():.7f}")


if __name__ == "__main__":
    main()
