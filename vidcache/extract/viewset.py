"""The requested views of a run, loaded: each view's model (main process), each group's decode-side
model, and each cache view's identity. The runner and the decode processes ask these functions and
never name a view."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import ExtractConfig
from .consumers import Consumer
from .plan import cache_views
from .rules import source_rules
from .views import VIEWS, View, ViewContext


def view_context(config: ExtractConfig, device: Any) -> ViewContext:
    return ViewContext(
        device=device,
        dtype=config.dtype,
        sampling=config.sampling,
        batch_size=config.run.batch_size,
        allow_download=config.run.allow_download,
    )


def plugin(name: str) -> View:
    return VIEWS.get(name)()


def audio_view_of(views: Iterable[str]) -> str | None:
    """The view the audio pass feeds, if any is among `views`."""
    return next((v for v in views if v in VIEWS and VIEWS.get(v).source == "audio"), None)


def load_decode_models(views: Iterable[str], config: ExtractConfig, ctx: ViewContext) -> dict[str, Any]:
    """Each view group's decode-side model (flow's method), keyed by group, created once per process."""
    out: dict[str, Any] = {}
    for name in views:
        view = plugin(name)
        group = view.group or name
        if group not in out:
            model = view.decode_model(config.settings_of(name), ctx)
            if model is not None:
                out[group] = model
    return out


@dataclass
class LoadedViews:
    ctx: ViewContext
    views: list[str]  # the cache views written (the requested ones and what they write with)
    models: dict[str, Any] = field(default_factory=dict)  # view → model encoding its batches
    decode_models: dict[str, Any] = field(default_factory=dict)  # group → decode-side model
    identities: dict[str, dict] = field(default_factory=dict)

    def store_dtypes(self, config: ExtractConfig) -> dict[str, str]:
        out = {}
        for name in self.views:
            model = self.models.get(name)
            out[name] = plugin(name).store_dtype or getattr(model, "store_dtype", None) or config.dtype
        return out

    @property
    def random_weights(self) -> bool:
        loaded = [*self.models.values(), *self.decode_models.values()]
        return any(getattr(m, "random_weights", False) for m in loaded)


def load_views(config: ExtractConfig, device: Any) -> LoadedViews:
    """Create every requested model and each cache view's identity (with its source rules)."""
    ctx = view_context(config, device)
    views = cache_views(config.views)
    loaded = LoadedViews(ctx=ctx, views=views)
    for name in views:
        if plugin(name).batched_model:
            model = plugin(name).load_model(config.settings_of(name), ctx)
            if model is not None:
                loaded.models[name] = model
    loaded.decode_models = load_decode_models(views, config, ctx)
    for name in views:
        view = plugin(name)
        identity = view.identity(
            config.settings_of(name),
            ctx,
            model=loaded.models.get(name),
            decode_model=loaded.decode_models.get(view.group or name),
        )
        loaded.identities[name] = {**identity, **source_rules(name, config), **decode_identity(name, config)}
    return loaded


def decode_identity(name: str, config: ExtractConfig) -> dict:
    """What the decode device adds to a view's identity: NVDEC's pixels differ from FFmpeg's (YUV→RGB
    and resize), so a view fed by decoded frames records `decode.device cuda`; a CPU decode records
    nothing (the identities of caches made before the option stay as they were)."""
    if plugin(name).source == "video" and config.run.decode_device == "cuda":
        return {"decode": {"device": "cuda"}}
    return {}


def video_groups(views: list[str] | tuple[str, ...]) -> list[tuple[str, tuple[str, ...]]]:
    """(first view, the group's views) per decode-side consumer of the video views among `views`, in
    the registry's order: views of one group (flow, motion) share one consumer."""

    wanted = [name for name in VIEWS.in_order() if name in views and VIEWS.get(name).source == "video"]
    groups: dict[str, list[str]] = {}
    for name in wanted:
        groups.setdefault(VIEWS.get(name).group or name, []).append(name)
    return [(members[0], tuple(members)) for members in groups.values()]


def make_consumers(
    views: list[str] | tuple[str, ...],
    *,
    config,
    ctx,
    models: dict,
    decode_models: dict,
) -> list[Consumer]:
    """The decode-side work of the requested video views, in the order the stage feeds them. `models`
    holds each view's encoder, or in a decode process its `PrepareOnly` twin (only `view`, `prepare`,
    `preprocess` and `max_short_side` are used here); `decode_models` each group's decode-side model."""

    consumers: list[Consumer] = []
    for first, members in video_groups(views):
        plugin = VIEWS.get(first)()
        consumers.append(
            plugin.consumer(
                config.settings_of(first),
                ctx,
                model=models.get(first),
                decode_model=decode_models.get(plugin.group or first),
                views=members,
            )
        )
    return consumers
