"""The registry of audio encoders (`--audio-encoder`): a new encoder is one file plus one
`AUDIO_ENCODERS.register_lazy` line below (imported when first used, so `--audio-encoder` lists it
without importing torch); factories are called with `config=AudioConfig`,
`device=torch.device` and `dtype=` the storage dtype ("float16" | "float32")."""

from __future__ import annotations

from ....registry import Registry

AUDIO_ENCODERS = Registry("audio encoder", option="--audio-encoder")
register_audio_encoder = AUDIO_ENCODERS.register
AUDIO_ENCODERS.register_lazy("logmel-stats", "vidcache.extract.views.audio.logmel_stats:LogMelStatsEncoder")
AUDIO_ENCODERS.register_lazy("vggish", "vidcache.extract.views.audio.vggish:VGGishEncoder")
