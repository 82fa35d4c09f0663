"""Which `.npy` files of a feature folder belong to which manifest video, for `vidcache import`.

Files are matched by exact names built from the manifest, never by prefix or by what other videos
happen to have, and a file is never given to two videos:

- plain: `<video_id>.npy`, else `<video_id without extension>.npy`, with optional
  `<stem>_timestamps_ms.npy` / `<stem>.timestamps_s.npy` / `<stem>_fps.npy` next to it.
- video_features: `<stem>_<feature>.npy` (one file per feature part: i3d's `rgb+flow` is two),
  `<stem>_timestamps_ms.npy`, `<stem>_fps.npy`; `<stem>` is the video file's name without its
  extension (the video_id's when the manifest has no path).

With no `--layout`, the layout that explains more manifest videos is taken; when both explain as
many, the folder is ambiguous and the import stops naming the files both readings would use. A
video's feature file is never read as another video's timestamps or fps, and a feature file two
videos would both use fails both, naming the file and the videos.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import ConfigError
from ..manifest import VideoEntry

LAYOUTS = ("plain", "video_features")
META_KEYS = ("timestamps_ms", "fps")  # video_features outputs that are not features
# video_features' output keys (`<stem>_<key>.npy`): i3d writes rgb and flow, the others their feature_type
KNOWN_FEATURES = ("clip", "resnet", "timm", "raft", "r21d", "s3d", "vggish", "rgb", "flow")
I3D_BOTH = "rgb+flow"  # i3d's default output: both streams, imported side by side as one row
MS, S = 1000.0, 1.0  # stored timestamp units per second


@dataclass
class Planned:
    """One video and the files that are its own."""

    entry: VideoEntry
    # paths as text (FEATURE_DIR/name): a million videos' files, no Path object each
    features: list[str]  # one file, or one per part of a `a+b` feature (concatenated per row)
    timestamp_candidates: list[tuple[str, float]]  # (file, its units per second)
    fps: str | None  # None: that name is another video's feature file
    rows: int = 0
    dim: int = 0
    timestamps: tuple[str, float] | None = None


class Listing:
    """Which files exist, from one listing per folder (`os.scandir`) instead of one `stat` per name
    asked: a million videos' candidate names (features, timestamps, fps) become set lookups. A name
    is a file as `Path.is_file` says (symbolic links followed)."""

    def __init__(self) -> None:
        self._files: dict[str, frozenset[str]] = {}

    def is_file(self, path: str) -> bool:
        cut = path.rfind("/")
        folder, name = (path[:cut] or "/") if cut >= 0 else "", path[cut + 1 :]
        names = self._files.get(folder)
        if names is None:
            try:
                with os.scandir(folder or ".") as entries:
                    names = frozenset(e.name for e in entries if _is_file(e))
            except OSError:  # no such folder, or not readable: nothing in it can be read either
                names = frozenset()
            self._files[folder] = names
        return name in names


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


@dataclass
class Plan:
    layout: str
    feature: str
    videos: list[Planned] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    listing: Listing = field(default_factory=Listing)  # the feature folder's files, listed once


def video_stem(entry: VideoEntry) -> str:
    """The name video_features gives a video's files: its file name without the extension."""
    return Path(entry.path or entry.video_id).stem


def feature_parts(feature: str) -> list[str]:
    return feature.split("+") if feature else []


# plain -------------------------------------------------------------------------------------------
def _plain_names(video_id: str) -> list[str] | None:
    """`<video_id>.npy`, then `<video_id without extension>.npy`; None for ids that would leave FEATURE_DIR."""
    if "/" not in video_id and video_id not in ("", ".", ".."):  # one name: PurePosixPath's rules, inline
        dot = video_id.rfind(".")
        return [f"{video_id}.npy", *([f"{video_id[:dot]}.npy"] if 0 < dot < len(video_id) - 1 else [])]
    relative = PurePosixPath(video_id)
    if relative.is_absolute() or not relative.parts or ".." in relative.parts:
        return None
    names = [f"{relative}.npy"]
    if relative.suffix:
        names.append(f"{relative.with_suffix('')}.npy")
    return names


def plan_plain(entries: list[VideoEntry], feature_dir: Path) -> Plan:
    plan = Plan("plain", "")
    base = str(feature_dir)
    for entry in entries:
        names = _plain_names(entry.video_id)
        if names is None:
            plan.failures[entry.video_id] = (
                f"video_id {entry.video_id!r} is not a relative path, so it names no file under {feature_dir}; "
                "give the manifest a video_id column or --root"
            )
            continue
        paths = [f"{base}/{n}" if base != "/" else f"/{n}" for n in names]
        found = next((p for p in paths if plan.listing.is_file(p)), None)
        if found is None:
            looked = ", ".join(paths)
            plan.failures[entry.video_id] = f"no feature file (looked for {looked})"
            continue
        stem = found[: -len(".npy")]
        plan.videos.append(
            Planned(
                entry,
                [found],
                [(stem + "_timestamps_ms.npy", MS), (stem + ".timestamps_s.npy", S)],
                stem + "_fps.npy",
            )
        )
    return _exclusive(plan)


# video_features ----------------------------------------------------------------------------------
def _parses(base: str, stems: set[str]) -> list[tuple[str, str]]:
    """Every reading of `base` as `<manifest stem>_<key>`."""
    return [
        (base[:i], base[i + 1 :]) for i, c in enumerate(base) if c == "_" and base[:i] in stems and i + 1 < len(base)
    ]


