"""The `clip` view: open_clip's image tower on the sampled frames (`--fps` / `--num-frames`), one row
per sample time; its text tower embeds the label vocabulary (text.h5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...fields import check, setting
from .base import SampledFramesView, ViewContext, register_view


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


@register_view("clip")
class ClipView(SampledFramesView):
    settings = ClipConfig
    embeds_labels = True
    default = True  # --views not given: clip

    @classmethod
    def tiny_settings(cls) -> Any:
        return ClipConfig(model="vidcache-tiny", pretrained="none")

    def load_model(self, settings: ClipConfig, ctx: ViewContext) -> Any:
        from ..backbones import create_backbone

        return ctx.shared(
            ("clip", settings),
            lambda: create_backbone(
                "clip", config=settings, device=ctx.device, dtype=ctx.dtype, allow_download=ctx.allow_download
            ),
        )

    def weights_files(self, settings: ClipConfig) -> tuple[str | None, ...]:
        return (settings.pretrained,)

    def local_weights(self, *, every_tag: bool = False) -> list | None:
        from ..local_weights import clip_weights

        return clip_weights(every_tag=every_tag)
