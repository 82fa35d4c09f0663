"""Which FAISS index, built how, stored where, and whether a stored one still matches the cache.

Rules for `--index-type auto` (N vectors of dimension D, float32 vectors take N·D·4 bytes):
- N ≤ 50 000 and the vectors fit the memory budget: `Flat` (exact; brute force is fast enough);
- the vectors fit the budget: `HNSW32` (about N·(4·D + 256) bytes, no training, high recall);
- otherwise `IVF{nlist},PQ{m}` with nlist ≈ 4·√N and the largest m (dividing D, ≤ D/2) whose N·m
  code bytes fit the budget (vectors are compressed to m bytes each).
`--index-type` overrides with any of flat, hnsw, ivf (IVF{nlist},Flat) or ivfpq.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..cache.reader import Cache
from ..config import check_choice
from ..errors import ConfigError
from ..version import __version__

IndexType = Literal["auto", "flat", "hnsw", "ivf", "ivfpq"]
INDEX_DIR = "index"
FLAT_MAX_VECTORS = 50_000


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
    if requested == "hnsw" or (requested == "auto" and vector_bytes <= memory_budget_bytes):
        return IndexChoice("hnsw", "HNSW32", f"{n} vectors fit {memory_budget_bytes / 2**30:.1f} GiB: HNSW")
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


def build_index(vectors: np.ndarray, choice: IndexChoice, *, use_gpu: bool | None = None, seed: int = 0):
    """An inner-product index over unit vectors (inner product = cosine). Trained on at most 256
    points per list, sampled with `seed`. On a GPU (faiss-gpu) when available and not refused."""
    import faiss

    dim = vectors.shape[1]
    index = faiss.index_factory(dim, choice.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        n_train = min(len(vectors), 256 * max(1, getattr(faiss.extract_index_ivf(index), "nlist", 1)))
        index.train(vectors[np.sort(rng.choice(len(vectors), n_train, replace=False))])
    index.add(vectors)
    if choice.kind.startswith("ivf"):
        faiss.extract_index_ivf(index).nprobe = 16
    if choice.kind == "hnsw":
        index.hnsw.efSearch = 128  # recall@10 0.93 → 0.96 at 200k for ~2x search time (bench_index.py)
    # faiss-gpu has no HNSW; IVF-PQ with many bytes per code needs float16 lookup tables
    if choice.kind != "hnsw" and ((use_gpu is None and gpu_available()) or use_gpu):
        resources = faiss.StandardGpuResources()
        options = faiss.GpuClonerOptions()
        options.useFloat16 = choice.kind == "ivfpq"
        index = faiss.index_cpu_to_gpu(resources, 0, index, options)
        index.vidcache_gpu_resources = resources  # keep the resources alive with the index
    return index


def cache_fingerprint(cache: Cache, view: str) -> str:
    """Changes whenever the view's extracted rows change (a video added, redone or removed)."""
    digest = hashlib.sha1()
    rows = cache._catalog.fingerprint_rows(view)  # streamed from SQLite: no Item object per video
    while block := list(itertools.islice(rows, 65536)):
        digest.update("".join(f"{v}\0{shard}\0{start}\0{crc}\n" for v, shard, start, crc in block).encode())
    return digest.hexdigest()


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
        "vectors_sha1": hashlib.sha1(vectors.vectors.tobytes()).hexdigest(),
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
    if meta.get("pooling") != pooling or meta.get("fingerprint") != cache_fingerprint(cache, view):
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


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]
