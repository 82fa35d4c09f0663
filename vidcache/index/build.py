"""Which FAISS index, built how, stored where, and whether a stored one still matches the cache.

Rules for `--index-type auto` (N vectors of dimension D, float32 vectors take N·D·4 bytes):
- N ≤ 50 000 and the vectors fit the memory budget: `Flat` (exact; brute force is fast enough);
- the N·D bytes of 8-bit codes fit the budget: `IVF{nlist},SQ8` with nlist = min(4·√N, 1024),
  k-means trained on a sample of 39 points per list, vectors added in batches; nprobe is the
  smallest of 8, 16, ..., 256 whose recall@10 (k + 8 candidates re-scored, as every search does)
  against exact search on 200 sampled vectors is ≥ 0.95, and is stored with the index (HNSW32
  took > 4 min at 1M × 512 on 2 cores: its graph build is ~N·log N distance calls; IVF's cost is
  two BLAS products);
- otherwise `IVF{nlist},PQ{m}` with nlist ≈ 4·√N and the largest m (dividing D, ≤ D/2) whose N·m
  code bytes fit the budget (vectors are compressed to m bytes each).
`--index-type` overrides with any of flat, hnsw, ivf (IVF{nlist},Flat), ivfsq (IVF{nlist},SQ8) or ivfpq.
The recall@10 of every approximate index against exact search is measured at build time and stored
in its provenance (`parameters.recall_at_10`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..cache.reader import Cache
from ..config import check_choice
from ..errors import ConfigError
from ..version import __version__

IndexType = Literal["auto", "flat", "hnsw", "ivf", "ivfsq", "ivfpq"]
INDEX_DIR = "index"
FLAT_MAX_VECTORS = 50_000
IVFSQ_MAX_LISTS = 1024  # the add assigns N vectors to nlist centroids: capped, its cost stays linear in N
RECALL_TARGET = 0.95
RECALL_QUERIES = 200
NPROBES = (8, 16, 32, 64, 128, 256)
ADD_BATCH = 65536  # vectors handed to faiss at once: bounds its scratch (distances to every centroid)


@dataclass(frozen=True)
class IndexChoice:
    kind: str  # flat | hnsw | ivf | ivfpq
    factory: str  # the faiss.index_factory string
    reason: str


PQ_MIN_TRAIN = 256  # 8-bit product-quantiser codebooks: one k-means of 256 centroids per sub-vector


def choose_index(n: int, dim: int, *, memory_budget_bytes: float, requested: str = "auto") -> IndexChoice:
    check_choice("--index-type", requested, IndexType)
    vector_bytes = n * dim * 4
    nlist = max(1, min(n // 39 or 1, round(4 * math.sqrt(n))))  # faiss wants ≥ 39 training points per list
    if requested == "flat" or (requested == "auto" and n <= FLAT_MAX_VECTORS and vector_bytes <= memory_budget_bytes):
        return IndexChoice("flat", "Flat", f"{n} vectors: exact search")
    if requested == "hnsw":
        return IndexChoice("hnsw", "HNSW32", f"{n} vectors: HNSW (requested)")
    if requested == "ivfsq" or (requested == "auto" and n * dim <= memory_budget_bytes):
        lists = max(1, min(n // 39 or 1, round(4 * math.sqrt(n)), IVFSQ_MAX_LISTS))
        return IndexChoice("ivfsq", f"IVF{lists},SQ8", f"{n} vectors: IVF with {lists} lists, 8-bit codes")
    if requested == "ivf":
        return IndexChoice("ivf", f"IVF{nlist},Flat", f"IVF with {nlist} lists")
    if n < PQ_MIN_TRAIN:  # faiss would stop with an assertion deep inside its k-means
        raise ConfigError(
            f"--index-type ivfpq needs at least {PQ_MIN_TRAIN} vectors to train its codebooks (256 centroids "
            f"each), this view has {n}; use --index-type flat, hnsw or auto (or a larger --memory-budget-gb)"
        )
    divisors = [m for m in range(1, dim // 2 + 1) if dim % m == 0 and n * m <= memory_budget_bytes]
    if not divisors:
        raise ConfigError(f"{n} vectors do not fit --memory-budget-gb even as 1-byte codes; raise the budget")
    m = max(d for d in divisors if d <= 64) if any(d <= 64 for d in divisors) else min(divisors)
    # "np": no polysemous training, which the factory otherwise runs and vidcache never uses (halves build time)
    return IndexChoice("ivfpq", f"IVF{nlist},PQ{m}np", f"{n}×{dim} float32 exceed the budget: IVF-PQ, {m} bytes/vector")


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def build_index(
    vectors: np.ndarray,
    choice: IndexChoice,
    *,
    use_gpu: bool | None = None,
    seed: int = 0,
    calibration: dict | None = None,
):
    """An inner-product index over unit vectors (inner product = cosine). Trained on at most 256
    points per list, sampled with `seed`. On a GPU (faiss-gpu) when available and not refused.
    Its recall@10 (and IVF nprobe) from `calibrate_recall` goes into `calibration` when given."""
    import faiss

    dim = vectors.shape[1]
    index = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        ivf = faiss.extract_index_ivf(index)
        # IVF-SQ8: 39 points per list (faiss's minimum) and 10 k-means rounds; the recall check below
        # raises nprobe where the coarser centroids cost recall. PQ codebooks want 256 per list.
        per_list, ivf.cp.niter = (39, 10) if choice.kind == "ivfsq" else (256, ivf.cp.niter)
        n_train = min(len(vectors), per_list * max(1, ivf.nlist))
        index.train(np.ascontiguousarray(vectors[np.sort(rng.choice(len(vectors), n_train, replace=False))]))
    for lo in range(0, len(vectors), ADD_BATCH):
        index.add(np.ascontiguousarray(vectors[lo : lo + ADD_BATCH], dtype=np.float32))
    if choice.kind.startswith("ivf"):
        faiss.extract_index_ivf(index).nprobe = 16
    if choice.kind == "hnsw":
        index.hnsw.efSearch = 128  # recall@10 0.93 → 0.96 at 200k for ~2x search time (bench_index.py)
    measured = calibrate_recall(index, vectors, choice.kind, seed=seed)
    if calibration is not None:
        calibration.update(measured)
    # faiss-gpu has no HNSW; IVF-PQ with many bytes per code needs float16 lookup tables
    if choice.kind != "hnsw" and ((use_gpu is None and gpu_available()) or use_gpu):
        resources = faiss.StandardGpuResources()
        options = faiss.GpuClonerOptions()
        options.useFloat16 = choice.kind == "ivfpq"
        index = faiss.index_cpu_to_gpu(resources, 0, index, options)
        index.vidcache_gpu_resources = resources  # keep the resources alive with the index
    return index


def calibrate_recall(index, vectors: np.ndarray, kind: str, *, k: int = 10, seed: int = 0) -> dict:
    """recall@k of searches through `index` against exact search, for sampled database vectors (each
    query's own row excluded). Searched as every caller searches (`knn.search`: k + 8 candidates
    re-scored on the exact vectors), so 8-bit codes cost no recall their re-scoring restores. For IVF
    kinds the smallest nprobe in NPROBES reaching RECALL_TARGET is set on the index.
    Returns {"recall_at_10", "recall_queries"[, "nprobe"]}."""
    import faiss

    from . import knn

    n = len(vectors)
    k = min(k, n - 1)
    if kind == "flat" or k < 1:
        return {"recall_at_10": 1.0, "recall_queries": 0}
    rows = np.sort(np.random.default_rng(seed).choice(n, min(RECALL_QUERIES, n), replace=False))
    queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    _, exact = faiss.knn(queries, vectors, k + 1, metric=faiss.METRIC_INNER_PRODUCT)  # no copy of the vectors
    exact = np.stack([r[r != own][:k] for r, own in zip(exact, rows, strict=True)])
    ivf = faiss.extract_index_ivf(index) if kind.startswith("ivf") else None
    recall = 0.0
    for nprobe in NPROBES if ivf is not None else (None,):
        if ivf is not None:
            ivf.nprobe = min(nprobe, ivf.nlist)
        _, found = knn.search(index, queries, vectors, k, exact=False, exclude=lambda q, r: r == q, query_rows=rows)
        recall = knn.recall_at_k(found, exact)
        if recall >= RECALL_TARGET or (ivf is not None and ivf.nprobe == ivf.nlist):
            break
    out = {"recall_at_10": round(recall, 4), "recall_queries": len(rows)}
    return {**out, "nprobe": int(ivf.nprobe)} if ivf is not None else out


FINGERPRINT_PREFIX = "rows:"  # the content fingerprint; a plain hex digest is the first form, with the places


def cache_fingerprint(cache: Cache, view: str, *, places: bool = False) -> str:
    """Changes whenever the view's extracted rows change (a video added, redone or removed), not when
    `compact` moves them: each done video's id, row count and rows' CRC32. `places=True`: the first form
    (ids, shards, row offsets, CRCs), kept to check indexes stored before."""
    digest = hashlib.sha1()
    lines = cache._catalog.fingerprint_lines(view, where=places)  # formatted by SQLite: no Python object per video
    while block := list(itertools.islice(lines, 65536)):
        digest.update("".join(block).encode())
    return digest.hexdigest() if places else FINGERPRINT_PREFIX + digest.hexdigest()


def catalog_state(cache: Cache, view: str) -> str | None:
    """One-row token that changes whenever any item of `view` is written (None on a catalog without
    the counter): equal tokens spare `cache_fingerprint`'s pass over every item (2 s at 1M videos)."""
    return cache._catalog.view_state(view)


