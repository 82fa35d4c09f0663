"""Giving up on a decode worker stuck inside one FFmpeg call.

The per-video time limit (`--video-timeout-s`) is checked between packets, which stops a slow
decode. A call that never returns (a file on a hung network mount, a decoder bug looping on one
packet) never reaches that check, and Python cannot interrupt a thread inside C code. So the main
thread watches each worker's `Deadline`: once a video's decode time is past its limit by more than
a grace period, the video is failed with a reason, the worker is abandoned (a daemon thread: if the
call ever returns, the worker sees it was abandoned and exits without sending anything) and a fresh
worker takes its place, so one bad file costs one row and one stuck thread, never the night's run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .decode import Deadline


def stuck_grace_s(limit_s: float) -> float:
    """How far past its limit a video's decode may run before its worker counts as stuck: the
    cooperative check fires within one packet's decode, so a few seconds is already generous."""
    return max(5.0, min(60.0, 0.1 * limit_s))


@dataclass(frozen=True)
class Stuck:
    worker: int
    index: int  # the video's position in the run's to-do list
    decode_s: float  # decode time spent on the video when it was given up

    def reason(self) -> str:
        return (
            f"decode stuck: no return from FFmpeg after {self.decode_s:.0f} s of decoding (past --video-timeout-s);"
            " the file may be on a hung mount or hang the decoder"
        )


class DecodeWatch:
    """Thread-safe record of which video each worker decodes, with that video's `Deadline`."""

    def __init__(self, *, limit_s: float):
        self.grace_s = stuck_grace_s(limit_s)  # for the bounded wait on interrupt; each video has its own
        self._lock = threading.Lock()
        self._busy: dict[int, tuple[int, Deadline]] = {}
        self._abandoned: set[int] = set()

    def begin(self, worker: int, index: int, deadline: Deadline) -> None:
        with self._lock:
            self._busy[worker] = (index, deadline)

    def end(self, worker: int) -> None:
        with self._lock:
            self._busy.pop(worker, None)

    def abandoned(self, worker: int) -> bool:
        with self._lock:
            return worker in self._abandoned

    def give_up_stuck(self) -> list[Stuck]:
        """Abandon every worker whose video is past its limit plus the grace, and say which."""
        stuck = []
        with self._lock:
            for worker, (index, deadline) in list(self._busy.items()):
                overdue_s = deadline.overdue_s()
                if overdue_s > stuck_grace_s(deadline.seconds):
                    del self._busy[worker]
                    self._abandoned.add(worker)
                    stuck.append(Stuck(worker, index, deadline.seconds + overdue_s))
        return stuck
