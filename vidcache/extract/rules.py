"""What each extracted view's rows are a function of besides its model and sampling: the source
rules recorded in the view identity (fidelity version, stream choice, colour conversion, resize
chain), so two caches with equal identities hold rows computed the same way."""

from __future__ import annotations

from ..cache.fidelity import FIDELITY_VERSION
from .colour import COLOUR_RULE
from .config import ExtractConfig
from .views import VIEWS

BEST_STREAM = "ffmpeg-best"  # av_find_best_stream's choice (a cover picture never)
PRE_SHRINK = (
    "decoded frame (display rotation applied after); when its short side exceeds 2N, shrunk to short side N "
    "with swscale's area filter first, N = this view's own input short side (clip: min(preprocess size), "
    "s3d: 256, flow/motion: short_side), never another view's"
)


def source_rules(view: str, config: ExtractConfig) -> dict:
    """The identity keys every extracted view records about how its source was read."""
    rules: dict = {"fidelity": FIDELITY_VERSION}
    source = VIEWS.get(view).source
    if source == "video":
        video = config.streams.video
        rules.update(video_stream=BEST_STREAM if video is None else video, colour=COLOUR_RULE, pre_shrink=PRE_SHRINK)
    elif source == "audio":
        audio = config.streams.audio
        rules["audio_stream"] = BEST_STREAM if audio is None else audio
    return rules