@dataclass
class IndexProvenance:
    view: str
    pooling: str
    index_type: str
    factory: str
    reason: str
    n_vectors: int
    dim: int
    fingerprint: str
    view_identity: dict
    vidcache_version: str = __version__
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    parameters: dict = field(default_factory=dict)
    catalog_state: str | None = None  # `catalog_state` when the fingerprint was taken


def index_paths(cache_dir: str | Path, view: str) -> dict[str, Path]:
    base = Path(cache_dir) / INDEX_DIR
    return {
        "dir": base,
        "index": base / f"{view}.faiss",
        "vectors": base / f"{view}.vectors.npy",
        "ids": base / f"{view}.ids.json",
        "meta": base / f"{view}.json",
    }


def save_index(cache_dir: str | Path, index, vectors, provenance: IndexProvenance) -> Path:
    """Write index, vectors, ids and provenance; each file atomically (temp name, then rename)."""
    import faiss

    paths = index_paths(cache_dir, provenance.view)
    paths["dir"].mkdir(parents=True, exist_ok=True)
    cpu_index = faiss.index_gpu_to_cpu(index) if hasattr(index, "vidcache_gpu_resources") else index

    def atomic(path: Path, write) -> None:
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        tmp.replace(path)

    # meta goes first and comes back last: a crash in between leaves no meta, so nothing is trusted
    paths["meta"].unlink(missing_ok=True)
    atomic(paths["vectors"], lambda p: np.save(open(p, "wb"), vectors.vectors))
    atomic(paths["ids"], lambda p: p.write_text(json.dumps(vectors.video_ids)))
    atomic(paths["index"], lambda p: faiss.write_index(cpu_index, str(p)))
    meta = {
        **asdict(provenance),
        # hashed through a buffer view: tobytes() would copy all vectors (2 GiB at 1M × 512)
        "vectors_sha1": hashlib.sha1(memoryview(np.ascontiguousarray(vectors.vectors)).cast("B")).hexdigest(),
        "files": {name: _stamp(paths[name]) for name in ("vectors", "ids", "index")},
    }
    atomic(paths["meta"], lambda p: p.write_text(json.dumps(meta, indent=2, sort_keys=True)))
    return paths["index"]


