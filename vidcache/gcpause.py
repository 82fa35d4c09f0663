"""Python's cyclic garbage collector paused while a million acyclic objects are built.

Each 700 new container objects start a young-generation pass, and the older passes walk every object
alive: building 1M manifest entries, catalog rows or plan tuples spent about 40 % of the time in the
collector (a 1M-row no-op `extract` re-run, issue 29). Entries, tuples and dicts of strings make no
reference cycles, so nothing waits for the collector while it is off.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """Collector off inside the block, back to how it was after (nested blocks keep it off)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
