"""What a head may need besides the features: label texts (temporal head), mined hard-negative labels
per video (temporal head) and mined cross-view neighbours per video (contrastive head). Read from the
cache's text.h5 / CACHE/mined/ once, before training; what a run needs again at prediction time (the
text bank) travels inside its checkpoint."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ..cache.layout import TEXT_NAME
from ..cache.reader import Cache
from ..errors import ConfigError
from .config import TrainConfig

log = logging.getLogger("vidcache.heads")


@dataclass
class HeadContext:
    vocabulary: list[str]  # the classes the head scores, in order
    views: tuple[str, ...] = ()
    input_dims: dict[str, int] = field(default_factory=dict)  # view → feature width
    text_labels: list[str] = field(default_factory=list)  # text bank: vocabulary first, then mined extras
    text_embeddings: torch.Tensor | None = None  # [L, D] unit rows aligned with text_labels
    negatives: dict[str, list[int]] = field(default_factory=dict)  # video id → text-bank rows, hardest first
    neighbours: dict[str, list[str]] = field(default_factory=dict)  # video id → neighbour ids, nearest first

    def describe(self) -> dict:
        """What config.json records (and `load_run` needs to rebuild the head before loading it)."""
        return {
            "text_labels": self.text_labels,
            "text_dim": None if self.text_embeddings is None else int(self.text_embeddings.shape[1]),
            "videos_with_negatives": len(self.negatives),
            "videos_with_neighbours": len(self.neighbours),
        }

    @classmethod
    def from_description(
        cls, described: dict, *, vocabulary: list[str], views: tuple[str, ...], input_dims: dict[str, int]
    ) -> HeadContext:
        """The shape-only context a saved run is rebuilt with; the checkpoint fills the text bank."""
        labels = list(described.get("text_labels") or [])
        dim = described.get("text_dim")
        text = torch.zeros(len(labels), int(dim)) if labels and dim else None
        return cls(vocabulary, views, input_dims, labels, text)


def _choose(ranked: list[int], k: int, how: str, video_id: str, seed: int) -> list[int]:
    if how == "top":
        return ranked[:k]
    if how == "bottom":
        return ranked[-k:] if k else []
    rng = np.random.default_rng([seed, zlib.crc32(video_id.encode())])  # fixed per video: resumable
    picked = sorted(rng.choice(len(ranked), size=min(k, len(ranked)), replace=False).tolist())
    return [ranked[i] for i in picked]


def build_context(
    cache: Cache,
    config: TrainConfig,
    *,
    vocabulary: list[str],
    input_dims: dict[str, int],
    video_ids: list[str],
    needs_text: bool,
) -> HeadContext:
    """The context of a training run over `video_ids` (the train split)."""
    context = HeadContext(vocabulary, config.all_views, input_dims)
    given = bool(config.label_corpus or config.text_embeddings) or (cache.path / TEXT_NAME).exists()
    if config.hard_negatives or (needs_text and given):
        _add_text(context, cache, config)
    elif needs_text:  # e.g. imported features without a text encoder: the head learns its class queries
        log.warning(
            "no label text embeddings in %s (vidcache embed-text, or --label-corpus + --text-embeddings): "
            "the %s head learns one query per class instead of using the label texts",
            cache.path,
            config.head,
        )
    if config.hard_negatives:
        _add_negatives(context, cache, config, video_ids)
    if config.cross_view_k:
        _add_neighbours(context, cache, config, video_ids)
    return context


def _add_text(context: HeadContext, cache: Cache, config: TrainConfig) -> None:
    from ..index.mining import label_embeddings

    labels, matrix = label_embeddings(
        cache, label_corpus=config.label_corpus or None, text_embeddings=config.text_embeddings or None
    )
    row = {label: i for i, label in enumerate(labels)}
    missing = [label for label in context.vocabulary if label not in row]
    if missing:
        raise ConfigError(
            f"{len(missing)} training class(es) have no text embedding (e.g. {missing[0]!r}); run "
            f"`vidcache embed-text --cache {cache.path}` (its labels come from the manifest) or give a "
            "--label-corpus that names every class"
        )
    extras = [label for label in labels if label not in set(context.vocabulary)]
    context.text_labels = [*context.vocabulary, *extras]
    order = [row[label] for label in context.text_labels]
    context.text_embeddings = torch.from_numpy(np.ascontiguousarray(matrix[order], dtype=np.float32))


def _add_negatives(context: HeadContext, cache: Cache, config: TrainConfig, video_ids: list[str]) -> None:
    from ..index.api import load_mined

    try:
        frame = load_mined(cache.path, config.hard_negatives_file)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"--hard-negatives {config.hard_negatives} needs mined hard negatives: {exc} "
            f"(e.g. `vidcache mine hard-negatives --cache {cache.path} --k {max(10, config.hard_negatives)}`)"
        ) from None
    position = {label: i for i, label in enumerate(context.text_labels)}
    unknown = sorted(set(frame["label"]) - set(position))
    if unknown:
        raise ConfigError(
            f"{len(unknown)} mined label(s) have no text embedding (e.g. {unknown[0]!r}); give the "
            "--label-corpus / --text-embeddings the negatives were mined with"
        )
    wanted = set(video_ids)
    ordered = frame[frame["video_id"].isin(wanted)].sort_values(["video_id", "rank"], kind="stable")
    short = 0
    for video_id, group in ordered.groupby("video_id", sort=False):
        ranked = [position[label] for label in group["label"]]
        chosen = _choose(ranked, config.hard_negatives, config.hard_negatives_from, str(video_id), config.seed)
        short += len(chosen) < config.hard_negatives
        context.negatives[str(video_id)] = chosen
    missing = len(wanted - set(context.negatives))
    if missing == len(wanted):
        raise ConfigError(
            f"{cache.path}/mined/{config.hard_negatives_file}.parquet has no rows for the training videos; "
            "mine again on this cache"
        )
    if missing or short:
        log.warning(
            "hard negatives: %d training video(s) have none mined and %d fewer than %d; mine with a larger --k",
            missing,
            short,
            config.hard_negatives,
        )


def _add_neighbours(context: HeadContext, cache: Cache, config: TrainConfig, video_ids: list[str]) -> None:
    from ..index.api import load_mined

    name = f"neighbours_{config.cross_view_from}"
    try:
        frame = load_mined(cache.path, name)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"--cross-view-k needs neighbours mined in view {config.cross_view_from!r}: {exc} (e.g. `vidcache mine "
            f"neighbours --cache {cache.path} --view {config.cross_view_from} --k {max(5, config.cross_view_k)}`)"
        ) from None
    wanted = set(video_ids)
    # positives must be training videos: a val/test neighbour would leak into training
    ordered = frame[frame["video_id"].isin(wanted) & frame["neighbour_id"].isin(wanted)]
    ordered = ordered.sort_values(["video_id", "rank"], kind="stable")
    for video_id, group in ordered.groupby("video_id", sort=False):
        context.neighbours[str(video_id)] = [str(n) for n in group["neighbour_id"].iloc[: config.cross_view_k]]
    if not context.neighbours:
        raise ConfigError(f"{cache.path}/mined/{name}.parquet has no neighbours among the training videos")
