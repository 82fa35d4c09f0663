"""`contrastive` (seed 003, CVTCL on CoCLR): a representation head trained without labels on one view
of frozen frame features, with cross-view positives mined in another view and a local temporal
contrastive loss (LTCL). `kind = "embed"`: the loop validates it by retrieval R@1 (val videos query
the training videos) and `vidcache predict --write-view` stores its embeddings as a new cache view.

Encoder (one view): frames x_t [T, D] → per-frame linear h_t = W x_t (width `hidden_dim`; none when
`hidden_dim` = 0) → masked mean over the chosen frames → projection GELU → dropout → linear
(`projection_dim`) → z / ‖z‖. In evaluation the chosen frames are all valid frames of the video and
`logits` are zeros [B, C] (an embed head has no classifier).

Instance loss. In training each video v_i gets two random temporal crops (contiguous spans of
L ~ U{⌈f·n_i⌉ … n_i} of its n_i valid frames, f = `crop_fraction`, L ≥ 1, start uniform), drawn
from torch's global RNG, which the loop reseeds every epoch (runs are reproducible and resumable).
Over the 2M crop embeddings of the batch (M videos, companions included), with s_ab = z_a·z_b / τ:

    L_NCE = mean_a  −(1/|P(a)|) Σ_{p∈P(a)} log( exp(s_ap) / Σ_{k≠a} exp(s_ak) )          (SupCon form)

P(a) = the other crop of a's video ∪ both crops of every batch video j with j ∈ topK(i) or i ∈ topK(j)
(topK = `HeadContext.neighbours`, the K nearest training videos of v_i in the `--cross-view-from` view,
CVTCL's P_i = {aug(v_i)} ∪ {v_k : k ∈ topK}); every other crop is a negative. With K = 0 the only
positive is the other crop and this is exactly InfoNCE / NT-Xent (CVTCL eq. 1).

Negatives come from the batch, not from a MoCo queue: the features are frozen (no backbone to train,
so there is no reason for a momentum encoder, and without one a queue holds stale keys of an encoder
that moved), a batch of a few hundred pooled vectors costs little, and a mined positive must be
*encoded in the same step* to be pulled towards its anchor: `companions` therefore brings one
neighbour of each batch video, drawn uniformly (with the loop's generator) among its K neighbours
that are not already in the batch.

LTCL (`ltcl`, weight β = `ltcl_weight`). The valid frames of a video with n ≥ 4 frames are cut into
4 non-overlapping segments [⌊k·n/4⌋, ⌊(k+1)·n/4⌋), k = 0…3 (videos with fewer frames take no part);
z_k is a segment's embedding (same encoder), z_k^a that of aug(s_k): a random contiguous sub-crop of
the segment (same rule as above) with feature dropout (p = `dropout`) on its input frames. With
ℓ(z, p, N) = −log( exp(z·p/τ) / (exp(z·p/τ) + Σ_{n∈N} exp(z·n/τ)) )  (CVTCL eq. 1):

    L_local = mean_{v,k} (1/4) Σ_{p ∈ {z_k^a} ∪ {z_j}_{j≠k}} ℓ(z_k, p, {segments z of other videos})   (eq. 6)
    L_LT    = mean_{v,k} ℓ(z_k, z_k^a, {z_j}_{j≠k})                                                  (eq. 7)

Each positive of L_local is scored against the negatives alone (not against the other positives), as
in the paper's Algorithm 1. Other videos that are cross-view positives of v (the P relation above)
are left out of v's L_local negatives: the instance loss pulls them together, the segment loss must
not push them apart. Total: L = L_NCE + β (L_local + L_LT) (α = 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..fields import check, setting
from .base import Head, HeadOutput, register_head
from .context import MinedNeighbours

SEGMENTS = 4


@dataclass(frozen=True)
class ContrastiveOptions:
    hidden_dim: int = setting(512, help="Hidden / projection width (0: the input width, or no projection).")
    dropout: float = setting(0.1, help="Dropout probability.")
    temperature: float = setting(0.1, help="τ of the similarities.")
    projection_dim: int = setting(128, help="Output embedding width.")
    crop_fraction: float = setting(0.5, help="A temporal crop keeps at least this share of the frames.")
    ltcl: bool = setting(True, help="Local temporal contrastive loss over 4 segments.")
    ltcl_weight: float = setting(1.0, help="β, the weight of the LTCL terms.")
    cross_view_k: int = setting(0, help="K mined neighbours of another view as extra positives (0 = off).")
    cross_view_from: str = setting("", help="The view whose mined neighbours are positives.")

    def __post_init__(self) -> None:
        check(self, "hidden_dim", self.hidden_dim >= 0, "must be >= 0")
        check(self, "dropout", 0 <= self.dropout < 1, "must be in [0, 1)")
        check(self, "temperature", self.temperature > 0, "must be > 0")
        check(self, "projection_dim", self.projection_dim >= 1, "must be >= 1")
        check(self, "crop_fraction", 0 < self.crop_fraction <= 1, "must be in (0, 1]")
        check(self, "ltcl_weight", self.ltcl_weight >= 0, "must be >= 0")
        check(self, "cross_view_k", self.cross_view_k >= 0, "must be >= 0")
        check(
            self,
            "cross_view_k",
            not (self.cross_view_k and not self.cross_view_from),
            "needs cross_view_from VIEW (mine it: vidcache mine neighbours --view VIEW)",
        )


def full(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16 embeddings from autocast are scored in float32; float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def multi_positive_nce(z: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon-form InfoNCE: z [N, E] unit rows, positives [N, N] bool (the diagonal is ignored); the mean
    over anchors with at least one positive of −mean_p log softmax_{k≠a}(z_a·z_k/τ)_p."""
    n = len(z)
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = positives & ~eye
    count = positives.sum(dim=1)
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(dim=1) / count.clamp(min=1)
    has = count > 0
    return per_anchor[has].mean() if has.any() else z.sum() * 0


