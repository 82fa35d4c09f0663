"""The audio encoders (`--audio-encoder`), one file each plus its import line here (the registration)."""

from . import logmel_stats, vggish  # noqa: F401  register "logmel-stats" and "vggish"
from .base import AudioEncoder
from .registry import AUDIO_ENCODERS, register_audio_encoder

__all__ = ["AUDIO_ENCODERS", "AudioEncoder", "register_audio_encoder"]
