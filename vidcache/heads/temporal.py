"""`temporal` (seed 002, MGDM): text-guided temporal attention over frame features, trained with an
augmented hard-negative text set and a symmetric KL objective; an optional positive/negative semantic
discriminator refines each video's text set against itself.

Video representer, for frames f ∈ R^{T×D} (masked; the class texts w are unit rows of the text bank):

    f      ← P·f                      only when D differs from the text width (attention needs one space)
    x^0    = f + γ·‖f̄‖·π_t            π_t: unit-norm sinusoid of the frame index t (any T);
                                      ‖f̄‖: the video's mean valid-frame norm (detached), γ learned
    x^M    = block_M(… block_1(x^0))  pre-LN transformer encoder blocks, key-padding mask, M = --layers
    f^M    = x^M − γ·‖f̄‖·π_t          the position signal the blocks were given is taken back out
    f^dM   = f + f^M                  residual over the original frames (paper eq. 14)
    a_t(w) = softmax_{valid t}(β · f^dM_t · w)            (eq. 15)
    V_w    = Σ_t a_t(w) · f^dM_t                          (eq. 16)
    s(x,w) = ρ · cos(V_w, w),  ρ = exp(ρ') ≤ 100, ρ initialised to 1/--temperature

Discriminator (--text-discriminator): one pre-LN transformer encoder block (self-attention + MLP, with
its residuals) over a video's text set [w_pos, w_neg1 … w_negk], output renormalised to unit length.
At inference each class text passes through it alone (k = 0), as in the paper.

Training: video i's text set is one positive (a random one of its labels when multi-label) plus its K
mined hard negatives (`context.negatives`, already chosen top/bottom/random by the loop). The sets of
the batch are concatenated into J texts (duplicates kept, as in the paper's b·(1+k) columns);
S[i, j] = s(x_i, w_j) and Q[i, j] = 1 when text j names one of video i's classes (text-bank rows < C
are the vocabulary; a text also counts inside another video's set), else 0. With Q̂ the row- (resp.
column-) normalised Q and P = softmax(S) over texts (resp. over videos):

    L = ½ · [ mean_{rows i with a positive} KL(Q̂_i ‖ P_i) + mean_{columns j with a positive} KL(Q̂^j ‖ P^j) ]

With K = 0 the texts are the batch's positives: in-batch negatives (ActionCLIP). In training the
output's logits are S [B, J] (extras: Q and the texts' bank rows), not class scores. Evaluation: logits
[B, C] = s(x, w_c) for every vocabulary class (softmax scores single-label). Multi-label adds a Platt
calibration g·s + b_c (a gain and per-class biases) fitted by BCE on detached similarities, so
sigmoid scores are usable without changing what the KL objective learns.

Choices and deviations from the paper:
- The blocks' output projections (attention and MLP) and the discriminator's start at zero, so the
  head starts as text-guided attention pooling of the raw CLIP frames (f^dM = 2f) and keeps the
  frozen image/text alignment until training moves it; random residual branches would bury the CLIP
  features (norm ~1-10) under noise of norm ~√D.
- Position: fixed sinusoids of the frame index (frames are sampled uniformly), scaled to the video's
  own frame norm since stored CLIP features are not normalised; removed again after the blocks so the
  position signal, whose low frequencies barely change over t, does not add a constant direction to
  every V_w (ActionCLIP's learned position embedding does leak into the output).
- β, the attention sharpness, is learned (log-parametrised, starts at 1 = the paper's plain dot
  product, clamped to [0.01, 100]): with unit text rows and frame norms of ~1–10 the plain dot product
  gives nearly uniform attention, and the right sharpness depends on the extractor's feature scale.
- Rows without a positive (an unlabelled multi-label video) and columns without one (a negative text
  no video of the batch has) take no part in the respective KL term instead of dividing by zero.
- KL(Q̂ ‖ P) (target first, as ActionCLIP's KLDivLoss computes it) averaged per row / column.
- Video embedding (retrieval, `predict --write-view`): the masked mean of f^dM, i.e. V with uniform
  attention, unit-normalised: the text-free summary of what the blocks computed.
- The text bank (vocabulary + label-corpus extras) is a buffer, so the checkpoint carries it.
- Without any label texts (features imported without a text encoder, no `embed-text`), the head
  learns one query per class in the frames' space instead of the text bank (a warning says so);
  hard negatives need texts and are refused.
- Memory: attention logits are [B, J, T] and V_w [B, J, W], built for chunks of texts (never [B, J, T, W]).
- A padded-empty video (one valid zero frame) has f = 0 and no position signal; cos uses a clamped norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..fields import check, check_choice, setting
from .base import Head, HeadOutput, register_head
from .context import LabelTexts, MinedNegatives
from .losses import LOSSES

NegativesFrom = Literal["top", "bottom", "random"]


def _resolved(path: str) -> str:
    """Recorded resolved, so a run still finds its files from another working directory."""
    return str(Path(path).resolve()) if path else ""


@dataclass(frozen=True)
class TemporalOptions:
    layers: int = setting(2, help="Transformer blocks.")
    attention_heads: int = setting(4, help="Attention heads per block.")
    dropout: float = setting(0.1, help="Dropout probability.")
    temperature: float = setting(0.1, help="τ of the similarities.")
    text_discriminator: bool = setting(False, help="Self-attention over [positive text, its hard negatives].")
    hard_negatives: int = setting(0, help="K mined hard-negative labels per video (0 = in-batch only).")
    hard_negatives_from: NegativesFrom = setting(
        "top", help="Which K of each video's mined ranking: hardest, easiest or random."
    )
    hard_negatives_file: str = setting("hard_negatives", help="The mined list's name in CACHE/mined/.")
    label_corpus: str = setting("", help="Label texts, one per line (default: CACHE/text.h5).")
    text_embeddings: str = setting("", help=".npy [L, D] aligned with --label-corpus.")

    def __post_init__(self) -> None:
        check(self, "layers", self.layers >= 0, "must be >= 0")
        check(self, "attention_heads", self.attention_heads >= 1, "must be >= 1")
        check(self, "dropout", 0 <= self.dropout < 1, "must be in [0, 1)")
        check(self, "temperature", self.temperature > 0, "must be > 0")
        check(self, "hard_negatives", self.hard_negatives >= 0, "must be >= 0")
        check_choice(self, "hard_negatives_from", self.hard_negatives_from, NegativesFrom)
        check(
            self,
            "text_embeddings",
            not (self.text_embeddings and not self.label_corpus),
            "needs label_corpus FILE (one label per line, in the .npy's order)",
        )
        object.__setattr__(self, "label_corpus", _resolved(self.label_corpus))
        object.__setattr__(self, "text_embeddings", _resolved(self.text_embeddings))


MAX_LOGIT_SCALE = 100.0  # as CLIP
ATTENTION_SCALE_RANGE = (0.01, 100.0)
CHUNK_ELEMENTS = 2**25  # (video, text, frame) entries of the attention held at once


@LOSSES.register("symmetric-kl")
def symmetric_kl(similarity: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Seed 002: ½·[KL video→text + KL text→video] between the row- / column-normalised 0/1 targets
    Q [B, J] and the softmax of the (already temperature-scaled) similarities S [B, J]. Rows and
    columns without a positive are left out; each direction averages KL(Q̂ ‖ P) over its rows."""

    def one_direction(logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        total = q.sum(dim=1)
        has = total > 0
        if not has.any():
            return logits.sum() * 0
        q = q[has] / total[has].unsqueeze(1)
        log_p = F.log_softmax(logits[has], dim=1)
        return (torch.xlogy(q, q) - q * log_p).sum(dim=1).mean()

    similarity, targets = similarity.float(), targets.float()
    return 0.5 * (one_direction(similarity, targets) + one_direction(similarity.T, targets.T))


def sinusoid(length: int, dim: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """[length, dim] sinusoidal position codes (Vaswani et al.), each row scaled to unit norm."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = position * frequency
    codes = torch.zeros(length, dim, device=device)
    codes[:, 0::2] = torch.sin(angles)
    codes[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return F.normalize(codes, dim=1).to(dtype)


def _block(dim: int, heads: int, dropout: float) -> nn.TransformerEncoderLayer:
    """A pre-LN transformer encoder block whose residual branches start at zero (identity at init)."""
    block = nn.TransformerEncoderLayer(
        dim, heads, dim_feedforward=4 * dim, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
    )
    for linear in (block.self_attn.out_proj, block.linear2):
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)
    return block


@register_head("temporal")
class TemporalHead(Head):
    Options = TemporalOptions
    sweep_axis = ("layers", (1, 2))

    @classmethod
    def inputs(cls, options: TemporalOptions) -> tuple:
        texts = LabelTexts(options.label_corpus, options.text_embeddings, required=options.hard_negatives > 0)
        if not options.hard_negatives:
            return (texts,)
        return (texts, MinedNegatives(options.hard_negatives, options.hard_negatives_from, options.hard_negatives_file))

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        context, options = self.context, self.options
        self.learned_queries = None
        if context is None or context.text_embeddings is None:
            # no label texts (features imported without a text encoder): one learned query per class,
            # in the frames' own space; everything else (blocks, attention, KL over in-batch
            # positives) is unchanged, hard negatives need texts and are refused upstream
            queries = F.normalize(torch.randn(self.num_classes, self.input_dim), dim=1)
            self.learned_queries = nn.Parameter(queries)
            bank = queries.detach()
        else:
            bank = context.text_embeddings.detach().float()
            if bank.ndim != 2 or len(bank) < self.num_classes:
                raise ConfigError(f"the text bank has shape {tuple(bank.shape)}; expected [>= {self.num_classes}, D]")
        self.text_dim = int(bank.shape[1])
        if self.text_dim % options.attention_heads:
            raise ConfigError(f"--attention-heads {options.attention_heads} must divide the text width {self.text_dim}")
        self.register_buffer("fixed_text_bank", bank.clone())  # [L, D] unit rows: vocabulary first, then extras
        width = self.text_dim
        self.project = nn.Linear(self.input_dim, width) if self.input_dim != width else None
        self.position_gain = nn.Parameter(torch.tensor(1.0))
        self.blocks = nn.ModuleList(
            _block(width, options.attention_heads, options.dropout) for _ in range(options.layers)
        )
        self.discriminator = (
            _block(width, options.attention_heads, options.dropout) if options.text_discriminator else None
        )
        self.log_attention_scale = nn.Parameter(torch.tensor(0.0))
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / options.temperature)))
        if self.multi_label:
            self.calibration_gain = nn.Parameter(torch.tensor(1.0))
            self.class_bias = nn.Parameter(torch.zeros(self.num_classes))

    @property
    def text_bank(self) -> torch.Tensor:
        """[L, W] unit rows: the label texts (a buffer the checkpoint carries), or the learned queries."""
        if self.learned_queries is not None:
            return F.normalize(self.learned_queries, dim=1)
        return self.fixed_text_bank

    # scales ------------------------------------------------------------------------------------------
    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    @property
    def attention_scale(self) -> torch.Tensor:
        low, high = ATTENTION_SCALE_RANGE
        return self.log_attention_scale.clamp(math.log(low), math.log(high)).exp()

    # video side --------------------------------------------------------------------------------------
    def represent(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """f^dM [B, T, W] from frames [B, T, D] and their mask [B, T] (padded frames zeroed)."""
        f = features if self.project is None else self.project(features)
        valid = mask.unsqueeze(-1)
        f = f.masked_fill(~valid, 0.0)
        if not self.blocks:
            return f + f  # M = 0: f^M = f
        counts = mask.sum(dim=1, keepdim=True).clamp(min=1)
        level = (f.detach().norm(dim=-1) * mask).sum(dim=1, keepdim=True) / counts  # [B, 1] mean frame norm
        position = sinusoid(f.shape[1], f.shape[2], device=f.device, dtype=f.dtype)
        position = self.position_gain * level.unsqueeze(-1) * position.unsqueeze(0)  # [B, T, W]
        x = f + position
        padding = ~mask
        for block in self.blocks:
            x = block(x, src_key_padding_mask=padding)
        return f + (x - position).masked_fill(~valid, 0.0)

    def similarity(self, represented: torch.Tensor, mask: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """cos(V_w, w) [B, J] for unit texts [J, W], in chunks of texts."""
        # V_w is never built: with unit w, V_w·w = Σ_t a_t (f_t·w) reuses the attention logits, and
        # ‖V_w‖² = aᵀ G a with the per-video Gram matrix G = f fᵀ [T, T]; that costs B·J·T² instead
        # of B·J·T·D for the pooled vectors (4–30x less for T = 16–64 frames of D = 512).
        b, steps, _ = represented.shape
        chunk = max(1, CHUNK_ELEMENTS // max(1, b * steps * 2))
        scale = self.attention_scale
        gram = represented @ represented.transpose(1, 2)  # [B, T, T]
        out = []
        for start in range(0, len(texts), chunk):
            w = texts[start : start + chunk]
            dots = torch.einsum("btd,jd->bjt", represented, w)  # f_t · w
            attention = (dots * scale).masked_fill(~mask.unsqueeze(1), float("-inf")).softmax(dim=-1)
            along = (attention * dots).sum(dim=-1)  # V_w · w
            norm_sq = (torch.bmm(attention, gram) * attention).sum(dim=-1)  # ‖V_w‖²
            out.append(along / norm_sq.clamp(min=1e-24).sqrt())
        return torch.cat(out, dim=1) if out else represented.new_zeros(b, 0)

    # text side ---------------------------------------------------------------------------------------
    def refine(self, sets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Texts [S, K, W] of S sets (set s holds lengths[s] texts) through the discriminator, unit rows."""
        if self.discriminator is None:
            return sets
        padding = torch.arange(sets.shape[1], device=sets.device).unsqueeze(0) >= lengths.unsqueeze(1)
        return F.normalize(self.discriminator(sets, src_key_padding_mask=padding), dim=-1)

    def class_texts(self) -> torch.Tensor:
        """[C, W] the vocabulary's texts as compared at inference (each alone through the discriminator)."""
        texts = self.text_bank[: self.num_classes]
        if self.discriminator is None:
            return texts
        return self.refine(texts.unsqueeze(1), torch.ones(len(texts), dtype=torch.long, device=texts.device))[:, 0]

    # forward / loss ----------------------------------------------------------------------------------
    def _class_logits(self, represented: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.logit_scale * self.similarity(represented, mask, self.class_texts())
        if self.multi_label:
            logits = self.calibration_gain * logits + self.class_bias
        return logits

    def _embedding(self, represented: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(represented.dtype)
        mean = (represented * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        return F.normalize(mean, dim=-1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> HeadOutput:
        """Evaluation form: logits [B, C] against every class text (k = 0)."""
        represented = self.represent(features, mask)
        return HeadOutput(self._class_logits(represented, mask), embedding=self._embedding(represented, mask))

    def text_sets(self, batch) -> tuple[list[list[int]], torch.Tensor]:
        """Per video: [its positive's text-bank row (a random one of its labels), its hard negatives]."""
        targets = batch.targets
        has = targets.sum(dim=1) > 0
        positive = torch.full((len(targets),), -1, dtype=torch.long, device=targets.device)
        if has.any():
            positive[has] = torch.multinomial(targets[has].float(), 1).squeeze(1)
        negatives = self.context.negatives if self.context is not None else {}
        sets = []
        for row, video_id in enumerate(batch.video_ids):
            own = [int(positive[row])] if bool(has[row]) else []
            sets.append(own + [int(j) for j in negatives.get(video_id, [])])
        return sets, has

    def forward_batch(self, batch) -> HeadOutput:
        if not self.training:
            return self(batch.feature, batch.mask)
        features, mask = batch.feature, batch.mask
        represented = self.represent(features, mask)
        sets, _ = self.text_sets(batch)
        kept = [s for s in sets if s]
        device = represented.device
        if kept:
            longest = max(len(s) for s in kept)
            index = torch.tensor([s + [0] * (longest - len(s)) for s in kept], dtype=torch.long, device=device)
            lengths = torch.tensor([len(s) for s in kept], dtype=torch.long, device=device)
            refined = self.refine(self.text_bank[index], lengths)  # [S, K, W]
            used = torch.arange(longest, device=device).unsqueeze(0) < lengths.unsqueeze(1)
            texts, text_index = refined[used], index[used]  # [J, W], [J] in set order
        else:
            texts = self.text_bank[:0]
            text_index = torch.zeros(0, dtype=torch.long, device=device)
        similarity = self.logit_scale * self.similarity(represented, mask, texts)  # S [B, J]
        targets = batch.targets.to(similarity.dtype)
        extra = len(self.text_bank) - self.num_classes
        padded = torch.cat([targets, targets.new_zeros(len(targets), extra)], dim=1)
        q = padded[:, text_index]  # Q [B, J]
        extras = {"q": q, "text_index": text_index}
        if self.multi_label:  # calibration: every class, similarities detached
            with torch.no_grad():
                extras["class_similarity"] = self.logit_scale * self.similarity(represented, mask, self.class_texts())
        return HeadOutput(similarity, embedding=self._embedding(represented, mask), extras=extras)

    def loss(self, output, batch, *, pos_weight=None):
        if "q" not in output.extras:  # an evaluation-form output: plain classification loss
            return super().loss(output, batch, pos_weight=pos_weight)
        kl = LOSSES.create("symmetric-kl", similarity=output.logits, targets=output.extras["q"])
        parts = {"kl": float(kl.detach())}
        total = kl
        if self.multi_label:
            logits = self.calibration_gain * output.extras["class_similarity"].float() + self.class_bias
            calibration = LOSSES.create("bce", logits=logits, targets=batch.targets, pos_weight=pos_weight)
            parts["calibration"] = float(calibration.detach())
            total = total + calibration
        return total, parts

    def report(self) -> dict:
        return {
            "logit_scale": float(self.logit_scale.detach()),
            "attention_scale": float(self.attention_scale.detach()),
            "position_gain": float(self.position_gain.detach()),
        }
