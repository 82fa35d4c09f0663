"""What `vidcache finetune` was asked to do: one self-validating dataclass whose fields are the
command's flags (`vidcache.commands.options` generates them), saved verbatim into the run directory.

Defaults follow the published video-CLIP fine-tuning recipes (sources in docs/finetune.md):
AdamW β = (0.9, 0.98) and weight decay 0.001 (X-CLIP), the backbone at a tenth of the head's lr
(X-CLIP: 8e-6 for CLIP, 10x on new modules), 5 warm-up epochs then cosine (X-CLIP), 16 frames at
224 px for 20 epochs (seed 002 / MGDM).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from ..fields import ParamError, check, check_choice, setting

FramesFrom = Literal["cache", "videos"]
Device = Literal["auto", "cpu", "cuda"]
Task = Literal["auto", "multi-label", "single-label"]
HeadInit = Literal["probe", "random"]
UNFREEZE_FORMS = ("all", "none", "last:N")
_LAST = re.compile(r"^last:(\d+)$")


def parse_unfreeze(value: str) -> int | None:
    """`all` → None (every backbone parameter trains), `none` → 0, `last:N` → N (the last N
    transformer blocks, with the final norm and projection)."""
    if value == "all":
        return None
    if value == "none":
        return 0
    match = _LAST.match(value)
    if match is None or int(match.group(1)) < 1:
        raise ParamError(
            "FinetuneConfig", "unfreeze", value, "choose one of: " + ", ".join(UNFREEZE_FORMS) + " (N >= 1)"
        )
    return int(match.group(1))


def parse_head_options(text: str, head: str) -> dict:
    """`hidden_dim=256,dropout=0.2` → {"hidden_dim": 256, "dropout": 0.2}; values typed by the fields of
    `head`'s own options dataclass (the head declares them, see heads/base.py)."""
    import dataclasses
    import typing

    from ..heads import HEADS

    options_class = HEADS.options_class(head)
    hints = typing.get_type_hints(options_class)
    names = [f.name for f in dataclasses.fields(options_class)]
    out: dict = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, raw = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in names:
            raise ParamError("FinetuneConfig", "head_options", text, "KEY=VALUE pairs; keys: " + ", ".join(names))
        hint = str(hints[key])
        raw = raw.strip()
        if "bool" in hint:
            out[key] = raw.lower() in ("1", "true", "yes", "on")
        elif "int" in hint and "float" not in hint:
            out[key] = None if raw.lower() == "none" else int(raw)
        elif "float" in hint:
            out[key] = None if raw.lower() == "none" else float(raw)
        else:
            out[key] = raw
    return out


