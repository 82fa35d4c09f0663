"""torchvision's S3D on clip windows for the `s3d` view: one 1024-d pooled embedding per window.

The embedding is what S3D's classifier sees: `mean(avgpool(features(x)))`. The classifier is a
1×1×1 convolution, so applying it to the embedding gives torchvision's logits exactly (the tests
use this). Preprocessing is torchvision's Kinetics-400 recipe: resize to 256×256, centre crop 224,
Kinetics mean/std; resize and crop run on uint8 in the decode workers, normalisation batched.
"""

from __future__ import annotations

import contextlib
import importlib

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ....device import autocast_dtype, to_device
from ....errors import ConfigError
from ...encoder import FrameEncoder
from ...weights import load_state_dict_file, resolve_torchvision_weights, sha256_file, state_dict_sha256
from .settings import S3dConfig

RESIZE_HW = (256, 256)
CROP_HW = (224, 224)


def s3d_prepare(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 → 3×224×224 uint8 (squash-resize to 256×256, centre crop). Module-level so a decode
    process can run it without the model."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    image = TF.resize(image, list(RESIZE_HW), interpolation=InterpolationMode.BILINEAR, antialias=True)
    return TF.center_crop(image, list(CROP_HW))


def _s3d_module():
    return importlib.import_module("torchvision.models.video.s3d")


def load_s3d(config: S3dConfig, *, allow_download: bool = False) -> tuple[torch.nn.Module, str, str, str]:
    """Build S3D; return (model, weights kind, weights path, sha256 of the weights file or state)."""
    module = _s3d_module()
    entry = module.S3D_Weights.KINETICS400_V1
    if config.weights == "none":
        torch.manual_seed(config.seed)
        model = module.s3d(weights=None, num_classes=len(entry.meta["categories"]))
        return model.eval(), "random", "", state_dict_sha256(model)
    if config.weights == "kinetics400":
        path = resolve_torchvision_weights(
            entry.url,
            option="--s3d-weights",
            what="S3D Kinetics-400",
            alternatives="or --s3d-weights none (random weights)",
            allow_download=allow_download,
        )
        kind = "torchvision"
    else:
        path = config.weights
        import os

        if not os.path.isfile(path):
            from ....errors import MissingWeightsError

            raise MissingWeightsError(
                f"--s3d-weights {path} does not exist; give a local S3D state dict, 'kinetics400' "
                "(torchvision's weights in the torch hub cache) or 'none'"
            )
        kind = "file"
    state = load_state_dict_file(path)
    num_classes = state["classifier.1.weight"].shape[0] if "classifier.1.weight" in state else 400
    model = module.s3d(weights=None, num_classes=num_classes)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # same names, other shapes: another network's weights
        first = (str(error).strip().splitlines() or [""])[-1].strip()[:200]
        raise ConfigError(f"--s3d-weights {path} is not an S3D state dict ({first})") from None
    if missing or unexpected:
        raise ConfigError(
            f"--s3d-weights {path} is not an S3D state dict (missing {list(missing)[:3]}, "
            f"unexpected {list(unexpected)[:3]})"
        )
    return model.eval(), kind, path, sha256_file(path)


class S3dEncoder(FrameEncoder):
    view = "s3d"
    feature_dim = 1024
    mean = (0.43216, 0.394666, 0.37645)
    std = (0.22803, 0.22145, 0.216989)

    def __init__(self, *, config: S3dConfig, device: torch.device, dtype: str = "float16", allow_download=False):
        self.config = config
        self.device = device
        self.store_dtype = dtype
        self.model, self.weights_kind, self.weights_path, self.weights_sha256 = load_s3d(
            config, allow_download=allow_download
        )
        self.model.to(device)
        self.amp_dtype = autocast_dtype(device)
        self.max_short_side = max(RESIZE_HW)

    @property
    def random_weights(self) -> bool:
        return self.weights_kind == "random"

    process_prepare = staticmethod(s3d_prepare)  # `prepare` without the model, for decode processes

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        return s3d_prepare(rgb)

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> np.ndarray:
        """[N, T, 3, 224, 224] uint8 windows → [N, 1024] float32."""
        clips = to_device(batch, self.device).float().div_(255.0)
        mean = torch.tensor(self.mean, device=clips.device).view(1, 1, 3, 1, 1)
        std = torch.tensor(self.std, device=clips.device).view(1, 1, 3, 1, 1)
        clips = ((clips - mean) / std).permute(0, 2, 1, 3, 4)  # N, C, T, H, W
        autocast = (
            torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            pooled = self.model.avgpool(self.model.features(clips))
        return pooled.float().mean(dim=(2, 3, 4)).cpu().numpy()

    def identity(self) -> dict:
        return {
            "backbone": "torchvision.s3d",
            "weights": self.config.weights,
            "weights_kind": self.weights_kind,
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256,
            "random_init_seed": self.config.seed if self.random_weights else None,
            "preprocess": {
                "resize_hw": list(RESIZE_HW),
                "crop_hw": list(CROP_HW),
                "interpolation": "bilinear",
                "mean": list(self.mean),
                "std": list(self.std),
            },
            "fps": self.config.fps,
            "clip_len": self.config.clip_len,
            "stride": self.config.stride,
            "embedding": "mean over T,H,W of avgpool(features(x)) (the classifier's input)",
            "dtype": self.store_dtype,
            "normalized": False,
            "feature_dim": self.feature_dim,
        }
