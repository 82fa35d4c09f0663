"""Index benchmark: vidcache's exact neighbour mining vs a bare FAISS call, the cache read, and ANN indexes.

All data is synthetic and seeded: `--videos` float16 embeddings of dimension `--dim` drawn around
`--clusters` Gaussian centres grouped in super-clusters around a shared direction (see
`cluster_centres`), cast to float32 unit vectors with `vidcache.index.normalise` (what
`video_vectors` does).

1. exact mining at scale: `knn.search(IndexFlatIP, Q, X, k, exclude=self, query_rows=rows)` (block
   search, float64 re-scoring, (score desc, row asc) order, retries) vs a bare
   `faiss.IndexFlatIP.search(Q, k + 1)` on the same arrays (no exclusion, no re-scoring). Each runs
   in its own child process, which loads the vectors, builds the flat index, resets its peak RSS
   (Linux clear_refs) and times only the search, so the peak reported is per method and per phase;
   the runs interleave
   (bare, vidcache, bare, vidcache, ...) so that load from elsewhere hits both alike. The whole
   database is searched; the queries are all rows, or a seeded subset of `--queries` rows when an
   all-vs-all run would take too long. A sample of `--check` queries is compared with
   `knn.brute_force` (float64 NumPy);
2. end to end through the cache: `--cache-videos` videos x `--rows-per-video` rows written with
   `write_view_arrays` (float16), then `nearest_videos(cache, k, view)` with its time split into
   cache reading, pooling, normalising, index building, search and the rest;
3. approximate indexes: `choose_index(..., requested=KIND)` + `build_index` for KIND in `--ann`
   (hnsw, ivf, ivfpq; `ivfpq-np` = the ivfpq choice with "np" appended to its factory string, i.e.
   without FAISS's polysemous training) over the `--videos` vectors; build time, search time of
   `--ann-queries` queries through `knn.search(..., exact=False)` (as built with slack 8; again with
   `--ann-slack` candidates re-scored; for HNSW also with efSearch `--hnsw-ef`), recall@k against the
   exact result and speed-up vs the exact search of the same queries;
4. when vidcache / bare exceeds the target (or with `--profile always`): cProfile of `knn.search`.

    .venv/bin/python benchmarks/bench_index.py            # table on stdout, progress on stderr
    .venv/bin/python benchmarks/bench_index.py --json     # one JSON document on stdout
    .venv/bin/python benchmarks/bench_index.py --json-out result.json   # table, and the JSON in a file
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

import vidcache
from vidcache.index import knn, mining
from vidcache.index import vectors as index_vectors
from vidcache.index.build import IndexChoice, build_index, choose_index
from vidcache.index.vectors import normalise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import OtherLoad, bench_workdir, progress_log  # sibling script: machine load from /proc/stat

TARGET_EXACT_RATIO = 1.2  # vidcache knn.search / bare IndexFlatIP.search, same queries and database
ANN_KINDS = ("hnsw", "ivf", "ivfpq", "ivfpq-np")  # ivfpq-np: vidcache's ivfpq choice without polysemous training
DEFAULT_ANN = ("hnsw", "ivf", "ivfpq")


# data -------------------------------------------------------------------------------------------
def cluster_centres(rng: np.random.Generator, dim: int, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres and per-cluster spreads shaped like CLIP-style embeddings rather than isolated blobs:
    a direction shared by everything (unit variance per dimension), `clusters // 20` super-clusters
    (0.8) and the clusters around them (0.8); points add noise of 0.5 to 1.0 per dimension. Cosines
    after normalising: about 0.3 between super-clusters, 0.5 within one, 0.7 to 0.9 within a cluster."""
    shared = rng.standard_normal(dim, dtype=np.float32)
    supers = 0.8 * rng.standard_normal((max(1, clusters // 20), dim), dtype=np.float32)
    centres = supers[rng.integers(0, len(supers), clusters)]
    centres = shared + centres + 0.8 * rng.standard_normal((clusters, dim), dtype=np.float32)
    return centres, rng.uniform(0.5, 1.0, clusters).astype(np.float32)


def clustered_float16(n: int, dim: int, clusters: int, seed: int, *, chunk: int = 16384) -> np.ndarray:
    """[n, dim] float16 points around `clusters` centres (see `cluster_centres`)."""
    rng = np.random.default_rng(seed)
    centres, spread = cluster_centres(rng, dim, clusters)
    assign = rng.integers(0, clusters, n)
    out = np.empty((n, dim), np.float16)
    for start in range(0, n, chunk):
        a = assign[start : start + chunk]
        noise = rng.standard_normal((len(a), dim), dtype=np.float32)
        out[start : start + len(a)] = centres[a] + spread[a, None] * noise
    return out


def unit_vectors(x16: np.ndarray, *, chunk: int = 32768) -> np.ndarray:
    """float16 → float32 unit vectors with vidcache's `normalise`, in chunks (same result)."""
    return np.concatenate([normalise(x16[i : i + chunk]) for i in range(0, len(x16), chunk)])


def self_excluded(query_row: int, rows: np.ndarray) -> np.ndarray:
    return rows == query_row


def status_mib(field: str = "VmRSS") -> float:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM, and so ru_maxrss) to its current RSS (Linux
    clear_refs "5"), so that the peak after it belongs to what runs next."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# child process: one exact search, its own peak RSS ---------------------------------------------
class TimedIndex:
    """Forwards `search` to a FAISS index and adds up the time and the queries it was asked for, so
    vidcache's time can be split into FAISS and its own work around it."""

    def __init__(self, index) -> None:
        self.index, self.seconds, self.calls, self.queries = index, 0.0, 0, 0

    def search(self, queries: np.ndarray, k: int):
        started = time.perf_counter()
        out = self.index.search(queries, k)
        self.seconds += time.perf_counter() - started
        self.calls += 1
        self.queries += len(queries)
        return out


def child_main(args: argparse.Namespace) -> int:
    """`--child bare|vidcache`: load the vectors and queries, build the flat index, time one search,
    save the rows, print one JSON line (rusage is read by the parent with os.wait4 as well)."""
    workdir = args.workdir
    database = np.load(workdir / "vectors.npy")
    query_rows = np.load(workdir / "query_rows.npy")
    queries = database if len(query_rows) == len(database) else database[query_rows]
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(database)
    out: dict[str, Any] = {"method": args.child, "faiss_threads": faiss.omp_get_max_threads()}
    out["load_peak_rss_mib"] = status_mib("VmHWM")  # loading the vectors and building the index
    out["rss_before_search_mib"] = status_mib("VmRSS")
    out["peak_reset"] = reset_peak_rss()
    started = time.perf_counter()
    if args.child == "bare":
        _, rows = index.search(queries, args.k + 1)
        out["search_s"] = time.perf_counter() - started
    else:
        timed = TimedIndex(index)
        _, rows = knn.search(timed, queries, database, args.k, exclude=self_excluded, query_rows=query_rows)
        out["search_s"] = time.perf_counter() - started
        out["faiss_s"] = timed.seconds
        out["faiss_calls"] = timed.calls
        out["faiss_queries"] = timed.queries  # > len(queries): rows searched again with a larger k
    out["search_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # since the reset
    out["search_added_mib"] = out["search_peak_rss_mib"] - out["rss_before_search_mib"]
    out["peak_rss_mib"] = max(out["load_peak_rss_mib"], out["search_peak_rss_mib"])
    np.save(workdir / f"rows_{args.child}.npy", rows)
    print(json.dumps(out), flush=True)
    return 0


def run_child(method: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", method, "--workdir", str(workdir)]
    argv += ["--k", str(args.k)]
    others = OtherLoad().start()
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child {method} failed:\n{stderr[-3000:]}")
    out = json.loads(stdout.strip().splitlines()[-1])
    out.update(
        child_wall_s=wall,
        child_cpu_s=usage.ru_utime + usage.ru_stime,
        child_ru_maxrss_mib=usage.ru_maxrss / 1024,  # after the child's peak reset: its search phase
        other_processes_cores=others.stop(),
    )
    return out


# 1. exact mining at scale -----------------------------------------------------------------------
def exact_mining(args: argparse.Namespace, workdir: Path, vectors: np.ndarray, log: Callable[[str], None]) -> dict:
    n = len(vectors)
    n_queries = min(args.queries or n, n)
    rng = np.random.default_rng(args.seed + 1)
    query_rows = np.arange(n) if n_queries == n else np.sort(rng.choice(n, n_queries, replace=False))
    np.save(workdir / "vectors.npy", vectors)
    np.save(workdir / "query_rows.npy", query_rows)
    runs: dict[str, list[dict]] = {"bare": [], "vidcache": []}
    for repeat in range(args.repeats):
        for method in ("bare", "vidcache"):
            log(f"[1] {method} search of {n_queries} queries x {n} rows (repeat {repeat + 1}/{args.repeats}) ...")
            run = run_child(method, args, workdir)
            runs[method].append(run)
            log(
                f"    {run['search_s']:.1f} s search, child {run['child_wall_s']:.1f} s, "
                f"peak RSS {run['peak_rss_mib']:.0f} MiB (search {run['search_peak_rss_mib']:.0f}), "
                f"others {run['other_processes_cores']} cores"
            )
    ratios = [v["search_s"] / b["search_s"] for b, v in zip(runs["bare"], runs["vidcache"], strict=True)]
    bare_rows, vid_rows = np.load(workdir / "rows_bare.npy"), np.load(workdir / "rows_vidcache.npy")

    # correctness on a sample: vidcache == NumPy brute force; and how often bare FAISS differs
    pick = np.sort(np.random.default_rng(args.seed + 2).choice(n_queries, min(args.check, n_queries), replace=False))
    sample_rows = query_rows[pick]
    mask = np.arange(n)[None, :] == sample_rows[:, None]
    others = (sample_rows + np.random.default_rng(args.seed + 6).integers(1, n, len(sample_rows))) % n
    log(f"[1] brute force (float64 NumPy) on {len(pick)} sampled queries ...")
    started = time.perf_counter()
    brute_scores, brute_rows = knn.brute_force(vectors[sample_rows], vectors, args.k, exclude_mask=mask)
    brute_s = time.perf_counter() - started
    vidcache_equal = int((vid_rows[pick] == brute_rows).all(axis=1).sum())
    bare_no_self = np.array(
        [[r for r in row if r != q][: args.k] for row, q in zip(bare_rows[pick], sample_rows, strict=True)]
    )
    bare_equal = int((bare_no_self == brute_rows).all(axis=1).sum())
    bare_same_set = int(sum(set(a) == set(b) for a, b in zip(bare_no_self.tolist(), brute_rows.tolist(), strict=True)))
    bare_self_first = float((bare_rows[:, 0] == query_rows).mean())

    med_bare = statistics.median(r["search_s"] for r in runs["bare"])
    med_vid = statistics.median(r["search_s"] for r in runs["vidcache"])
    faiss_s = statistics.median(r["faiss_s"] for r in runs["vidcache"])
    return {
        "n_database": n,
        "n_queries": n_queries,
        "queries_subset": n_queries < n,
        "k": args.k,
        "runs": runs,
        "bare_search_s": med_bare,
        "vidcache_search_s": med_vid,
        "bare_ms_per_query": 1000 * med_bare / n_queries,
        "vidcache_ms_per_query": 1000 * med_vid / n_queries,
        "projected_all_queries_s": {"bare": med_bare / n_queries * n, "vidcache": med_vid / n_queries * n},
        "ratios": ratios,
        "ratio": statistics.median(ratios),  # median over the interleaved (bare, vidcache) pairs
        "ratio_of_medians": med_vid / med_bare,
        "target": TARGET_EXACT_RATIO,
        "met": statistics.median(ratios) <= TARGET_EXACT_RATIO,
        "vidcache_faiss_s": faiss_s,
        "vidcache_outside_faiss_s": med_vid - faiss_s,
        "vidcache_outside_faiss_us_per_query": 1e6 * (med_vid - faiss_s) / n_queries,
        # what the ratio would be if vidcache's FAISS call took exactly the bare call's time
        "ratio_outside_faiss_only": (med_bare + med_vid - faiss_s) / med_bare,
        "vidcache_rows_searched_again": runs["vidcache"][-1]["faiss_queries"] - n_queries,
        "peak_rss_mib": {m: max(r["peak_rss_mib"] for r in runs[m]) for m in runs},
        "rss_before_search_mib": {m: max(r["rss_before_search_mib"] for r in runs[m]) for m in runs},
        "search_peak_rss_mib": {m: max(r["search_peak_rss_mib"] for r in runs[m]) for m in runs},
        "search_added_mib": {m: max(r["search_added_mib"] for r in runs[m]) for m in runs},
        "child_cpu_util": {m: statistics.median(r["child_cpu_s"] / r["child_wall_s"] for r in runs[m]) for m in runs},
        "check": {
            "queries": len(pick),
            "vidcache_equal_brute_force": vidcache_equal,
            "bare_equal_brute_force": bare_equal,
            "bare_same_set_as_brute_force": bare_same_set,
            "bare_self_ranked_first": bare_self_first,
            "brute_force_s": brute_s,
            "mean_cosine_rank_1": float(brute_scores[:, 0].mean()),
            "mean_cosine_rank_k": float(brute_scores[:, -1].mean()),
            "mean_cosine_random_pair": float(np.mean(np.sum(vectors[sample_rows] * vectors[others], axis=1))),
        },
        "query_rows": query_rows,  # dropped from the report; reused by section 3
    }


# 2. end to end through the cache ----------------------------------------------------------------
class Stopwatch:
    """Wrap `module.name` so that every call adds its time to `self.seconds[label]`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def wrap(self, module, name: str, label: str) -> None:
        original = getattr(module, name)
        self.seconds.setdefault(label, 0.0)

        def timed(*a, **kw):
            started = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                self.seconds[label] += time.perf_counter() - started

        setattr(module, name, timed)
        self._undo.append((module, name, original))

    def restore(self) -> None:
        for module, name, original in reversed(self._undo):
            setattr(module, name, original)
        self._undo.clear()


def through_cache(args: argparse.Namespace, workdir: Path, log: Callable[[str], None]) -> dict:
    from vidcache import Cache
    from vidcache.cache.arrays import write_view_arrays
    from vidcache.manifest import VideoEntry

    n, t, dim = args.cache_videos, args.rows_per_video, args.dim
    rng = np.random.default_rng(args.seed + 3)
    clusters = max(1, min(args.clusters, n // 20))
    centres, spread = cluster_centres(rng, dim, clusters)
    cluster_of = rng.integers(0, clusters, n)
    ids = [f"g{c:05d}/v{i:07d}" for i, c in enumerate(cluster_of)]
    entries = [VideoEntry(v, f"/x/{v}.mp4", (f"class{cluster_of[i]}",)) for i, v in enumerate(ids)]
    timestamps = np.arange(t, dtype=np.float64)

    def rows():
        for i, video_id in enumerate(ids):
            c = cluster_of[i]
            frames = centres[c] + spread[c] * rng.standard_normal((t, dim), dtype=np.float32)
            yield video_id, frames, timestamps

    cache_dir = workdir / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)
    log(f"[2] writing {n} videos x {t} rows x {dim} (float16) with write_view_arrays ...")
    started = time.perf_counter()
    write_view_arrays(cache_dir, view="clip", rows=rows(), entries=entries, identity={"model": "synthetic"})
    write_s = time.perf_counter() - started
    shard_bytes = sum(p.stat().st_size for p in cache_dir.rglob("*.h5"))

    watch = Stopwatch()
    watch.wrap(mining, "video_vectors", "read_pool_normalise")
    watch.wrap(index_vectors, "pool_rows", "pool")
    watch.wrap(index_vectors, "normalise", "normalise")
    watch.wrap(mining, "build_index", "build_index")
    watch.wrap(knn, "search", "search")
    watch.wrap(mining, "cache_fingerprint", "fingerprint")
    others = OtherLoad().start()
    log(f"[2] nearest_videos(cache, k={args.k}, view='clip') ...")
    try:
        with Cache(cache_dir) as cache:
            started = time.perf_counter()
            frame, summary = mining.nearest_videos(cache, k=args.k, view="clip")
            total_s = time.perf_counter() - started
    finally:
        watch.restore()
    s = watch.seconds
    read_s = s["read_pool_normalise"] - s["pool"] - s["normalise"]
    rest_s = total_s - s["read_pool_normalise"] - s["build_index"] - s["search"] - s["fingerprint"]
    return {
        "videos": n,
        "rows_per_video": t,
        "dim": dim,
        "dtype": "float16",
        "index_type": summary.index_type,
        "exact": summary.exact,
        "short_lists": summary.short_lists,
        "result_rows": len(frame),
        "write_s": write_s,
        "shard_mib": shard_bytes / 2**20,
        "total_s": total_s,
        "split_s": {
            "read (Cache.iter_batches)": read_s,
            "pool (pool_rows, mean)": s["pool"],
            "normalise": s["normalise"],
            "build_index (Flat add)": s["build_index"],
            "search (knn.search)": s["search"],
            "cache_fingerprint": s["fingerprint"],
            "rest (DataFrame, ids)": rest_s,
        },
        "read_pool_share": s["read_pool_normalise"] / total_s,
        "search_share": s["search"] / total_s,
        "other_processes_cores": others.stop(),
    }


# 3. approximate indexes -------------------------------------------------------------------------
def approximate(
    args: argparse.Namespace,
    vectors: np.ndarray,
    candidates: np.ndarray,
    log: Callable[[str], None],
    bulk_exact_ms: float | None = None,
) -> dict:
    """`bulk_exact_ms`: vidcache's exact ms/query from section 1 (large query batches, where FAISS's
    flat search is more efficient per query than on `--ann-queries` queries); used for the
    all-rows projection."""
    n, dim = vectors.shape
    rng = np.random.default_rng(args.seed + 4)
    sample = np.sort(rng.choice(candidates, min(args.ann_queries, len(candidates)), replace=False))
    queries = vectors[sample]
    budget = args.memory_budget_gb * 2**30

    def timed_search(index, exact: bool, slack: int = 8) -> tuple[float, np.ndarray]:
        times, rows = [], None
        for _ in range(args.ann_repeats):
            started = time.perf_counter()
            _, rows = knn.search(
                index, queries, vectors, args.k, exclude=self_excluded, query_rows=sample, exact=exact, slack=slack
            )
            times.append(time.perf_counter() - started)
        return statistics.median(times), rows  # type: ignore[return-value]

    others = OtherLoad().start()
    log(f"[3] exact reference: Flat, {len(sample)} queries ...")
    flat = build_index(vectors, choose_index(n, dim, memory_budget_bytes=budget, requested="flat"), use_gpu=False)
    exact_s, exact_rows = timed_search(flat, True)
    del flat
    out: dict[str, Any] = {
        "queries": len(sample),
        "n_database": n,
        "exact_search_s": exact_s,
        "exact_ms_per_query": 1000 * exact_s / len(sample),
        "exact_ms_per_query_bulk": bulk_exact_ms,
        "indexes": [],
    }
    all_rows_exact_s = (bulk_exact_ms / 1000 if bulk_exact_ms else exact_s / len(sample)) * n
    for kind in args.ann:
        choice = choose_index(n, dim, memory_budget_bytes=budget, requested=kind.removesuffix("-np"))
        if kind == "ivfpq-np":  # the same index, its PQ trained without the polysemous code ordering
            choice = IndexChoice(choice.kind, choice.factory + "np", choice.reason)
        log(f"[3] {kind}: build_index({choice.factory}) over {n} vectors ...")
        started = time.perf_counter()
        index = build_index(vectors, choice, use_gpu=False, seed=args.seed)
        build_s = time.perf_counter() - started
        log(f"    build {build_s:.1f} s")
        inner = faiss.downcast_index(faiss.extract_index_ivf(index) if kind.startswith("ivf") else index)
        params = {"nprobe": inner.nprobe} if kind.startswith("ivf") else {"efSearch": inner.hnsw.efSearch}
        if kind.startswith("ivfpq"):
            params["polysemous_training"] = bool(inner.do_polysemous_training)
        entry: dict[str, Any] = {
            "kind": kind,
            "factory": choice.factory,
            "params": params,
            "build_s": build_s,
            "index_mib": faiss.serialize_index(index).nbytes / 2**20,
            "variants": [],
        }
        variants: list[tuple[str, int]] = [("as built, slack 8", 8), (f"slack {args.ann_slack}", args.ann_slack)]
        if kind == "hnsw":
            variants.append((f"efSearch {args.hnsw_ef}, slack 8", 8))
        for setting, slack in variants:
            if setting.startswith("efSearch"):
                inner.hnsw.efSearch = args.hnsw_ef
            search_s, rows = timed_search(index, False, slack)
            variant = {
                "setting": setting,
                "search_s": search_s,
                "ms_per_query": 1000 * search_s / len(sample),
                "recall_at_k": knn.recall_at_k(rows, exact_rows),
                "speedup_search": exact_s / search_s,
                # mining all n videos: exact search of every row vs building this index + searching every row
                "speedup_all_rows_with_build": all_rows_exact_s / (build_s + search_s / len(sample) * n),
            }
            entry["variants"].append(variant)
            log(
                f"    {setting}: search {search_s:.3f} s, recall@{args.k} {variant['recall_at_k']:.4f}, "
                f"speed-up {variant['speedup_search']:.1f}x"
            )
        out["indexes"].append(entry)
        del index
    out["other_processes_cores"] = others.stop()
    return out


# 4. profile --------------------------------------------------------------------------------------
def profile_search(args: argparse.Namespace, vectors: np.ndarray, query_rows: np.ndarray) -> dict:
    n_queries = min(args.profile_queries, len(query_rows))
    rows = query_rows[np.sort(np.random.default_rng(args.seed + 5).choice(len(query_rows), n_queries, replace=False))]
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    queries = vectors[rows]
    profiler = cProfile.Profile()
    profiler.enable()
    knn.search(index, queries, vectors, args.k, exclude=self_excluded, query_rows=rows)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    top = []
    for (filename, line, name), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        top.append(
            {
                "function": f"{Path(filename).name}:{line}({name})",
                "ncalls": ncalls,
                "tottime_s": tottime,
                "cumtime_s": cumtime,
            }
        )
    top.sort(key=lambda r: -r["tottime_s"])
    total = sum(r["tottime_s"] for r in top)
    return {"queries": n_queries, "total_s": total, "top_by_tottime": top[:15]}


# report ------------------------------------------------------------------------------------------
def git_state() -> str | None:
    """The commit measured, and whether vidcache/index/ differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "vidcache"], cwd=root, capture_output=True, text=True)
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" (vidcache/ modified)" if dirty.stdout.strip() else "")


