"""Before/after of `bench_scale.py` commands on one kept cache, interleaved so that outside load hits
both alike: each command line runs alternately with PYTHONPATH = the old checkout and the new one.

    .venv/bin/python benchmarks/bench_scale_ab.py /work/bench_scale/10000/cache OLD_CHECKOUT NEW_CHECKOUT ab.json \
        status,search_video_indexed,index_build,mine_neighbours,train_linear [--repeats 2]

`remove_not_in` only changes the catalog: its file is copied aside once and put back before each
run, so every run removes the same 10 %.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path, help="A cache kept by bench_scale.py --keep (SIZE_DIR/cache).")
    parser.add_argument("before", help="Checkout of the old code (its root goes on PYTHONPATH).")
    parser.add_argument("after", help="Checkout of the new code.")
    parser.add_argument("out", help="JSON result file.")
    parser.add_argument("commands", help="Comma-separated names from bench_scale.COMMANDS.")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="ViT-B-32")
    args = parser.parse_args(argv)
    size_dir = args.cache.parent
    lines = bench_scale.command_lines(size_dir, args.model, 0.98)
    results: dict = {}
    catalog = args.cache / "catalog.sqlite"
    pristine = size_dir / "catalog.before-remove.sqlite"
    if "remove_not_in" in args.commands.split(",") and not pristine.exists():
        shutil.copy2(catalog, pristine)
    for name in args.commands.split(","):
        for _ in range(args.repeats):
            for label, source in (("before", args.before), ("after", args.after)):
                os.environ["PYTHONPATH"] = source
                if name.startswith("train"):  # a fresh run directory each time
                    shutil.rmtree(size_dir / "run_linear", ignore_errors=True)
                if name == "remove_not_in":  # the same videos to remove each time
                    shutil.copy2(pristine, catalog)
                result = bench_scale.run_timed(lines[name], cwd=size_dir, timeout_s=3600)
                result["load_avg_1m"] = round(os.getloadavg()[0], 2)
                results.setdefault(name, {}).setdefault(label, []).append(result)
                print(
                    name,
                    label,
                    result["seconds"],
                    result["cpu_s"],
                    result["peak_rss_mib"],
                    result["exit_code"],
                    flush=True,
                )
                Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
