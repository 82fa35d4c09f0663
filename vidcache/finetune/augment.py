"""Train-time augmentation of a video's frames: one random resized crop and one flip per video,
applied to all its frames alike (a per-frame crop would make the frames jitter and teach the tower
that motion is noise). Drawn from the loop's seeded generator, so a resumed run repeats them."""

from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

RATIO_RANGE = (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop default


def crop_box(
    height: int, width: int, *, scale_min: float, generator: torch.Generator, attempts: int = 10
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering U(scale_min, 1) of the area with log-uniform aspect in
    3/4..4/3 (torchvision's RandomResizedCrop rule); the full frame when no draw fits."""
    area = height * width
    log_low, log_high = math.log(RATIO_RANGE[0]), math.log(RATIO_RANGE[1])
    for _ in range(attempts):
        draw = torch.rand(4, generator=generator).tolist()
        target = area * (scale_min + (1 - scale_min) * draw[0])
        ratio = math.exp(log_low + (log_high - log_low) * draw[1])
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(draw[2] * (height - h + 1))
            left = int(draw[3] * (width - w + 1))
            return min(top, height - h), min(left, width - w), h, w
    return 0, 0, height, width


def augment_video(
    frames: torch.Tensor, *, scale_min: float, generator: torch.Generator, flip: bool = True
) -> torch.Tensor:
    """uint8 [T, 3, H, W] → the same shape: one random resized crop and (with `flip`) a coin-flip
    horizontal flip, the same for every frame."""
    height, width = frames.shape[-2:]
    top, left, h, w = crop_box(height, width, scale_min=scale_min, generator=generator)
    flip = bool(torch.rand(1, generator=generator).item() < 0.5) and flip  # drawn always: same stream either way
    out = TF.resized_crop(frames, top, left, h, w, [height, width], interpolation=InterpolationMode.BILINEAR,
                          antialias=True)  # fmt: skip
    return TF.horizontal_flip(out) if flip else out
