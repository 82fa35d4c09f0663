"""The pool head's bag/instance loss (seed 004) against a NumPy re-computation, in float32 and inside
autocast: BCE on probabilities is refused under CUDA autocast (found by the GPU check, `make bench-gpu`),
so the loss runs in float32 with autocast off whatever precision made its inputs."""

from __future__ import annotations

import numpy as np
import torch

from vidcache.heads.losses import LOSSES


def numpy_bag_instance(bag, inst, mask, targets, lam):
    eps = 1e-6
    bag = np.clip(bag.astype(np.float64), eps, 1 - eps)
    q = np.clip(inst.astype(np.float64), eps, 1 - eps)

    def bce(p, y):
        return -(y * np.log(p) + (1 - y) * np.log(1 - p))

    frames = mask[:, :, None].astype(np.float64)
    count = np.maximum(frames.sum(axis=1), 1)
    bag_loss = bce(bag, targets)
    mean_instance = (bce(q, (q >= 0.5).astype(np.float64)) * frames).sum(axis=1) / count
    negative = (bce(q, np.zeros_like(q)) * frames).sum(axis=1) / count
    positive = bag_loss + lam * (bag_loss - mean_instance) ** 2
    return np.where(targets > 0.5, positive, negative).mean()


def test_bag_instance_matches_numpy_in_and_out_of_autocast():
    rng = np.random.default_rng(5)
    n, t, c = 6, 9, 4
    bag = rng.uniform(0, 1, (n, c)).astype(np.float32)
    inst = rng.uniform(0, 1, (n, t, c)).astype(np.float32)
    mask = rng.uniform(size=(n, t)) < 0.8
    mask[:, 0] = True
    targets = (rng.uniform(size=(n, c)) < 0.4).astype(np.float32)
    loss = LOSSES.get("bag-instance")
    got = loss(
        torch.from_numpy(bag),
        torch.from_numpy(inst),
        torch.from_numpy(mask),
        torch.from_numpy(targets),
        instance_lambda=0.5,
    )
    assert abs(float(got) - numpy_bag_instance(bag, inst, mask, targets, 0.5)) < 1e-5
    # bf16 probabilities (what an autocast forward hands over): the loss is float32 on those values
    bag16, inst16 = torch.from_numpy(bag).bfloat16(), torch.from_numpy(inst).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got16 = loss(bag16, inst16, torch.from_numpy(mask), torch.from_numpy(targets), instance_lambda=0.5)
    assert got16.dtype == torch.float32
    expected16 = numpy_bag_instance(bag16.float().numpy(), inst16.float().numpy(), mask, targets, 0.5)
    assert abs(float(got16) - expected16) < 1e-5
