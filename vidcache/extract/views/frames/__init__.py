"""The `frames` view: at each sample time (`--fps` / `--num-frames`, as clip), the crop the clip
view's tower is fed, before normalisation: open_clip's resize + centre crop of the `--clip-*`
model, as uint8 [3, H, W] rows (224 px for every CLIP vidcache knows), gzip-compressed and spilled
to disk like flow. `vidcache finetune --frames-from cache` reads them, so fine-tuning never decodes
the videos again. It shares the clip settings: with `--views clip,frames` the two views' rows
correspond one to one (the same sampler, times and `prepare`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..base import SampledFramesView, ViewContext, register_view
from ..clip import ClipConfig, ClipView


@register_view("frames")
class FramesView(SampledFramesView):
    settings = ClipConfig
    section = "clip"  # the crops are the clip tower's input: its settings, not a copy of them
    store_dtype = "uint8"
    compressed = True  # 147 KiB a row raw
    spilled = True
    counts_frames = False  # the clip view counts the run's frames

    @classmethod
    def tiny_settings(cls) -> Any:
        return ClipConfig(model="vidcache-tiny", pretrained="none")

    def load_model(self, settings: ClipConfig, ctx: ViewContext) -> Any:
        from .model import CropPreparer

        # the clip view's own encoder (shared through ctx: loaded once per run whichever view asks first):
        # the crops come from its `preprocess`, so they are the clip rows' input by construction
        return CropPreparer(ClipView().load_model(settings, ctx).preprocess)

    def consumer(self, settings: ClipConfig, ctx: ViewContext, *, model: Any, decode_model: Any, views: tuple):
        from .model import FramesConsumer

        return FramesConsumer(model, ctx.sampling, batch_size=ctx.batch_size)

    def identity(self, settings: ClipConfig, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        from .model import frames_identity

        return frames_identity(model.preprocess.as_dict(), dataclasses.asdict(ctx.sampling), clip_model=settings.model)

    def weights_files(self, settings: ClipConfig) -> tuple[str | None, ...]:
        return (settings.pretrained,)

    def before_run(self, settings: ClipConfig, *, paths: list[str], sampling: Any) -> str | None:
        from .model import clip_input_size, estimate_message

        return estimate_message(paths, sampling, size=clip_input_size(settings.model))

    def describe(self, identity: dict) -> tuple[str, str, str]:
        sampling = identity.get("sampling", {})
        every = f"{sampling['fps']} fps" if sampling.get("fps") else f"{sampling.get('num_frames')} frames"
        size = "x".join(map(str, identity.get("row_shape", [])[1:]))
        return f"{identity.get('clip_model', '')} crops {size}", "", every
