"""What a head may need besides the features, as inputs a head declares (`Head.inputs(options)`):
`LabelTexts` (the class names' text embeddings), `MinedNegatives` (hard-negative labels per video)
and `MinedNeighbours` (each video's nearest videos in another view). Each knows how to load itself
from the cache's text.h5 / CACHE/mined/ into the `HeadContext`, once, before training; the loop knows
no head by name. What a run needs again at prediction time (the text bank) travels inside its
checkpoint. A new kind of input is one more small dataclass with a `load` method."""

from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..cache.layout import TEXT_NAME
from ..cache.reader import Cache
from ..errors import ConfigError

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


class HeadInput(Protocol):
    """Something a head reads besides the features; loaded into the context before training.
    `precheck` runs before anything is written (the lr search, the sweep): a missing or stale mined
    list fails at once, with the command that makes it, and leaves the run directory empty."""

    def precheck(self, cache_dir: Path) -> None: ...

    def load(self, cache: Cache, context: HeadContext, *, video_ids: list[str], seed: int, head: str) -> None: ...


def precheck_inputs(cache_dir: str | Path, inputs: tuple[HeadInput, ...]) -> None:
    for need in inputs:
        need.precheck(Path(cache_dir))


def build_context(
    cache: Cache,
    inputs: tuple[HeadInput, ...],
    *,
    vocabulary: list[str],
    views: tuple[str, ...],
    input_dims: dict[str, int],
    video_ids: list[str],
    seed: int,
    head: str,
) -> HeadContext:
    """The context of a training run over `video_ids` (the train split): each input the head
    declared, loaded in the head's order (texts before the negatives that index them)."""
    context = HeadContext(vocabulary, views, input_dims)
    for need in inputs:
        need.load(cache, context, video_ids=video_ids, seed=seed, head=head)
    return context


@dataclass(frozen=True)
class LabelTexts:
    """The text bank: the vocabulary's label embeddings first, then the corpus' other labels.
    From `label_corpus` + `text_embeddings` when given, else CACHE/text.h5; when neither exists and
    the texts are not `required`, the head goes without (a warning says so)."""

    label_corpus: str = ""
    text_embeddings: str = ""
    required: bool = False

    def precheck(self, cache_dir: Path) -> None:
        """Nothing to check early: `label_embeddings` names a missing file when loading."""

    def load(self, cache: Cache, context: HeadContext, *, video_ids: list[str], seed: int, head: str) -> None:
        given = bool(self.label_corpus or self.text_embeddings) or (cache.path / TEXT_NAME).exists()
        if not (given or self.required):  # e.g. imported features without a text encoder
            log.warning(
                "no label text embeddings in %s (vidcache embed-text, or --label-corpus + --text-embeddings): "
                "the %s head learns one query per class instead of using the label texts",
                cache.path,
                head,
            )
            return
        from ..index.mining import label_embeddings

        labels, matrix = label_embeddings(
            cache, label_corpus=self.label_corpus or None, text_embeddings=self.text_embeddings or None
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


def check_mined_is_current(cache_dir: str | Path, name: str) -> None:
    """Refuse hard negatives mined before the manifest's labels changed (a negative may now be one of
    the video's own labels), naming the command that mined them: it refreshes them."""
    from ..index.mining import MINED_DIR, labels_digest

    meta_path = Path(cache_dir) / MINED_DIR / f"{name}.json"
    if not meta_path.exists():
        return  # a missing list is reported on loading, with the command that mines it
    meta = json.loads(meta_path.read_text())
    recorded = meta.get("labels_sha256")
    if recorded and recorded != labels_digest(cache_dir):
        again = meta.get("command") or f"vidcache mine hard-negatives --cache {cache_dir} --k K"
        raise ConfigError(
            f"{meta_path.with_suffix('.parquet')} was mined before the manifest's labels changed; refresh it "
            f"with `{again}` and train again"
        )


@dataclass(frozen=True)
class MinedNegatives:
    """`k` mined hard-negative labels per training video (rows of the text bank, so `LabelTexts`
    must load first), the `how` = top / bottom / random `k` of each video's mined ranking."""

    k: int
    how: str = "top"
    file: str = "hard_negatives"

    def precheck(self, cache_dir: Path) -> None:
        from ..index.mining import MINED_DIR

        check_mined_is_current(cache_dir, self.file)
        if not (cache_dir / MINED_DIR / f"{self.file}.parquet").exists():
            raise ConfigError(
                f"--hard-negatives {self.k} needs mined hard negatives: {cache_dir / MINED_DIR / self.file}.parquet "
                f"does not exist (e.g. `vidcache mine hard-negatives --cache {cache_dir} --k {max(10, self.k)}`)"
            )

    def load(self, cache: Cache, context: HeadContext, *, video_ids: list[str], seed: int, head: str) -> None:
        from ..index.api import load_mined

        check_mined_is_current(cache.path, self.file)
        try:
            frame = load_mined(cache.path, self.file)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"--hard-negatives {self.k} needs mined hard negatives: {exc} "
                f"(e.g. `vidcache mine hard-negatives --cache {cache.path} --k {max(10, self.k)}`)"
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
            chosen = _choose(ranked, self.k, self.how, str(video_id), seed)
            short += len(chosen) < self.k
            context.negatives[str(video_id)] = chosen
        missing = len(wanted - set(context.negatives))
        if missing == len(wanted):
            raise ConfigError(
                f"{cache.path}/mined/{self.file}.parquet has no rows for the training videos; mine again on this cache"
            )
        if missing or short:
            log.warning(
                "hard negatives: %d training video(s) have none mined and %d fewer than %d; mine with a larger --k",
                missing,
                short,
                self.k,
            )


@dataclass(frozen=True)
class MinedNeighbours:
    """Each training video's `k` nearest training videos in `view` (CACHE/mined/neighbours_VIEW)."""

    k: int
    view: str

    def precheck(self, cache_dir: Path) -> None:
        from ..index.mining import MINED_DIR

        if not (cache_dir / MINED_DIR / f"neighbours_{self.view}.parquet").exists():
            raise ConfigError(
                f"--cross-view-k needs neighbours mined in view {self.view!r}: "
                f"{cache_dir / MINED_DIR}/neighbours_{self.view}.parquet does not exist (e.g. `vidcache mine "
                f"neighbours --cache {cache_dir} --view {self.view} --k {max(5, self.k)}`)"
            )

    def load(self, cache: Cache, context: HeadContext, *, video_ids: list[str], seed: int, head: str) -> None:
        from ..index.api import load_mined

        name = f"neighbours_{self.view}"
        try:
            frame = load_mined(cache.path, name)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"--cross-view-k needs neighbours mined in view {self.view!r}: {exc} (e.g. `vidcache mine "
                f"neighbours --cache {cache.path} --view {self.view} --k {max(5, self.k)}`)"
            ) from None
        wanted = set(video_ids)
        # positives must be training videos: a val/test neighbour would leak into training
        ordered = frame[frame["video_id"].isin(wanted) & frame["neighbour_id"].isin(wanted)]
        ordered = ordered.sort_values(["video_id", "rank"], kind="stable")
        for video_id, group in ordered.groupby("video_id", sort=False):
            context.neighbours[str(video_id)] = [str(n) for n in group["neighbour_id"].iloc[: self.k]]
        if not context.neighbours:
            raise ConfigError(f"{cache.path}/mined/{name}.parquet has no neighbours among the training videos")
