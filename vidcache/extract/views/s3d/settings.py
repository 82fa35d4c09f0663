"""The `s3d` view's settings (the `--s3d-*` flags)."""

from __future__ import annotations

from dataclasses import dataclass

from ....fields import check, setting

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
