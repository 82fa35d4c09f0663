"""What an imported row's start (and end) time is, for `vidcache import`: the rule is chosen by the
layout and the video_features output, recorded in the view identity as `timestamps`, and applied
to each video's timestamps file.

video_features (github.com/v-iashin/video_features) writes `timestamps_ms` with different meanings:

- i3d (`rgb`, `flow`): one value per stack, `cv2.CAP_PROP_POS_MSEC` read after the stack's
  `stack_size + 1`-th frame, i.e. the time of the frame *after* the stack's last RGB frame: the
  stack's END. A stack starts `stack_size / fps` earlier (`stack_size` 64 by default).
- frame-wise extractors (`clip`, `resnet`, `timm`, `raft`): the time of each frame, the row's start;
  there is no end.
- vggish writes no timestamps: its rows are VGGish's 0.96 s examples, example k spanning
  [0.96 k, 0.96 k + 0.96).

Times are seconds from the video's first frame (OpenCV's clock), as video_features gives them.
"""

from __future__ import annotations

import numpy as np

I3D_FEATURES = ("rgb", "flow", "rgb+flow")
FRAMEWISE_FEATURES = ("clip", "resnet", "timm", "raft")
VGGISH_EXAMPLE_S = 0.96
DEFAULT_I3D_STACK_FRAMES = 64  # video_features' i3d `stack_size` default

RULES = {
    "index": "no timestamps: row k is timed k s (an index, not a time)",
    "given": "the timestamps file's values, as row starts; no end times",
    "frame": "video_features frame-wise timestamps_ms / 1000: the time of each row's frame; no end times",
    "i3d_stack": (
        "video_features i3d: start = timestamps_ms / 1000 - i3d_stack_frames / fps (the stack's first frame), "
        "end = timestamps_ms / 1000 (the frame after its last one)"
    ),
    "vggish_example": f"VGGish examples: start = {VGGISH_EXAMPLE_S} k s from the audio's start, end = start + 0.96",
}


class TimingError(Exception):
    """A video whose timestamps do not fit its rule; `reason` is recorded as its failure."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


def timing_rule(*, layout: str, feature: str, given: bool) -> str:
    """The rule (a key of RULES) for a view whose videos have a timestamps file when `given`."""
    if layout == "video_features" and feature == "vggish":
        return "vggish_example"
    if not given:
        return "index"
    if layout == "video_features" and feature in I3D_FEATURES:
        return "i3d_stack"
    if layout == "video_features" and feature in FRAMEWISE_FEATURES:
        return "frame"
    return "given"


def row_times(
    rule: str, stamps_s: np.ndarray | None, *, rows: int, fps: float | None, stack_frames: int, source: str
) -> np.ndarray:
    """[T] row starts, or [T, 2] starts and ends, for one video under `rule`."""
    if rule == "vggish_example":
        starts = np.arange(rows, dtype=np.float64) * VGGISH_EXAMPLE_S
        return np.stack([starts, starts + VGGISH_EXAMPLE_S], axis=1)
    if rule == "index" or stamps_s is None:
        return np.arange(rows, dtype=np.float64)
    if rule != "i3d_stack":
        return stamps_s
    if fps is None:
        raise TimingError(
            f"no fps file next to {source}: i3d timestamps are stack ends, and the stack's start needs the fps"
        )
    span_s = stack_frames / fps
    starts = stamps_s - span_s
    if starts[0] < -0.5 / fps:  # the first stack ends at stack_frames / fps at the earliest
        raise TimingError(
            f"{source}: the first stack ends at {stamps_s[0] * 1000:.1f} ms, before {stack_frames} frames at "
            f"{fps:g} fps ({span_s * 1000:.1f} ms); give --i3d-stack-frames the --stack_size they were made with"
        )
    return np.stack([np.maximum(starts, 0.0), stamps_s], axis=1)  # clamp: a millisecond rounded below 0
