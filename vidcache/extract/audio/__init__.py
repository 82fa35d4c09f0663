"""The `audio` view: the audio stream (FFmpeg's default, or `--audio-stream`) decoded, its channels
averaged and resampled to 16 kHz mono (decode.py, downmix.py), cut into VGGish's 0.96 s log-mel
examples (frontend.py) and embedded by an `--audio-encoder` (one file each)."""

from . import logmel_stats, vggish  # noqa: F401  register "logmel-stats" and "vggish"
from .base import AudioEncoder
from .decode import iter_audio
from .frontend import LogMelExamples
from .registry import AUDIO_ENCODERS, register_audio_encoder

__all__ = ["AUDIO_ENCODERS", "AudioEncoder", "LogMelExamples", "iter_audio", "register_audio_encoder"]
