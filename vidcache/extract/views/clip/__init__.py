"""The `clip` view: open_clip's image tower on the sampled frames (`--fps` / `--num-frames`), one row
per sample time; its text tower embeds the label vocabulary (text.h5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..base import SampledFramesView, ViewContext, register_view
from .settings import ClipConfig

__all__ = ["ClipConfig", "ClipView"]


@register_view("clip")
class ClipView(SampledFramesView):
    settings = ClipConfig
    embeds_labels = True
    default = True  # --views not given: clip

    @classmethod
    def tiny_settings(cls) -> Any:
        return ClipConfig(model="vidcache-tiny", pretrained="none")

    def load_model(self, settings: ClipConfig, ctx: ViewContext) -> Any:
        from .model import ClipEncoder

        return ctx.shared(
            ("clip", settings),
            lambda: ClipEncoder(config=settings, device=ctx.device, dtype=ctx.dtype, allow_download=ctx.allow_download),
        )

    def keep_text_tower(self, encoder: Any, *, cache_dir: Path, identity: dict, prompts: list[str]) -> str:
        from .model import keep_numpy_text_tower

        return keep_numpy_text_tower(encoder, cache_dir=cache_dir, identity=identity, prompts=prompts)

    def weights_files(self, settings: ClipConfig) -> tuple[str | None, ...]:
        return (settings.pretrained,)

    def local_weights(self, *, every_tag: bool = False) -> list | None:
        from .local import clip_weights

        return clip_weights(every_tag=every_tag)
