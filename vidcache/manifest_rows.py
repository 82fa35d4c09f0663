"""One manifest row, parsed and checked: the rules every manifest reader applies (the csv module's
reader in manifest.py, the vectorised one in manifest_csv.py for the rows it does not vouch for)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .redact import remember_url, url_video_id
from .remote import is_url

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


def _is_list_like(value: object) -> bool:
    import pandas as pd  # only parquet cells are not text: a CSV manifest loads no pandas

    return bool(pd.api.types.is_list_like(value))


class _BadCell(ValueError):
    pass


def _cell(value: object, column: str) -> str:
    if type(value) is str:  # a CSV cell: the common case first (a 1M-row manifest calls this 6M times)
        text = value.strip()
        if "\x00" in text:
            raise _BadCell(f"{column} contains a NUL character")
        return text
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bytes):  # a parquet binary column
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadCell(f"{column} is not UTF-8 text") from None
    elif not isinstance(value, str) and _is_list_like(value):
        raise _BadCell(f"{column} holds a list; give one value")
    text = str(value).strip()
    if "\x00" in text:  # HDF5 and the OS cannot store it: a commit or open would fail much later
        raise _BadCell(f"{column} contains a NUL character")
    return text


def parse_labels(value: object) -> tuple[str, ...]:
    """`a;b` text, or (parquet) a list of labels: previously a list cell became one label "['a' 'b']"."""
    if type(value) is not str and value is not None and not isinstance(value, bytes) and _is_list_like(value):
        parts = [_cell(part, "labels") for part in value]
    else:
        parts = _cell(value, "labels").split(LABEL_SEPARATOR)
    return tuple(label.strip() for label in parts if label.strip())


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


def row_entry(
    where: str, row: int, record: dict[str, object], *, base: str, confine: bool, require_path: bool
) -> tuple[VideoEntry | None, list[str], str]:
    """One manifest row: (its entry, None when it cannot make one; its problems, every one of them, not
    only the first; its video_id, for the duplicate check across rows)."""
    row_problems: list[str] = []
    cells: dict[str, str] = {}
    unusable: set[str] = set()
    for column in ("path", "video_id", "split", "start_s", "end_s"):
        try:
            cells[column] = _cell(record.get(column), column)
        except _BadCell as exc:
            row_problems.append(f"{where}: {exc}")
            cells[column] = ""
            unusable.add(column)
    try:
        labels = parse_labels(record.get("labels"))
    except _BadCell as exc:
        row_problems.append(f"{where}: {exc}")
        labels = ()

    raw_path, absolute, video_id = cells["path"], None, cells["video_id"]
    if raw_path == "" and not require_path and video_id:
        absolute = ""  # features without their video: the video_id names it
    elif raw_path == "":
        if "path" not in unusable:
            row_problems.append(f"{where}: empty path" + ("" if require_path else " and no video_id"))
    else:
        absolute = os.path.normpath(raw_path if os.path.isabs(raw_path) else os.path.join(base, raw_path))
        if is_url(raw_path):  # object storage or a web server, read through fsspec (vidcache.remote)
            absolute = raw_path
            remember_url(raw_path)  # its credentials are scrubbed from anything printed (vidcache.redact)
            if "video_id" not in unusable:  # without credentials: a re-signed URL is the same video
                video_id = video_id or url_video_id(raw_path)
        elif confine and not _is_within(absolute, base):
            row_problems.append(f"{where}: path {raw_path!r} is outside --root {base}")
            absolute = None
        elif "video_id" not in unusable and not video_id:  # relpath only when it names the video
            relative = os.path.relpath(absolute, base)
            # a ".." component, not a name that starts with two dots such as "..clip.mp4"
            outside = relative == os.pardir or relative.startswith(os.pardir + os.sep)
            video_id = absolute if outside else Path(relative).as_posix()

    start_s = _parse_seconds(cells["start_s"], "start_s", where, row_problems)
    end_s = _parse_seconds(cells["end_s"], "end_s", where, row_problems)
    if start_s is not None and end_s is not None and end_s <= start_s:
        row_problems.append(f"{where}: end_s={end_s} is not after start_s={start_s}")
    if row_problems or absolute is None:
        return None, row_problems, video_id
    return VideoEntry(video_id, absolute, labels, cells["split"] or None, start_s, end_s, row), row_problems, video_id
