"""The training losses, in a registry so a head names its loss and a new loss is one function."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import Registry

LOSSES = Registry("loss", option="the loss")  # picked by a head in code: no CLI flag names one


@LOSSES.register("bce")
def bce(logits: torch.Tensor, targets: torch.Tensor, *, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-label: mean binary cross-entropy over videos and classes."""
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


@LOSSES.register("softmax")
def softmax_ce(logits: torch.Tensor, targets: torch.Tensor, **_: object) -> torch.Tensor:
    """Single-label: cross-entropy against the one positive class."""
    return F.cross_entropy(logits, targets.argmax(dim=1))


@LOSSES.register("prototype-infonce")
def prototype_infonce(similarity: torch.Tensor, targets: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """Seed 000/001: L(v) = (1/|L_v|) Σ_{j∈L_v} −log softmax_k(s(v,k)/τ)_j, averaged over videos with
    at least one label."""
    log_prob = F.log_softmax(similarity / temperature, dim=1)
    positives = targets.sum(dim=1)
    per_video = -(log_prob * targets).sum(dim=1) / positives.clamp(min=1)
    has = positives > 0
    return per_video[has].mean() if has.any() else similarity.sum() * 0


@LOSSES.register("prototype-margin")
def prototype_margin(similarity: torch.Tensor, targets: torch.Tensor, *, margin: float) -> torch.Tensor:
    """Seed 001's distance form with d = 1 − cos: Σ_i [ Σ_{j∈L_i} d(x_i, p_j) + Σ_{j∉L_i} max(0, m − d(x_i, p_j)) ],
    averaged over videos."""
    distance = 1 - similarity
    pull = (distance * targets).sum(dim=1)
    push = (F.relu(margin - distance) * (1 - targets)).sum(dim=1)
    return (pull + push).mean()


@LOSSES.register("bag-instance")
def bag_instance(
    bag_prob: torch.Tensor,
    instance_prob: torch.Tensor,
    mask: torch.Tensor,
    targets: torch.Tensor,
    *,
    instance_lambda: float,
) -> torch.Tensor:
    """Seed 004: per class, bag BCE ℓ plus λ·(ℓ − mean_j R_j)² with R_j = BCE(q_j, 1[q_j ≥ 0.5]) for a
    positive bag; for a negative bag the instance loss alone (every frame pushed to 0)."""
    # BCE on probabilities is refused under CUDA autocast (and loses precision near 0/1 in bf16): the
    # loss is computed in float32 with autocast off, whatever precision produced the probabilities.
    with torch.autocast(device_type=bag_prob.device.type, enabled=False):
        eps = 1e-6
        bag_prob = bag_prob.float().clamp(eps, 1 - eps)
        q = instance_prob.float().clamp(eps, 1 - eps)  # [N, T, C]
        targets = targets.float()
        frames = mask.unsqueeze(-1).float()
        count = frames.sum(dim=1).clamp(min=1)  # [N, 1]
        bag_loss = F.binary_cross_entropy(bag_prob, targets, reduction="none")  # [N, C]
        pseudo = (q >= 0.5).float().detach()
        instance = F.binary_cross_entropy(q, pseudo, reduction="none")
        mean_instance = (instance * frames).sum(dim=1) / count
        negative = (F.binary_cross_entropy(q, torch.zeros_like(q), reduction="none") * frames).sum(dim=1) / count
        positive_loss = bag_loss + instance_lambda * (bag_loss - mean_instance) ** 2
        return torch.where(targets > 0.5, positive_loss, negative).mean()
