"""`vidcache import`: features made elsewhere, stored as one view of a cache so that `Cache`, the
index and the heads read them like extracted ones.

Two layouts of `.npy` files are understood (FEATURE_DIR is the folder given), matched to the
manifest's videos by exact names (`import_files.py`: a file never goes to two videos, an ambiguous
folder is refused naming the files):

- plain: `FEATURE_DIR/<video_id>.npy` or `FEATURE_DIR/<video_id without its extension>.npy`
  (a video_id with `/` lies in subfolders), an array [T, D] (or [D]: one row). Optional timestamps
  next to it: `<same stem>_timestamps_ms.npy` (milliseconds) or `<same stem>.timestamps_s.npy`
  (seconds), and `<same stem>_fps.npy`.
- video_features (github.com/v-iashin/video_features, `on_extraction=save_numpy`): one flat folder
  (it writes into `<output_path>/<feature_type>[/<model_name>]`) holding `<stem>_<feature>.npy`,
  `<stem>_timestamps_ms.npy` and `<stem>_fps.npy`, where `<stem>` is the video's file name without
  its extension and `<feature>` the output key (`clip`, `resnet`, `r21d`, `s3d`, `vggish`, `rgb` and
  `flow` for i3d, imported side by side as `rgb+flow` by default).

Row times follow the rule of the output (`import_timing.py`: i3d timestamps are stack ends, so
rows start `i3d_stack_frames / fps` earlier; vggish rows are 0.96 s examples; frame-wise outputs
give frame times), else the row index (timestamps_s = 0, 1, 2..., `timestamps: "index"`). The
manifest needs a `path` or a `video_id` per row; no video is opened. A video whose file is
missing, unreadable, not [T, D], not finite, of another D than the others, or whose timestamps do
not match its rows fails alone, with its reason; the rest is imported. Arrays are read one video at
a time, while the previous ones are already written.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Dtype, check_choice
from ..errors import ConfigError
from ..manifest import read_manifest
from . import npy
from .arrays import write_view_arrays
from .fidelity import FIDELITY_VERSION
from .import_files import KNOWN_FEATURES, LAYOUTS, META_KEYS, Listing, Plan, Planned, choose_plan, feature_parts
from .import_timing import DEFAULT_I3D_STACK_FRAMES, TimingError, row_times, timing_rule

_VIEW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FEATURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(\+[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


@dataclass(frozen=True)
class ImportSummary:
    imported: int
    failed: int
    failures: dict[str, str]  # video_id -> reason
    view: str
    dim: int
    layout: str  # "plain" | "video_features"
    feature: str = ""  # the video_features output key ("" for plain; "rgb+flow": both i3d streams)
    timestamps: str = "index"  # the row timing rule: a key of import_timing.RULES


class _Failed(Exception):
    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


# checks ------------------------------------------------------------------------------------------
def _rows_and_dim(shape: tuple[int, ...], path: str) -> tuple[int, int]:
    if len(shape) == 1:
        rows, dim = 1, shape[0]
    elif len(shape) == 2:
        rows, dim = shape
    else:
        raise _Failed(f"{path} holds an array of shape {shape}; expected [T, D] (or [D] for one row)")
    if rows == 0 or dim == 0:
        raise _Failed(f"{path} holds an empty array (shape {shape})")
    return rows, dim


def _read_header(planned: Planned) -> None:
    """Shape and dtype from the .npy headers only (the data is not read yet); the parts
    of a `a+b` feature must have as many rows, and a row is their concatenation."""
    shapes = []
    for path in planned.features:
        try:
            shape, dtype = npy.read_header(path)
        except (OSError, ValueError, EOFError) as exc:
            raise _Failed(f"{path} cannot be read as a .npy array ({exc})") from None
        if dtype.kind not in "fiu":
            raise _Failed(f"{path} holds {dtype} values; expected numbers")
        shapes.append((path, *_rows_and_dim(shape, path)))
    if len({rows for _, rows, _ in shapes}) > 1:
        listed = ", ".join(f"{os.path.basename(path)}: {rows}" for path, rows, _ in shapes)
        raise _Failed(f"the parts of the feature have different row counts ({listed})")
    planned.rows, planned.dim = shapes[0][1], sum(dim for *_, dim in shapes)


def _load_features(planned: Planned, dim: int, store: np.dtype) -> np.ndarray:
    parts = []
    for path in planned.features:
        try:
            part = npy.load(path)
        except (OSError, ValueError, EOFError) as exc:
            raise _Failed(f"{path} cannot be read as a .npy array ({exc})") from None
        parts.append(part.reshape(*_rows_and_dim(part.shape, path)))
    features = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    path = planned.features[0]
    rows, got = features.shape
    if got != dim or rows != planned.rows:
        raise _Failed(f"{path} has D={got}, the other videos D={dim}")
    largest = _largest_magnitude(features)  # NaN or inf when any value is: one pass for both checks
    if features.dtype.kind == "f" and not np.isfinite(largest):
        bad = np.argwhere(~np.isfinite(features).all(axis=1)).ravel()
        raise _Failed(f"{path} holds NaN or infinite values (in {len(bad)} of {rows} rows, first row {bad[0]})")
    if largest > float(np.finfo(store).max):
        raise _Failed(f"{path} holds values up to {largest:g}, beyond {store} (import with --dtype float32)")
    return features


def _largest_magnitude(values: np.ndarray) -> float:
    """max |value|, NaN or inf when one is. IEEE floats without their sign bit order as unsigned
    integers of the same width, so floats are compared as integers: NumPy's float16 abs and max
    convert every value (the cost of a million-video import)."""
    if values.dtype.kind != "f" or values.dtype.itemsize not in (2, 4, 8) or not values.size:
        return float(np.abs(values).max()) if values.size else 0.0
    words = values.view(values.dtype.str.replace("f", "u"))
    top = (words & ~np.array(1 << (8 * values.dtype.itemsize - 1), words.dtype)).max()
    return float(np.array(top, words.dtype).view(values.dtype))


def _load_timestamps(planned: Planned) -> np.ndarray | None:
    """The timestamps file's values in seconds, or None when the video has none."""
    if planned.timestamps is None:
        return None
    path, unit = planned.timestamps
    try:
        stamps = np.atleast_1d(npy.load(path))
    except (OSError, ValueError, EOFError) as exc:
        raise _Failed(f"{path} cannot be read as a .npy array ({exc})") from None
    if stamps.ndim != 1 or stamps.dtype.kind not in "fiu":
        raise _Failed(f"{path} holds {stamps.dtype} of shape {stamps.shape}; expected one number per row")
    if len(stamps) != planned.rows:
        raise _Failed(f"{path} has {len(stamps)} timestamps for {planned.rows} feature rows in {planned.features[0]}")
    seconds = stamps.astype(np.float64) / unit
    if not np.isfinite(seconds).all():
        raise _Failed(f"{path} holds NaN or infinite timestamps")
    return seconds


