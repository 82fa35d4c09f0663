"""Engines run the extraction stages: `local` (decode threads or processes on this machine, the
models in this process) and `ray` (decode tasks and model actors on a Ray cluster)."""

from __future__ import annotations

from .base import Engine, ExtractJob, ProgressFn


def create_engine(name: str) -> Engine:
    """The engine called `name` (RunConfig.engine)."""
    if name == "ray":
        from .ray import RayEngine

        return RayEngine()
    from .local import LocalEngine

    return LocalEngine()


__all__ = ["Engine", "ExtractJob", "ProgressFn", "create_engine"]