@dataclass(frozen=True)
class FinetuneConfig:
    # no `choices` here: listing the heads would import torch whenever the CLI starts; HEADS.get names them
    head: str = setting("linear", help="The head trained jointly with the backbone: linear, mlp, prototype, pool.")
    view: str = setting("clip", help="The cached CLIP view whose image tower is fine-tuned.")
    frames_view: str = setting("frames", help="With --frames-from cache: the cache's frames view.")
    unfreeze: str = setting(
        "all",
        help="Backbone parameters that train: all, none (frozen tower, head on live frames) or last:N "
        "(the last N transformer blocks plus the final norm and projection).",
    )
    frames_from: FramesFrom = setting(
        "cache",
        help="cache: the frames view (extract --views clip,frames); videos: decode the sources again "
        "through extract's sampler and preprocessing.",
    )
    head_options: str = setting(
        "", help="Head options as KEY=VALUE,... (the --head's own options, e.g. hidden_dim=256)."
    )
    head_init: HeadInit = setting(
        "probe",
        help="probe: fit the head on the frozen tower's features first (LP-FT), epoch 0 of the run; random: "
        "the head's own initialisation.",
    )
    epochs: int = setting(20, help="Epochs (seed 002 / MGDM: 20).")
    batch_size: int = setting(8, help="Videos per micro-batch (per process under torchrun).")
    accumulate: int = setting(1, help="Micro-batches per optimizer step (gradient accumulation).")
    lr: float = setting(8e-5, help="Head learning rate; the backbone's is lr x --backbone-lr-ratio.")
    backbone_lr_ratio: float = setting(0.1, help="Backbone lr / head lr (X-CLIP: 8e-6 for CLIP, 10x for new modules).")
    layer_decay: float = setting(
        1.0, help="Layer-wise lr decay: the block k levels below the top trains at backbone lr x decay^k (1 = off)."
    )
    weight_decay: float = setting(
        0.001, help="AdamW weight decay (X-CLIP: 0.001); none on norms, gains and biases (open_clip's rule)."
    )
    beta1: float = setting(0.9, help="AdamW beta1.")
    beta2: float = setting(0.98, help="AdamW beta2 (CLIP, X-CLIP: 0.98).")
    warmup_epochs: float = setting(5.0, help="Linear warm-up epochs, then cosine decay to 0 (X-CLIP: 5).")
    grad_clip: float = setting(1.0, help="Gradient norm clip.")
    grad_checkpointing: bool = setting(
        False,
        help="Recompute the tower's activations in the backward pass (ViT-B-32: a third less memory, ~10 % slower).",
    )
    amp: bool = setting(True, help="bfloat16 autocast on CUDA GPUs that support it (never on CPU).")
    max_frames: int = setting(16, help="Frames per video, evenly spaced over its rows (seed 002: 16).")
    augment: bool = setting(True, help="Train-time random resized crop + flip, the same for every frame of a video.")
    flip: bool = setting(
        True, help="Random horizontal flip in the augmentation; turn it off when a label depends on left/right."
    )
    crop_scale_min: float = setting(0.5, help="Smallest area fraction of the random resized crop.")
    patience: int = setting(5, help="Epochs without a better val metric before stopping.")
    early_stop_metric: str = setting("auto", help="auto: map_macro (multi-label) / top1 (single-label).")
    task: Task = setting("auto", help="Single- or multi-label (auto: from the train split's labels).")
    val_fraction: float = setting(0.1, help="Share of train carved out as val when the manifest has none.")
    memory_budget_gb: float = setting(4.0, help="Frames up to this size are held in memory, else re-read each epoch.")
    seed: int = setting(0, help="Seed of initialisation, shuffling, augmentation and dropout.")
    deterministic: bool = setting(False, help="torch deterministic algorithms (slower on GPU).")
    device: Device = setting("auto", help="Training device.")

    def __post_init__(self) -> None:
        check_choice(self, "frames_from", self.frames_from, FramesFrom)
        check_choice(self, "device", self.device, Device)
        check_choice(self, "task", self.task, Task)
        check_choice(self, "head_init", self.head_init, HeadInit)
        parse_unfreeze(self.unfreeze)
        parse_head_options(self.head_options, self.head)
        for name in ("epochs", "batch_size", "accumulate", "max_frames", "patience"):
            check(self, name, getattr(self, name) >= 1, "must be >= 1")
        check(self, "lr", self.lr > 0, "must be > 0")
        check(self, "backbone_lr_ratio", self.backbone_lr_ratio >= 0, "must be >= 0 (0 freezes the tower's values)")
        check(self, "layer_decay", 0 < self.layer_decay <= 1, "must be in (0, 1]")
        check(self, "weight_decay", self.weight_decay >= 0, "must be >= 0")
        check(self, "beta1", 0 <= self.beta1 < 1, "must be in [0, 1)")
        check(self, "beta2", 0 <= self.beta2 < 1, "must be in [0, 1)")
        check(self, "warmup_epochs", self.warmup_epochs >= 0, "must be >= 0")
        check(self, "grad_clip", self.grad_clip > 0, "must be > 0")
        check(self, "crop_scale_min", 0 < self.crop_scale_min <= 1, "must be in (0, 1]")
        check(self, "val_fraction", 0 < self.val_fraction < 1, "must be in (0, 1)")
        check(self, "memory_budget_gb", self.memory_budget_gb >= 0, "must be >= 0")

    @property
    def unfrozen_blocks(self) -> int | None:
        return parse_unfreeze(self.unfreeze)

    @property
    def backbone_lr(self) -> float:
        return self.lr * self.backbone_lr_ratio
