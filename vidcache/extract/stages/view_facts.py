"""The only view-specific facts the stages use, each answered by the view's plugin (the stages
themselves know no view names). A view no plugin registered (a stage driven alone in a test, rows
imported from elsewhere) takes the base `View`'s answers."""

from __future__ import annotations

from ..consumers import Chunk
from ..views import VIEWS, View


def _view(name: str) -> type[View]:
    return VIEWS.get(name) if name in VIEWS else View


def rows_in(view: str, chunk: Chunk) -> int:
    """Model-input rows a chunk adds to a batch (an S3D chunk's windows count their frames)."""
    return _view(view)().rows_in(chunk)


def is_spilled(view: str) -> bool:
    """Whether a view's finished rows wait on disk (not in RAM) until their video is complete."""
    return _view(view).spilled


def counts_frames(view: str) -> bool:
    """Whether a view's rows are the sampled frames counted in the summary's `frames`."""
    return _view(view).counts_frames
