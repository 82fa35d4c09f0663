"""Speed and memory of fine-tuning a CLIP image tower with a head (`vidcache/finetune/`): frames per
second of training steps (augmentation, forward, backward, AdamW) and the peak memory of a step,
with and without gradient checkpointing. Random-init towers (no weights needed), uint8 224-px crops
as the frames view stores them, the loop's own modules.

    python benchmarks/bench_finetune.py                         # tiny and ViT-B-32 on this machine
    python benchmarks/bench_finetune.py --models ViT-B-32 --device cuda --videos 16 --frames 16

Each (model, checkpointing) case runs in its own process, so one case's peak memory is not another's:
on CPU the peak is the process's peak RSS above its RSS before the first step (activations, gradients,
optimizer moments), on CUDA `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def one_case(model_name: str, *, checkpointing: bool, videos: int, frames: int, steps: int, device: str) -> dict:
    import torch

    from vidcache.extract.views.clip import ClipConfig
    from vidcache.extract.views.clip.model import ClipEncoder
    from vidcache.finetune.augment import augment_video
    from vidcache.finetune.config import FinetuneConfig
    from vidcache.finetune.model import VideoModel, set_trainable
    from vidcache.finetune.optim import make_optimizer, param_groups
    from vidcache.heads import HEADS, HeadOptions
    from vidcache.heads.data import Batch

    torch.manual_seed(0)
    dev = torch.device(device)
    clip_config = ClipConfig(model=model_name, pretrained="none")
    encoder = ClipEncoder(config=clip_config, device=torch.device("cpu"))
    visual = encoder.model.visual
    set_trainable(visual, None)
    visual.set_grad_checkpointing(checkpointing)
    options = HeadOptions(solver="adamw", probe_blend=False)
    head = HEADS.create("linear", input_dim=encoder.feature_dim, num_classes=10, multi_label=False, options=options,
                        input_dims={"clip": encoder.feature_dim}, context=None)  # fmt: skip
    model = VideoModel(visual, encoder.preprocess, head, view="clip").to(dev).train()
    config = FinetuneConfig(lr=1e-4)
    optimizer = make_optimizer(param_groups(visual, head, config), config)
    size = encoder.preprocess.size
    generator = torch.Generator().manual_seed(0)
    crops = torch.randint(0, 256, (videos, frames, 3, *size), dtype=torch.uint8, generator=generator)
    targets = torch.eye(10)[torch.arange(videos) % 10]
    mask = torch.ones(videos, frames, dtype=torch.bool)

    def step() -> None:
        frames_in = torch.stack([augment_video(c, scale_min=0.5, generator=generator) for c in crops])
        batch = Batch({}, {"clip": mask.to(dev)}, {"clip": torch.zeros(videos, frames, device=dev)},
                      {"clip": torch.ones(videos, dtype=torch.bool, device=dev)}, targets.to(dev),
                      torch.arange(videos), [str(i) for i in range(videos)])  # fmt: skip
        loss, _, _ = model(frames_in.to(dev), mask.to(dev), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = rss_mib()
    step()  # the first step allocates the optimizer moments: counted in the peak, not in the speed
    if dev.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else peak_rss_mib() - before
    return {
        "model": model_name,
        "grad_checkpointing": checkpointing,
        "device": device,
        "videos_per_step": videos,
        "frames_per_video": frames,
        "steps": steps,
        "frames_per_s": round(videos * frames * steps / seconds, 1),
        "seconds_per_step": round(seconds / steps, 3),
        "peak_step_mib": round(peak, 1),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vidcache-tiny,ViT-B-32")
    parser.add_argument("--videos", type=int, default=4, help="Videos per step.")
    parser.add_argument("--frames", type=int, default=8, help="Frames per video.")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps (after one untimed).")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one case, JSON out
    args = parser.parse_args()
    if args.case is not None:
        model_name, checkpointing = args.case.split(":")
        result = one_case(model_name, checkpointing=checkpointing == "1", videos=args.videos, frames=args.frames,
                          steps=args.steps, device=args.device)  # fmt: skip
        print(json.dumps(result))
        return
    print("model         ckpt  frames/step  frames/s  s/step  peak MiB (step)  params M")
    for model_name in args.models.split(","):
        for checkpointing in (False, True):
            command = [sys.executable, __file__, "--case", f"{model_name}:{int(checkpointing)}",
                       "--videos", str(args.videos), "--frames", str(args.frames), "--steps", str(args.steps),
                       "--device", args.device]  # fmt: skip
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            per_step = r["videos_per_step"] * r["frames_per_video"]
            print(
                f"{r['model']:<13} {'on' if checkpointing else 'off':<5} {per_step:>11}"
                f"  {r['frames_per_s']:>8}  {r['seconds_per_step']:>6}  {r['peak_step_mib']:>15}  {r['params_m']:>8}"
            )


if __name__ == "__main__":
    main()