def ltcl_losses(
    segments: torch.Tensor, augmented: torch.Tensor, temperature: float, related: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_local and L_LT (module docstring) of V videos: segments and augmented [V, 4, E] unit rows;
    `related` [V, V] bool: pairs of videos that are not each other's negatives (cross-view positives)."""
    v, s, _ = segments.shape
    if v == 0:
        zero = segments.sum() * 0
        return zero, zero
    z = segments.reshape(v * s, -1)
    video = torch.arange(v, device=z.device).repeat_interleave(s)
    sim = z @ z.T / temperature  # [V·4, V·4]
    aug = (z * augmented.reshape(v * s, -1)).sum(dim=1) / temperature  # s(z_k, z_k^a)
    same = video[:, None] == video[None, :]
    eye = torch.eye(v * s, dtype=torch.bool, device=z.device)
    siblings = same & ~eye  # the other 3 segments of the anchor's video
    sibling_sim = sim[siblings].reshape(v * s, s - 1)
    # L_local: each positive p ∈ {z^a, siblings} against the other videos' segments
    negative = ~same
    if related is not None:
        negative = negative & ~related.to(z.device)[video][:, video]
    pos = torch.cat([aug[:, None], sibling_sim], dim=1)  # [V·4, 4]
    has = negative.any(dim=1, keepdim=True)  # a lone video has none: its terms are −log 1 = 0
    spread = torch.logsumexp(sim.masked_fill(~negative, float("-inf")).where(has, 0.0), dim=1, keepdim=True)
    spread = spread.where(has, float("-inf"))  # log Σ_n exp(s_n), −inf without negatives (no NaN gradient)
    local = (torch.logaddexp(pos, spread) - pos).mean()
    # L_LT: positive z^a, negatives the siblings
    lt_logits = torch.cat([aug[:, None], sibling_sim], dim=1)
    lt = (torch.logsumexp(lt_logits, dim=1) - aug).mean()
    return local, lt


def random_spans(lengths: torch.Tensor, fraction: float, *, generator: torch.Generator | None = None):
    """Per entry of `lengths` (≥ 1), a contiguous span of L ~ U{⌈fraction·n⌉ … n} frames at a uniform
    start: (start, length), same shape as `lengths`."""
    n = lengths.clamp(min=1).to(torch.float64)
    shortest = torch.ceil(fraction * n - 1e-9).clamp(min=1)
    u = torch.rand(lengths.shape, generator=generator, dtype=torch.float64, device=lengths.device)
    span = (shortest + torch.floor(u * (n - shortest + 1))).clamp(max=n)
    u = torch.rand(lengths.shape, generator=generator, dtype=torch.float64, device=lengths.device)
    start = torch.floor(u * (n - span + 1)).clamp(max=n - span)
    return start.long(), span.long()


def span_mask(start: torch.Tensor, length: torch.Tensor, steps: int) -> torch.Tensor:
    """[..., T] bool: frames in [start, start + length)."""
    t = torch.arange(steps, device=start.device)
    return (t >= start[..., None]) & (t < (start + length)[..., None])


@register_head("contrastive")
class ContrastiveHead(Head):
    kind = "embed"
    Options = ContrastiveOptions
    sweep_axis = ("temperature", (0.07, 0.2))

    @classmethod
    def inputs(cls, options: ContrastiveOptions) -> tuple:
        return (MinedNeighbours(options.cross_view_k, options.cross_view_from),) if options.cross_view_k else ()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        options = self.options
        hidden = options.hidden_dim
        width = hidden or self.input_dim
        self.frame = nn.Linear(self.input_dim, width) if hidden else nn.Identity()
        self.projection = (
            nn.Sequential(nn.GELU(), nn.Dropout(options.dropout), nn.Linear(width, options.projection_dim))
            if hidden
            else nn.Linear(width, options.projection_dim)
        )

    # encoder ------------------------------------------------------------------------------------
    def pool(self, hidden: torch.Tensor, choose: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, H], choose [B, ..., T] bool → unit embeddings [B, ..., P] of the chosen frames."""
        weights = choose.to(hidden.dtype)
        shape = weights.shape
        weights = weights.reshape(shape[0], -1, shape[-1])  # [B, S, T]
        pooled = torch.bmm(weights, hidden) / weights.sum(dim=-1, keepdim=True).clamp(min=1)
        return F.normalize(self.projection(pooled), dim=-1).reshape(*shape[:-1], -1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> HeadOutput:
        embedding = self.pool(self.frame(features), mask)
        logits = embedding.new_zeros(len(embedding), self.num_classes)
        return HeadOutput(logits, embedding=embedding)

    def forward_batch(self, batch) -> HeadOutput:
        output = self(batch.feature, batch.mask)
        if self.training:
            output.extras.update(self.training_views(batch.feature, batch.mask))
        return output

    def training_views(self, features: torch.Tensor, mask: torch.Tensor) -> dict:
        """Two temporal crops per video ("crops" [B, 2, P]); with LTCL the 4 segments and their
        augmentations ("segments", "augmented" [V, 4, P]) of the V videos with ≥ 4 frames ("segmented")."""
        steps = features.shape[1]
        lengths = mask.sum(dim=1).clamp(min=1)
        start, span = random_spans(lengths[:, None].expand(-1, 2), self.options.crop_fraction)
        hidden = self.frame(features)
        out = {"crops": self.pool(hidden, span_mask(start, span, steps) & mask[:, None, :])}
        if not self.options.ltcl:
            return out
        segmented = lengths >= SEGMENTS
        out["segmented"] = segmented
        if not segmented.any():
            return out
        n = lengths[segmented]
        k = torch.arange(SEGMENTS + 1, device=n.device)
        bounds = torch.div(k[None, :] * n[:, None], SEGMENTS, rounding_mode="floor")  # [V, 5]
        seg_start, seg_length = bounds[:, :-1], bounds[:, 1:] - bounds[:, :-1]
        chosen_features = features[segmented]
        out["segments"] = self.pool(hidden[segmented], span_mask(seg_start, seg_length, steps))
        sub_start, sub_length = random_spans(seg_length, self.options.crop_fraction)
        dropped = F.dropout(chosen_features, p=self.options.dropout, training=self.training)
        out["augmented"] = self.pool(self.frame(dropped), span_mask(seg_start + sub_start, sub_length, steps))
        return out

    # positives ----------------------------------------------------------------------------------
    def related(self, video_ids: list[str]) -> torch.Tensor:
        """[M, M] bool: j ∈ neighbours(i) or i ∈ neighbours(j) (or the same video), diagonal False."""
        m = len(video_ids)
        out = torch.zeros(m, m, dtype=torch.bool)
        neighbours = self.context.neighbours if self.context is not None else {}
        rows: dict[str, list[int]] = {}
        for row, video_id in enumerate(video_ids):
            rows.setdefault(video_id, []).append(row)
        pairs = [
            (row, col)
            for row, video_id in enumerate(video_ids)
            for other in (video_id, *neighbours.get(video_id, ()))
            for col in rows.get(other, ())
        ]
        if pairs:
            index = torch.tensor(pairs, dtype=torch.long)
            out[index[:, 0], index[:, 1]] = True
        out = out | out.T
        out.fill_diagonal_(False)
        return out

    def companions(self, video_ids: list[str], generator: torch.Generator) -> list[str]:
        neighbours = self.context.neighbours if self.context is not None else {}
        present = set(video_ids)
        chosen: list[str] = []
        for video_id in video_ids:
            candidates = [n for n in neighbours.get(video_id, ()) if n not in present]
            if candidates:
                pick = candidates[int(torch.randint(len(candidates), (1,), generator=generator))]
                chosen.append(pick)
                present.add(pick)
        return chosen

    # loss ---------------------------------------------------------------------------------------
    def loss(self, output, batch, *, pos_weight=None):
        views = output.extras
        if "crops" not in views:  # an output made in eval mode
            views = self.training_views(batch.feature, batch.mask)
        crops = full(views["crops"])  # [M, 2, P]
        m = len(crops)
        related = self.related(batch.video_ids).to(crops.device)
        video_positive = related | torch.eye(m, dtype=torch.bool, device=crops.device)
        # crop a = 2·i + c: positives are every crop of a related (or the same) video
        positives = video_positive.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1)
        temperature = self.options.temperature
        nce = multi_positive_nce(crops.reshape(2 * m, -1), positives, temperature)
        parts = {"nce": float(nce.detach())}
        total = nce
        if self.options.ltcl:
            segmented = views["segmented"]
            if "segments" in views:
                keep = segmented.nonzero().squeeze(1)
                local, lt = ltcl_losses(
                    full(views["segments"]), full(views["augmented"]), temperature, related[keep][:, keep]
                )
            else:  # no video with 4 frames: nothing to cut
                local = lt = crops.sum() * 0
            total = total + self.options.ltcl_weight * (local + lt)
            parts.update(local=float(local.detach()), lt=float(lt.detach()))
        return total, parts
