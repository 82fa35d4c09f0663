"""`vidcache import`: features made elsewhere, stored as one view of a cache so that `Cache`, the
index and the heads read them like extracted ones.

Two layouts of `.npy` files are understood (FEATURE_DIR is the folder given):

- plain: `FEATURE_DIR/<video_id>.npy` or `FEATURE_DIR/<video_id without its extension>.npy`
  (a video_id with `/` lies in subfolders), an array [T, D] (or [D]: one row). Optional timestamps
  next to it: `<same stem>_timestamps_ms.npy` (milliseconds) or `<same stem>.timestamps_s.npy`
  (seconds), and `<same stem>_fps.npy`.
- video_features (github.com/v-iashin/video_features, `on_extraction=save_numpy`): one flat folder
  (it writes into `<output_path>/<feature_type>[/<model_name>]`) holding `<stem>_<feature>.npy`,
  `<stem>_timestamps_ms.npy` and `<stem>_fps.npy`, where `<stem>` is the video's file name without
  its extension and `<feature>` the output key (`clip`, `resnet`, `r21d`, `s3d`, `vggish`, `rgb` and
  `flow` for i3d...). Some extractors (vggish, some i3d versions) write no timestamps.

Rows are timed by the given timestamps (converted to seconds) when the files have them, else by the
row index: timestamps_s = 0, 1, 2... (the view records `timestamps: "index"`). A video whose file is
missing, unreadable, not [T, D], not finite, of another D than the others, or whose timestamps do
not match its rows fails alone, with its reason; the rest is imported. Arrays are read one video at
a time, while the previous ones are already written.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from ..config import Dtype, check_choice
from ..errors import ConfigError
from ..manifest import VideoEntry, read_manifest
from .arrays import write_view_arrays

LAYOUTS = ("plain", "video_features")
_META_KEYS = ("timestamps_ms", "fps")  # video_features outputs that are not features
_VIEW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MS, _S = 1000.0, 1.0  # stored timestamp units per second


@dataclass(frozen=True)
class ImportSummary:
    imported: int
    failed: int
    failures: dict[str, str]  # video_id -> reason
    view: str
    dim: int
    layout: str  # "plain" | "video_features"
    feature: str = ""  # the video_features output key ("" for plain)
    timestamps: str = "index"  # "given" | "index"


@dataclass
class _Planned:
    """One video whose feature file exists and whose header looks right."""

    entry: VideoEntry
    features: Path
    timestamp_candidates: list[tuple[Path, float]]  # (file, its units per second)
    fps: Path
    rows: int = 0
    dim: int = 0
    timestamps: tuple[Path, float] | None = None


@dataclass
class _Plan:
    layout: str
    feature: str
    videos: list[_Planned] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


class _Failed(Exception):
    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


# file names ----------------------------------------------------------------------------------------
def _plain_names(video_id: str) -> list[str] | None:
    """`<video_id>.npy`, then `<video_id without extension>.npy`; None for ids that would leave FEATURE_DIR."""
    relative = PurePosixPath(video_id)
    if relative.is_absolute() or not relative.parts or ".." in relative.parts:
        return None
    names = [f"{relative}.npy"]
    if relative.suffix:
        names.append(f"{relative.with_suffix('')}.npy")
    return names


def _plan_plain(entries: list[VideoEntry], feature_dir: Path) -> _Plan:
    plan = _Plan("plain", "")
    for entry in entries:
        names = _plain_names(entry.video_id)
        if names is None:
            plan.failures[entry.video_id] = (
                f"video_id {entry.video_id!r} is not a relative path, so it names no file under {feature_dir}; "
                "give the manifest a video_id column or --root"
            )
            continue
        found = next((feature_dir / n for n in names if (feature_dir / n).is_file()), None)
        if found is None:
            looked = ", ".join(str(feature_dir / n) for n in names)
            plan.failures[entry.video_id] = f"no feature file (looked for {looked})"
            continue
        stem = str(found)[: -len(".npy")]
        plan.videos.append(
            _Planned(
                entry,
                found,
                [(Path(stem + "_timestamps_ms.npy"), _MS), (Path(stem + ".timestamps_s.npy"), _S)],
                Path(stem + "_fps.npy"),
            )
        )
    return plan


def _video_features_files(feature_dir: Path, stems: set[str]) -> dict[str, set[str]]:
    """stem -> output keys found as `<stem>_<key>.npy`; a name is given to the longest stem it
    starts with, so `a_b_clip.npy` belongs to `a_b` when both `a` and `a_b` are videos."""
    found: dict[str, set[str]] = {}
    try:
        names = os.listdir(feature_dir)
    except OSError:
        return found
    for name in names:
        if not name.endswith(".npy"):
            continue
        base = name[: -len(".npy")]
        cuts = [i for i, char in enumerate(base) if char == "_" and base[:i] in stems and i + 1 < len(base)]
        if cuts:
            cut = max(cuts)
            found.setdefault(base[:cut], set()).add(base[cut + 1 :])
    return found


def _plan_video_features(entries: list[VideoEntry], feature_dir: Path, feature: str | None) -> _Plan:
    stem_of = {e.video_id: Path(e.path).stem for e in entries}
    sharing = Counter(stem_of.values())
    keys = _video_features_files(feature_dir, set(stem_of.values()))
    if feature is None:
        found = Counter(k for ks in keys.values() for k in ks if k not in _META_KEYS)
        if len(found) > 1:
            listed = ", ".join(f"{k} ({n} videos)" for k, n in sorted(found.items()))
            raise ConfigError(f"{feature_dir} holds several video_features outputs: {listed}; pick one with --feature")
        feature = next(iter(found), "")
    plan = _Plan("video_features", feature)
    for entry in entries:
        stem = stem_of[entry.video_id]
        if sharing[stem] > 1:
            others = sorted(v for v, s in stem_of.items() if s == stem)
            plan.failures[entry.video_id] = (
                f"{len(others)} manifest videos share the file name stem {stem!r} ({', '.join(others)}); "
                "video_features names its files by that stem only, so the files cannot be told apart"
            )
            continue
        path = feature_dir / f"{stem}_{feature or '<feature>'}.npy"
        if not feature or not path.is_file():
            plan.failures[entry.video_id] = f"no feature file (looked for {path})"
            continue
        plan.videos.append(
            _Planned(
                entry,
                path,
                [(feature_dir / f"{stem}_timestamps_ms.npy", _MS)],
                feature_dir / f"{stem}_fps.npy",
            )
        )
    return plan


# checks ------------------------------------------------------------------------------------------
def _rows_and_dim(shape: tuple[int, ...], path: Path) -> tuple[int, int]:
    if len(shape) == 1:
        rows, dim = 1, shape[0]
    elif len(shape) == 2:
        rows, dim = shape
    else:
        raise _Failed(f"{path} holds an array of shape {shape}; expected [T, D] (or [D] for one row)")
    if rows == 0 or dim == 0:
        raise _Failed(f"{path} holds an empty array (shape {shape})")
    return rows, dim


def _read_header(planned: _Planned) -> None:
    """Shape and dtype from the .npy header only (the file is memory-mapped, not read)."""
    path = planned.features
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        shape, dtype = tuple(array.shape), array.dtype
        del array
    except (OSError, ValueError, EOFError) as exc:
        raise _Failed(f"{path} cannot be read as a .npy array ({exc})") from None
    if dtype.kind not in "fiu":
        raise _Failed(f"{path} holds {dtype} values; expected numbers")
    planned.rows, planned.dim = _rows_and_dim(shape, path)


def _load_features(planned: _Planned, dim: int, store: np.dtype) -> np.ndarray:
    path = planned.features
    try:
        features = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise _Failed(f"{path} cannot be read as a .npy array ({exc})") from None
    rows, got = _rows_and_dim(features.shape, path)
    if got != dim:
        raise _Failed(f"{path} has D={got}, the other videos D={dim}")
    features = features.reshape(rows, dim)
    if features.dtype.kind == "f":
        finite = np.isfinite(features)
        if not finite.all():
            bad = np.argwhere(~finite.all(axis=1)).ravel()
            raise _Failed(f"{path} holds NaN or infinite values (in {len(bad)} of {rows} rows, first row {bad[0]})")
    largest = float(np.abs(features).max())
    if largest > float(np.finfo(store).max):
        raise _Failed(f"{path} holds values up to {largest:g}, beyond {store} (import with --dtype float32)")
    return features


def _load_timestamps(planned: _Planned) -> np.ndarray:
    if planned.timestamps is None:
        return np.arange(planned.rows, dtype=np.float64)
    path, unit = planned.timestamps
    try:
        stamps = np.atleast_1d(np.load(path, allow_pickle=False))
    except (OSError, ValueError, EOFError) as exc:
        raise _Failed(f"{path} cannot be read as a .npy array ({exc})") from None
    if stamps.ndim != 1 or stamps.dtype.kind not in "fiu":
        raise _Failed(f"{path} holds {stamps.dtype} of shape {stamps.shape}; expected one number per row")
    if len(stamps) != planned.rows:
        raise _Failed(f"{path} has {len(stamps)} timestamps for {planned.rows} feature rows in {planned.features}")
    seconds = stamps.astype(np.float64) / unit
    if not np.isfinite(seconds).all():
        raise _Failed(f"{path} holds NaN or infinite timestamps")
    return seconds


def _read_fps(path: Path) -> float | None:
    """The fps video_features saves next to the features; a missing or odd file is no failure."""
    if not path.is_file():
        return None
    try:
        value = np.load(path, allow_pickle=False)
        fps = float(value.reshape(())) if value.size == 1 and value.dtype.kind in "fiu" else None
    except (OSError, ValueError, EOFError):
        return None
    return fps if fps is not None and np.isfinite(fps) and fps > 0 else None


# the import --------------------------------------------------------------------------------------
def import_features(
    feature_dir: str | Path,
    *,
    manifest: str | Path,
    cache_dir: str | Path,
    view: str,
    feature: str | None = None,
    root: str | None = None,
    dtype: str = "float16",
    command: str = "",
    layout: str | None = None,
) -> ImportSummary:
    """Store the `.npy` features in `feature_dir` of the manifest's videos as view `view` of the
    cache at `cache_dir` (created if needed); see the module docstring for the file names.

    `layout` is "plain", "video_features" or None: video_features when `feature` is given, else
    plain when any manifest video has a plain file, else video_features (its `--feature` found when
    exactly one output key is there). The view's recorded identity is where the files came from,
    the layout, feature, D, dtype and whether timestamps were given; importing again with other
    settings into the same view is refused (ConfigError), the same import again replaces the rows.
    """
    check_choice("--dtype", dtype, Dtype)
    if not _VIEW_NAME.match(view or ""):
        raise ConfigError(f"--view {view!r} is not a view name; use letters, digits, '_', '-' or '.'")
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"--layout {layout!r} is not known; choose one of: {', '.join(LAYOUTS)}")
    if feature is not None and (not feature or "/" in feature or feature in _META_KEYS):
        raise ConfigError(f"--feature {feature!r} is not a video_features output name (e.g. clip, r21d, vggish)")
    if layout == "plain" and feature is not None:
        raise ConfigError("--feature names a video_features output; the plain layout has none")
    source = Path(feature_dir).resolve()
    if not source.is_dir():
        raise ConfigError(f"feature folder {feature_dir} does not exist or is not a folder")
    entries = read_manifest(manifest, root=root)

    if layout == "plain" or (layout is None and feature is None):
        plan = _plan_plain(entries, source)
        if layout is None and not plan.videos:
            plan = _plan_video_features(entries, source, None)
            if not plan.videos and not plan.feature:  # neither layout: say what the plain one looked for
                plan = _plan_plain(entries, source)
    else:
        plan = _plan_video_features(entries, source, feature)

    failures = dict(plan.failures)
    videos: list[_Planned] = []
    for planned in plan.videos:
        try:
            _read_header(planned)
        except _Failed as exc:
            failures[planned.entry.video_id] = exc.reason
            continue
        videos.append(planned)
    if not videos:
        _raise_nothing_to_import(source, plan, failures, len(entries))

    dim = Counter(p.dim for p in videos).most_common(1)[0][0]
    kept: list[_Planned] = []
    for planned in videos:
        if planned.dim != dim:
            failures[planned.entry.video_id] = (
                f"{planned.features} has D={planned.dim}, the other videos D={dim} "
                f"({sum(p.dim == dim for p in videos)} of {len(videos)})"
            )
            continue
        planned.timestamps = next(((p, u) for p, u in planned.timestamp_candidates if p.is_file()), None)
        kept.append(planned)

    given = any(p.timestamps is not None for p in kept)
    if given:
        for planned in [p for p in kept if p.timestamps is None]:
            looked = ", ".join(str(p) for p, _ in planned.timestamp_candidates)
            failures[planned.entry.video_id] = (
                f"no timestamps file (looked for {looked}) while other videos have them; "
                "add it, or move the others' timestamps files away to time rows by index"
            )
        kept = [p for p in kept if p.timestamps is not None]

    identity = {
        "imported_from": str(source),
        "layout": plan.layout,
        "feature": plan.feature,
        "feature_dim": int(dim),
        "dtype": dtype,
        "timestamps": "given" if given else "index",
    }
    store = np.dtype(dtype)

    def rows() -> Iterator[tuple[str, np.ndarray, np.ndarray, dict]]:
        for planned in kept:
            video_id = planned.entry.video_id
            try:
                features = _load_features(planned, dim, store)
                timestamps_s = _load_timestamps(planned)
            except _Failed as exc:
                failures[video_id] = exc.reason
                continue
            info: dict = {"feature_file": str(planned.features)}
            fps = _read_fps(planned.fps)
            if fps is not None:
                info["fps"] = fps
            yield video_id, features, timestamps_s, info

    imported = write_view_arrays(
        cache_dir,
        view=view,
        rows=rows(),
        entries=entries,
        identity=identity,
        dtype=dtype,
        command=command,
        failures=failures,
    )
    ordered = {e.video_id: failures[e.video_id] for e in entries if e.video_id in failures}
    return ImportSummary(
        imported=imported,
        failed=len(ordered),
        failures=ordered,
        view=view,
        dim=int(dim),
        layout=plan.layout,
        feature=plan.feature,
        timestamps=identity["timestamps"],
    )


def _raise_nothing_to_import(source: Path, plan: _Plan, failures: dict[str, str], total: int) -> None:
    some = "; ".join(f"{v}: {r}" for v, r in list(failures.items())[:3])
    hint = (
        " (video_features writes into <output_path>/<feature_type>[/<model_name>]: give that folder, "
        "and --feature when it holds several outputs)"
    )
    if plan.layout == "plain":
        hint = f" as <video_id>.npy, nor as video_features' <stem>_<feature>.npy{hint}"
    raise ConfigError(f"none of the {total} manifest videos can be imported from {source}{hint}; e.g. {some}")
