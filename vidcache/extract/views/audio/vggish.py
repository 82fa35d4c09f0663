"""`vggish`: Google's VGGish audio embedding (AudioSet), from the PyTorch port's state dict.

The module below reproduces the architecture with the module names of harritaylor/torchvggish, so
its `vggish-10086976.pth` (weights converted from the TensorFlow release) loads with a strict key
check. The output is the raw 128-d embedding after the last ReLU: the PCA whitening and 8-bit
quantisation of the AudioSet release features are not applied (an affine map plus clipping, which
a linear probe does not need).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import torch
from torch import nn

from ....device import autocast_dtype, to_device
from ....errors import ConfigError, MissingWeightsError
from ...audio.frontend import frontend_identity
from ...weights import sha256_file
from .base import AudioEncoder, check_examples
from .settings import AudioConfig

EMBEDDING_DIM = 128
BATCH_EXAMPLES = 128  # examples per forward pass: bounds activation memory (~0.2 GB of fp32 at the first conv)


class VGGish(nn.Module):
    """VGGish on [N, 1, 96, 64] log-mel examples → [N, 128]; parameter names as torchvggish."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for block in ((64,), (128,), (256, 256), (512, 512)):
            for width in block:
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = width
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, EMBEDDING_DIM),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # N, 512, 6, 4
        # flatten in (H, W, C) order: the TensorFlow weights were trained on NHWC activations
        x = torch.transpose(x, 1, 3)
        x = torch.transpose(x, 1, 2)
        x = x.contiguous().view(x.size(0), -1)
        return self.embeddings(x)


def load_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torch file without unpickling arbitrary objects."""
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigError(
            f"--audio-weights {path} cannot be read as a state dict ({type(exc).__name__}: {detail[:200]})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # common training-checkpoint wrapper
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"--audio-weights {path} is not a state dict (a mapping of names to tensors)")
    return state


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: str) -> None:
    """Strict names and shapes, with the first few differences in the message."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    wrong = [
        f"{name} {tuple(state[name].shape)} (want {shape})"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != shape
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label} {len(items)}: {', '.join(items[:4])}{', ...' if len(items) > 4 else ''}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if items
        ]
        raise ConfigError(
            f"--audio-weights {path} is not a torchvggish VGGish state dict ({'; '.join(parts)}); "
            "use vggish-10086976.pth from github.com/harritaylor/torchvggish releases"
        )


class VGGishEncoder(AudioEncoder):
    feature_dim = EMBEDDING_DIM

    def __init__(self, *, config: AudioConfig, device: torch.device, dtype: str = "float16"):
        if not config.weights:
            raise MissingWeightsError(
                "--audio-encoder vggish needs --audio-weights PATH (the PyTorch VGGish state dict, e.g. "
                "vggish-10086976.pth from github.com/harritaylor/torchvggish releases); or use "
                "--audio-encoder logmel-stats, which needs no weights"
            )
        if not os.path.isfile(config.weights):
            raise MissingWeightsError(
                f"--audio-weights {config.weights} does not exist; give the path of a local VGGish state dict "
                "(vggish-10086976.pth from github.com/harritaylor/torchvggish releases)"
            )
        self.config = config
        self.device = device
        self.store_dtype = dtype
        self.weights_path = os.path.abspath(config.weights)
        with torch.device("meta"):  # no random init of 72M parameters only to overwrite them
            model = VGGish()
        state = load_state_dict(self.weights_path)
        check_state_dict(model, state, config.weights)
        model.load_state_dict({name: tensor.float() for name, tensor in state.items()}, strict=True, assign=True)
        self.weights_sha256 = sha256_file(self.weights_path)
        self.model = model.eval().to(device)
        self.amp_dtype = autocast_dtype(device)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    @torch.inference_mode()
    def encode(self, examples: torch.Tensor, *, batch_size: int = BATCH_EXAMPLES) -> np.ndarray:
        examples = check_examples(examples)
        out = [np.zeros((0, self.feature_dim), np.float32)]
        for start in range(0, examples.shape[0], batch_size):
            batch = to_device(examples[start : start + batch_size].unsqueeze(1).contiguous(), self.device)
            with self._autocast():
                out.append(self.model(batch).float().cpu().numpy())
        return np.concatenate(out)

    def identity(self) -> dict:
        return {
            "encoder": "vggish",
            "architecture": "VGGish (torchvggish module layout, NHWC flatten)",
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "postprocess": "none: raw 128-d embedding after the final ReLU (no PCA whitening, no 8-bit quantisation)",
            "frontend": frontend_identity(),
            "dtype": self.store_dtype,
            "normalized": False,
            "feature_dim": self.feature_dim,
        }
