"""LP-FT (Kumar et al., ICLR 2022, "Fine-Tuning can Distort Pretrained Features"): before the tower
moves, the head is fitted on the tower's frozen features of the training frames (full-batch L-BFGS,
as the linear probe is solved), so fine-tuning starts from the probe's solution instead of a random
head whose large early gradients distort the features. Epoch 0 of the run is this probe, so the
epoch chosen on val is never worse on val than the frozen probe on the same frames."""

from __future__ import annotations

import torch

from .frames import FrameSource
from .model import VideoModel


@torch.no_grad()
def frozen_features(
    model: VideoModel, source: FrameSource, video_ids: list[str], *, batch_size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame features [N, T, D] (zero-padded) and mask [N, T] of the videos, unaugmented."""
    model.eval()
    feats, masks = [], []
    for start in range(0, len(video_ids), batch_size):
        clips = [source.get(v)[0] for v in video_ids[start : start + batch_size]]
        for clip in clips:
            feats.append(model.encode(clip.to(device)).cpu())
            masks.append(torch.ones(len(clip), dtype=torch.bool))
    steps = max(len(f) for f in feats)
    grid = torch.zeros(len(feats), steps, feats[0].shape[1])
    mask = torch.zeros(len(feats), steps, dtype=torch.bool)
    for number, (f, m) in enumerate(zip(feats, masks, strict=True)):
        grid[number, : len(f)], mask[number, : len(m)] = f, m
    return grid, mask


def fit_head(model: VideoModel, features: torch.Tensor, batch, *, l2: float = 1e-3, max_iter: int = 100) -> float:
    """Fit `model.head` on fixed features (a `Batch` of the training videos with `features`
    filled): L-BFGS on the head's loss plus `l2`·‖W‖² over its weight matrices. Returns the loss."""
    head = model.head
    head.eval()  # no dropout: the closure must be deterministic for the line search
    params = [p for p in head.parameters() if p.requires_grad]
    if not params:
        return float("nan")
    batch.features = {model.view: features}
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = head.loss(head.forward_batch(batch), batch)[0]
        loss = loss + l2 * sum((p**2).sum() for p in params if p.ndim >= 2)
        loss.backward()
        return loss

    with torch.enable_grad():
        return float(optimizer.step(closure).detach())
