"""Shared fixtures: tiny videos generated with PyAV and a tiny open_clip checkpoint file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _share_the_cores_between_workers() -> None:
    """Under `pytest -n N` each worker gets its share of the CPUs (as a cgroup quota would give it): torch's
    and the BLAS pools of N workers at full width oversubscribe a 2-core machine, and their spinning
    waits made a 20-s training test take 130 s beside the other worker. Set before torch is imported,
    and inherited by the commands the tests start (they keep a user's OMP_NUM_THREADS)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if "PYTEST_XDIST_WORKER" not in os.environ or workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    from vidcache.threads import THREAD_VARIABLES, usable_cpus

    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(max(1, usable_cpus() // workers)))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_share_the_cores_between_workers()

import torch  # noqa: E402  (after the thread share above)

from vidcache.synth import moving_square_frame, write_video  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# How long a child process may take before a test calls it hung. Never a performance bound: `make test`
# runs on loaded 2-core machines where a 20 s extract can take minutes. A test that must prove something
# ends "at once" proves it against a hang that would never end, or by what was (not) done, not by a clock.
HANG_GUARD_S = 1200


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random vidcache-tiny CLIP saved as a plain state dict: the 'same checkpoint file' both
    vidcache and the independent reference load."""
    import open_clip

    from vidcache.extract.views.clip.model import register_vidcache_configs

    register_vidcache_configs()
    torch.manual_seed(123)
    model = open_clip.create_model("vidcache-tiny")
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Eight short labelled clips in two folders (two share a file name) and their manifest."""
    root = tmp_path_factory.mktemp("corpus")
    rows = ["path,labels,split"]
    specs = [("red", "left"), ("green", "right"), ("blue", "left"), ("red", "right")]
    for folder in ("a", "b"):
        for i, (colour, direction) in enumerate(specs):
            name = "clip.mp4" if i == 0 else f"{colour}-{direction}-{i}.mp4"
            write_video(
                root / folder / name,
                24 + 6 * i,
                fps=12,
                width=80,
                height=60,
                gop=6,
                frame_fn=lambda _, t, c=colour, d=direction: moving_square_frame(
                    t, colour=c, direction=d, width=80, height=60
                ),
            )
            rows.append(f"{folder}/{name},{colour};{direction},{'train' if folder == 'a' else 'test'}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def write_small_shards(cache: Path, *, parts: int, rng) -> None:
    """`parts` shards of view "v", six videos each (v00, v01, ...): 2-4 rows of 32 float16 values
    from `rng`, half-second windows with end times."""
    import numpy as np

    from vidcache.cache.arrays import write_view_arrays

    for part in range(parts):
        rows = []
        for i in range(part * 6, part * 6 + 6):
            starts = np.arange(2 + i % 3) * 0.5
            windows = np.stack([starts, starts + 0.5], axis=1)
            rows.append((f"v{i:02d}", rng.standard_normal((len(starts), 32)).astype(np.float16), windows))
        write_view_arrays(cache, view="v", rows=rows, entries=[], identity={"m": 1})


def tiny_clip_args(checkpoint: object) -> list[str]:
    """The extract options of the tests' tiny CLIP: its architecture and the random weights file."""
    return ["--clip-model", "vidcache-tiny", "--clip-pretrained", str(checkpoint)]


def run_cli(
    *args: str, timeout: float = HANG_GUARD_S, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `vidcache` as a separate process, as cron or Slurm would; `env` adds variables."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "vidcache.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def run_cli_in_process(*args: object) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `vidcache ARGS` run in this process, through `main`'s error
    mapping (one-line errors, exit codes) without a subprocess's seconds of start-up."""
    import contextlib
    import io

    from vidcache.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()
