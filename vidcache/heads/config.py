"""Training options as plain, self-validating dataclasses, saved verbatim into every run directory.

`TrainConfig` holds what every head's training shares; each head's own options are a dataclass in the
head's module (`Head.Options`), carried in `TrainConfig.options`."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..fields import check, check_choice, setting

Task = Literal["auto", "multi-label", "single-label"]
Device = Literal["auto", "cpu", "cuda"]
Items = Literal["videos", "shots"]
ShotPooling = Literal["mean", "max"]
CONFIG_VERSION = 2  # RUN/config.json: 2 = the head's own options; 1 (no key) = one shared option bag

# fields of the shared option bag (config version 1) that lived at the top of TrainConfig and are now
# the temporal / contrastive heads' own options: moved into `options` when an old run is loaded
_LEGACY_TOP = (
    "hard_negatives",
    "hard_negatives_from",
    "hard_negatives_file",
    "cross_view_k",
    "cross_view_from",
    "label_corpus",
    "text_embeddings",
)


def _head_names() -> list[str]:
    from .base import HEADS

    return HEADS.names()


@dataclass(frozen=True)
class TrainConfig:
    """What every head's training shares; `options` is the chosen head's own options dataclass
    (`HEADS.options(head, ...)`; None: the head's defaults). Both are saved verbatim in RUN/config.json."""

    head: str = setting("linear", help="The head to train.", choices=_head_names)
    view: str = setting("clip", help="The cached view to train on.")
    views: tuple[str, ...] = setting(
        (), help="Several views for a multi-view head (fusion), e.g. clip,audio,motion.", flag="--views"
    )
    items: Items = setting(
        "videos",
        help="What the head classifies: videos, or shots (one item per row of the shots view, the view's rows "
        "pooled over the shot; split and labels from its video unless --shot-labels gives them).",
    )
    shot_pooling: ShotPooling = setting("mean", help="--items shots: how a shot's rows of the view are pooled.")
    shot_labels: str | None = setting(
        None,
        help="--items shots: a CSV/parquet of video_id,shot_index,labels (labels ;-separated, shot_index from 0): "
        "these shots' labels replace their video's.",
    )
    epochs: int | None = setting(
        None,
        help="Default: auto, 30 or more for 600 optimizer steps (5 per training video below 120 videos; at most 500).",
    )
    batch_size: int = setting(64, help="Videos per optimizer step.")
    lr: float | None = setting(None, help="Default: chosen on val from 1e-3, 3e-3, 1e-2, 3e-2 by short runs.")
    weight_decay: float | None = setting(
        None, help="Default: chosen on val from 1e-4, 1e-2 with the lr; 1e-4 when --lr is given."
    )
    warmup_epochs: float = setting(1.0, help="Linear warm-up before the cosine schedule.")
    seed: int = setting(0, help="Seed of initialisation, shuffling and dropout.")
    deterministic: bool = setting(False, help="torch deterministic algorithms (slower on GPU).")
    device: Device = setting("auto", help="Where to train.")
    task: Task = setting("auto", help="auto: multi-label when any video has several labels.")
    early_stop_metric: str = setting("auto", help="auto: map_macro / top1 (retrieval heads: recall_at_1).")
    patience: int | None = setting(None, help="Epochs without improvement before stopping (default: epochs/3, >= 10).")
    grad_clip: float = setting(1.0, help="Gradient norm clip.")
    pos_weight: bool = setting(False, help="Weight positives by (negatives/positives) per class.")
    max_frames: int = setting(64, help="Frames per video, sampled uniformly when a video has more.")
    val_fraction: float = setting(0.1, help="Carved from train when the manifest has no val split.")
    memory_budget_gb: float = setting(4.0, help="Above it, the view is streamed from the cache in blocks.")
    max_bad_steps: int = setting(10, help="Consecutive non-finite losses before training stops.")
    amp: bool = setting(True, help="bfloat16 autocast on CUDA (ignored on CPU).")
    search_videos: int = setting(
        50_000,
        help="The lr / weight-decay search's trials train and validate on at most this many videos per split "
        "(a seeded sample; 0: all). The chosen values then train on every video.",
    )
    split_sample: int | None = setting(
        None, help="At most this many train and val videos (a seeded sample): set for the search's trials.", cli=False
    )
    search_trial: bool = setting(
        False,
        help="A trial of the lr / weight-decay search: judged by its epochs' best val metric alone, so it "
        "solves no probe branch and draws no plots.",
        cli=False,
    )
    options: Any = setting(None, help="The head's own options.", cli=False)

    @property
    def all_views(self) -> tuple[str, ...]:
        return tuple(self.views) or (self.view,)

    def __post_init__(self) -> None:
        from .base import HEADS

        check_choice(self, "head", self.head, HEADS.names())
        check_choice(self, "task", self.task, Task)
        check_choice(self, "device", self.device, Device)
        check_choice(self, "items", self.items, Items)
        check_choice(self, "shot_pooling", self.shot_pooling, ShotPooling)
        check(self, "shot_labels", self.shot_labels is None or self.items == "shots", "needs items='shots'")
        if self.shot_labels:  # recorded resolved: eval/predict find the file from another working directory
            object.__setattr__(self, "shot_labels", str(Path(self.shot_labels).resolve()))
        object.__setattr__(self, "views", tuple(self.views))  # JSON round trips give lists
        if self.views:  # the first of several views is the one single-view code reads
            object.__setattr__(self, "view", self.views[0])
        check(self, "views", len(set(self.all_views)) == len(self.all_views), "lists a view twice")
        options_class = HEADS.options_class(self.head)
        if self.options is None:
            object.__setattr__(self, "options", options_class())
        elif isinstance(self.options, dict):  # a saved config.json
            object.__setattr__(self, "options", HEADS.options(self.head, **self.options))
        check(
            self,
            "options",
            isinstance(self.options, options_class),
            f"head {self.head!r} takes {options_class.__name__} (HEADS.options({self.head!r}, ...))",
        )
        for name in ("epochs", "batch_size", "max_frames", "patience", "max_bad_steps"):
            value = getattr(self, name)
            check(self, name, value is None or value >= 1, "must be >= 1")
        check(self, "lr", self.lr is None or self.lr > 0, "must be > 0")
        check(self, "weight_decay", self.weight_decay is None or self.weight_decay >= 0, "must be >= 0")
        check(self, "warmup_epochs", self.warmup_epochs >= 0, "must be >= 0")
        check(self, "grad_clip", self.grad_clip > 0, "must be > 0")
        check(self, "val_fraction", 0 < self.val_fraction < 1, "must be in (0, 1)")
        check(self, "search_videos", self.search_videos >= 0, "must be >= 0 (0: every video)")
        check(self, "split_sample", self.split_sample is None or self.split_sample >= 1, "must be >= 1")

    def saved(self) -> dict:
        """What RUN/config.json records as `train_config`: every field, the head's options verbatim."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    @classmethod
    def from_saved(cls, raw: dict, *, version: int = CONFIG_VERSION) -> TrainConfig:
        """The config a run directory recorded. Version 1 runs (one option bag for every head, the
        mined-input options at the top) keep loading: their options are cut down to the head's own."""
        from .base import HEADS

        raw = dict(raw)
        options = dict(raw.pop("options", None) or {})
        if version < 2:
            for key in _LEGACY_TOP:
                if key in raw:
                    options.setdefault(key, raw.pop(key))
            known = {f.name for f in dataclasses.fields(HEADS.options_class(raw.get("head", "linear")))}
            options = {k: v for k, v in options.items() if k in known and v is not None}
            if "probe_blend" in known:  # runs saved before the probe branch existed had none
                options.setdefault("probe_blend", False)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in fields}, options=options)


