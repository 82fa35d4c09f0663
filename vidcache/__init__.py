"""vidcache: a resumable cache of frozen video embeddings, with mining and heads on top."""

__version__ = "0.1.0"

from .cache.reader import Cache

__all__ = ["Cache", "__version__"]
