"""The registry of audio encoders (`--audio-encoder`): a new encoder is one file plus one
`@register_audio_encoder("name")` line; factories are called with `config=AudioConfig`,
`device=torch.device` and `dtype=` the storage dtype ("float16" | "float32")."""

from __future__ import annotations

from ....registry import Registry

AUDIO_ENCODERS = Registry("audio encoder", option="--audio-encoder")
register_audio_encoder = AUDIO_ENCODERS.register