AUTO_MIN_EPOCHS = 30
AUTO_MAX_STEPS = 600  # the optimizer steps a large enough training set gets (a transformer head converges)
AUTO_STEPS_PER_VIDEO = 5  # below 120 training videos the step budget shrinks with the data
AUTO_MAX_EPOCHS = 500
AUTO_MIN_EPOCH_VIDEOS = 600_000  # the 30-epoch floor shrinks once 30 epochs would show more videos than this


def auto_step_budget(train_videos: int) -> int:
    """Optimizer steps auto epochs aim at: 5 per training video, at most 600. 8 videos are one step
    an epoch; 600 steps of the same 8 videos (500 epochs, issue 23) only overfit them for minutes."""
    return min(AUTO_MAX_STEPS, AUTO_STEPS_PER_VIDEO * max(1, train_videos))


def resolve_schedule(config: TrainConfig, *, train_videos: int) -> TrainConfig:
    """The config with `epochs` and `patience` filled in when left to auto.

    Auto epochs: 30, or more so the head gets `auto_step_budget` optimizer steps (at most 500 epochs):
    600 steps from 120 training videos up, 5 per video below. Counting epochs alone starved mid-sized
    sets: 300 videos at batch 64 are 5 steps an epoch, 150 steps in 30 epochs, and the temporal head
    stopped at 0.5-0.8 on order tasks it solves (>= 0.99) with enough steps; a fixed 600 steps made
    8 videos train for 500 epochs. Above 20k training videos the 30-epoch floor becomes 600k videos
    seen (100k: 6 epochs, 600k: 1 epoch of 9,375 steps at batch 64): 30 epochs of a million-video
    cache read 180 GB of rows and did not finish in 10 minutes (issue 29), while the step budget is
    met many times over in one. Auto patience: a third of the epochs, at least 10."""
    epochs = config.epochs
    if epochs is None:
        steps_per_epoch = max(1, math.ceil(train_videos / config.batch_size))
        wanted = math.ceil(auto_step_budget(train_videos) / steps_per_epoch)
        floor = min(AUTO_MIN_EPOCHS, max(1, math.ceil(AUTO_MIN_EPOCH_VIDEOS / max(1, train_videos))))
        epochs = min(AUTO_MAX_EPOCHS, max(floor, wanted))
    patience = config.patience if config.patience is not None else max(10, round(epochs / 3))
    return dataclasses.replace(config, epochs=epochs, patience=patience)