def bench(args: argparse.Namespace, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "vidcache": vidcache.__version__,
        "git": git_state(),
        "loadavg_before": os.getloadavg(),
    }
    args_out = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result: dict[str, Any] = {"machine": machine, "args": args_out}
    started = time.perf_counter()
    others = OtherLoad().start()
    log(f"[data] {args.videos} x {args.dim} float16, {args.clusters} clusters, seed {args.seed} ...")
    x16 = clustered_float16(args.videos, args.dim, args.clusters, args.seed)
    vectors = unit_vectors(x16)
    del x16
    result["data_s"] = time.perf_counter() - started
    query_rows = np.arange(len(vectors))
    if "exact" in args.sections:
        result["exact"] = exact_mining(args, workdir, vectors, log)
        query_rows = result["exact"].pop("query_rows")
    if "cache" in args.sections:
        result["cache"] = through_cache(args, workdir, log)
    if "ann" in args.sections:
        bulk = result["exact"]["vidcache_ms_per_query"] if "exact" in result else None
        result["ann"] = approximate(args, vectors, query_rows, log, bulk)
    exact = result.get("exact")
    if args.profile == "always" or (args.profile == "auto" and exact is not None and not exact["met"]):
        log(f"[4] cProfile of knn.search on {args.profile_queries} queries ...")
        result["profile"] = profile_search(args, vectors, query_rows)
    machine["loadavg_after"] = os.getloadavg()
    machine["other_processes_cores"] = others.stop()
    result["total_s"] = time.perf_counter() - started
    return result


