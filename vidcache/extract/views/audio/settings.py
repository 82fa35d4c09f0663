"""The `audio` view's settings (the `--audio-*` flags)."""

from __future__ import annotations

from dataclasses import dataclass

from ....fields import check_choice, setting
from .registry import AUDIO_ENCODERS

AudioEncoderName = AUDIO_ENCODERS.choices()  # logmel-stats, vggish: the registry's names


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
