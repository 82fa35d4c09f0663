"""Read and validate a manifest (CSV or parquet) into `VideoEntry` rows.

Validation collects every problem with its row before failing, so a user fixes a manifest in one go,
and it runs before anything is written.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .errors import ManifestError

KNOWN_COLUMNS = ("path", "video_id", "labels", "split", "start_s", "end_s")
LABEL_SEPARATOR = ";"


@dataclass(frozen=True)
class VideoEntry:
    video_id: str
    path: str  # absolute, normalised
    labels: tuple[str, ...] = ()
    split: str | None = None
    start_s: float | None = None
    end_s: float | None = None
    row: int = 0  # 1-based data row in the manifest, for messages


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
        return frame.astype(object).where(frame.notna(), "")
    if suffix in (".csv", ".tsv", ".txt"):
        sep = "\t" if suffix == ".tsv" else ","
        return pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep, skipinitialspace=True)
    raise ManifestError(str(path), [f"unknown manifest type {suffix!r}; use .csv, .tsv or .parquet"])


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _parse_seconds(text: str, column: str, where: str, problems: list[str]) -> float | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        problems.append(f"{where}: {column}={text!r} is not a number of seconds")
        return None
    if not math.isfinite(value) or value < 0:
        problems.append(f"{where}: {column}={text!r} must be a finite number >= 0")
        return None
    return value


def _is_within(path: str, root: str) -> bool:
    real_path, real_root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real_path, real_root]) == real_root


def read_manifest(manifest_path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> list[VideoEntry]:
    """Parse and validate a manifest.

    Relative paths resolve against `root` (default: the manifest's folder). The default `video_id`
    is the path relative to that folder, so two `clip.mp4` in different folders never collide. With
    an explicit `root`, every path must stay inside it.
    """
    manifest = Path(manifest_path)
    if not manifest.is_file():
        raise ManifestError(str(manifest), ["file not found; give the path of a .csv or .parquet manifest"])
    try:
        table = _read_table(manifest)
    except ManifestError:
        raise
    except Exception as exc:  # pandas raises many types for unreadable files
        raise ManifestError(str(manifest), [f"cannot be read as a table: {exc}".splitlines()[0]]) from None

    base = os.path.abspath(root if root is not None else manifest.parent)
    confine = root is not None
    line_offset = 2 if manifest.suffix.lower() != ".parquet" else 0

    table.columns = [str(c).strip() for c in table.columns]
    if "path" not in table.columns:
        found = ", ".join(table.columns) or "none"
        raise ManifestError(str(manifest), [f"missing required column 'path' (columns found: {found})"])

    problems: list[str] = []
    entries: list[VideoEntry] = []
    first_row_of_id: dict[str, int] = {}
    for index, record in enumerate(table.to_dict("records")):
        row = index + 1
        where = f"row {row} (line {index + line_offset})" if line_offset else f"row {row}"
        raw_path = _cell(record.get("path"))
        if raw_path == "":
            problems.append(f"{where}: empty path")
            continue
        absolute = os.path.normpath(raw_path if os.path.isabs(raw_path) else os.path.join(base, raw_path))
        if confine and not _is_within(absolute, base):
            problems.append(f"{where}: path {raw_path!r} is outside --root {base}")
            continue
        relative = os.path.relpath(absolute, base)
        default_id = absolute if relative.startswith("..") else Path(relative).as_posix()
        video_id = _cell(record.get("video_id")) or default_id

        start_s = _parse_seconds(_cell(record.get("start_s")), "start_s", where, problems)
        end_s = _parse_seconds(_cell(record.get("end_s")), "end_s", where, problems)
        if start_s is not None and end_s is not None and end_s <= start_s:
            problems.append(f"{where}: end_s={end_s} is not after start_s={start_s}")

        if video_id in first_row_of_id:
            problems.append(
                f"{where}: duplicate video_id {video_id!r} (first at row {first_row_of_id[video_id]}); "
                "give each row a unique video_id"
            )
            continue
        first_row_of_id[video_id] = row

        labels = tuple(label.strip() for label in _cell(record.get("labels")).split(LABEL_SEPARATOR) if label.strip())
        split = _cell(record.get("split")) or None
        entries.append(VideoEntry(video_id, absolute, labels, split, start_s, end_s, row))

    if problems:
        raise ManifestError(str(manifest), problems)
    if not entries:
        raise ManifestError(str(manifest), ["no rows; add at least one video"])
    return entries


def select_shard(entries: list[VideoEntry], shard_index: int, shard_count: int) -> list[VideoEntry]:
    """A deterministic 1/N of the manifest, stable when rows are added or reordered."""
    if shard_count == 1:
        return list(entries)
    import hashlib

    def bucket(video_id: str) -> int:
        digest = hashlib.sha1(video_id.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % shard_count

    return [entry for entry in entries if bucket(entry.video_id) == shard_index]
