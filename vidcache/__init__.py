"""vidcache: a resumable cache of frozen video embeddings, with mining and heads on top.

The Python API mirrors the CLI (and the CLI is generated from the same dataclasses):

    import vidcache
    from vidcache.extract.views.clip import ClipConfig

    config = vidcache.ExtractConfig.create(views=("clip", "audio"), clip=ClipConfig(model="ViT-B-32"))
    summary = vidcache.extract("manifest.csv", "cache/", config)
    result = vidcache.train("cache/", "runs/linear", head="linear", view="clip")
    mined = vidcache.mine_hard_negatives("cache/", k=16)
    cache = vidcache.Cache("cache/")
    features, times_s = cache.read(cache.video_ids()[0], "clip")

Names are resolved lazily, so `import vidcache` stays light (no torch until a model is needed).
"""

from .version import __version__

_LAZY = {
    "Cache": ("vidcache.cache.reader", "Cache"),  # lazy too: `vidcache` starts without h5py (see signals)
    "ExtractConfig": ("vidcache.extract.config", "ExtractConfig"),
    "RunConfig": ("vidcache.config", "RunConfig"),
    "SamplingConfig": ("vidcache.config", "SamplingConfig"),
    "StreamConfig": ("vidcache.config", "StreamConfig"),
    "ExtractSummary": ("vidcache.extract.plan", "ExtractSummary"),
    "VIEWS": ("vidcache.extract.views", "VIEWS"),
    "train": ("vidcache.heads.api", "train"),
    "evaluate": ("vidcache.heads.api", "evaluate"),
    "predict": ("vidcache.heads.api", "predict"),
    "write_view": ("vidcache.heads.api", "write_view"),
    "mine_hard_negatives": ("vidcache.index.api", "mine_hard_negatives"),
    "mine_hard_negative_videos": ("vidcache.index.api", "mine_hard_negative_videos"),
    "mine_neighbours": ("vidcache.index.api", "mine_neighbours"),
    "index_view": ("vidcache.index.api", "index_view"),
}


def __getattr__(name: str):
    if name == "extract":  # the package, callable as vidcache.extract(manifest, cache, config)
        import importlib

        return importlib.import_module("vidcache.extract")
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'vidcache' has no attribute {name!r}")


__all__ = ["__version__", "extract", *_LAZY]
