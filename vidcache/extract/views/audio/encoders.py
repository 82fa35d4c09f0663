"""The audio encoders (`--audio-encoder`): one file each plus its line in registry.py."""

from .base import AudioEncoder
from .registry import AUDIO_ENCODERS, register_audio_encoder

__all__ = ["AUDIO_ENCODERS", "AudioEncoder", "register_audio_encoder"]
