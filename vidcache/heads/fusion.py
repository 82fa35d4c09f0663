"""`fusion` (seeds 000/001): the multimodal transformer that makes the video embedding e_v of the
class-prototype head. Every row of every view (CLIP frames, audio examples, S3D clips, motion
descriptors: whatever --views names) becomes one token in a common width W = --hidden-dim; a learned
[CLS] token reads them all; its output is e_v, which `PrototypeHead` compares with the class
prototypes (cosine, temperature, InfoNCE/margin + classifier loss, learned or EMA prototypes).

Tokens, for row t of view v with features x ∈ R^{D_v} starting at s_t seconds:

    z = LayerNorm_v(W_v·x + b_v) + m_v + τ(u_t)          (per-view projection, modality m_v ∈ R^W)
    u_t = (s_t − s_min) / (s_max − s_min)                 (s_min, s_max over ALL the video's valid rows)
    τ(u) = A·[sin(π·2^k·u), cos(π·2^k·u)]_{k=0..5} + a    (sinusoidal features → linear)

    h = TransformerEncoder([c; z_1 … z_N], key_padding_mask = ¬[1; mask_1 … mask_N])
    e_v = LayerNorm(h_CLS)

Choices:
- Per-view projection then LayerNorm: views have different widths and scales (CLIP unit vectors,
  VGGish-like audio, S3D activations); normalising each view's tokens keeps one loud view from
  drowning the others in the shared residual stream.
- Modality embedding m_v: tells the attention which view a token came from independently of its
  content (the projection's bias alone can be cancelled by the LayerNorm).
- Time embedding from the video's own span: rows are timestamped in seconds, and views sample at
  different rates (1 fps frames, 0.96 s audio windows, S3D clips), so a shared clock is what lets a
  frame and an audio example that happen together be recognised as such. Normalising to [0, 1] per
  video puts videos of different lengths on one scale ("early" and "late" mean the same in a 10 s
  clip and a 10 min video) and keeps inputs in the range seen in training; the span is taken over
  all views together so the views stay aligned with each other. Sinusoids of a few octaves make
  position a smooth, bounded input (cos(π·u) alone is monotonic: "before/after" is one linear
  read-out); the linear layer chooses what the model uses. A video whose rows share one time
  (one row) gets u = 0.
- Without the time and modality embeddings the encoder is permutation-invariant over its tokens: it
  sees a bag of rows. With them it can use when and where a signal happens.
- Pooling by [CLS] rather than a masked mean: views have very different token counts (e.g. 64 frames
  vs 10 audio examples), a mean would weight each modality by its sampling rate and shift when a view
  is missing; [CLS] learns its own weighting by attention. It is always a valid key, so a video never
  has zero valid tokens and softmax never normalises over nothing. (With --layers 0 there is no
  attention: e_v is the masked mean of the tokens.)
- A missing view is masked, not dropped: the video keeps its other views (its mask for that view is
  all False). Masked positions are zeroed before anything reads them, so whatever the padding holds
  (garbage, even NaN) cannot change the output, nor the time span.
- Pre-norm blocks (norm_first: stable without a long warm-up), GELU, dropout = --dropout, heads =
  --attention-heads (W must be divisible by it), feed-forward 2·W rather than the usual 4·W: this is
  a head over frozen features of a few thousand videos, not a backbone; at W = 512 and 2 layers it
  has 4.2M parameters instead of 6.3M (smaller checkpoints, faster CPU steps), and the synthetic
  tasks of tests/test_heads_fusion.py are solved as well."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..fields import check, setting
from .base import masked_mean, register_head
from .prototype import PrototypeCoreOptions, PrototypeHead


@dataclass(frozen=True)
class FusionOptions(PrototypeCoreOptions):
    """The prototypes' options plus the transformer over every view's tokens (no linear branch:
    several views have no single pooled vector)."""

    layers: int = setting(2, help="Transformer blocks.")
    attention_heads: int = setting(4, help="Attention heads per block.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self, "layers", self.layers >= 0, "must be >= 0")
        check(self, "attention_heads", self.attention_heads >= 1, "must be >= 1")


TIME_OCTAVES = 6  # sin/cos of π·2^k·u, k = 0..5: from the whole video down to ~1/32 of it


def time_features(times: torch.Tensor, valid: torch.Tensor, octaves: int = TIME_OCTAVES) -> torch.Tensor:
    """[B, N] seconds and validity → [B, N, 2·octaves] sinusoids of the time normalised to the video's
    span over its valid tokens (0 at its first row, 1 at its last; 0 everywhere for invalid tokens
    and for videos whose rows share one time)."""
    times = torch.where(valid, times.float(), torch.zeros((), dtype=torch.float32, device=times.device))
    any_valid = valid.any(dim=1, keepdim=True)
    start = torch.where(valid, times, torch.full_like(times, math.inf)).amin(dim=1, keepdim=True)
    end = torch.where(valid, times, torch.full_like(times, -math.inf)).amax(dim=1, keepdim=True)
    start = torch.where(any_valid, start, torch.zeros_like(start))
    span = torch.where(any_valid, end - start, torch.zeros_like(start))
    position = torch.where(
        valid & (span > 1e-6), (times - start) / span.clamp(min=1e-6), torch.zeros_like(times)
    ).clamp(0.0, 1.0)
    frequencies = math.pi * 2.0 ** torch.arange(octaves, dtype=torch.float32, device=times.device)
    angles = position.unsqueeze(-1) * frequencies
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class FusionEncoder(nn.Module):
    """Views' rows → tokens → transformer → pooled [B, W]. Views are addressed by position (the head's
    `input_dims` order), so view names never become parameter names."""

    def __init__(self, dims: list[int], width: int, *, layers: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ConfigError(f"fusion: --hidden-dim {width} must be divisible by --attention-heads {heads}")
        self.projections = nn.ModuleList(nn.Linear(dim, width) for dim in dims)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in dims)
        self.modality = nn.Parameter(torch.randn(len(dims), width) * 0.02)
        self.time = nn.Linear(2 * TIME_OCTAVES, width)
        self.cls = nn.Parameter(torch.randn(width) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.layers = layers
        if layers:
            block = nn.TransformerEncoderLayer(
                width,
                heads,
                dim_feedforward=2 * width,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(
        self, features: list[torch.Tensor], masks: list[torch.Tensor], times: list[torch.Tensor]
    ) -> torch.Tensor:
        """Per view (in `dims` order): features [B, T_v, D_v], mask [B, T_v] bool, times [B, T_v] s."""
        tokens, valid = [], []
        for index, (x, mask) in enumerate(zip(features, masks, strict=True)):
            mask = mask.bool()
            x = torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))  # no garbage in
            z = self.norms[index](self.projections[index](x))
            tokens.append(z + self.modality[index])
            valid.append(mask)
        token = torch.cat(tokens, dim=1)  # [B, N, W]
        mask = torch.cat(valid, dim=1)  # [B, N]
        token = token + self.time(time_features(torch.cat(times, dim=1), mask).to(token.dtype))
        token = self.dropout(token)
        if not self.layers:
            return self.norm(masked_mean(token, mask))
        batch = token.shape[0]
        sequence = torch.cat([self.cls.to(token.dtype).expand(batch, 1, -1), token], dim=1)
        keep = torch.cat([torch.ones(batch, 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        out = self.transformer(sequence, src_key_padding_mask=~keep)
        return self.norm(out[:, 0])


@register_head("fusion")
class FusionHead(PrototypeHead):
    """Multimodal transformer over the tokens of every view, pooled by [CLS], classified by the class
    prototypes (see the module docstring)."""

    blends_probe = False  # its input is several views: no single pooled vector for a linear branch

    multi_view = True
    Options = FusionOptions
    sweep_axis = ("layers", (1, 2))

    def build_encoder(self, width: int) -> nn.Module:
        options = self.options
        return FusionEncoder(
            list(self.input_dims.values()),
            width,
            layers=options.layers,
            heads=options.attention_heads,
            dropout=options.dropout,
        )

    def _views(self, batch) -> list[str]:
        """The batch's view for each of the head's views, in the head's order. A head built without
        view names (one anonymous view) reads a one-view batch whatever its view is called."""
        names = list(self.input_dims)
        if len(names) == 1 and names[0] not in batch.features and len(batch.features) == 1:
            return batch.views
        missing = [name for name in names if name not in batch.features]
        if missing:
            raise KeyError(f"fusion head expects views {names}; the batch has no {missing}")
        return names

    def encode(self, batch) -> torch.Tensor:
        views = self._views(batch)
        return self.encoder(
            [batch.features[v] for v in views], [batch.masks[v] for v in views], [batch.times_s[v] for v in views]
        )

    def forward(self, features: torch.Tensor, mask: torch.Tensor, times: torch.Tensor | None = None):
        """One view's padded rows (single-view use; without times every row is at 0)."""
        if len(self.input_dims) != 1:
            raise ValueError("fusion forward(features, mask) reads one view; use forward_batch for several")
        times = torch.zeros(mask.shape, device=mask.device) if times is None else times
        return self.classify(self.encoder([features], [mask], [times]))
