"""Does an IVF self-join get cheaper with more, smaller lists? (docs/benchmarks.md 14.7)

Builds, over the stored unit vectors of an index (`CACHE/index/VIEW.vectors.npy`, e.g. a bench_scale
cache after `vidcache index build`), either today's `auto` IVF-SQ8 (1,024 lists, k-means on 39 points a
list) or an index with N / LIST_SIZE lists (two-level k-means from faiss.contrib.clustering, an HNSW32
coarse quantizer so adding N vectors stays near-linear); calibrates nprobe as `index build` does
(recall@10 ≥ 0.95 on 200 sampled videos, or the largest nprobe), then runs the self-join of
`mine neighbours` (k = 10) and measures its recall against the exact twin on 300 videos. Prints each
step's seconds.

    .venv/bin/python benchmarks/bench_join_lists.py VECTORS.npy --n 1000000 --lists fine --list-size 100
    .venv/bin/python benchmarks/bench_join_lists.py VECTORS.npy --n 1000000 --lists auto
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build(vectors: np.ndarray, lists: str, list_size: int):
    import faiss
    from faiss.contrib.clustering import two_level_clustering

    n, dim = vectors.shape
    rng = np.random.default_rng(0)
    if lists == "auto":
        nlist = 1024
        index = faiss.index_factory(dim, f"IVF{nlist},SQ8", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).cp.niter = 10
        index.train(np.ascontiguousarray(vectors[np.sort(rng.choice(n, 39 * nlist, replace=False))]))
        return index
    nlist = max(1024, n // list_size)
    index = faiss.index_factory(dim, f"IVF{nlist}_HNSW32,SQ8", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    sample = np.ascontiguousarray(vectors[np.sort(rng.choice(n, min(n, 64 * nlist), replace=False))])
    centroids, _ = two_level_clustering(sample, int(np.sqrt(nlist)), nlist, clustering_niter=10, spherical=True)
    ivf.quantizer.add(centroids)
    faiss.downcast_index(ivf.quantizer).hnsw.efSearch = 64
    index.train(sample)  # the SQ8 codebook; the quantizer is already trained
    return index


def main(argv: list[str] | None = None) -> int:
    from vidcache.index.build import calibrate_recall
    from vidcache.index.ivfjoin import exact_topk, ivf_join_topk

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vectors")
    parser.add_argument("--n", type=int, default=0, help="the first N vectors (0: all)")
    parser.add_argument("--lists", choices=["auto", "fine"], default="auto")
    parser.add_argument("--list-size", type=int, default=100)
    args = parser.parse_args(argv)
    import faiss

    vectors = np.load(args.vectors, mmap_mode="r")
    vectors = np.ascontiguousarray(vectors[: args.n or len(vectors)], np.float32)
    started = time.perf_counter()
    index = build(vectors, args.lists, args.list_size)
    trained = time.perf_counter()
    for lo in range(0, len(vectors), 65536):
        index.add(vectors[lo : lo + 65536])
    added = time.perf_counter()
    calibration = calibrate_recall(index, vectors, "ivfsq")
    ivf = faiss.extract_index_ivf(index)
    print(f"lists {ivf.nlist}: train {trained - started:.1f} s, add {added - trained:.1f} s, {calibration}", flush=True)
    joined = time.perf_counter()
    _, rows = ivf_join_topk(ivf, vectors, 10, nprobe=ivf.nprobe)
    print(f"join {time.perf_counter() - joined:.1f} s", flush=True)
    sample = np.sort(np.random.default_rng(3).choice(len(vectors), 300, replace=False))
    _, exact = exact_topk(vectors, sample, 10)
    recall = np.mean([len(np.intersect1d(rows[q], exact[i])) / 10 for i, q in enumerate(sample)])
    print(f"join recall@10 {recall:.3f} on 300 videos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