def _read_fps(path: str | None, listing: Listing) -> float | None:
    """The fps video_features saves next to the features; a missing or odd file is no failure."""
    if path is None or not listing.is_file(path):
        return None
    try:
        value = npy.load(path)
        fps = float(value.reshape(())) if value.size == 1 and value.dtype.kind in "fiu" else None
    except (OSError, ValueError, EOFError):
        return None
    return fps if fps is not None and np.isfinite(fps) and fps > 0 else None


# the import --------------------------------------------------------------------------------------
def _check_options(view: str, feature: str | None, layout: str | None, dtype: str, i3d_stack_frames: int) -> None:
    check_choice("--dtype", dtype, Dtype)
    if not _VIEW_NAME.match(view or ""):
        raise ConfigError(f"--view {view!r} is not a view name; use letters, digits, '_', '-' or '.'")
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"--layout {layout!r} is not known; choose one of: {', '.join(LAYOUTS)}")
    if feature is not None and (not _FEATURE_NAME.match(feature) or set(feature_parts(feature)) & set(META_KEYS)):
        raise ConfigError(
            f"--feature {feature!r} is not a video_features output name; use one key or two joined by '+' "
            f"(e.g. {', '.join(KNOWN_FEATURES)}, rgb+flow)"
        )
    if layout == "plain" and feature is not None:
        raise ConfigError("--feature names a video_features output; the plain layout has none")
    if isinstance(i3d_stack_frames, bool) or not isinstance(i3d_stack_frames, int) or i3d_stack_frames < 1:
        raise ConfigError(f"--i3d-stack-frames must be a positive whole number of frames, got {i3d_stack_frames!r}")


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
    i3d_stack_frames: int = DEFAULT_I3D_STACK_FRAMES,
) -> ImportSummary:
    """Store the `.npy` features in `feature_dir` of the manifest's videos as view `view` of the
    cache at `cache_dir` (created if needed); see the module docstring for the file names.

    The manifest needs a `video_id` or a `path` per row (no video file is opened). `layout` is
    "plain", "video_features" or None (see `import_files.choose_plan`); `feature` a video_features
    output key, or two joined by `+` (found when there is one, `rgb+flow` for i3d's two streams).
    `i3d_stack_frames` is the `--stack_size` of video_features' i3d (its timestamps are stack ends).
    The view's recorded identity is where the files came from, the layout, feature, D, dtype and
    the row timing rule; importing again with other settings into the same view is refused
    (ConfigError), the same import again replaces the rows.
    """
    _check_options(view, feature, layout, dtype, i3d_stack_frames)
    source = Path(feature_dir).resolve()
    if not source.is_dir():
        raise ConfigError(f"feature folder {feature_dir} does not exist or is not a folder")
    entries = read_manifest(manifest, root=root, require_path=False)
    plan = choose_plan(entries, source, layout=layout, feature=feature)

    failures = dict(plan.failures)
    videos: list[Planned] = []
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
    kept: list[Planned] = []
    for planned in videos:
        if planned.dim != dim:
            failures[planned.entry.video_id] = (
                f"{planned.features[0]} has D={planned.dim}, the other videos D={dim} "
                f"({sum(p.dim == dim for p in videos)} of {len(videos)})"
            )
            continue
        planned.timestamps = next(((p, u) for p, u in planned.timestamp_candidates if plan.listing.is_file(p)), None)
        kept.append(planned)

    given = any(p.timestamps is not None for p in kept)
    rule = timing_rule(layout=plan.layout, feature=plan.feature, given=given)
    if given and rule != "vggish_example":
        for planned in [p for p in kept if p.timestamps is None]:
            looked = (
                ", ".join(str(p) for p, _ in planned.timestamp_candidates) or "none: that name is a video's features"
            )
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
        "timestamps": rule,
        "fidelity": FIDELITY_VERSION,
        **({"i3d_stack_frames": i3d_stack_frames} if rule == "i3d_stack" else {}),
    }
    store = np.dtype(dtype)

    def rows() -> Iterator[tuple[str, np.ndarray, np.ndarray, dict]]:
        for planned in kept:
            video_id = planned.entry.video_id
            fps = _read_fps(planned.fps, plan.listing)
            try:
                features = _load_features(planned, dim, store)
                times = row_times(
                    rule,
                    _load_timestamps(planned),
                    rows=planned.rows,
                    fps=fps,
                    stack_frames=i3d_stack_frames,
                    source=str(planned.timestamps[0] if planned.timestamps else planned.features[0]),
                )
            except (_Failed, TimingError) as exc:
                failures[video_id] = exc.reason
                continue
            info: dict = {"feature_file": " + ".join(map(str, planned.features))}
            if fps is not None:
                info["fps"] = fps
            yield video_id, features, times, info

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
        timestamps=rule,
    )


def _raise_nothing_to_import(source: Path, plan: Plan, failures: dict[str, str], total: int) -> None:
    some = "; ".join(f"{v}: {r}" for v, r in list(failures.items())[:3])
    hint = (
        " (video_features writes into <output_path>/<feature_type>[/<model_name>]: give that folder, "
        "and --feature when it holds several outputs)"
    )
    if plan.layout == "plain":
        hint = f" as <video_id>.npy, nor as video_features' <stem>_<feature>.npy{hint}"
    raise ConfigError(f"none of the {total} manifest videos can be imported from {source}{hint}; e.g. {some}")
