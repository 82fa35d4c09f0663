"""Tensor image preprocessing equal to open_clip's PIL eval transform, split in two halves.

`resize_crop` runs in decode workers on each sampled frame (uint8 in, uint8 out, so queues hold
small frames whatever the source resolution); `normalize` runs batched on the model's device.
torchvision's antialiased resize of uint8 tensors follows PIL's resampling, so results match
open_clip's own preprocess to within a couple of grey levels (tests/test_clip.py states the bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..config import check_choice
from ..errors import ConfigError

ResizeMode = Literal["shortest", "longest", "squash"]
Interpolation = Literal["bicubic", "bilinear", "nearest"]
_INTERPOLATION = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class ImagePreprocess:
    """The eval preprocessing of an open_clip model (`open_clip.get_model_preprocess_cfg`)."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Interpolation = "bicubic"
    resize_mode: ResizeMode = "shortest"
    fill_color: int = 0
    # timm's eval transform: resize the short side to size / crop_pct, then centre-crop `size`
    # (open_clip's: crop_pct 1, the crop is the resize)
    crop_pct: float = 1.0

    def __post_init__(self) -> None:
        check_choice("interpolation", self.interpolation, Interpolation)
        check_choice("resize_mode", self.resize_mode, ResizeMode)
        if min(self.size) < 1:
            raise ConfigError(f"preprocess size must be positive, got {self.size}")

    @classmethod
    def from_open_clip(cls, cfg: dict) -> ImagePreprocess:
        size = cfg.get("size", 224)
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls(
            size=size,
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            interpolation=cfg.get("interpolation", "bicubic"),
            resize_mode=cfg.get("resize_mode", "shortest"),
            fill_color=int(cfg.get("fill_color", 0)),
        )

    def as_dict(self) -> dict:
        return {
            "size": list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "fill_color": self.fill_color,
            **({"crop_pct": self.crop_pct} if self.crop_pct != 1.0 else {}),  # open_clip identities unchanged
        }

    def resize_crop(self, rgb: np.ndarray) -> torch.Tensor:
        """HxWx3 uint8 frame (numpy, or a tensor on any device: NVDEC's stay on the GPU) -> 3xHxW uint8
        tensor at the model's input size, on the frame's device."""
        image = (rgb if isinstance(rgb, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(rgb))).permute(2, 0, 1)
        mode = _INTERPOLATION[self.interpolation]
        target_h, target_w = self.size
        if self.resize_mode == "squash":
            return TF.resize(image, [target_h, target_w], interpolation=mode, antialias=True)
        height, width = image.shape[-2:]
        if self.resize_mode == "shortest":
            if target_h == target_w:
                short = math.floor(target_h / self.crop_pct) if self.crop_pct != 1.0 else target_h
                image = TF.resize(image, [short], interpolation=mode, antialias=True)
            else:
                ratio = min(height / target_h, width / target_w)
                image = TF.resize(
                    image, [round(height / ratio), round(width / ratio)], interpolation=mode, antialias=True
                )
            return TF.center_crop(image, [target_h, target_w])
        ratio = max(height / target_h, width / target_w)  # "longest": fit inside, then pad
        new_size = [max(1, round(height / ratio)), max(1, round(width / ratio))]
        image = TF.resize(image, new_size, interpolation=mode, antialias=True)
        pad_h, pad_w = target_h - new_size[0], target_w - new_size[1]
        if pad_h > 0 or pad_w > 0:
            left, top = max(pad_w, 0) // 2, max(pad_h, 0) // 2
            image = TF.pad(image, [left, top, max(pad_w, 0) - left, max(pad_h, 0) - top], fill=self.fill_color)
        return TF.center_crop(image, [target_h, target_w])

    def normalize(
        self, batch_uint8: torch.Tensor, *, dtype: torch.dtype = torch.float32, scratch: PixelScratch | None = None
    ) -> torch.Tensor:
        """Bx3xHxW uint8 (on any device) -> normalised float batch on the same device. With `scratch`,
        a CPU batch is written into the float32 tensor it keeps (valid until the next call)."""
        mean = torch.tensor(self.mean, device=batch_uint8.device, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch_uint8.device, dtype=torch.float32).view(1, 3, 1, 1)
        # in place: the same three float32 operations in the same order (bit-identical rows), without
        # three batch-sized temporaries, which made this half of a small model's time per batch
        into = scratch.like(batch_uint8) if scratch is not None else None
        if into is not None:
            pixels = into.copy_(batch_uint8)  # uint8 -> float32 is exact, as .float() is
        else:
            pixels = batch_uint8.float() if batch_uint8.dtype != torch.float32 else batch_uint8.clone()
        return pixels.div_(255.0).sub_(mean).div_(std).to(dtype)


class PixelScratch:
    """One float32 batch an encoder reuses for `normalize` on the CPU. A fresh 38 MB batch (64 frames
    at 224 px) is above glibc's mmap threshold, so every allocation came back as new pages the kernel
    had to zero: 21 ms of a 64-frame batch's conversion (0.3 ms per frame, cProfile, issue 29), more
    than the three arithmetic passes. Used by one thread (the model stage's) at a time."""

    def __init__(self) -> None:
        self.tensor: torch.Tensor | None = None

    def like(self, batch: torch.Tensor) -> torch.Tensor | None:
        """A float32 tensor of `batch`'s shape (kept for the next batch of that shape); None off the CPU."""
        if batch.device.type != "cpu":
            return None
        if self.tensor is None or self.tensor.shape != batch.shape:
            self.tensor = torch.empty(batch.shape, dtype=torch.float32)
        return self.tensor
