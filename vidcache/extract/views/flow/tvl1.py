"""OpenCV's Dual TV-L1 optical flow (the classic two-stream / I3D flow), CPU, weights-free."""

from __future__ import annotations

import threading

import numpy as np

from ....errors import ConfigError
from .base import FlowMethod, check_pairs
from .settings import FlowConfig

# Getter name → identity key. Read back from a fresh object rather than hard-coded, so the identity
# says what OpenCV actually ran with if its defaults ever change.
_PARAMETERS = {
    "tau": "getTau",
    "lambda": "getLambda",
    "theta": "getTheta",
    "scales": "getScalesNumber",
    "warps": "getWarpingsNumber",
    "epsilon": "getEpsilon",
    "inner_iterations": "getInnerIterations",
    "outer_iterations": "getOuterIterations",
    "scale_step": "getScaleStep",
    "gamma": "getGamma",
    "median_filtering": "getMedianFiltering",
    "use_initial_flow": "getUseInitialFlow",
}


def _optflow():
    try:
        import cv2
    except ImportError:
        cv2 = None
    if cv2 is None or not hasattr(cv2, "optflow"):
        raise ConfigError(
            "--flow-method tvl1 needs OpenCV's contrib modules: pip install 'vidcache[flow]' "
            "(opencv-contrib-python-headless)"
        )
    return cv2


class TVL1Flow(FlowMethod):
    """Dual TV-L1 with OpenCV's default parameters on grayscale frames, one pair at a time.

    cv2.setNumThreads is left alone: it is process-wide (it would also change every other OpenCV
    call in the process), and OpenCV already runs a parallel region that starts while another thread's
    is busy inline in the calling thread, so concurrent decode workers do not oversubscribe the cores.
    """

    method = "tvl1"

    def __init__(self, *, config: FlowConfig, device=None, allow_download: bool = False):
        # `device` and `allow_download` are accepted for the common factory signature: TV-L1 runs on
        # the CPU and has no weights.
        self.config = config
        self._cv2 = _optflow()
        self._local = threading.local()  # a DualTVL1 object keeps per-call buffers: one per thread
        probe = self._cv2.optflow.DualTVL1OpticalFlow_create()
        self.parameters = {key: _plain(getattr(probe, getter)()) for key, getter in _PARAMETERS.items()}

    def _solver(self):
        solver = getattr(self._local, "solver", None)
        if solver is None:
            solver = self._local.solver = self._cv2.optflow.DualTVL1OpticalFlow_create()
        return solver

    def compute(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        check_pairs(first, second)
        cv2 = self._cv2
        solver = self._solver()
        n, h, w, _ = first.shape
        out = np.empty((n, 2, h, w), dtype=np.float32)
        for i in range(n):
            gray1 = cv2.cvtColor(np.ascontiguousarray(first[i]), cv2.COLOR_RGB2GRAY)
            gray2 = cv2.cvtColor(np.ascontiguousarray(second[i]), cv2.COLOR_RGB2GRAY)
            flow = solver.calc(gray1, gray2, None)  # [H, W, 2] (dx, dy)
            out[i] = flow.transpose(2, 0, 1)
        return out

    def identity(self) -> dict:
        return {
            "method": "tvl1",
            "implementation": "cv2.optflow.DualTVL1OpticalFlow",
            "input": "grayscale (cv2.COLOR_RGB2GRAY) uint8",
            "parameters": dict(self.parameters),
        }


def _plain(value):
    """OpenCV getters return numpy/bool scalars; keep the identity JSON-friendly."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    return float(value)
