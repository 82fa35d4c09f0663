"""The `audio` view: the audio stream's 0.96 s log-mel examples (VGGish's front end, from the audio
pass of the decode stage) embedded by an `--audio-encoder`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ...fields import check_choice, setting
from .base import View, ViewContext, register_view

AudioEncoderName = Literal["logmel-stats", "vggish"]


@dataclass(frozen=True)
class AudioConfig:
    """16 kHz mono log-mel examples of 0.96 s (VGGish's front end) and the encoder applied to them."""

    encoder: AudioEncoderName = setting(
        "logmel-stats", help="logmel-stats needs no weights (the offline default); vggish needs --audio-weights."
    )
    weights: str | None = setting(
        None, help="PyTorch VGGish state dict (vggish-10086976.pth) for --audio-encoder vggish."
    )

    def __post_init__(self) -> None:
        check_choice(self, "encoder", self.encoder, AudioEncoderName)


@register_view("audio")
class AudioView(View):
    settings = AudioConfig
    source = "audio"

    def load_model(self, settings: AudioConfig, ctx: ViewContext) -> Any:
        from ..audio import AUDIO_ENCODERS

        return AUDIO_ENCODERS.create(settings.encoder, config=settings, device=ctx.device, dtype=ctx.dtype)

    def prepare_twin(self, model: Any) -> Any:
        return None  # the audio pass needs no model-side preparation

    def identity(self, settings: AudioConfig, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        return model.identity()

    def weights_files(self, settings: AudioConfig) -> tuple[str | None, ...]:
        return (settings.weights,)

    def describe(self, identity: dict) -> tuple[str, str, str]:
        return identity.get("encoder", ""), identity.get("weights_path", "") or "-", "0.96 s examples"
