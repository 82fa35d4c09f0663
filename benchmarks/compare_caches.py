"""Are two caches' rows the same? Every view, every video: rows byte for byte, row times, and the view
identities (what a refactor must not change). Exit 0 when everything is identical, 1 otherwise.

    # the same small corpus extracted by two checkouts (e.g. main and a branch), then:
    .venv/bin/python benchmarks/compare_caches.py CACHE_A CACHE_B [--json]

docs/benchmarks.md §9 has the whole recipe (every view, weight-free settings).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from vidcache import Cache


def compare(a_dir: str, b_dir: str) -> dict:
    a, b = Cache(a_dir), Cache(b_dir)
    out: dict = {"views": {}, "identical": sorted(a.views()) == sorted(b.views())}
    for view in sorted(set(a.views()) & set(b.views())):
        videos = a.video_ids(view)
        same_videos = videos == b.video_ids(view)
        rows = differing = 0
        max_abs = 0.0
        for video in videos if same_videos else []:
            (ra, ta), (rb, tb) = a.read(video, view, raw=True), b.read(video, view, raw=True)
            rows += len(ra)
            same = ra.dtype == rb.dtype and ra.shape == rb.shape and ra.tobytes() == rb.tobytes()
            if not same or not np.array_equal(ta, tb):
                differing += 1
                if ra.shape == rb.shape:
                    max_abs = max(max_abs, float(np.abs(ra.astype(np.float64) - rb.astype(np.float64)).max()))
        info_a, info_b = a.view_info(view), b.view_info(view)
        identity_diff = sorted(k for k in info_a.keys() | info_b.keys() if info_a.get(k) != info_b.get(k))
        out["views"][view] = {
            "videos": len(videos),
            "rows": rows,
            "same_videos": same_videos,
            "videos_differing": differing,
            "max_abs_diff": max_abs,
            "identity_differs_in": identity_diff,
        }
        out["identical"] &= same_videos and differing == 0 and not identity_diff
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache_a")
    parser.add_argument("cache_b")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = compare(args.cache_a, args.cache_b)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for view, facts in result["views"].items():
            verdict = "bit-identical" if facts["videos_differing"] == 0 and facts["same_videos"] else "DIFFERENT"
            changed = facts["identity_differs_in"] or "-"
            print(
                f"{view:8s} {facts['videos']} videos, {facts['rows']} rows: {verdict}"
                f" (max |diff| {facts['max_abs_diff']:.3g}); identity differs in: {changed}"
            )
        print("identical" if result["identical"] else "NOT identical")
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
