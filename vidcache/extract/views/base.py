"""What a view is: one class that declares everything about it, registered under its name.

A view declares its settings dataclass (fields made with `vidcache.fields.setting`, so the CLI flags
are generated from them), what it takes from the one decode pass (a `Consumer` on the video stream, or
the audio pass), the model the main process runs on batches (if any) and the decode-side model (flow),
the identity recorded in the catalog, how its rows are stored, and how `status` describes it. The
runner, the CLI, the config and the tests only ask the registry (`VIEWS`), never a view by name.

Adding a view: one new folder in this package (`<name>/__init__.py` with the `@register_view("name")`
class, `settings.py`, its model and consumer modules), plus its import line in `views/__init__.py`
(docs/views.md has the recipe). A view's `__init__` and settings must stay light at import time (no
torch, no models: import the model inside `load_model`): the CLI imports them to build its flags and
answers a no-op run before torch loads. This module is the public view API (View, ViewContext,
SampledFramesView, VIEWS, register_view); it imports nothing from the views or the run above them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from ...registry import Registry

Source = Literal["video", "audio"]


@dataclass(frozen=True)
class ViewContext:
    """What every view's factories get besides their own settings."""

    device: Any  # torch.device (the models'); "cpu" in a decode process
    dtype: str  # --dtype: compute and storage dtype of model features
    sampling: Any  # SamplingConfig: the run's --fps / --num-frames sample times
    batch_size: int  # --batch-size: frames per model batch
    allow_download: bool = False
    loaded: dict = dataclasses.field(default_factory=dict, compare=False)  # models shared by views of a run

    def shared(self, key: Any, factory: Any) -> Any:
        """`factory()` once per run for `key`: views built on one model (clip and frames) load it once."""
        if key not in self.loaded:
            self.loaded[key] = factory()
        return self.loaded[key]