def print_report(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"\nmachine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}, numpy {m['numpy']}, "
        f"faiss {m['faiss']} ({m['faiss_threads']} threads), vidcache {m['vidcache']} at {m['git']}"
    )
    print(
        f"load average before {tuple(round(v, 2) for v in m['loadavg_before'])}, after "
        f"{tuple(round(v, 2) for v in m['loadavg_after'])}; other processes kept {m['other_processes_cores']} "
        f"cores busy on average; total {result['total_s']:.0f} s"
    )
    if "exact" in result:
        e = result["exact"]
        print(f"\n1. exact k={e['k']} neighbours, self excluded: {e['n_queries']} queries x {e['n_database']} rows")
        if e["queries_subset"]:
            print(f"   (a seeded subset of {e['n_queries']} query rows; the database is always all rows)")
        print(
            "| method | search s (median) | ms/query | all rows, projected s | peak RSS MiB (process) "
            "| RSS before search | peak during search | added by search |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for method, label in (("bare", "bare IndexFlatIP.search(k+1)"), ("vidcache", "vidcache knn.search")):
            print(
                f"| {label} | {e[f'{method}_search_s']:.2f} | {e[f'{method}_ms_per_query']:.2f} | "
                f"{e['projected_all_queries_s'][method]:.0f} | {e['peak_rss_mib'][method]:.0f} | "
                f"{e['rss_before_search_mib'][method]:.0f} | {e['search_peak_rss_mib'][method]:.0f} | "
                f"{e['search_added_mib'][method]:.0f} |"
            )
        verdict = "met" if e["met"] else "MISSED"
        print(
            f"vidcache / bare = {e['ratio']:.3f} (median of pairs; target <= {e['target']}: {verdict}); "
            f"ratio of the medians {e['ratio_of_medians']:.3f}; per repeat "
            f"{', '.join(f'{r:.3f}' for r in e['ratios'])}; child CPU use (cores) bare "
            f"{e['child_cpu_util']['bare']:.2f}, vidcache {e['child_cpu_util']['vidcache']:.2f}"
        )
        print(
            f"vidcache outside FAISS: {e['vidcache_outside_faiss_s']:.2f} s "
            f"({e['vidcache_outside_faiss_us_per_query']:.0f} us/query; bare + that = "
            f"{e['ratio_outside_faiss_only']:.3f} x bare); rows searched again: "
            f"{e['vidcache_rows_searched_again']}"
        )
        c = e["check"]
        print(
            f"check on {c['queries']} queries vs knn.brute_force: vidcache ids identical "
            f"{c['vidcache_equal_brute_force']}/{c['queries']}; bare FAISS (self removed) identical "
            f"{c['bare_equal_brute_force']}/{c['queries']}, "
            f"same set {c['bare_same_set_as_brute_force']}/{c['queries']}; bare ranks self first for "
            f"{100 * c['bare_self_ranked_first']:.2f} % of queries; mean cosine of neighbour 1 "
            f"{c['mean_cosine_rank_1']:.3f}, of neighbour k {c['mean_cosine_rank_k']:.3f}, of a random pair "
            f"{c['mean_cosine_random_pair']:.3f}"
        )
    if "cache" in result:
        c = result["cache"]
        print(
            f"\n2. nearest_videos through the cache: {c['videos']} videos x {c['rows_per_video']} rows x {c['dim']} "
            f"({c['dtype']}, {c['shard_mib']:.0f} MiB of shards, written in {c['write_s']:.1f} s), "
            f"index {c['index_type']}"
        )
        print("| part | s | share |")
        print("|---|---:|---:|")
        for part, seconds in c["split_s"].items():
            print(f"| {part} | {seconds:.2f} | {100 * seconds / c['total_s']:.1f} % |")
        print(f"| total nearest_videos | {c['total_s']:.2f} | 100 % |")
    if "ann" in result:
        a = result["ann"]
        print(
            f"\n3. approximate indexes over {a['n_database']} vectors, {a['queries']} queries: exact Flat search "
            f"{a['exact_search_s']:.2f} s ({a['exact_ms_per_query']:.2f} ms/query"
            + (
                f"; {a['exact_ms_per_query_bulk']:.2f} ms/query in section 1's batches"
                if a["exact_ms_per_query_bulk"]
                else ""
            )
            + ")"
        )
        print(
            "| kind | factory | build params | build s | index MiB | search setting | ms/query | recall@k "
            "| speed-up (search) | speed-up, all rows incl. build |"
        )
        print("|---|---|---|---:|---:|---|---:|---:|---:|---:|")
        for i in a["indexes"]:
            params = ", ".join(f"{k}={v}" for k, v in i["params"].items())
            for j, v in enumerate(i["variants"]):
                head = (
                    f"| {i['kind']} | {i['factory']} | {params} | {i['build_s']:.1f} | {i['index_mib']:.0f} |"
                    if j == 0
                    else "| | | | | |"
                )
                print(
                    f"{head} {v['setting']} | {v['ms_per_query']:.3f} | {v['recall_at_k']:.4f} | "
                    f"{v['speedup_search']:.1f}x | {v['speedup_all_rows_with_build']:.1f}x |"
                )
    if "profile" in result:
        p = result["profile"]
        print(f"\n4. cProfile of knn.search, {p['queries']} queries ({p['total_s']:.2f} s profiled)")
        print("| function | calls | tottime s | cumtime s |")
        print("|---|---:|---:|---:|")
        for r in p["top_by_tottime"]:
            print(f"| {r['function']} | {r['ncalls']} | {r['tottime_s']:.3f} | {r['cumtime_s']:.3f} |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--json-out", type=Path, help="also write the JSON document to this file")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", type=int, default=200_000, help="database size of sections 1 and 3")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--queries", type=int, default=10_000, help="seeded subset of query rows for section 1 (0 = all rows)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each method in section 1")
    parser.add_argument("--check", type=int, default=200, help="queries compared with knn.brute_force")
    parser.add_argument("--cache-videos", type=int, default=20_000)
    parser.add_argument("--rows-per-video", type=int, default=4)
    parser.add_argument(
        "--ann", type=lambda s: s.split(","), default=list(DEFAULT_ANN), help=f"comma list of {ANN_KINDS}"
    )
    parser.add_argument("--ann-queries", type=int, default=1000)
    parser.add_argument("--ann-slack", type=int, default=100, help="knn.search slack of the second ANN search")
    parser.add_argument("--hnsw-ef", type=int, default=128, help="efSearch of the third HNSW search")
    parser.add_argument("--ann-repeats", type=int, default=3, help="timed searches per index (median)")
    parser.add_argument("--memory-budget-gb", type=float, default=4.0, help="passed to choose_index")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--profile-queries", type=int, default=2000)
    parser.add_argument("--sections", type=lambda s: s.split(","), default=["exact", "cache", "ann"], help="comma list")
    parser.add_argument("--child", choices=("bare", "vidcache"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    bad = [k for k in args.ann if k not in ANN_KINDS]
    if bad:
        parser.error(f"--ann: unknown {bad}; choose from {', '.join(ANN_KINDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    log = progress_log(args.json)
    with bench_workdir(args.workdir, prefix="vidcache-bench-index-") as workdir:
        result = bench(args, workdir, log)
    document = json.dumps(result, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    if args.json_out is not None:
        args.json_out.write_text(document + "\n")
    if args.json:
        print(document)
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
