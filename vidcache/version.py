"""The package version, in a leaf module: every module that records it imports it from here, never
from the package root (whose `__init__` imports the cache API, so `from .. import __version__` would
make cache, extract, index and heads import each other through the root)."""

__version__ = "0.1.0"
