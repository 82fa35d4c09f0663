"""Read and validate a manifest (CSV, TSV or parquet) into `VideoEntry` rows.

Validation collects every problem with its row before failing, so a user fixes a manifest in one go,
and it runs before anything is written.

CSV/TSV (.csv, .txt; .tsv): UTF-8 with or without a byte order mark, any line ends, RFC 4180 quoting
(a field holding the separator, a quote or a newline is quoted, inner quotes doubled; an unclosed
quote or a row with more non-empty fields than the header is a bad row). Blank lines are skipped.
Parquet: the same columns; `labels` may also be a list column, and NaN in a float column is empty.
Every cell is stripped of surrounding whitespace; NUL characters are refused (no path or HDF5 string
can hold them).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ManifestError
from .manifest_rows import VideoEntry, row_entry

KNOWN_COLUMNS = ("path", "video_id", "labels", "split", "start_s", "end_s")


@dataclass
class _Table:
    columns: list[str]
    # (where, for messages; 1-based row; column -> cell, or why the row cannot be parsed)
    records: list[tuple[str, int, dict[str, object] | str]]


def _read_csv(path: Path, sep: str) -> _Table:
    # Python's csv module, not pandas: pandas silently turns the first column into the index when
    # rows have one field more than the header (so `path` got the next column's value), renames a
    # repeated column, and cannot say on which physical line a row starts (quoted newlines, blank
    # lines), so messages named the wrong line.
    data = path.read_bytes()
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data  # a byte order mark (Excel) is no column name
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = len(re.findall(rb"\r\n?|\n", data[: exc.start])) + 1  # line breaks as the csv reader counts them
        raise ManifestError(
            str(path), [f"line {line}: byte 0x{data[exc.start]:02x} is not UTF-8; save the manifest as UTF-8"]
        ) from None
    # strict: an unclosed quote is an error, not a field that silently swallows the rest of the file
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, skipinitialspace=True, strict=True)
    table = _Table([], [])
    header: list[str] | None = None
    while True:
        line = reader.line_num + 1  # the physical line the next record starts on
        row = len(table.records) + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problem = f"not valid CSV ({exc}); quote fields that hold {sep!r}, '\"' or a newline, and double inner '\"'"
            if header is None:
                raise ManifestError(str(path), [f"line {line} (header): {problem}"]) from None
            table.records.append((f"row {row} (line {line})", row, problem))
            continue
        if not fields:  # a blank line
            continue
        if header is None:
            header = table.columns = [name.strip() for name in fields]
            continue
        if any(value.strip() for value in fields[len(header) :]):
            problem = (
                f"{len(fields)} fields but the header has {len(header)} columns; quote fields that contain {sep!r}"
            )
            table.records.append((f"row {row} (line {line})", row, problem))
            continue
        table.records.append((f"row {row} (line {line})", row, dict(zip(header, fields, strict=False))))
    if header is None:
        raise ManifestError(str(path), ["empty file; the first line must name the columns, e.g. path,labels,split"])
    return table


def _read_table(path: Path) -> _Table:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pandas as pd  # here: a CSV manifest loads no pandas (a second of `extract`'s start)

        frame = pd.read_parquet(path)
        frame = frame.astype(object).where(frame.notna(), None)
        records = [(f"row {i + 1}", i + 1, r) for i, r in enumerate(frame.to_dict("records"))]
        return _Table([str(c).strip() for c in frame.columns], records)
    if suffix in (".csv", ".tsv", ".txt"):
        return _read_csv(path, "\t" if suffix == ".tsv" else ",")
    raise ManifestError(str(path), [f"unknown manifest type {suffix!r}; use .csv, .tsv or .parquet"])


def read_manifest(
    manifest_path: str | os.PathLike, *, root: str | os.PathLike | None = None, require_path: bool = True
) -> list[VideoEntry]:
    """Parse and validate a manifest.

    With `require_path=False` (features made elsewhere, imported without their videos) a row may
    have no `path` when it has a `video_id`; its entry's path is then "".

    Relative paths resolve against `root` (default: the manifest's folder). The default `video_id`
    is the path relative to that folder, so two `clip.mp4` in different folders never collide; for
    a URL it is the URL without its credentials (`vidcache.redact.url_video_id`). With
    an explicit `root`, every path must stay inside it (after resolving symlinks).

    Cells are stripped of surrounding whitespace. Every problem is raised at once as a
    `ManifestError` naming the file and each bad row (and, for CSV/TSV, the line it starts on).
    """
    manifest = Path(manifest_path)
    if not manifest.is_file():
        raise ManifestError(str(manifest), ["file not found; give the path of a .csv or .parquet manifest"])
    base = os.path.abspath(root if root is not None else manifest.parent)
    confine = root is not None
    suffix = manifest.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):  # most manifests: pyarrow and whole-column checks, when plain
        from .manifest_csv import plain_entries

        data = manifest.read_bytes()
        data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
        sep = "\t" if suffix == ".tsv" else ","
        plain = plain_entries(data, sep, base=base, confine=confine, require_path=require_path)
        if plain is not None:
            return plain
    try:
        table = _read_table(manifest)
    except ManifestError:
        raise
    except Exception as exc:  # pyarrow/pandas raise many types for unreadable files
        raise ManifestError(str(manifest), [f"cannot be read as a table: {exc}".splitlines()[0]]) from None

    if "path" not in table.columns and (require_path or "video_id" not in table.columns):
        found = ", ".join(table.columns) or "none"
        needed = "'path'" if require_path else "'path' or 'video_id'"
        raise ManifestError(str(manifest), [f"missing required column {needed} (columns found: {found})"])
    twice = sorted({c for c in table.columns if c in KNOWN_COLUMNS and table.columns.count(c) > 1})
    if twice:  # which of the two would win is not something a user can see
        raise ManifestError(str(manifest), [f"column {c!r} appears more than once in the header" for c in twice])

    problems: list[str] = []
    entries: list[VideoEntry] = []
    first_row_of_id: dict[str, int] = {}
    for where, row, record in table.records:
        if isinstance(record, str):
            problems.append(f"{where}: {record}")
            continue
        entry, row_problems, video_id = row_entry(where, row, record, base=base, confine=confine,
                                                  require_path=require_path)  # fmt: skip
        if video_id:
            if video_id in first_row_of_id:
                row_problems.append(
                    f"{where}: duplicate video_id {video_id!r} (first at row {first_row_of_id[video_id]}); "
                    "give each row a unique video_id"
                )
            else:
                first_row_of_id[video_id] = row
        problems.extend(row_problems)
        if not row_problems and entry is not None:
            entries.append(entry)

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


STANDARD_SPLITS = ("train", "val", "test")
SPLIT_SPELLINGS = ("training", "valid", "validation")  # what `vidcache train` also reads as train / val


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word.lower(), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _header(path: Path) -> list[str]:
    """The column names of a manifest `read_manifest` accepted: for CSV/TSV its first record only (not
    the whole table again, a second of a 1M-row re-run)."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".txt"):
        return _read_table(path).columns
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a byte order mark is no column name
        for fields in csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",", skipinitialspace=True, strict=True):
            if fields:
                return [name.strip() for name in fields]
    return []


