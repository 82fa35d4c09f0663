"""The `flow` and `motion` views' settings (the `--flow-*` and `--motion-*` flags)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from ....fields import check, check_choice, setting
from .base import FLOW_METHODS

FlowMethodName = FLOW_METHODS.choices()  # tvl1, raft: the registry's names
RaftModel = Literal["small", "large"]


@dataclass(frozen=True)
class FlowConfig:
    """Optical flow between the frame on screen at each sample time and the one `step` frames later.

    Fields are computed at `short_side` (aspect kept), stored as the centre `short_side` square,
    quantised to uint8 within ±`bound_px` (pixels of the stored resolution). The `motion` view is a
    histogram of flow orientation × magnitude over a `motion_grid` × `motion_grid` grid of each field."""

    method: FlowMethodName = setting("tvl1", help="Optical flow method.")
    raft_model: RaftModel = setting("small", help="RAFT size (--flow-method raft).")
    weights: str = setting(
        "default",
        help="RAFT weights: 'default' (torchvision's, from the torch hub cache), a local file, or 'none'.",
    )
    fps: float | None = setting(None, help="Flow sample rate (default: the --fps/--num-frames times).")
    step: int = setting(1, help="Frames between the two frames of a pair.")
    short_side: int = setting(128, help="Flow resolution (short side, px).")
    bound_px: float = setting(20.0, flag="--flow-bound", help="Quantisation bound (± px of the stored field).")
    motion_grid: int = setting(4, flag="--motion-grid", help="Motion descriptor grid (cells per side).")
    motion_orientations: int = setting(8, flag="--motion-orientations", help="Motion descriptor orientation bins.")
    motion_magnitude_edges_px: tuple[float, ...] = setting(
        (0.25, 1.0, 3.0, 8.0), flag="--motion-magnitude-edges", help="Motion magnitude bin edges (px, increasing)."
    )
    seed: int = setting(0, help="Seed of the random RAFT weights with --flow-weights none (recorded).")

    def __post_init__(self) -> None:
        check_choice(self, "method", self.method, FlowMethodName)
        check_choice(self, "raft_model", self.raft_model, RaftModel)
        check(self, "fps", self.fps is None or self.fps > 0, "must be > 0")
        check(self, "step", self.step >= 1, "must be >= 1")
        check(self, "short_side", self.short_side >= 16, "must be >= 16")
        check(self, "bound_px", self.bound_px > 0, "must be > 0")
        check(self, "motion_grid", self.motion_grid >= 1, "must be >= 1")
        check(self, "motion_orientations", self.motion_orientations >= 1, "must be >= 1")
        edges = self.motion_magnitude_edges_px
        increasing = bool(edges) and edges[0] > 0 and all(b > a for a, b in itertools.pairwise(edges))
        check(self, "motion_magnitude_edges_px", increasing, "must be positive and increasing")
