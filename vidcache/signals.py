"""SIGTERM behaves like Ctrl-C (SIGINT) in every command: Slurm, `timeout`, systemd and Kubernetes
stop jobs with SIGTERM, and a command stopped that way must keep its finished work exactly as after
Ctrl-C. Both signals raise KeyboardInterrupt in the main thread, except inside a `deferred()` block
(a video being written, a shard being committed), where the interruption waits for the block's end
so nothing is left half-written. The CLI exits with 128 + the signal's number (130, 143).

The CLI installs the handler before it imports anything heavy (`install(early=True)`): until the
command starts (`arm()`), nothing has been written, so a stop signal ends the process at once with a
one-line message. Start-up work that may sit in one long C call (importing torch, initialising CUDA,
building and loading models) runs through `interruptible()`: in a helper thread the main thread waits
on, so the signal is acted on within a fraction of a second, not when that call returns."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: int | None = None
_pending: int | None = None
_depth = 0
_armed = True  # False between install(early=True) and arm(): nothing written yet, stop at once
_WAIT_S = 0.1  # how often the main thread, waiting on start-up work, lets a signal in


def _handler(signum: int, frame: object) -> None:
    global _received, _pending
    _received = signum
    if not _armed:
        name = signal.Signals(signum).name
        os.write(2, f"vidcache: error: interrupted by {name} while starting; nothing was written\n".encode())
        os._exit(128 + signum)
    if _depth > 0:
        _pending = signum
        return
    raise KeyboardInterrupt


def install(*, early: bool = False) -> None:
    """Route SIGINT and SIGTERM to KeyboardInterrupt (main thread only; elsewhere a no-op). With
    `early`, a signal before `arm()` ends the process at once (exit 128 + signal): the CLI's imports."""
    global _armed
    if threading.current_thread() is not threading.main_thread():
        return
    _armed = not early
    for signum in STOP_SIGNALS:
        signal.signal(signum, _handler)


def arm() -> None:
    """From now on a stop signal raises KeyboardInterrupt (the command cleans up and keeps its work)."""
    global _armed
    _armed = True


def stopped_by_signal() -> bool:
    """Whether a real SIGINT/SIGTERM arrived (not a KeyboardInterrupt raised by code)."""
    return _received is not None


def interruptible(work: Callable[[], T], *, name: str = "vidcache-start-up") -> T:
    """`work()` in a helper thread while the main thread waits in short, interruptible steps: a stop
    signal raises KeyboardInterrupt here at once even when `work` sits in one long C call (a cold
    torch import, CUDA initialisation, a weights file read). The helper is a daemon and is left
    behind on a stop (start-up work writes nothing). Outside the main thread, `work()` runs inline."""
    if threading.current_thread() is not threading.main_thread():
        return work()
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the main thread, raised there
            outcome["error"] = exc

    helper = threading.Thread(target=target, name=name, daemon=True)
    helper.start()
    while helper.is_alive():
        helper.join(_WAIT_S)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def exit_now(code: int) -> None:
    """End a command a stop signal interrupted, once its cleanup has run: flush the output and exit
    without the interpreter's finalisation (with torch loaded it takes seconds, and a start-up helper
    thread may still be inside a C call)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


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
