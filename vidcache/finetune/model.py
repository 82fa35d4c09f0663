"""The fine-tuned model: the CLIP image tower that made the cached view, run on live frames, feeding
a registered head exactly the per-frame features it would read from the cache.

Per video the tower encodes each frame (normalised as extract normalises) into the view's feature
([T, D], unnormalised, as `clip` rows are), and the head sees a `heads.data.Batch` just like one
read from the cache; so any single-view head trains here unchanged."""

from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import ConfigError
from ..extract.preprocess import ImagePreprocess

_BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.")
_TOP = ("ln_post", "proj", "attn_pool", "head")  # after the last block: pooling, final norm, projection


def block_count(visual: nn.Module) -> int:
    """Transformer blocks of an open_clip VisionTransformer; 0 for other towers."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    return len(blocks) if blocks is not None else 0


def depth_of(name: str, blocks: int) -> int:
    """0 for the embeddings (patch conv, class and positional embeddings, ln_pre), k + 1 for block k,
    blocks + 1 for what follows the last block."""
    match = _BLOCK.match(name)
    if match:
        return int(match.group(1)) + 1
    if name.startswith(_TOP):
        return blocks + 1
    return 0


def set_trainable(visual: nn.Module, unfrozen_blocks: int | None) -> list[str]:
    """Freeze the tower except the last `unfrozen_blocks` blocks (with the final norm and projection);
    None: all of it trains, 0: none. Returns the names of the trainable parameters."""
    blocks = block_count(visual)
    if unfrozen_blocks is not None and unfrozen_blocks > 0:
        if blocks == 0:
            raise ConfigError(
                f"--unfreeze last:{unfrozen_blocks}: this tower ({type(visual).__name__}) has no transformer blocks "
                "to count; use --unfreeze all or none"
            )
        if unfrozen_blocks > blocks:
            raise ConfigError(
                f"--unfreeze last:{unfrozen_blocks}: the tower has {blocks} blocks; choose last:1 .. last:{blocks}, "
                "all or none"
            )
    trainable = []
    for name, param in visual.named_parameters():
        if unfrozen_blocks is None:
            train = True
        elif unfrozen_blocks == 0:
            train = False
        else:
            train = depth_of(name, blocks) > blocks - unfrozen_blocks
        param.requires_grad_(train)
        if train:
            trainable.append(name)
    return trainable


class VideoModel(nn.Module):
    """Tower + head. `forward` takes the frames of a batch of videos ([B, T, 3, H, W] uint8 and a
    [B, T] mask) and a `Batch` without features; it returns (loss, logits, embedding)."""

    def __init__(self, visual: nn.Module, preprocess: ImagePreprocess, head: nn.Module, *, view: str):
        super().__init__()
        self.visual, self.head, self.view = visual, head, view
        # not saved with the model: they come from the view identity, which the run records
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1), persistent=False)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] → [N, D] float32, as `ClipEncoder.encode` computes the cached rows."""
        normalised = (pixels.float() / 255.0 - self.mean) / self.std
        frozen = not any(p.requires_grad for p in self.visual.parameters())
        with torch.no_grad() if frozen else torch.enable_grad():  # a frozen tower keeps no activations
            return self.visual(normalised).float()

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, batch, *, with_loss: bool = True, pos_weight=None):
        count, steps = mask.shape
        valid = mask.reshape(-1)
        features = self.encode(frames.reshape(count * steps, *frames.shape[2:])[valid])
        grid = features.new_zeros(count * steps, features.shape[1])
        grid[valid] = features
        batch.features = {self.view: grid.view(count, steps, -1)}
        output = self.head.forward_batch(batch)
        loss = self.head.loss(output, batch, pos_weight=pos_weight)[0] if with_loss else output.logits.sum() * 0
        return loss, output.logits, output.embedding


def encoder_for_identity(identity: dict, *, cache_dir: object = ""):
    """The CLIP encoder (open_clip model, weights record, preprocessing) that made a view, rebuilt on
    the CPU from the view's identity (extract's `clip_for_identity`: same architecture and weights
    file or random-init seed; other weights are refused)."""
    from ..extract.views.clip.model import clip_for_identity

    return clip_for_identity(identity, device=torch.device("cpu"), cache_dir=cache_dir)
