"""The requested views of a run, loaded: each view's model (main process), each group's decode-side
model, and each cache view's identity. The runner and the decode processes ask these functions and
never name a view."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import ExtractConfig
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
        loaded.identities[name] = {**identity, **source_rules(name, config)}
    return loaded