def load_index(cache: Cache, view: str, *, pooling: str):
    """(index, VideoVectors, provenance) of a stored index that still matches the cache, else None."""
    import faiss

    from .vectors import VideoVectors

    paths = index_paths(cache.path, view)
    if not all(paths[k].exists() for k in ("index", "vectors", "ids", "meta")):
        return None
    meta = json.loads(paths["meta"].read_text())
    if meta.get("pooling") != pooling:
        return None
    if not _items_unchanged(cache, view, meta, paths["meta"]):
        return None
    # memory-mapped: a search touches the pages it needs, not the whole file (1M × 512 floats = 2 GiB)
    vectors = VideoVectors(
        json.loads(paths["ids"].read_text()), np.load(paths["vectors"], mmap_mode="r"), view, pooling
    )
    try:
        index = faiss.read_index(str(paths["index"]), faiss.IO_FLAG_MMAP)
    except RuntimeError:  # an index type FAISS cannot map: read it
        index = faiss.read_index(str(paths["index"]))
    stamps = meta.get("files")
    if stamps:  # the files are those the meta was written with (size and mtime): no pass over the vectors
        unchanged = all(_stamp(paths[name]) == stamp for name, stamp in stamps.items())
    else:  # an index stored before the stamps
        digest = hashlib.sha1(np.ascontiguousarray(vectors.vectors).tobytes()).hexdigest()
        unchanged = digest == meta.get("vectors_sha1")
    consistent = len(vectors) == meta.get("n_vectors") == index.ntotal and unchanged
    return (index, vectors, meta) if consistent else None


def _items_unchanged(cache: Cache, view: str, meta: dict, meta_path: Path) -> bool:
    """Whether the view's items are those the index was built from: the catalog's change token when it is
    the recorded one (one row), else the fingerprint. A match by fingerprint (after `compact`, whose moves
    change the token; or an index stored before the content fingerprint) records the current token and
    fingerprint in the meta, so the next load is one row again."""
    state = catalog_state(cache, view)  # first: a write after it makes the token stale, never wrong
    if meta.get("catalog_state") is not None and meta["catalog_state"] == state:
        return True
    recorded = str(meta.get("fingerprint", ""))
    places = not recorded.startswith(FINGERPRINT_PREFIX)
    if recorded != cache_fingerprint(cache, view, places=places):
        return False
    refreshed = {**meta, "catalog_state": state}
    if places:
        refreshed["fingerprint"] = cache_fingerprint(cache, view)
    tmp = meta_path.with_name(meta_path.name + f".{os.getpid()}.tmp")
    try:  # a read-only cache: matched all the same, checked again next time
        tmp.write_text(json.dumps(refreshed, indent=2, sort_keys=True))
        if json.loads(meta_path.read_text()) == meta:  # not an `index build` that stored another since
            tmp.replace(meta_path)
    except (OSError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return True


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]
