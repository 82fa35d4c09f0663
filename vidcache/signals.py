"""SIGTERM behaves like Ctrl-C (SIGINT) in every command: Slurm, `timeout`, systemd and Kubernetes
stop jobs with SIGTERM, and a command stopped that way must keep its finished work exactly as after
Ctrl-C. Both signals raise KeyboardInterrupt in the main thread, except inside a `deferred()` block
(a video being written, a shard being committed), where the interruption waits for the block's end
so nothing is left half-written. The CLI exits with 128 + the signal's number (130, 143)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: int | None = None
_pending: int | None = None
_depth = 0


def _handler(signum: int, frame: object) -> None:
    global _received, _pending
    _received = signum
    if _depth > 0:
        _pending = signum
        return
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT and SIGTERM to KeyboardInterrupt (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)


def received() -> int:
    """The signal that stopped this process (SIGINT when none was seen: a plain KeyboardInterrupt)."""
    return _received or signal.SIGINT


def exit_code() -> int:
    """128 + the signal's number, as shells report a process a signal ended."""
    return 128 + int(received())


def name() -> str:
    return signal.Signals(received()).name


@contextmanager
def deferred() -> Iterator[None]:
    """A block a stop signal must not cut in half: the signal is acted on when the block ends."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
    if _depth == 0 and _pending is not None:
        _pending = None
        raise KeyboardInterrupt
