"""How the `vidcache` program ends once torch is loaded (`cli._exit`): what the interpreter's exit does that
matters still happens (non-daemon threads finish, atexit handlers run, an HDF5 file still open for writing
is closed, the output is flushed, the exit code is kept) and its finalisation of every module and object,
1.2-1.3 s with torch and open_clip loaded, is skipped; called as a function, `main` exits as ever."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np

from tests.conftest import HANG_GUARD_S, REPO

SCRIPT = """
import atexit, sys, threading, time
import h5py, numpy as np, torch
from vidcache import cli

cli._PROGRAM = {program}
out = sys.argv[1]
atexit.register(lambda: open(out + ".atexit", "w").write("ran"))
threading.Thread(target=lambda: (time.sleep(0.3), open(out + ".thread", "w").write("done"))).start()
h5 = h5py.File(out + ".h5", "w")  # left open, as a bug would leave it
h5.create_dataset("rows", data=np.arange(1000.0))

import os

class Finalised:  # writes when the interpreter's finalisation collects it (the fd and os.write bound now)
    def __del__(self, write=os.write, fd=os.open(out + ".finalised", os.O_WRONLY | os.O_CREAT)):
        write(fd, b"yes")

keep = Finalised()
print("printed, not flushed", end="")
cli._exit(3)
"""


def _run(tmp_path, *, program: bool):
    out = tmp_path / ("program" if program else "function")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(program=program), str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=HANG_GUARD_S,
    )  # fmt: skip
    return done, out


def test_the_program_exits_with_its_code_after_the_exit_duties_and_without_finalisation(tmp_path):
    done, out = _run(tmp_path, program=True)
    assert done.returncode == 3 and done.stdout == "printed, not flushed", done.stderr
    assert out.with_suffix(".atexit").read_text() == "ran"
    assert out.with_suffix(".thread").read_text() == "done"
    with h5py.File(out.with_suffix(".h5"), "r") as h5:
        assert np.array_equal(h5["rows"][()], np.arange(1000.0))
    assert out.with_suffix(".finalised").read_text() == ""  # the finalisation was skipped


def test_called_as_a_function_it_exits_as_python_does(tmp_path):
    done, out = _run(tmp_path, program=False)
    assert done.returncode == 3 and done.stdout == "printed, not flushed", done.stderr
    assert out.with_suffix(".atexit").exists() and out.with_suffix(".thread").exists()
    assert out.with_suffix(".finalised").read_text() == "yes"  # the finalisation collected it
