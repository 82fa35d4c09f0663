"""The `s3d` view: torchvision's S3D on windows of `clip_len` frames at `fps`, one row per window."""

from __future__ import annotations

from typing import Any

from ..base import View, ViewContext, register_view
from .settings import S3D_MIN_FRAMES, S3dConfig

__all__ = ["S3D_MIN_FRAMES", "S3dConfig", "S3dView"]


@register_view("s3d")
class S3dView(View):
    settings = S3dConfig

    @classmethod
    def tiny_settings(cls) -> Any:
        return S3dConfig(weights="none", fps=4.0, clip_len=14, stride=14)

    def load_model(self, settings: S3dConfig, ctx: ViewContext) -> Any:
        from .model import S3dEncoder

        return S3dEncoder(config=settings, device=ctx.device, dtype=ctx.dtype, allow_download=ctx.allow_download)

    def prepare_twin(self, model: Any) -> Any:
        from ...encoder import PrepareOnly

        return PrepareOnly.of(model)

    def consumer(self, settings: S3dConfig, ctx: ViewContext, *, model: Any, decode_model: Any, views: tuple[str, ...]):
        from .consumer import S3dWindows

        return S3dWindows(model, settings, batch_frames=ctx.batch_size)

    def identity(self, settings: S3dConfig, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        return model.identity()

    def rows_in(self, chunk: Any) -> int:
        return len(chunk.data) * chunk.data.shape[1]  # a window costs its frames

    def weights_files(self, settings: S3dConfig) -> tuple[str | None, ...]:
        return (settings.weights,)

    def local_weights(self, *, every_tag: bool = False) -> list | None:
        from .local import s3d_weights

        return s3d_weights()

    def describe(self, identity: dict) -> tuple[str, str, str]:
        every = f"{identity['clip_len']} frames at {identity['fps']} fps, stride {identity['stride']}"
        return "s3d", identity.get("weights", ""), every
