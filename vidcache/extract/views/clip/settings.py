"""The `clip` view's settings (the `--clip-*` flags)."""

from __future__ import annotations

from dataclasses import dataclass

from ....fields import check, setting


@dataclass(frozen=True)
class ClipConfig:
    """The open_clip image tower used for the `clip` view."""

    model: str = setting("ViT-B-32", help="open_clip architecture or hf-hub:org/repo.")
    pretrained: str = setting(
        "openai", help="open_clip tag, local weights file (e.g. a fine-tuned backbone), or 'none' for random weights."
    )
    seed: int = setting(0, help="Seed of the random weights with --clip-pretrained none (recorded).")

    def __post_init__(self) -> None:
        check(self, "model", bool(self.model), "must not be empty")
        check(self, "pretrained", bool(self.pretrained), "must not be empty; use 'none' for random weights")
