"""The `video` view: a transformers video encoder on clip windows, one row per clip."""

from __future__ import annotations

import os
from typing import Any

from ..base import View, ViewContext, register_view
from .families import TINY_PREFIX
from .settings import VideoConfig


@register_view("video")
class VideoView(View):
    settings = VideoConfig
    embeds_labels = True  # X-CLIP's text tower embeds the label vocabulary; the other families have none

    @classmethod
    def tiny_settings(cls) -> Any:
        return VideoConfig(model=f"{TINY_PREFIX}videomae", fps=4.0)

    def has_text_tower(self, settings: VideoConfig) -> bool:
        from .families import model_type_of

        return model_type_of(settings.model) == "xclip"

    def load_model(self, settings: VideoConfig, ctx: ViewContext) -> Any:
        from .model import HfVideoEncoder

        return HfVideoEncoder(config=settings, device=ctx.device, dtype=ctx.dtype, allow_download=ctx.allow_download)

    def prepare_twin(self, model: Any) -> Any:
        from .consumer import twin_of

        return twin_of(model)

    def consumer(
        self, settings: VideoConfig, ctx: ViewContext, *, model: Any, decode_model: Any, views: tuple[str, ...]
    ):
        from .consumer import video_windows

        return video_windows(model, batch_frames=ctx.batch_size)

    def identity(self, settings: VideoConfig, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        return model.identity()

    def rows_in(self, chunk: Any) -> int:
        return len(chunk.data) * chunk.data.shape[1]  # a clip costs its frames

    def weights_files(self, settings: VideoConfig) -> tuple[str | None, ...]:
        if not os.path.isdir(settings.model):
            return ()
        return tuple(
            os.path.join(settings.model, n)
            for n in sorted(os.listdir(settings.model))
            if n.endswith((".safetensors", ".bin"))
        )

    def describe(self, identity: dict) -> tuple[str, str, str]:
        every = f"{identity['frames_per_clip']} frames at {identity['fps']:g} fps, stride {identity['stride']}"
        return f"{identity['family']}: {identity['model']}", identity.get("weights_kind", ""), every