class View:
    """Base class of a view plugin (see the module docstring). Class attributes describe the view;
    methods receive the view's settings object (an instance of `settings`)."""

    name: ClassVar[str]
    settings: ClassVar[type]  # the settings dataclass (its fields become `--{section}-{field}` flags)
    section: ClassVar[str]  # the config section (and flag prefix) of those settings; views may share one
    source: ClassVar[Source] = "video"
    group: ClassVar[str | None] = None  # views of one group share one decode-side consumer (flow, motion)
    writes_with: ClassVar[tuple[str, ...]] = ()  # other views written whenever this one is asked for
    store_dtype: ClassVar[str | None] = None  # None: the model's (--dtype)
    compressed: ClassVar[bool] = False  # gzip in the shard (large, compressible rows)
    spilled: ClassVar[bool] = False  # rows wait on disk until the video is complete (large rows)
    counts_frames: ClassVar[bool] = False  # its rows are the run's sampled frames (summary frames/s)
    embeds_labels: ClassVar[bool] = False  # its model has a text tower: the label vocabulary is embedded
    batched_model: ClassVar[bool] = True  # the main process encodes its chunks in batches
    default: ClassVar[bool] = False  # extracted when --views is not given

    @classmethod
    def tiny_settings(cls) -> Any:
        """Small, weight-free settings that run offline in seconds (the generated tests use them)."""
        return cls.settings()

    # models ---------------------------------------------------------------------------------------
    def load_model(self, settings: Any, ctx: ViewContext) -> Any:
        """The model the main process runs on this view's batched chunks (`encode`), or None."""
        return None

    def decode_model(self, settings: Any, ctx: ViewContext) -> Any:
        """The model the decode side runs (in the workers), shared by the view's group, or None."""
        return None

    def prepare_twin(self, model: Any) -> Any:
        """What a decode process gets in place of `model` (a model-free, picklable twin), or None when
        this view cannot decode in a process. Default: the model itself (None stays None)."""
        return model

    def process_unsupported(self, settings: Any) -> str | None:
        """Why this view's decode-side work cannot run in a child process, or None."""
        return None

    # decode side ----------------------------------------------------------------------------------
    def consumer(self, settings: Any, ctx: ViewContext, *, model: Any, decode_model: Any, views: tuple[str, ...]):
        """The `Consumer` that takes this view's (or its group's `views`) frames from the decode pass.
        `model` is the main model or its twin; `decode_model` the group's decode-side model."""
        raise NotImplementedError(f"view {self.name!r} has no video consumer")

    # cache side -----------------------------------------------------------------------------------
    def identity(self, settings: Any, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        """Everything that determines this view's numbers, recorded in the catalog and every shard."""
        raise NotImplementedError

    def rows_in(self, chunk: Any) -> int:
        """How many model rows a chunk costs in a batch (a clip window counts its frames)."""
        return len(chunk.data)

    def has_text_tower(self, settings: Any) -> bool:
        """Whether this view's model, with these settings, embeds the label vocabulary (text.h5); a view
        whose models differ (the video view: only X-CLIP has one) answers per settings."""
        return self.embeds_labels

    def keep_text_tower(self, encoder: Any, *, cache_dir: Path, identity: dict, prompts: list[str]) -> str:
        """Called at the end of a run that loaded this view's model (`encoder`, whose recorded `identity` this
        is): keep in the cache what later text queries need so they do not load the model (the clip view:
        its text tower for NumPy), checked on `prompts`. Returns a line for the log, '' when nothing was done."""
        return ""

    def weights_files(self, settings: Any) -> tuple[str | None, ...]:
        """Options naming weights files: their size and mtime enter the run's settings key."""
        return ()

    def local_weights(self, *, every_tag: bool = False) -> list | None:
        """`vidcache models`: the weights this view can use and whether each is in a local cache
        (`vidcache.extract.local_weights.WeightsEntry`); None for a view that takes no managed weights."""
        return None

    def describe(self, identity: dict) -> tuple[str, str, str]:
        """(model, weights, settings) as `vidcache status` shows them."""
        return str(identity.get("model") or identity.get("backbone") or ""), "", ""

    def before_run(self, settings: Any, *, paths: list[str], sampling: Any) -> str | None:
        """A line said before a run that will extract this view for `paths` (e.g. how much disk a
        large view will take), or None."""
        return None


class SampledFramesView(View):
    """A view with one row per sample time (`--fps` / `--num-frames`): an encoder with `prepare` (a
    frame → its input, in the decode workers), `encode` (batched) and `identity`. clip and timm are
    these; a new image model is a subclass with `settings` and `load_model`."""

    counts_frames = True

    def prepare_twin(self, model: Any) -> Any:
        from ..encoder import PrepareOnly

        return PrepareOnly.of(model)

    def consumer(self, settings: Any, ctx: ViewContext, *, model: Any, decode_model: Any, views: tuple[str, ...]):
        from ..consumers import ClipFrames

        return ClipFrames(model, ctx.sampling, batch_size=ctx.batch_size)

    def identity(self, settings: Any, ctx: ViewContext, *, model: Any, decode_model: Any) -> dict:
        return {**model.identity(), "sampling": dataclasses.asdict(ctx.sampling)}

    def describe(self, identity: dict) -> tuple[str, str, str]:
        sampling = identity.get("sampling", {})
        every = f"{sampling['fps']} fps" if sampling.get("fps") else f"{sampling.get('num_frames')} frames"
        return identity.get("model", ""), identity.get("pretrained", ""), every


VIEWS = Registry("view", option="--views")


def register_view(name: str):
    """Class decorator: register a `View` subclass under `name` (its `name`, and `section` unless set)."""

    def decorate(cls: type[View]) -> type[View]:
        cls.name = name
        if getattr(cls, "section", None) is None:  # set by the class or a base (motion shares flow's)
            cls.section = name
        if not dataclasses.is_dataclass(cls.settings):
            raise TypeError(f"view {name!r}: settings must be a dataclass")
        VIEWS.register(name)(cls)
        return cls

    return decorate


def view(name: str) -> View:
    """The registered view `name` (an instance), or a ConfigError listing the registered ones."""
    return VIEWS.get(name)()


def default_views() -> tuple[str, ...]:
    """What `--views` is when not given: the views that say so."""
    return tuple(name for name in VIEWS.in_order() if VIEWS.get(name).default)


def sections() -> dict[str, type]:
    """Config section → settings dataclass, over every registered view."""
    out: dict[str, type] = {}
    for name in VIEWS.names():
        cls = VIEWS.get(name)
        out.setdefault(cls.section, cls.settings)
    return out
