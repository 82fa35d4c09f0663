"""`vidcache models` for the s3d view: torchvision's Kinetics-400 weights in the torch hub cache."""

from __future__ import annotations

from ...local_weights import WeightsEntry, torch_hub_entry


def s3d_weights() -> list[WeightsEntry]:
    from .model import _s3d_module

    url = _s3d_module().S3D_Weights.KINETICS400_V1.url
    return [torch_hub_entry("s3d", "s3d", "kinetics400", url, "--views s3d --s3d-weights kinetics400")]
