"""`vidcache.extract(manifest, cache, config)`: what `vidcache extract` does, for Python callers."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..fields import ParamError
from ..manifest import STANDARD_SPLITS, VideoEntry, manifest_warnings, read_manifest, select_shard
from .config import ExtractConfig
from .plan import ExtractSummary, nothing_to_do

log = logging.getLogger("vidcache")


def extract(
    manifest: str | os.PathLike | Sequence[VideoEntry],
    cache: str | os.PathLike,
    config: ExtractConfig | None = None,
    *,
    root: str | os.PathLike | None = None,
    splits: Sequence[str] = STANDARD_SPLITS,
    strict: bool = False,
    progress: Callable[[ExtractSummary], None] | None = None,
    notify: Callable[[str], None] | None = None,
    command: str = "",
) -> ExtractSummary:
    """Decode each video of `manifest` once and cache the embeddings of `config.views` in `cache`.

    Resumable and idempotent like the CLI: finished (video, view) pairs are skipped, a re-run with
    nothing to do returns at once without loading a model, and any stop keeps what was finished.

    Args:
        manifest: a manifest file (CSV/parquet with a `path` column; optional `video_id`, `labels`,
            `split`, `start_s`, `end_s`) or already-read `VideoEntry`s.
        cache: the cache directory (created when missing).
        config: what to extract; default `ExtractConfig()` (the clip view at 1 fps). Build one with
            `ExtractConfig.create(views=("clip", "audio"), clip=ClipConfig(...), run=RunConfig(...))`.
        root: the folder relative manifest paths resolve against (they must stay inside it).
        splits: the split names the manifest may use; others are warned about (errors with `strict`).
        strict: manifest warnings are errors (`ManifestError`), nothing is written.
        progress: called with the running summary after each video.
        notify: called with each view's note before a run with work to do (e.g. the disk a view will
            take); default: logged as a warning.
        command: recorded in the catalog as what made the run (the CLI records its command line).

    Returns the run's `ExtractSummary` (counts, failures with reasons, timings).
    """
    from ..errors import ManifestError

    config = config or ExtractConfig()
    if not isinstance(config, ExtractConfig):
        raise ParamError("extract", "config", config, f"must be an ExtractConfig, not {type(config).__name__}")
    splits = tuple(splits)
    if not splits:
        raise ParamError("extract", "splits", splits, "give at least one split name, e.g. train, val, test")
    if isinstance(manifest, (str, os.PathLike)):
        entries = read_manifest(manifest, root=root)  # validated before anything is written
        warnings = manifest_warnings(manifest, entries, splits=splits)
        if warnings and strict:
            raise ManifestError(str(manifest), [w.split(": ", 1)[1] + " (strict)" for w in warnings])
    else:
        entries, warnings = list(manifest), []
    for warning in warnings:
        log.warning("%s", warning)
    mine = select_shard(entries, config.run.shard_index, config.run.shard_count)
    vocabulary = sorted({label for entry in entries for label in entry.labels})  # whole manifest, every shard
    # the lock and the catalog before any model (or torch) loads: a locked cache or a re-run with nothing
    # to do ends in a fraction of a second
    summary = nothing_to_do(Path(cache), config, mine, vocabulary=vocabulary, command=command)
    if summary is None:
        import importlib

        from ..signals import interruptible
        from .views import VIEWS

        # the runner imports torch: a cold import can take seconds in one C call (see signals.interruptible)
        Extractor = interruptible(lambda: importlib.import_module("vidcache.extract.runner")).Extractor

        for name in config.views:
            note = VIEWS.get(name)().before_run(
                config.settings_of(name), paths=[e.path for e in mine], sampling=config.sampling
            )
            if note:
                (notify or log.warning)(note)

        summary = Extractor(cache, config, command=command, progress=progress).run(mine, vocabulary=vocabulary)
    summary.warnings = warnings
    return summary
