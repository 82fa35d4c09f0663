"""The `shots` and `shot_probs` views: shot boundaries found in the one decode pass, on every decoded
frame. `shots` stores one row per shot (first/last frame index, mean and max cut probability; the
row's times are the shot's start and end), `shot_probs` each frame's cut probability (compact, for
users who threshold themselves). Both share the `shots` settings and one decode-side consumer."""

from __future__ import annotations

from typing import Any

from ..base import View, ViewContext, register_view
from .settings import SHOT_COLUMNS, ShotsConfig


class _ShotsGroup(View):
    settings = ShotsConfig
    section = "shots"
    group = "shots"
    batched_model = False

    @classmethod
    def tiny_settings(cls) -> Any:
        return ShotsConfig(method="content")

    def decode_model(self, settings: ShotsConfig, ctx: ViewContext) -> Any:
        if settings.method == "transnetv2":
            from .transnetv2 import TransNetV2Detector

            return TransNetV2Detector(ctx.device, batch_windows=settings.batch_windows)
        from .content import ContentDetector

        return ContentDetector()

    def consumer(self, settings: ShotsConfig, ctx: ViewContext, *, model: Any, decode_model: Any, views: tuple):
        from .consumer import ShotFrames

        return ShotFrames(decode_model, settings, views=views)

    def _common(self, settings: ShotsConfig, decode_model: Any) -> dict:
        detector = decode_model.identity()
        rule = (
            {"threshold": settings.threshold}
            if settings.method == "transnetv2"
            else {"content_threshold": settings.content_threshold}
        )
        return {"detector": detector, "method": settings.method, **rule, "min_s": settings.min_s}

    def describe(self, identity: dict) -> tuple[str, str, str]:
        detector = identity.get("detector", {})
        sha = detector.get("weights_sha256", "")
        rule = identity.get("threshold", identity.get("content_threshold"))
        return (
            identity.get("method", ""),
            sha[:12] or "-",
            f"every frame, threshold {rule}, min {identity.get('min_s')} s",
        )


@register_view("shots")
class ShotsView(_ShotsGroup):
    writes_with = ("shot_probs",)
    store_dtype = "float32"

    def identity(self, settings: ShotsConfig, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        return {
            **self._common(settings, decode_model),
            "columns": list(SHOT_COLUMNS),
            "times": "start_s: first frame shown; end_s: last frame's end",
            "dtype": "float32",
            "feature_dim": len(SHOT_COLUMNS),
        }


@register_view("shot_probs")
class ShotProbsView(_ShotsGroup):
    store_dtype = "float16"

    def identity(self, settings: ShotsConfig, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        return {
            **self._common(settings, decode_model),
            "columns": ["cut_probability" if settings.method == "transnetv2" else "content_score / 255"],
            "dtype": "float16",
            "feature_dim": 1,
        }
