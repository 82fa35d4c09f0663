"""The `s3d` view: torchvision's S3D on windows of `clip_len` frames at `fps`, one row per window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...fields import check, setting
from .base import View, ViewContext, register_view

S3D_MIN_FRAMES = 14  # torchvision's S3D_Weights meta "min_temporal_size"


@dataclass(frozen=True)
class S3dConfig:
    """torchvision's S3D on clip windows: `clip_len` frames at `fps`, a window every `stride` frames.

    Defaults follow torchvision's Kinetics-400 recipe (15 fps; resize 256x256, centre crop 224) with
    32-frame windows (2.1 s, as CoCLR/CVTCL use), not overlapping."""

    weights: str = setting(
        "kinetics400",
        help="S3D weights: 'kinetics400' (torchvision's, from the torch hub cache), a local file, or 'none'.",
    )
    fps: float = setting(15.0, help="Frame rate of S3D windows.")
    clip_len: int = setting(32, help=f"Frames per S3D window (>= {S3D_MIN_FRAMES}, S3D's temporal pooling).")
    stride: int = setting(32, help="Frames between window starts.")
    seed: int = setting(0, help="Seed of the random weights with --s3d-weights none (recorded).")

    def __post_init__(self) -> None:
        check(self, "fps", self.fps > 0, "must be > 0")
        check(
            self, "clip_len", self.clip_len >= S3D_MIN_FRAMES, f"must be >= {S3D_MIN_FRAMES} (S3D's temporal pooling)"
        )
        check(self, "stride", self.stride >= 1, "must be >= 1")


@register_view("s3d")
class S3dView(View):
    settings = S3dConfig

    @classmethod
    def tiny_settings(cls) -> Any:
        return S3dConfig(weights="none", fps=4.0, clip_len=14, stride=14)

    def load_model(self, settings: S3dConfig, ctx: ViewContext) -> Any:
        from ..backbones import create_backbone

        return create_backbone(
            "s3d", config=settings, device=ctx.device, dtype=ctx.dtype, allow_download=ctx.allow_download
        )

    def local_weights(self, *, every_tag: bool = False) -> list | None:
        from ..local_weights import s3d_weights

        return s3d_weights()

    def prepare_twin(self, model: Any) -> Any:
        from ..decode_process import PrepareOnly

        return PrepareOnly.of(model)

    def consumer(self, settings: S3dConfig, ctx: ViewContext, *, model: Any, decode_model: Any, views: tuple[str, ...]):
        from ..consumers import S3dWindows

        return S3dWindows(model, settings, batch_frames=ctx.batch_size)

    def identity(self, settings: S3dConfig, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        return model.identity()

    def rows_in(self, chunk: Any) -> int:
        return len(chunk.data) * chunk.data.shape[1]  # a window costs its frames

    def weights_files(self, settings: S3dConfig) -> tuple[str | None, ...]:
        return (settings.weights,)

    def describe(self, identity: dict) -> tuple[str, str, str]:
        every = f"{identity['clip_len']} frames at {identity['fps']} fps, stride {identity['stride']}"
        return "s3d", identity.get("weights", ""), every
