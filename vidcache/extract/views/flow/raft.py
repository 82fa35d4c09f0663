"""torchvision's RAFT (small or large): learned flow, on the run's device, fp32."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ....device import to_device
from ....errors import ConfigError, MissingWeightsError
from ...weights import (
    load_state_dict_file,
    resolve_torchvision_weights,
    sha256_file,
    state_dict_sha256,
)
from .base import FlowMethod, check_pairs
from .settings import FlowConfig

NUM_FLOW_UPDATES = 12  # torchvision's default and the number its weights were evaluated with
# torchvision's correlation pyramid needs feature maps of at least 16 × 16, i.e. inputs of 128 × 128;
# smaller working sizes are padded up to it (and cropped back), not resized, so flow stays in pixels.
MIN_INPUT_SIDE = 128
MULTIPLE = 8  # the encoders downsample by 8


@dataclass(frozen=True)
class RaftWeights:
    kind: str  # "torchvision" (the default weights in the torch hub cache), "file" or "random"
    name: str  # torchvision weights enum name, file path or "none"
    path: str | None


def _torchvision_weights(raft_model: str):
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights

    # The "V2" weights: trained on FlyingChairs + FlyingThings (+ Sintel/KITTI/HD1K for large), the
    # general-purpose ones torchvision recommends as DEFAULT.
    return Raft_Small_Weights.C_T_V2 if raft_model == "small" else Raft_Large_Weights.C_T_SKHT_V2


def resolve_raft_weights(config: FlowConfig, *, allow_download: bool = False) -> RaftWeights:
    """`--flow-weights` → a local file, or random init; never touches the network unless allowed."""
    if config.weights == "none":
        return RaftWeights("random", "none", None)
    if config.weights != "default":
        if not os.path.isfile(config.weights):
            raise MissingWeightsError(
                f"--flow-weights file {config.weights} does not exist; give the path of a torchvision RAFT "
                f"state dict (.pth/.safetensors), 'default', or 'none'"
            )
        return RaftWeights("file", os.path.abspath(config.weights), os.path.abspath(config.weights))
    weights = _torchvision_weights(config.raft_model)
    path = resolve_torchvision_weights(
        weights.url,
        option="--flow-weights",
        what=f"RAFT-{config.raft_model}",
        alternatives="--flow-weights none (random weights), or --flow-method tvl1 (no weights)",
        allow_download=allow_download,
    )
    return RaftWeights("torchvision", f"{type(weights).__name__}.{weights.name}", path)


def load_raft(config: FlowConfig, *, allow_download: bool = False):
    """Build RAFT for `config`; return (model in eval mode on CPU, weights, weights_sha256)."""
    from torchvision.models.optical_flow import raft_large, raft_small

    weights = resolve_raft_weights(config, allow_download=allow_download)
    build = raft_small if config.raft_model == "small" else raft_large
    # fork_rng: seed the random init without moving the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build(weights=None, progress=False)
    if weights.path is not None:
        try:
            model.load_state_dict(load_state_dict_file(weights.path))
        except RuntimeError as error:  # wrong architecture or not a torchvision RAFT checkpoint
            first = str(error).splitlines()[0]
            raise ConfigError(
                f"--flow-weights {weights.path} is not a torchvision raft_{config.raft_model} state dict ({first})"
            ) from None
    model.eval()
    weights_sha256 = state_dict_sha256(model) if weights.path is None else sha256_file(weights.path)
    return model, weights, weights_sha256


class RaftFlow(FlowMethod):
    """RAFT on uint8 RGB pairs, normalised as the weights' transforms do ([0, 255] → [-1, 1]).

    Inputs are replicate-padded (evenly on both sides) up to multiples of 8 and at least 128, and the
    last of `num_flow_updates` predictions is cropped back. fp32 throughout: RAFT's iterative updates
    are unstable in fp16.
    """

    method = "raft"

    def __init__(
        self,
        *,
        config: FlowConfig,
        device: torch.device | str = "cpu",
        allow_download: bool = False,
        num_flow_updates: int = NUM_FLOW_UPDATES,
    ):
        self.config = config
        self.device = torch.device(device)
        self.num_flow_updates = num_flow_updates
        self.model, self.weights, self.weights_sha256 = load_raft(config, allow_download=allow_download)
        self.model.to(self.device)
        # One model, one device: decode workers take turns (the GPU serialises the work anyway).
        self._lock = threading.Lock()

    @property
    def random_weights(self) -> bool:
        return self.weights.kind == "random"

    @staticmethod
    def _padding(h: int, w: int) -> tuple[int, int, int, int]:
        def split(size: int) -> tuple[int, int]:
            target = max(MIN_INPUT_SIDE, -(-size // MULTIPLE) * MULTIPLE)
            before = (target - size) // 2
            return before, target - size - before

        top, bottom = split(h)
        left, right = split(w)
        return left, right, top, bottom  # F.pad order: last dim first

    def _normalise(self, frames: np.ndarray) -> torch.Tensor:
        # uint8 crosses to the device (4× fewer bytes than float), NHWC → NCHW happens there
        pixels = to_device(torch.from_numpy(np.ascontiguousarray(frames)), self.device).permute(0, 3, 1, 2)
        # = Raft_*_Weights.*.transforms(): convert_image_dtype to [0, 1], normalize(mean=0.5, std=0.5), and
        # contiguous NCHW as they return it: the permuted (channels-last) layout picks other conv kernels,
        # whose last-bit differences RAFT's 12 iterations grow to ~1e-5 px.
        return pixels.float().div_(255.0).sub_(0.5).div_(0.5).contiguous()

    def compute(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        check_pairs(first, second)
        n, h, w, _ = first.shape
        if n == 0:
            return np.zeros((0, 2, h, w), np.float32)
        left, right, top, bottom = self._padding(h, w)
        with self._lock, torch.inference_mode():
            image1 = F.pad(self._normalise(first), (left, right, top, bottom), mode="replicate")
            image2 = F.pad(self._normalise(second), (left, right, top, bottom), mode="replicate")
            predictions = self.model(image1, image2, num_flow_updates=self.num_flow_updates)
            flow = predictions[-1][:, :, top : top + h, left : left + w]
            return flow.float().cpu().numpy().astype(np.float32, copy=False)

    def identity(self) -> dict:
        return {
            "method": "raft",
            "implementation": f"torchvision.models.optical_flow.raft_{self.config.raft_model}",
            "raft_model": self.config.raft_model,
            "weights_kind": self.weights.kind,
            "weights": self.weights.name if self.weights.kind != "file" else "file",
            "weights_path": self.weights.path or "",
            "weights_sha256": self.weights_sha256,
            "random_init_seed": self.config.seed if self.random_weights else None,
            "num_flow_updates": self.num_flow_updates,
            "input": "RGB uint8 / 255 * 2 - 1, replicate-padded to multiples of 8 (at least 128), cropped back",
            "dtype": "float32",
        }
