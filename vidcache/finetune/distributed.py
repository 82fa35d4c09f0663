"""DDP when launched by `torchrun` (WORLD_SIZE > 1); a plain single process otherwise, CPU included.

Each process trains on its own share of every shuffled epoch (the same permutation everywhere,
sliced by rank), gradients are averaged by DDP, every process validates on the whole val split
(so all take the same early-stopping decision) and only rank 0 writes the run directory."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..device import resolve_device


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_float(self, value: float) -> float:
        """Rank 0's value everywhere (so every process takes rank 0's decision)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(tensor, src=0)
        return float(tensor.item())


def start(device: str) -> World:
    """Join the process group torchrun set up (NCCL on CUDA, gloo on CPU), or run alone."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(0, 1, resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        torch.cuda.set_device(local_rank)
        resolved = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), resolved)


def stop(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """DDP around the model when distributed (frozen parameters are simply not synchronised)."""
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [world.device.index] if world.device.type == "cuda" else None
    # the only buffers are the normalisation constants: nothing to broadcast before every forward
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model
