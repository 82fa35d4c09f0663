"""`ExtractConfig`: everything `vidcache extract` was asked to do, as one self-validating dataclass.

The shared options (sample times, streams, the run) are fields; each registered view's settings are
one entry of `views_settings`, keyed by the view's config section (`clip`, `s3d`, `flow`, ...) and
filled with the view's defaults when not given, so a saved config names every setting that made
the rows. `config.clip` reads a section like a field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import Dtype, RunConfig, SamplingConfig, StreamConfig
from ..fields import ParamError, check, check_choice, setting
from .views import VIEWS, default_views, sections


def _views_text(views: Any) -> str:
    return ",".join(views) if isinstance(views, (tuple, list)) else str(views)


@dataclass(frozen=True)
class ExtractConfig:
    """Everything `vidcache extract` was asked to do."""

    views: tuple[str, ...] = setting(
        default_factory=default_views, flag="--views", help="Comma-separated views to extract."
    )
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    dtype: Dtype = setting("float16", flag="--dtype", help="Compute and storage dtype of model features.")
    views_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    streams: StreamConfig = dataclasses.field(default_factory=StreamConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        views = tuple(v.strip() for v in self.views.split(",")) if isinstance(self.views, str) else tuple(self.views)
        object.__setattr__(self, "views", views)
        check(self, "views", bool(views), "is empty; choose from: " + ", ".join(VIEWS.names()))
        for name in views:
            if name not in VIEWS:
                raise ParamError(
                    "ExtractConfig",
                    "views",
                    _views_text(views),
                    f"unknown view {name!r}; choose from: " + ", ".join(VIEWS.names()),
                )
        check(self, "views", len(set(views)) == len(views), "names a view twice")
        check_choice(self, "dtype", self.dtype, Dtype)
        known = sections()
        given = dict(self.views_settings)
        for section in given:
            if section not in known:
                raise ParamError(
                    "ExtractConfig", "views_settings", section, "unknown section; choose from: " + ", ".join(known)
                )
        filled = {}
        for section, cls in known.items():  # every section, so the saved config is complete
            value = given.get(section, cls())
            if not isinstance(value, cls):
                raise ParamError(
                    "ExtractConfig", f"views_settings[{section!r}]", type(value).__name__, f"must be a {cls.__name__}"
                )
            filled[section] = value
        object.__setattr__(self, "views_settings", dict(sorted(filled.items())))

    def __getattr__(self, name: str) -> Any:
        # `config.clip`, `config.flow`: a view section read like a field (only called for unknown names)
        settings = self.__dict__.get("views_settings") or {}
        if name in settings:
            return settings[name]
        raise AttributeError(f"ExtractConfig has no field or view section {name!r}")

    def settings_of(self, view: str) -> Any:
        """The settings object of registered view `view`."""
        return self.views_settings[VIEWS.get(view).section]

    @classmethod
    def create(cls, *, views: tuple[str, ...] | str | None = None, **options: Any) -> ExtractConfig:
        """Keyword-only construction where view sections are keywords too:
        `ExtractConfig.create(views=("clip", "flow"), clip=ClipConfig(model="RN50"), run=RunConfig(workers=4))`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        own = {k: v for k, v in options.items() if k in fields}
        section_settings = {k: v for k, v in options.items() if k not in fields}
        views = default_views() if views is None else views
        return cls(views=views, views_settings={**dict(own.pop("views_settings", {})), **section_settings}, **own)

    def replace(self, **changes: Any) -> ExtractConfig:
        """A copy with `changes` (fields or view sections) applied."""
        fields = {f.name for f in dataclasses.fields(self)}
        sections_changed = {k: v for k, v in changes.items() if k not in fields}
        own = {k: v for k, v in changes.items() if k in fields}
        if sections_changed:
            own["views_settings"] = {**self.views_settings, **sections_changed}
        return dataclasses.replace(self, **own)
