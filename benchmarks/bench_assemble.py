"""The assembly stage's cost per video as the to-do list grows (issue 29, short clips at scale).

The local engine expects every video of a run up front; each message then asks the stage for the
videos now complete. This times `AssembleStage` against the scan of every pending video it replaced
(its brute-force twin), at several list sizes, in one run, and prints the ratio:

    .venv/bin/python benchmarks/bench_assemble.py --sizes 3000,10000,30000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vidcache.extract.stages import AssembleStage, VideoDecoded, VideoRows, VideoTask
from vidcache.manifest import VideoEntry


class ScanAllAssemble(AssembleStage):
    """The code before: every pending video examined on each `ready()`."""

    def ready(self) -> list[VideoRows]:
        self._touched.clear()
        done = [index for index, state in self.states.items() if state.complete]
        return [self._rows(self.states.pop(index)) for index in done]


def us_per_video(cls: type[AssembleStage], n: int) -> float:
    stage = cls(spill_dir=Path(tempfile.mkdtemp()), spill_prefix="bench")
    for i in range(n):
        stage.expect(VideoTask(i, VideoEntry(path=f"/x/{i}.mp4", video_id=str(i)), None, ("clip",)))
    start = time.perf_counter()
    for i in range(n):  # each video's decode-done message completes it (a video without rows)
        stage.process(VideoDecoded(i, 0, {"clip": ("absent", "bench")}, {}, 0.0))
    return 1e6 * (time.perf_counter() - start) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="3000,10000,30000")
    args = p.parse_args()
    print(f"{'videos':>8} {'stage us/video':>15} {'scan-all us/video':>18} {'ratio':>7}")
    for n in (int(x) for x in args.sizes.split(",")):
        new, old = us_per_video(AssembleStage, n), us_per_video(ScanAllAssemble, n)
        print(f"{n:>8} {new:>15.1f} {old:>18.1f} {old / new:>7.1f}")


if __name__ == "__main__":
    main()
