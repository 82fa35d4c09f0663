"""Settings of the `video` view: which transformers video model, and how its clips are cut."""

from __future__ import annotations

from dataclasses import dataclass

from ....fields import check, setting

DEFAULT_MODEL = "microsoft/xclip-base-patch32"


@dataclass(frozen=True)
class VideoConfig:
    """A transformers video encoder (VideoMAE, V-JEPA 2, X-CLIP, TimeSformer, ViViT) on clip windows.

    Frames per clip and input size are the model's own (config and processor); `fps` and `stride`
    default to the family's documented sampling and non-overlapping windows."""

    model: str = setting(
        DEFAULT_MODEL,
        help="A folder saved with save_pretrained (config, weights, processor), a Hugging Face id in the "
        "offline cache (--download fetches it), or vidcache-tiny-FAMILY (a random tiny model: videomae, "
        "vjepa2, xclip, timesformer, vivit).",
    )
    fps: float | None = setting(None, help="Frame rate of the clips; default: the family's documented sampling.")
    stride: int | None = setting(None, help="Frames between clip starts; default: the clip length (no overlap).")
    seed: int = setting(0, help="Seed of the random weights of a vidcache-tiny-FAMILY model (recorded).")

    def __post_init__(self) -> None:
        check(self, "model", bool(self.model), "must not be empty")
        check(self, "fps", self.fps is None or self.fps > 0, "must be > 0")
        check(self, "stride", self.stride is None or self.stride >= 1, "must be >= 1")
