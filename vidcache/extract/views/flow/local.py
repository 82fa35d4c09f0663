"""`vidcache models` for the flow view: torchvision's RAFT weights in the torch hub cache."""

from __future__ import annotations

from ...local_weights import WeightsEntry, torch_hub_entry


def flow_weights() -> list[WeightsEntry]:
    from .raft import _torchvision_weights

    out = []
    for size in ("small", "large"):
        flags = f"--views flow --flow-method raft --flow-raft-model {size}"
        out.append(torch_hub_entry("flow", f"raft-{size}", "default", _torchvision_weights(size).url, flags))
    return out
