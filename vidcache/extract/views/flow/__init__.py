"""The `flow` and `motion` views: optical flow between the frame on screen at each sample time and the
one `step` frames later, computed once in the decode workers (`--flow-method`, one file each in
extract/views/flow/); `flow` stores the quantised centre square of each field, `motion` a histogram of its
orientation × magnitude over a grid. Both share the `flow` settings and one decode-side consumer."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..base import View, ViewContext, register_view
from .settings import FlowConfig, FlowMethodName, RaftModel

__all__ = ["FlowConfig", "FlowMethodName", "FlowView", "MotionView", "RaftModel"]


class _FlowGroup(View):
    """What `flow` and `motion` share: settings, the flow method, the consumer."""

    settings = FlowConfig
    section = "flow"
    group = "flow"
    batched_model = False

    @classmethod
    def tiny_settings(cls) -> Any:
        return FlowConfig(short_side=32)

    def decode_model(self, settings: FlowConfig, ctx: ViewContext) -> Any:
        from .methods import FLOW_METHODS

        return FLOW_METHODS.create(
            settings.method, config=settings, device=ctx.device, allow_download=ctx.allow_download
        )

    def process_unsupported(self, settings: FlowConfig) -> str | None:
        return "RAFT flow runs its GPU model inside the decode workers" if settings.method == "raft" else None

    def consumer(
        self, settings: FlowConfig, ctx: ViewContext, *, model: Any, decode_model: Any, views: tuple[str, ...]
    ):
        from .consumer import FlowPairs

        return FlowPairs(decode_model, settings, ctx.sampling, views=views, batch=max(1, ctx.batch_size // 8))

    def _common(self, settings: FlowConfig, ctx: ViewContext, decode_model: Any) -> dict:
        sampled_at = settings.fps or dataclasses.asdict(ctx.sampling)
        return {"flow": decode_model.identity(), "sampling": sampled_at, "step": settings.step}

    def weights_files(self, settings: FlowConfig) -> tuple[str | None, ...]:
        return (settings.weights,)

    def describe(self, identity: dict) -> tuple[str, str, str]:
        flow = identity.get("flow", {})
        sampling = identity.get("sampling", {})
        if isinstance(sampling, dict) and sampling:
            every = f"{sampling['fps']} fps" if sampling.get("fps") else f"{sampling.get('num_frames')} frames"
        else:
            every = f"{sampling} fps"
        return f"{flow.get('method', '')} @{identity.get('short_side')}px", flow.get("weights", "") or "-", every


@register_view("flow")
class FlowView(_FlowGroup):
    writes_with = ("motion",)
    store_dtype = "uint8"
    compressed = True
    spilled = True

    def local_weights(self, *, every_tag: bool = False) -> list | None:
        from .local import flow_weights

        return flow_weights()  # motion is computed from the same flow: listed once, here

    def identity(self, settings: FlowConfig, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        side = settings.short_side
        return {
            **self._common(settings, ctx, decode_model),
            "short_side": side,
            "stored": "centre square, quantised uint8: px = (q - 128) * bound_px / 127",
            "bound_px": settings.bound_px,
            "row_shape": [2, side, side],
            "dtype": "uint8",
            "feature_dim": 2 * side * side,
        }


@register_view("motion")
class MotionView(_FlowGroup):
    store_dtype = "float16"  # fractions in [0, 1]: float16 is plenty

    def identity(self, settings: FlowConfig, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        from .motion import descriptor_layout

        bins = len(settings.motion_magnitude_edges_px)
        return {
            **self._common(settings, ctx, decode_model),
            "short_side": settings.short_side,
            "grid": settings.motion_grid,
            "orientations": settings.motion_orientations,
            "magnitude_edges_px": list(settings.motion_magnitude_edges_px),
            "layout": descriptor_layout(settings.motion_grid, settings.motion_orientations, bins),
            "dtype": "float16",
            "feature_dim": settings.motion_grid**2 * (1 + settings.motion_orientations * bins),
        }
