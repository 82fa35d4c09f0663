"""`benchmarks/bench_gpu.py --quick` on the CPU: every section runs, the JSON document holds the figures
the GPU check reports, and its own correctness checks (exact top-k against a float64 NumPy brute force,
FAISS ids against torch's) hold. The wheel list for the GPU machine matches constraints.txt."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HANG_GUARD_S

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_gpu_quick_runs_every_section(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        # no time budget: its 120 s default skips sections on a loaded machine, and this test checks that
        # every section runs, not how fast (the hang guard still ends a hung run)
        [
            sys.executable,
            "benchmarks/bench_gpu.py",
            "--quick",
            "--device",
            "cpu",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
            "--budget-s",
            "1e9",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "bench_gpu.json").read_text())
    assert doc["errors"] == {}
    s = doc["sections"]
    for name in (
        "machine",
        "corpus",
        "model",
        "encode_path",
        "decode",
        "extract",
        "decode_variants",
        "s3d",
        "raft",
        "mining",
        "heads",
    ):
        assert name in s, name
    assert doc["skipped"]["compile"] == "no GPU (compile is measured on CUDA only)"
    assert set(doc["skipped"]) == {"compile", "nvdec"} and doc["skipped"]["nvdec"].startswith("no NVDEC here")
    assert "skipped nvdec" in done.stdout
    assert s["model"]["vidcache-tiny"]["fp32"]["images_per_s"] > 0
    extract = s["extract"]["vidcache-tiny"]
    # every sampled frame became a row: 4 videos x 2 s x 4 fps
    assert extract["rows"] == extract["frames"] == 4 * 2 * 4
    assert extract["ratio_extract_over_min"] > 0
    assert set(s["decode"]["by_workers"]) >= {"1"} and set(s["decode"]["threads_by_workers"]) >= {"1"}
    assert s["mining"]["torch"]["recall_vs_numpy_float64"] == 1.0
    assert s["mining"]["faiss"]["ids_equal_to_torch"] >= 0.99
    assert s["heads"]["heads"]["pool"]["videos_per_s"] > 0
    assert "extract vidcache-tiny (frames/s)" in done.stdout


def test_gpu_wheels_are_the_pinned_versions():
    script = (ROOT / "benchmarks" / "gpu_wheels.sh").read_text()
    packages = re.search(r'PACKAGES="([^"]+)"', script).group(1).split()
    pins = {
        line.split("==")[0].lower(): line.split("==")[1]
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert {"av", "open_clip_torch", "ftfy", "faiss-cpu", "pynvvideocodec"} <= set(packages)
    for name in packages:
        assert name.lower() in pins, f"{name} is not pinned in constraints.txt"
