"""benchmarks/bench_scale.py at a tiny size: every command of issue 29 runs as its own process and
lands in the JSON with its time and peak RSS; the synthetic cache holds what was asked for."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from vidcache import Cache

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_scale


def test_every_command_is_timed_at_300_videos(tmp_path):
    out = tmp_path / "scale.json"
    args = ["--sizes", "300", "--model", "vidcache-tiny", "--dim", "64", "--quick", "--keep", "--dup-every", "30"]
    assert bench_scale.main([*args, "--workdir", str(tmp_path / "work"), "--json-out", str(out)]) == 0
    document = json.loads(out.read_text())
    (size,) = document["sizes"]
    assert size["videos"] == 300
    assert set(size["commands"]) == set(bench_scale.COMMANDS)
    for name, result in size["commands"].items():
        assert result["exit_code"] == 0, (name, result["stderr_tail"])
        assert result["seconds"] > 0 and result["peak_rss_mib"] > 20, (name, result)
    assert size["commands"]["import"]["videos"] == 300
    assert size["commands"]["report"]["output_mib"] > 0
    with Cache(tmp_path / "work" / "300" / "imported") as imported:  # the import really brought 300 videos
        assert len(imported.video_ids("clip")) == 300
        rows, times = imported.read("v0000007", "clip")
        assert rows.shape == (bench_scale.ROWS_PER_VIDEO, 64) and np.array_equal(times, np.arange(8))
    # remove --not-in kept 90 %: 270 synthetic videos (the real one is not in keep90.csv)
    with Cache(tmp_path / "work" / "300" / "cache") as cache:
        assert len(cache.video_ids("clip")) == 270
