"""The `audio` view: the audio stream's 0.96 s log-mel examples (VGGish's front end, from the audio
pass of the decode stage) embedded by an `--audio-encoder`."""

from __future__ import annotations

from typing import Any

from ..base import View, ViewContext, register_view
from .settings import AudioConfig, AudioEncoderName

__all__ = ["AudioConfig", "AudioEncoderName", "AudioView"]


@register_view("audio")
class AudioView(View):
    settings = AudioConfig
    source = "audio"

    def load_model(self, settings: AudioConfig, ctx: ViewContext) -> Any:
        from .encoders import AUDIO_ENCODERS

        return AUDIO_ENCODERS.create(settings.encoder, config=settings, device=ctx.device, dtype=ctx.dtype)

    def prepare_twin(self, model: Any) -> Any:
        return None  # the audio pass needs no model-side preparation

    def identity(self, settings: AudioConfig, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        return model.identity()

    def weights_files(self, settings: AudioConfig) -> tuple[str | None, ...]:
        return (settings.weights,)

    def describe(self, identity: dict) -> tuple[str, str, str]:
        return identity.get("encoder", ""), identity.get("weights_path", "") or "-", "0.96 s examples"