def detect_features(feature_dir: Path, stems: set[str]) -> Counter[str]:
    """The video_features outputs held for the manifest's stems, with how many files each has. A
    file that reads as some video's timestamps or fps is no feature, and of several readings of a
    name a known video_features key is taken."""
    try:
        names = sorted(os.listdir(feature_dir))
    except OSError:
        names = []
    found: Counter[str] = Counter()
    for name in names:
        if not name.endswith(".npy"):
            continue
        readings = _parses(name[: -len(".npy")], stems)
        if not readings or any(key in META_KEYS for _, key in readings):
            continue
        known = {key for _, key in readings if key in KNOWN_FEATURES}
        if len(known) == 1:
            found[known.pop()] += 1
        elif not known and len(readings) == 1:
            found[readings[0][1]] += 1
    return found


def one_feature(found: Counter[str], feature_dir: Path) -> str:
    """The one output found, `rgb+flow` for i3d's two streams, "" for none; several: ConfigError."""
    if not found:
        return ""
    if len(found) == 1:
        return next(iter(found))
    if set(found) == set(feature_parts(I3D_BOTH)):
        return I3D_BOTH
    listed = ", ".join(f"{k} ({n} videos)" for k, n in sorted(found.items()))
    raise ConfigError(f"{feature_dir} holds several video_features outputs: {listed}; pick one with --feature")


def plan_video_features(entries: list[VideoEntry], feature_dir: Path, feature: str) -> Plan:
    stem_of = {e.video_id: video_stem(e) for e in entries}
    sharing = Counter(stem_of.values())
    plan = Plan("video_features", feature)
    base = str(feature_dir)
    for entry in entries:
        stem = stem_of[entry.video_id]
        if sharing[stem] > 1:
            others = sorted(v for v, s in stem_of.items() if s == stem)
            plan.failures[entry.video_id] = (
                f"{len(others)} manifest videos share the file name stem {stem!r} ({', '.join(others)}); "
                "video_features names its files by that stem only, so the files cannot be told apart"
            )
            continue
        paths = [os.path.join(base, f"{stem}_{part}.npy") for part in feature_parts(feature) or ["<feature>"]]
        missing = [p for p in paths if not plan.listing.is_file(p)]
        if not feature or missing:
            plan.failures[entry.video_id] = f"no feature file (looked for {', '.join(missing or paths)})"
            continue
        plan.videos.append(
            Planned(
                entry,
                paths,
                [(os.path.join(base, f"{stem}_timestamps_ms.npy"), MS)],
                os.path.join(base, f"{stem}_fps.npy"),
            )
        )
    return _exclusive(plan)


# one owner per file ------------------------------------------------------------------------------
def _exclusive(plan: Plan) -> Plan:
    """A feature file two videos would use fails both; a file that is some video's feature file
    is never another's timestamps or fps (those candidates are dropped)."""
    owners: dict[str, list[str]] = {}
    for planned in plan.videos:
        for path in planned.features:
            owners.setdefault(path, []).append(planned.entry.video_id)
    kept = []
    for planned in plan.videos:
        shared = [(p, owners[p]) for p in planned.features if len(owners[p]) > 1]
        if shared:
            path, videos = shared[0]
            plan.failures[planned.entry.video_id] = (
                f"{path} is the {plan.layout} feature file of {len(videos)} manifest videos ({', '.join(videos)}); "
                "their files cannot be told apart: rename them or give the videos distinct video_ids"
            )
            continue
        planned.timestamp_candidates = [(p, u) for p, u in planned.timestamp_candidates if p not in owners]
        if planned.fps in owners:
            planned.fps = None
        kept.append(planned)
    plan.videos = kept
    return plan


def choose_plan(entries: list[VideoEntry], feature_dir: Path, *, layout: str | None, feature: str | None) -> Plan:
    """The files of each manifest video under the given layout, or under the one layout that
    explains more of them (ConfigError naming both readings' files when that is a tie)."""
    if layout == "plain":
        return plan_plain(entries, feature_dir)
    stems = {video_stem(e) for e in entries}
    found = detect_features(feature_dir, stems)
    if layout == "video_features" or feature is not None:
        return plan_video_features(entries, feature_dir, feature or one_feature(found, feature_dir))
    plain = plan_plain(entries, feature_dir)
    if not found:
        return plain
    try:
        video_features = plan_video_features(entries, feature_dir, one_feature(found, feature_dir))
    except ConfigError:  # several outputs: only a plain folder that explains more videos than each goes on
        if all(len(plain.videos) > len(plan_video_features(entries, feature_dir, k).videos) for k in found):
            return plain
        raise
    if len(video_features.videos) > len(plain.videos):
        return video_features
    if len(plain.videos) > len(video_features.videos):
        return plain
    if not plain.videos:
        return video_features
    examples = [f"plain: {os.path.basename(p.features[0])} for {p.entry.video_id!r}" for p in plain.videos[:2]] + [
        f"video_features: {', '.join(os.path.basename(f) for f in v.features)} for {v.entry.video_id!r}"
        for v in video_features.videos[:2]
    ]
    raise ConfigError(
        f"{feature_dir} reads as either layout for {len(plain.videos)} manifest videos "
        f"({'; '.join(examples)}); give --layout plain or --layout video_features"
    )
