"""The audio pass's machinery (no view, no encoder): the audio stream (FFmpeg's default, or
`--audio-stream`) decoded, its channels averaged and resampled to 16 kHz mono (decode.py, downmix.py)
and cut into VGGish's 0.96 s log-mel examples (frontend.py). The `audio` view and its encoders live in
views/audio/."""

from .decode import iter_audio
from .frontend import LogMelExamples

__all__ = ["LogMelExamples", "iter_audio"]