def manifest_warnings(
    manifest_path: str | os.PathLike, entries: list[VideoEntry], *, splits: tuple[str, ...] = STANDARD_SPLITS
) -> list[str]:
    """Mistakes `read_manifest` accepts but training would trip over hours later, one line each: a
    column vidcache does not read (`label` for `labels`), a split outside `splits` (`tets`)."""
    manifest = Path(manifest_path)
    columns = _header(manifest)
    out: list[str] = []
    for column in columns:
        if column not in KNOWN_COLUMNS:
            out.append(
                f"manifest {manifest}: column {column!r} is not read{_did_you_mean(column, KNOWN_COLUMNS)}; "
                f"the columns vidcache reads: {', '.join(KNOWN_COLUMNS)}"
            )
    counts: dict[str, int] = {}
    for entry in entries:
        if entry.split is not None and entry.split not in splits and entry.split.lower() not in SPLIT_SPELLINGS:
            counts[entry.split] = counts.get(entry.split, 0) + 1
    for split, n in sorted(counts.items()):
        out.append(
            f"manifest {manifest}: split {split!r} on {n} row(s){_did_you_mean(split, splits)} is none of "
            f"{', '.join(splits)}: `vidcache train` refuses a cache with it (declare it with --splits if meant)"
        )
    return out
