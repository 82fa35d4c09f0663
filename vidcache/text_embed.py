"""The raw text-tower embeddings of a text query's prompts (`search --text`), from the fastest source that
gives the same numbers each time:

1. the cache's text memo (`cache/textmemo.py`): a repeated prompt, bit for bit, with no model at all;
2. the view's CLIP text tower exported for NumPy (`extract/views/clip/text_tower.py`) into
   `CACHE/text_towers/`: a new prompt in a fresh process without importing torch or open_clip or building
   the model (those take 5-10 s on a 2-core machine; the NumPy tower about 0.1 s to load and 10 ms a
   prompt), with `--device auto` (on a GPU machine too) or `cpu`;
3. the model itself through torch: with `--device cuda`, for towers NumPy does not compute (X-CLIP, layer
   scale, HF tokenizers, bf16 weights), and once per view on the CPU to make the export.

Which source a view uses is decided by its identity and `--device`, and recorded (the exported file, or a
marker saying torch): the numbers of a prompt never depend on which query came first. `extract` exports the
tower at the end of a run that loaded the model (`ClipView.keep_text_tower`), so a cache's first query is as
fast as any; for a cache without it (written from arrays, or by an older vidcache) the first query of a view
that can be exported loads the model on the CPU once, exports it, checks the export against torch on that
query's prompts (tokens equal, embeddings within float32 rounding) and then computes with the export like
every later query. A read-only cache's export goes to the user's cache folder (`user_tower_dir`), or stays
in memory where that is not writable either."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np

from .cache.reader import Cache
from .extract.views.clip.text_tower import EXPORT_FORMAT, TORCH_MARKER_SUFFIX, NumpyTextTower, store_export, tower_file

__all__ = ["TowerKind", "prompt_vectors", "user_tower_dir"]

TowerKind = Literal["numpy", "torch", "unknown"]  # unknown: not yet tried for this view (the first query)
_log = logging.getLogger(__name__)


_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


def _may_have_gpu() -> bool:
    """Whether torch might see a GPU here, told without importing torch: never without a GPU driver's
    device files (NVIDIA's, ROCm's, WSL's)."""
    return any(os.path.exists(path) for path in _GPU_DEVICE_FILES)


def _cpu_name() -> str:
    """The CPU's model (its instruction set decides which float kernels torch runs), '' where unknown."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return f"{platform.machine()} {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return platform.machine()


def _compute(device: str) -> tuple[str, str]:
    """(the device the text tower runs on, what it computes in: 'cpu …' or 'cuda <autocast dtype> <GPU>'),
    without importing torch where `device` is cpu, or auto on a machine with no GPU driver."""
    if device == "cpu" or (device == "auto" and not _may_have_gpu()):
        return "cpu", f"cpu {_cpu_name()}"
    import torch

    from .device import autocast_dtype, resolve_device

    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return str(resolved), f"{resolved.type} {_cpu_name()}"
    return str(resolved), f"cuda {autocast_dtype(resolved)} {torch.cuda.get_device_name(resolved)}"


def _library_versions(identity: dict, kind: TowerKind) -> dict[str, str]:
    """The versions of the libraries a text tower's numbers come from (read from their metadata, not imported)."""
    import importlib.metadata

    from .version import __version__

    if kind == "numpy":
        dists: tuple[str, ...] = ("numpy",)
    elif identity.get("backbone") == "transformers":
        dists = ("torch", "transformers")
    else:
        dists = ("torch", "open_clip_torch")
    versions = {"vidcache": __version__}
    for dist in dists:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = ""
    return versions


def _memo_context(identity_json: str, identity: dict, compute: str, prompts: list[str], kind: TowerKind) -> str:
    """The text memo's key for `prompts` embedded in one model call: everything their numbers depend on (the
    view's identity, where and in what precision the tower runs, the libraries, and the call's whole batch,
    as a batch's padding and kernels may differ with its other prompts)."""
    import hashlib

    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    return sha(
        json.dumps(
            {
                "memo": 1,
                "identity_sha256": sha(identity_json),
                "compute": compute if kind == "torch" else f"numpy text tower {EXPORT_FORMAT}, {compute}",
                "versions": _library_versions(identity, kind),
                "batch_sha256": sha(json.dumps(prompts)),
            },
            sort_keys=True,
        )
    )


def prompt_vectors(
    cache: Cache, identity: dict, identity_json: str, prompts: list[str], *, device: str, allow_download: bool
) -> np.ndarray:
    """[P, D] float32 raw text-tower embeddings of `prompts` (one batch): from the memo when it holds all of
    them, else computed (NumPy tower or torch, see the module's doc) and memoised."""
    from .cache.textmemo import read_text_memo, write_text_memo

    path = _tower_path(cache, identity, identity_json, device)
    kind = _tower_kind(path)
    if kind != "unknown":
        compute = _numpy_compute() if kind == "numpy" else _compute(device)[1]
        memoised = read_text_memo(cache.path, _memo_context(identity_json, identity, compute, prompts, kind), prompts)
        if memoised is not None:
            return memoised
    vectors, kind, compute = _embed(cache, identity_json, path, kind, prompts, device, allow_download)
    context = _memo_context(identity_json, identity, compute, prompts, kind)
    write_text_memo(cache.path, context, prompts, vectors)  # a read-only cache: not memoised, no error
    return vectors


def _numpy_compute() -> str:
    """What the NumPy tower computes on: this CPU, whatever `--device` says."""
    return f"cpu {_cpu_name()}"


def _tower_path(cache: Cache, identity: dict, identity_json: str, device: str) -> Path | None:
    """Where the view's NumPy text tower is (or would be) exported; None where it is never used: for X-CLIP,
    a tower kept in bf16, and `--device cuda` (the GPU in the rows' autocast arithmetic, as asked). With
    `auto` a GPU machine uses it too: a query's forward pass is milliseconds on a CPU, where importing
    torch to reach the GPU is seconds; and the query's numbers are then the same on every kind of host."""
    if device == "cuda" or identity.get("backbone") != "open_clip" or identity.get("precision") == "bf16-weights":
        return None
    in_cache = tower_file(cache.path, identity_json)  # `extract` writes it there at the end of a run
    if _tower_kind(in_cache) != "unknown" or _writable(cache.path):
        return in_cache
    # a read-only cache (a shared corpus mounted read-only): the user's own cache folder, keyed the same way,
    # so the next process need not load the model again
    return user_tower_dir() / in_cache.name


def user_tower_dir() -> Path:
    """`$XDG_CACHE_HOME/vidcache/text_towers` (default `~/.cache/...`): exports of read-only caches' towers."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vidcache" / "text_towers"


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


# towers exported in this process but not written (nowhere writable), by the path they would have had
_IN_MEMORY: dict[str, NumpyTextTower] = {}


def _tower_kind(path: Path | None) -> TowerKind:
    if path is None or Path(f"{path}{TORCH_MARKER_SUFFIX}").exists():
        return "torch"
    if str(path) in _IN_MEMORY or path.exists():
        return "numpy"
    return "unknown"


def _embed(
    cache: Cache, identity_json: str, path: Path | None, kind: TowerKind, prompts: list[str], device: str,
    allow_download: bool,
) -> tuple[np.ndarray, TowerKind, str]:  # fmt: skip
    """(`prompts`' vectors, the kind of tower that computed them, what it computed on): the one place a
    tower runs. The export is made from the model on the CPU (float32, as the NumPy tower computes)."""
    if kind == "numpy" and path is not None:
        tower = _IN_MEMORY.get(str(path)) or _loaded_tower(path)
        if tower is not None:
            return tower.encode(prompts), "numpy", _numpy_compute()
        kind = "unknown"  # damaged: made again below, as on the view's first query
    if kind == "unknown" and path is not None:
        encoder = _text_encoder(identity_json, "cpu", allow_download, str(cache.path))
        exported = _export(encoder, prompts, encoder.encode_text(prompts).astype(np.float32), path)
        if exported is not None:
            return exported, "numpy", _numpy_compute()
    resolved, compute = _compute(device)
    encoder = _text_encoder(identity_json, resolved, allow_download, str(cache.path))
    return encoder.encode_text(prompts).astype(np.float32), "torch", compute


def _export(encoder, prompts: list[str], reference: np.ndarray, path: Path) -> np.ndarray | None:
    """Export `encoder`'s text tower to `path`, or a marker saying why it stays on torch, and return the
    export's vectors of `prompts` (None: torch's stand)."""
    from .extract.views.clip.model import export_text_tower

    tower, vectors, why_not = export_text_tower(encoder, prompts, reference)
    try:
        store_export(path, tower, why_not)
    except OSError:  # nowhere writable: this process keeps the export; the next one makes it again
        if tower is not None:
            _IN_MEMORY[str(path)] = tower
    return vectors


def _loaded_tower(path: Path) -> NumpyTextTower | None:
    """The export at `path`; None (with a warning, the file deleted) where it cannot be read: it is derived
    from the model, so a damaged one costs one export, never a wrong or failed search."""
    try:
        return _numpy_tower(str(path))
    except (OSError, ValueError) as exc:
        _log.warning("%s; exporting the text tower again", exc)
        with contextlib.suppress(OSError):  # a read-only cache keeps it; this process exports into memory
            path.unlink(missing_ok=True)
        return None


@functools.lru_cache(maxsize=2)
def _numpy_tower(path: str) -> NumpyTextTower:
    return NumpyTextTower.load(path)


@functools.lru_cache(maxsize=2)
def _text_encoder(identity_json: str, device: str, allow_download: bool, cache_dir: str):
    """The view's text tower, kept for the next query of the same view (loading it dominates a query)."""
    import torch

    identity = json.loads(identity_json)
    if identity.get("backbone") == "transformers":  # X-CLIP of the video view
        from .extract.views.video.model import video_for_identity

        return video_for_identity(
            identity, device=torch.device(device), allow_download=allow_download, cache_dir=cache_dir
        )
    from .extract.views.clip.model import clip_for_identity

    return clip_for_identity(identity, device=torch.device(device), allow_download=allow_download, cache_dir=cache_dir)
