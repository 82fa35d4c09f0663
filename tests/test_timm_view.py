"""The `timm` view against timm's own eval pipeline: `timm.data.create_transform` on a PIL image and
the model's forward, on the same random-initialised model."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from vidcache.errors import ConfigError
from vidcache.extract.views.timm_image import TimmConfig, TimmEncoder


@pytest.mark.parametrize(
    ("model", "image_size"), [("vit_tiny_patch16_224", 64), ("resnet18", None), ("convnext_atto", None)]
)
def test_features_match_timms_own_transform_and_forward(model, image_size):
    config = TimmConfig(model=model, pretrained="none", image_size=image_size, seed=3)
    encoder = TimmEncoder(config=config, device=torch.device("cpu"), dtype="float32")
    torch.manual_seed(3)
    kwargs = {"img_size": image_size} if image_size else {}
    reference = timm.create_model(model, pretrained=False, num_classes=0, **kwargs).eval()
    data = timm.data.resolve_model_data_config(reference)
    if image_size:
        data["input_size"] = (3, image_size, image_size)
    transform = timm.data.create_transform(**data, is_training=False)
    rng = np.random.default_rng(0)
    frames = [
        np.kron(rng.integers(0, 255, (h // 8, w // 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
        for h, w in ((120, 160), (240, 136), (96, 400))
    ]
    ours = encoder.encode(torch.stack([encoder.prepare(f) for f in frames]))
    with torch.no_grad():
        expected = reference(torch.stack([transform(Image.fromarray(f)) for f in frames])).numpy()
    cosine = (ours * expected).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > 0.995, cosine  # PIL vs tensor resize: a couple of grey levels apart
    identity = encoder.identity()
    assert identity["feature_dim"] == ours.shape[1] == reference.num_features
    assert identity["weights_kind"] == "random" and identity["random_init_seed"] == 3


def test_unknown_model_and_missing_weights_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="--timm-model 'no_such_net': unknown to timm"):
        TimmEncoder(config=TimmConfig(model="no_such_net", pretrained="none"), device="cpu", dtype="float32")
    with pytest.raises(Exception, match="no such file"):
        TimmEncoder(
            config=TimmConfig(model="resnet18", pretrained=str(tmp_path / "w.safetensors")),
            device="cpu",
            dtype="float32",
        )


def test_weights_of_another_shape_are_a_one_line_error(tmp_path):
    """A state dict with the model's names but other shapes (another size of the network) is a
    ConfigError naming the file, not torch's multi-line RuntimeError (exit 70)."""
    from safetensors.torch import save_file

    state = timm.create_model("resnet18", pretrained=False, num_classes=0).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):  # what torch says about it, the reference
        timm.create_model("resnet18", pretrained=False, num_classes=0).load_state_dict(
            {**state, "conv1.weight": torch.zeros(32, 3, 7, 7)}, strict=False
        )
    path = tmp_path / "other.safetensors"
    save_file({**{k: v.contiguous() for k, v in state.items()}, "conv1.weight": torch.zeros(32, 3, 7, 7)}, str(path))
    with pytest.raises(ConfigError, match=r"--timm-pretrained .*other.safetensors: not weights of resnet18 .*size"):
        TimmEncoder(config=TimmConfig(model="resnet18", pretrained=str(path)), device="cpu", dtype="float32")
