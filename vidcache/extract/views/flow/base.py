"""What every optical-flow method provides to the extract loop, and the registry that picks one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from ....registry import Registry

if TYPE_CHECKING:  # numpy loads with a flow method, not with the view registry (`vidcache status`)
    import numpy as np

FLOW_METHODS = Registry("flow method", option="--flow-method")
register_flow_method = FLOW_METHODS.register
# One line per method (its file is imported when the method is first used; --flow-method's choices)
FLOW_METHODS.register_lazy("tvl1", "vidcache.extract.views.flow.tvl1:TVL1Flow")
FLOW_METHODS.register_lazy("raft", "vidcache.extract.views.flow.raft:RaftFlow")


class FlowMethod(ABC):
    """Dense flow between frame pairs at the working size.

    Factories are called as `FLOW_METHODS.create(name, config=FlowConfig, device=torch.device,
    allow_download=bool)`. `compute` is called from several decode worker threads at once and must be
    thread-safe.
    """

    method: str

    @abstractmethod
    def compute(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """first, second: [N, H, W, 3] uint8 RGB frames at the working size (same H, W);
        returns [N, 2, H, W] float32 flow (dx, dy) in pixels, first → second (OpenCV convention:
        first(y, x) ≈ second(y + dy, x + dx))."""

    @abstractmethod
    def identity(self) -> dict:
        """Everything that determines the numbers: method, parameters, weights path/sha256 or random seed."""


def check_pairs(first: np.ndarray, second: np.ndarray) -> None:
    """Fail loudly on a shape/dtype mix-up instead of computing flow of the wrong thing."""
    import numpy as np

    for name, frames in (("first", first), ("second", second)):
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"{name} must be [N, H, W, 3] uint8 RGB, got {frames.shape} {frames.dtype}")
    if first.shape != second.shape:
        raise ValueError(f"frame pairs differ in shape: {first.shape} vs {second.shape}")
