"""The `clip` view's settings (the `--clip-*` flags)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ....fields import check, check_choice, setting

ClipPrecision = Literal["autocast", "bf16-weights", "fp32"]


@dataclass(frozen=True)
class ClipConfig:
    """The open_clip image tower used for the `clip` view."""

    model: str = setting("ViT-B-32", help="open_clip architecture or hf-hub:org/repo.")
    pretrained: str = setting(
        "openai", help="open_clip tag, local weights file (e.g. a fine-tuned backbone), or 'none' for random weights."
    )
    seed: int = setting(0, help="Seed of the random weights with --clip-pretrained none (recorded).")
    precision: ClipPrecision = setting(
        "autocast",
        help="Image tower arithmetic: autocast (bf16/fp16 autocast on CUDA, fp32 on CPU), bf16-weights (the "
        "weights and activations in bf16), fp32. Part of the view's identity (the rows differ slightly).",
    )
    compile: bool = setting(
        False, flag="--compile", help="torch.compile the image tower (faster on GPU after a warm-up; recorded)."
    )

    def __post_init__(self) -> None:
        check(self, "model", bool(self.model), "must not be empty")
        check(self, "pretrained", bool(self.pretrained), "must not be empty; use 'none' for random weights")
        check_choice(self, "precision", self.precision, ClipPrecision)
