"""Device choice and mixed precision, in one place for every model stage."""

from __future__ import annotations

import os

import torch

from .errors import ConfigError


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu or auto")
    return torch.device(requested)


def default_decode_workers(device: torch.device) -> int:
    """Decode workers when --workers is not given: on CUDA decoding is the bottleneck, so every core
    but one (the main process batches, launches kernels and writes); on CPU the models want the cores,
    so 2."""
    if device.type == "cuda":
        return max(1, (os.cpu_count() or 1) - 1)
    return 2


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; CPU runs in fp32 (no autocast)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Pinned, non-blocking host-to-GPU copy; a no-op on CPU."""
    if device.type == "cuda":
        if batch.is_cuda:  # decoded on the GPU (NVDEC): already there
            return batch.to(device, non_blocking=True)
        pinned = batch if batch.is_pinned() else batch.pin_memory()
        return pinned.to(device, non_blocking=True)
    return batch


def gather(parts: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """One model batch from the chunks' tensors: on CUDA concatenated straight into page-locked memory
    (one copy instead of cat + pin_memory; `to_device` then sends it as it is), else `torch.cat`."""
    if device.type != "cuda" or not parts:
        return torch.cat(parts)
    first = parts[0]
    if first.is_cuda:  # frames decoded and prepared on the GPU (NVDEC): they stay there
        return torch.cat(parts)
    shape = (sum(len(p) for p in parts), *first.shape[1:])
    out = torch.empty(shape, dtype=first.dtype, pin_memory=True)
    return torch.cat(parts, out=out)
