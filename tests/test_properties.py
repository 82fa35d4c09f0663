"""Property-based tests (hypothesis): the manifest parser on random, awkward manifests, `--root`
confinement, and the cache read path and `vidcache verify` on randomly damaged shards and catalogs.

Every test is derandomized (a fixed example sequence, no example database), so CI runs the same
examples each time; the example counts keep the whole file to well under a minute.

Properties
----------
* `read_manifest` (CSV, TSV, .txt, parquet; BOM, CRLF, blank lines, quoted newlines, duplicate
  ids, missing columns, bad numbers, NUL, stray non-UTF-8 bytes, rows with a field too many, an
  unclosed quote) returns exactly the rows an independent model of the format predicts (ids,
  resolved paths, labels, split, segment), or raises `ManifestError` naming the file and *every*
  bad row (with the line it starts on, for CSV/TSV) and nothing else: no other exception type.
* With `root`, every accepted path resolves (symlinks included) inside the root, and every
  rejected one resolves outside it.
* Reading a damaged cache (`Cache.read`, `read_many`, `iter_batches`, `spans`) returns exactly the
  stored arrays, or raises `CacheError` (a `VidcacheError`) naming the damaged shard or catalog
  and pointing to `vidcache verify`, or `KeyError` for a video a damaged catalog no longer lists as
  done; never another exception, never a crash of the interpreter (each damaged cache is read in a
  forked child). Damage to one shard never changes reads from the others.
* The read path does not check the per-video CRC32 (+28-89 % on a warm 100 MB shard, see
  `ShardFiles.read_rows`), so `vidcache verify` is the contract for silent damage: whenever a read
  returns arrays that differ from what was written, `vidcache verify` names that shard as broken,
  and it names a damaged shard whose reads fail. It never crashes: a damaged catalog is a CacheError
  naming the catalog.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import tempfile
import traceback
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from vidcache.errors import ManifestError
from vidcache.manifest import KNOWN_COLUMNS, VideoEntry, read_manifest


def _settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,  # reproducible in CI: the same examples every run
        database=None,  # and no .hypothesis/ directory in the checkout
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# -------------------------------------------------------------------------------------------------
# manifest: strategies
# -------------------------------------------------------------------------------------------------

_ANY_CHAR = st.characters(exclude_categories=("Cs",))  # everything UTF-8 can hold
_NO_NUL_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
_AWKWARD_BITS = [" ", "  ", ",", '"', "'", "\n", "\r\n", "\r", "\t", ";", "é", "视频", "\ufeff", "..", "/", "./", "#"]
_AWKWARD_BITS += ["NA", "nan", "null", "None", "\u2028", "\x85", "\\", "a", "clip.mp4", "b/c.mp4", "ü/ß.mkv"]
_TEXT = st.lists(st.one_of(st.sampled_from([*_AWKWARD_BITS, "\x00"]), st.text(_ANY_CHAR, max_size=4)), max_size=4)
_TEXT = _TEXT.map("".join)
_CLEAN_TEXT = st.lists(st.one_of(st.sampled_from(_AWKWARD_BITS), st.text(_NO_NUL_CHAR, max_size=4)), max_size=4)
_CLEAN_TEXT = _CLEAN_TEXT.map("".join)  # anything but NUL, which no path or HDF5 string can hold
_ODD_SECONDS = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "1e308", "-0", "0", "0.0", " 1.5 ", "2"]
_ODD_SECONDS += ["abc", "1,5", "1_000", "0x10", "١٢", "  ", "3 4", "5e-324", "-1", "1e-400"]
_SECONDS_TEXT = st.one_of(
    st.just(""),
    st.floats().map(repr),  # negative, nan, inf, huge, subnormal
    st.integers(-(10**6), 10**20).map(str),
    st.sampled_from(_ODD_SECONDS),
)
_GOOD_SECONDS = st.one_of(st.just(""), st.floats(0, 1e12).map(repr), st.integers(0, 10**6).map(str))


@st.composite
def _path_text(draw, clean: bool) -> str:
    kinds = ["plain", "plain", "awkward", "dotdot", "absolute"] + ([] if clean else ["blank"])
    kind = draw(st.sampled_from(kinds))
    if kind == "plain":
        return draw(st.sampled_from(["a.mp4", "b/a.mp4", "c d/e,f.mp4", "é/视频.mkv", "..x.mp4", "x..mp4"]))
    if kind == "awkward":
        text = draw(_CLEAN_TEXT if clean else _TEXT)
        return text if text.strip() or not clean else text + "p"
    if kind == "dotdot":
        return draw(st.sampled_from(["../up.mp4", "a/../../up.mp4", "a/../b.mp4", "./a/./b.mp4", "a//b.mp4"]))
    if kind == "absolute":
        return "/" + draw(_CLEAN_TEXT if clean else _TEXT)
    return draw(st.sampled_from(["", " ", "\t", " \r\n "]))


@st.composite
def _row(draw, clean: bool) -> dict:
    """One row; `clean` rows are awkward but valid (no NUL, no empty path, a sound segment)."""
    text = _CLEAN_TEXT if clean else _TEXT
    row = {"path": draw(_path_text(clean)), "video_id": draw(st.one_of(st.just(""), text))}
    if draw(st.booleans()):  # labels as `;`-separated text, with stray spaces and empty parts
        char = _NO_NUL_CHAR if clean else _ANY_CHAR
        labels = draw(st.lists(st.text(char.filter(lambda c: c != ";"), max_size=5), max_size=3))
        row["labels"] = draw(st.sampled_from([";", " ; ", ";;"])).join(labels)
    else:
        row["labels"] = draw(text)
    row["split"] = draw(st.one_of(st.sampled_from(["", "train", "val", "test", " test "]), text))
    seconds = _GOOD_SECONDS if clean else _SECONDS_TEXT
    row["start_s"], row["end_s"] = draw(seconds), draw(seconds)
    if clean and row["start_s"] and row["end_s"] and float(row["end_s"]) <= float(row["start_s"]):
        row["end_s"] = ""
    row["notes"] = draw(_TEXT)  # a column vidcache does not know: ignored, whatever it holds
    return row


@st.composite
def _manifest(draw) -> dict:
    clean = draw(st.booleans())
    rows = draw(st.lists(_row(clean), min_size=draw(st.sampled_from([0, 1, 1, 1])), max_size=6))
    for _ in range(draw(st.integers(0, 2)) if rows and not clean else 0):  # duplicate ids, explicit or by path
        i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(rows) - 1))
        key = draw(st.sampled_from(["video_id", "path"]))
        rows[j] = {**rows[j], key: rows[i][key], **({"video_id": ""} if key == "path" else {})}
    columns = draw(st.permutations([*KNOWN_COLUMNS, "notes"]))
    columns = [c for c in columns if c == "path" or draw(st.integers(0, 3)) > 0]  # missing optional columns
    if not clean and draw(st.integers(0, 15)) == 0:
        columns = [c for c in columns if c != "path"] or ["notes"]
    fmt = draw(st.sampled_from(["csv", "tsv", "txt", "parquet"]))
    if fmt != "parquet" and not clean and draw(st.integers(0, 15)) == 0:
        columns.append(draw(st.sampled_from(columns or ["path"])))  # a column named twice
    return {
        "rows": rows,
        "columns": columns,
        "format": fmt,
        # CSV/TSV only:
        "bom": draw(st.booleans()),
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "quote_all": draw(st.booleans()),
        "pads": draw(st.lists(st.integers(0, 2), min_size=8, max_size=8)),  # spaces after a delimiter
        "blank_after": draw(st.sets(st.integers(0, len(rows)), max_size=2)),  # blank lines
        "final_newline": draw(st.booleans()),
        "bad_utf8_row": draw(st.integers(0, 7 * len(rows) - 1)) if rows and not clean else None,
        "header_spaces": draw(st.booleans()),  # " path " in the header
        # an empty file: nothing, a byte order mark, only line ends
        "empty": draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"\n\n", b"\r\n"]))
        if not clean and draw(st.integers(0, 12)) == 0
        else None,
        # a row with a field too many (pandas made the first column the index), or an unclosed quote
        "malformed": draw(st.sampled_from([None, "extra", "unclosed"])) if rows and not clean else None,
        "malformed_row": draw(st.integers(0, len(rows) - 1)) if rows else 0,
        # parquet only:
        "labels_as_list": draw(st.booleans()),
        "seconds_as_float": draw(st.booleans()),
    }


# -------------------------------------------------------------------------------------------------
# manifest: writing a file, and an independent model of what read_manifest must return
# -------------------------------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _csv_field(value: str, sep: str, quote_all: bool) -> str:
    if quote_all or any(c in value for c in (sep, '"', "\n", "\r")):
        return '"' + value.replace('"', '""') + '"'
    return value


def _write_csv(path: Path, spec: dict) -> dict[int, int]:
    """Write the manifest by hand (not with the csv module the reader uses); return row -> line."""
    sep = "\t" if spec["format"] == "tsv" else ","
    newline, pads = spec["newline"], spec["pads"]
    names = [f" {c} " if spec["header_spaces"] else c for c in spec["columns"]]
    text = sep.join(_csv_field(c, sep, spec["quote_all"]) for c in names) + newline
    lines: dict[int, int] = {}
    starts: dict[int, int] = {}
    for i, row in enumerate(spec["rows"]):
        if i in spec["blank_after"]:
            text += newline
        lines[i + 1] = len(_LINE_BREAK.findall(text)) + 1
        fields = [_csv_field(row[c], sep, spec["quote_all"]) for c in spec["columns"]]
        record = sep.join(" " * pads[k % len(pads)] + f if k else f for k, f in enumerate(fields))
        if record == "":  # an empty line is a blank line, not a row with one empty field
            record = '""'
        if spec["malformed"] == "extra" and i == spec["malformed_row"]:
            record += sep + "one field too many"
        if spec["malformed"] == "unclosed" and i == len(spec["rows"]) - 1:
            record += sep + '"a quote never closed'
        starts[i] = len(text)
        text += record
        if i < len(spec["rows"]) - 1 or spec["final_newline"]:
            text += newline
    if len(spec["rows"]) in spec["blank_after"]:
        text += newline
    data = text.encode("utf-8")
    if spec["bad_utf8_row"] is not None and spec["bad_utf8_row"] < len(spec["rows"]):  # a stray latin-1 byte
        at = len(text[: starts[spec["bad_utf8_row"]]].encode("utf-8"))
        data = data[:at] + b"\xe9" + data[at:]
    path.write_bytes((b"\xef\xbb\xbf" if spec["bom"] else b"") + data)
    return lines


def _write_parquet(path: Path, spec: dict) -> None:
    data: dict[str, list] = {}
    for column in spec["columns"]:
        values: list = [row[column] for row in spec["rows"]]
        if column == "labels" and spec["labels_as_list"]:
            values = [v.split(";") for v in values]
        if column in ("start_s", "end_s") and spec["seconds_as_float"]:
            values = [_float_or_none(v) for v in values]
        data[column] = values
    frame = pd.DataFrame(data, columns=spec["columns"])
    if not spec["rows"]:
        frame = frame.astype(object)
    frame.to_parquet(path)


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _seconds(value, as_float: bool) -> tuple[bool, float | None]:
    """(ok, seconds) for one start_s/end_s cell."""
    if as_float:  # a parquet float column: NaN is how pandas writes a missing value
        if value is None or math.isnan(value):
            return True, None
        return (True, value) if math.isfinite(value) and value >= 0 else (False, None)
    text = value.strip()
    if text == "":
        return True, None
    try:
        seconds = float(text)
    except ValueError:
        return False, None
    return (True, seconds) if math.isfinite(seconds) and seconds >= 0 else (False, None)


def _model(spec: dict, base: str, root_confined: bool = False) -> tuple[str, object]:
    """("error", text the message must hold) or ("rows", (entries, {bad row: line or None}))."""
    columns = spec["columns"]
    if "path" not in columns:
        return "error", "missing required column 'path'"
    if any(columns.count(c) > 1 for c in KNOWN_COLUMNS):
        return "error", "appears more than once in the header"
    parquet = spec["format"] == "parquet"
    entries, bad, first_row = [], set(), {}
    for row_number, raw in enumerate(spec["rows"], 1):
        malformed = spec["malformed"] if not parquet else None
        if (malformed == "extra" and row_number - 1 == spec["malformed_row"]) or (
            malformed == "unclosed" and row_number == len(spec["rows"])
        ):
            bad.add(row_number)  # cannot be parsed: reported, and its cells are not used
            continue
        row = {c: (raw[c] if c in columns else "") for c in [*KNOWN_COLUMNS]}
        ok = True
        if any("\x00" in row[c] for c in KNOWN_COLUMNS):
            ok = False
        path = row["path"].strip()
        video_id = row["video_id"].strip()
        absolute = None
        if path == "":
            ok = False
        elif "\x00" not in path:
            absolute = os.path.abspath(os.path.join(base, path))
            inside = PurePosixPath(absolute).is_relative_to(base)
            if "\x00" not in row["video_id"] and not video_id:
                video_id = PurePosixPath(absolute).relative_to(base).as_posix() if inside else absolute
        as_float = parquet and spec["seconds_as_float"]
        start_ok, start = _seconds(_float_or_none(row["start_s"]) if as_float else row["start_s"], as_float)
        end_ok, end = _seconds(_float_or_none(row["end_s"]) if as_float else row["end_s"], as_float)
        if not (start_ok and end_ok) or (start is not None and end is not None and end <= start):
            ok = False
        if video_id and "\x00" not in video_id:
            if video_id in first_row:
                ok = False
            else:
                first_row[video_id] = row_number
        if parquet and spec["labels_as_list"] and "labels" in columns:
            labels = tuple(x.strip() for x in row["labels"].split(";") if x.strip())
        else:
            labels = tuple(x.strip() for x in row["labels"].strip().split(";") if x.strip())
        if not ok:
            bad.add(row_number)
            continue
        entries.append(VideoEntry(video_id, absolute, labels, row["split"].strip() or None, start, end, row_number))
    if not bad and not entries:
        return "error", "no rows"
    return "rows", (entries, bad)


@_settings(max_examples=400)
@given(spec=_manifest())
def test_manifest_round_trips_or_names_every_bad_row(spec):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"manifest file, é.{spec['format']}"
        if spec["empty"] is not None:
            path.write_bytes(spec["empty"])
            lines = None
        else:
            lines = _write_parquet(path, spec) if spec["format"] == "parquet" else _write_csv(path, spec)
        try:
            got = read_manifest(path)
        except ManifestError as exc:
            got = exc
        # (any other exception type propagates and fails the test)
    if spec["empty"] is not None:
        event(f"{spec['format']}: empty file")
        assert isinstance(got, ManifestError) and str(path) in str(got), got
        assert ("cannot be read as a table" if spec["format"] == "parquet" else "empty file") in str(got), got
        return
    kind, expected = _model(spec, tmp)
    if lines and spec["bad_utf8_row"] is not None and spec["bad_utf8_row"] < len(spec["rows"]):
        assert isinstance(got, ManifestError), got
        assert f"line {lines[spec['bad_utf8_row'] + 1]}: byte 0xe9 is not UTF-8" in str(got)
        return
    event(f"{spec['format']}: {kind if kind == 'error' else 'bad rows' if expected[1] else 'round trip'}")
    if kind == "error":
        assert isinstance(got, ManifestError), got
        assert str(path) in str(got) and expected in str(got)
        return
    entries, bad = expected
    if not bad:
        assert not isinstance(got, ManifestError), f"unexpected {got}"
        assert got == entries
        return
    assert isinstance(got, ManifestError), f"rows {sorted(bad)} are bad but read_manifest accepted them"
    assert str(got).startswith(f"manifest {path}: ")
    reported: dict[int, set[str]] = {}
    for problem in got.problems:
        match = re.match(r"row (\d+)(?: \(line (\d+)\))?: ", problem)
        assert match, f"problem does not name its row: {problem!r}"
        reported.setdefault(int(match[1]), set()).add(match[2])
    assert set(reported) == bad, "every bad row, and only those, is reported"
    if lines:  # CSV/TSV: each problem names the physical line its row starts on
        assert all(found == {str(lines[r])} for r, found in reported.items()), (reported, lines)


# -------------------------------------------------------------------------------------------------
# manifest: --root confinement
# -------------------------------------------------------------------------------------------------

_COMPONENTS = ["sub", "..", ".", "link_out", "link_in", "abs_out", "loop", "missing", "x.mp4", "root", "outside"]
_COMPONENTS += ["nul\x00.mp4", "é 视频.mp4"]


@pytest.fixture(scope="module")
def confinement_tree(tmp_path_factory) -> Path:
    """top/{root/{sub/, link_in -> sub, link_out -> ../outside, abs_out -> /top/outside, loop -> loop},
    outside/secret.mp4, rootlink -> root}"""
    top = tmp_path_factory.mktemp("confine")
    (top / "root" / "sub").mkdir(parents=True)
    (top / "outside").mkdir()
    (top / "outside" / "secret.mp4").write_bytes(b"")
    (top / "root" / "link_in").symlink_to("sub")
    (top / "root" / "link_out").symlink_to(Path("..") / "outside")
    (top / "root" / "abs_out").symlink_to(top / "outside")
    (top / "root" / "loop").symlink_to("loop")
    (top / "rootlink").symlink_to("root")
    return top


@_settings(max_examples=150)
@given(
    paths=st.lists(
        st.tuples(
            st.sampled_from(["", "", "root", "outside", "rootlink", "top"]),  # relative, or absolute from there
            st.lists(st.sampled_from(_COMPONENTS), min_size=1, max_size=5),
        ),
        min_size=1,
        max_size=6,
    ),
    root_name=st.sampled_from(["root", "rootlink", "root/sub"]),
)
def test_root_confines_every_path(confinement_tree, paths, root_name):
    top = confinement_tree
    root = top / root_name
    texts = []
    for anchor, parts in paths:
        start = "" if anchor == "" else str(top if anchor == "top" else top / anchor) + "/"
        texts.append(start + "/".join(parts))

    def read(rows: list[int]) -> tuple[dict[int, VideoEntry], dict[int, str]]:
        """Read a manifest of those rows; (accepted, rejected) by their number in `texts`."""
        with tempfile.TemporaryDirectory() as tmp:
            manifest = Path(tmp) / "m.csv"
            manifest.write_text("path,video_id\n" + "".join(f'"{texts[r - 1]}",id{r}\n' for r in rows))
            try:
                return {rows[e.row - 1]: e for e in read_manifest(manifest, root=root)}, {}
            except ManifestError as exc:
                return {}, {rows[int(re.match(r"row (\d+) ", p)[1]) - 1]: p for p in exc.problems}

    _, rejected = read(list(range(1, len(texts) + 1)))  # every bad row at once
    kept = [r for r in range(1, len(texts) + 1) if r not in rejected]
    accepted, again = read(kept) if kept else ({}, {})  # and the others are accepted
    assert not again, again
    real_root = Path(os.path.realpath(root))
    for row, text in enumerate(texts, 1):
        if row in accepted:  # the security property: whatever is accepted resolves inside the root
            assert Path(os.path.realpath(accepted[row].path)).is_relative_to(real_root), (text, accepted[row])
            event("accepted")
        elif "\x00" in text:  # os.path.realpath raised ValueError here before
            assert "path contains a NUL character" in rejected[row], rejected[row]
        else:
            assert "is outside --root" in rejected[row], rejected[row]
            # no false alarm: the path, made absolute and normalised as an entry's path is, leaves the root
            normalised = Path(os.path.realpath(os.path.normpath(os.path.join(root, text))))
            assert not normalised.is_relative_to(real_root), text
            event("rejected: symlink out" if "link_out" in text or "abs_out" in text else "rejected")


# -------------------------------------------------------------------------------------------------
# cache: reads and `vidcache verify` on damaged shards and catalogs
# -------------------------------------------------------------------------------------------------

_FLOW_SHAPE = (2, 4, 4)
_FLOW_IDENTITY = {"dtype": "uint8", "feature_dim": 32, "bound_px": 20.0, "row_shape": list(_FLOW_SHAPE)}


def _known_videos() -> dict[str, dict[str, tuple]]:
    """view -> video_id -> (rows as stored, timestamps_s[, end_timestamps_s]); one shard per view."""
    rng = np.random.default_rng(7)

    def times(count: int) -> np.ndarray:
        return np.sort(rng.uniform(0, 30, count))

    clip = {}
    for i, count in enumerate([5, 0, 17, 3]):
        clip[f'clip é {i},\n"x"'] = (rng.standard_normal((count, 8)).astype(np.float16), times(count))
    audio = {
        f"v{i}": (rng.standard_normal((t, 4)).astype(np.float32), np.arange(t) * 0.96) for i, t in enumerate([2, 9])
    }
    flow = {}
    for i, t in enumerate([3, 6]):
        starts = times(t)
        flow[f"v{i}"] = (rng.integers(0, 256, (t, int(np.prod(_FLOW_SHAPE))), dtype=np.uint8), starts, starts + 0.25)
    return {"clip": clip, "audio": audio, "flow": flow}


def _write_cache(directory: Path, videos: dict) -> None:
    from vidcache.cache.arrays import write_view_arrays
    from vidcache.cache.catalog import Catalog
    from vidcache.cache.store import CacheWriter

    for view, dtype in (("clip", "float16"), ("audio", "float32")):
        rows = [(video_id, *arrays) for video_id, arrays in videos[view].items()]
        identity = {"dtype": dtype, "feature_dim": rows[0][1].shape[1]}
        entries = [VideoEntry(video_id, f"/videos/{video_id}") for video_id in videos[view]]
        write_view_arrays(directory, view=view, rows=rows, entries=entries, identity=identity, dtype=dtype)
    # a gzip-compressed uint8 view with end times, as `flow` is stored (write_view_arrays has neither)
    identity = _FLOW_IDENTITY
    catalog = Catalog.open(directory, create=True)
    catalog.claim_view("flow", identity)
    writer = CacheWriter(
        directory,
        catalog,
        run_id="r",
        writer_tag="k0of1",
        root_attrs={},
        view_attrs={"flow": identity},
        dtypes={"flow": "uint8"},
        compressed={"flow"},
    )
    for video_id, arrays in videos["flow"].items():
        writer.add(video_id, {"flow": arrays}, source=None)
    writer.commit()
    catalog.close()


def _damage_regions(path: Path) -> list[tuple[int, int]]:
    """Byte ranges of a shard worth damaging: its head and tail (superblock, object headers, the
    index), the used part of every row dataset's chunks, and the whole file."""
    import h5py

    size = path.stat().st_size
    regions = [(0, min(size, 8192)), (max(0, size - 8192), size), (0, size)]
    with h5py.File(path, "r") as h5:
        for view in h5:
            group = h5[view]
            for name in ("features", "timestamps_s", "end_timestamps_s"):
                if name not in group:
                    continue
                dataset = group[name]
                used = dataset.shape[0] * int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize
                for i in range(dataset.id.get_num_chunks()):
                    chunk = dataset.id.get_chunk_info(i)
                    length = chunk.size if dataset.compression else min(chunk.size, used)
                    regions.append((chunk.byte_offset, chunk.byte_offset + max(1, length)))
            for name in ("video_ids", "row_start", "row_count", "checksum", "info_json"):
                offset = group[name].id.get_offset()
                if offset is not None:
                    regions.append((offset, offset + max(1, group[name].id.get_storage_size())))
    return regions


class _Pristine(tuple):
    """(directory, videos, shard_of, regions), shown briefly in a failing example."""

    def __repr__(self) -> str:
        return f"<pristine cache {self[0]}>"


@pytest.fixture(scope="module")
def pristine_cache(tmp_path_factory):
    import vidcache.cli  # noqa: F401  (imported once here, so every forked child has it)
    from vidcache.cache.catalog import Catalog

    directory = tmp_path_factory.mktemp("pristine") / "cache"
    videos = _known_videos()
    _write_cache(directory, videos)
    catalog = Catalog.open(directory)
    shard_of = {item.view: item.shard for item in catalog.items()}
    catalog.close()
    assert len(set(shard_of.values())) == 3  # one shard per view
    regions = {view: _damage_regions(directory / "shards" / f"{shard}.h5") for view, shard in shard_of.items()}
    regions["catalog"] = _catalog_regions(directory / "catalog.sqlite", videos, shard_of)
    return _Pristine((directory, videos, shard_of, regions))


def _catalog_regions(path: Path, videos: dict, shard_of: dict) -> list[tuple[int, int]]:
    """Byte ranges of the catalog worth damaging: the file header, every page header, and the
    records (and their headers just before) that hold video ids, shard names, statuses, identities."""
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big") or 65536
    regions = [(0, 100), (0, len(data))] + [(p, p + 12) for p in range(page, len(data), page)]
    needles = {v.encode() for stored in videos.values() for v in stored} | {s.encode() for s in shard_of.values()}
    for needle in needles | {b"done", b'"dtype"', b"schema_version"}:
        for found in re.finditer(re.escape(needle), data):
            regions.append((max(0, found.start() - 24), found.end()))
    return regions


def _same(got: tuple, want: tuple) -> bool:
    return len(got) == len(want) and all(
        isinstance(g, np.ndarray) and g.dtype == w.dtype and g.shape == w.shape and g.tobytes() == w.tobytes()
        for g, w in zip(got, want, strict=True)
    )


def _outcome(exc: BaseException) -> tuple[str, str]:
    from vidcache.errors import CacheError

    kind = "cache" if isinstance(exc, CacheError) else "key" if isinstance(exc, KeyError) else type(exc).__name__
    return kind, str(exc)


def _read_everything(directory: Path, videos: dict) -> dict:
    """Runs in a forked child: every read API on every video, then `vidcache verify --json`."""
    import contextlib
    import json

    from vidcache import Cache
    from vidcache.cache.reader import _RowDecoder as RowDecoder
    from vidcache.cli import main

    result: dict = {"open": None, "reads": []}

    def record(api: str, view: str, call, expect: dict) -> None:
        try:
            got = call()
        except Exception as exc:
            result["reads"].append((api, view, "error", _outcome(exc)))
            return
        wrong = [v for v, arrays in got if v not in expect or not _same(arrays, expect[v])]
        missing = sorted(set(expect) - {v for v, _ in got}) if api != "iter_batches(all)" else []
        result["reads"].append((api, view, "wrong" if wrong or missing else "exact", wrong + missing))

    def read_view(cache: Cache, view: str, stored: dict) -> None:
        # raw=True: the stored rows (flow is quantised; its decoding is tested in test_cache.py)
        expect = {v: arrays[:2] for v, arrays in stored.items()}
        ids = list(stored)

        def batches(**kw) -> list:
            return [
                (v, (f, t))
                for b in cache.iter_batches(view, batch_size=2, raw=True, **kw)
                for v, f, t in zip(b.video_ids, b.features, b.timestamps_s, strict=True)
            ]

        for v in ids:
            record("read", view, lambda v=v: [(v, cache.read(v, view, raw=True))], {v: expect[v]})
        record("read_many", view, lambda: list(zip(ids, cache.read_many(ids, view, raw=True), strict=True)), expect)
        record("iter_batches", view, lambda: batches(video_ids=ids), expect)
        record("iter_batches(all)", view, batches, expect)
        if view == "flow":
            spans = {v: (np.stack([s[1], s[2]], axis=1),) for v, s in stored.items()}
            record("spans", view, lambda: [(v, (cache.spans(v, "flow"),)) for v in ids], spans)
            # decoded to pixels with the view's bound_px and row_shape, as a user reads flow
            decode = RowDecoder.for_view(_FLOW_IDENTITY)
            pixels = {v: (decode(s[0], None), s[1]) for v, s in stored.items()}
            record("read decoded", view, lambda: [(v, cache.read(v, "flow")) for v in ids], pixels)
            record("read_many decoded", view, lambda: list(zip(ids, cache.read_many(ids, "flow"), strict=True)), pixels)

    def listing(api: str, call, expect: list) -> None:
        """Lists may change with a damaged catalog, but hold only text (never bytes) or raise cleanly."""
        try:
            got = call()
        except Exception as exc:
            result["reads"].append((api, "listing", "error", _outcome(exc)))
            return
        outcome = "exact" if got == expect else "changed" if all(isinstance(x, str) for x in got) else "wrong"
        result["reads"].append((api, "listing", outcome, got))

    try:
        cache = Cache(directory)
    except Exception as exc:
        result["open"] = _outcome(exc)
    else:
        every = sorted({v for stored in videos.values() for v in stored})
        listing("video_ids()", cache.video_ids, every)
        listing("views()", cache.views, sorted(videos))
        for view, stored in videos.items():
            listing(f"video_ids({view})", lambda view=view: sorted(cache.video_ids(view)), sorted(stored))
            read_view(cache, view, stored)
        cache.close()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["verify", "--cache", str(directory), "--json"])
            code = 0
        except SystemExit as exc:
            code = exc.code
        except Exception:  # what a user would see as a traceback
            code, err = "crashed", io.StringIO(traceback.format_exc())
    result["verify"] = (code, out.getvalue(), err.getvalue())
    result["verify_report"] = json.loads(out.getvalue()) if code in (0, 1) else None
    return result


def _in_child(fn, *args, timeout_s: int = 60):
    """Run fn(*args) in a forked child: a crash of the interpreter (segfault, abort) or a hang fails
    the example instead of killing the test run. Returns ("ok", value), ("raised", traceback text)
    or ("crashed", signal name)."""
    import pickle

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            signal.alarm(timeout_s)
            try:
                payload = ("ok", fn(*args))
            except BaseException:
                payload = ("raised", traceback.format_exc())
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(pickle.dumps(payload))
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return "crashed", signal.Signals(os.WTERMSIG(status)).name
    return pickle.loads(data)


def _damage(path: Path, action: tuple) -> None:
    kind, offset, payload = action
    if kind == "truncate":
        os.truncate(path, offset)
        return
    with open(path, "r+b") as handle:
        handle.seek(offset)
        if kind == "flip":
            byte = handle.read(1)
            handle.seek(offset)
            handle.write(bytes([byte[0] ^ (1 << payload)]) if byte else b"")
        else:
            handle.write(payload)


@st.composite
def _actions(draw, regions: list[tuple[int, int]], size: int) -> list[tuple]:
    """One to three damages: truncation, a flipped bit, or bytes overwritten (zeros, 0xff, random)."""
    actions = []
    for _ in range(draw(st.integers(1, 3))):
        lo, hi = draw(st.sampled_from(regions))
        offset = draw(st.integers(lo, max(lo, hi - 1)))
        kind = draw(st.sampled_from(["truncate", "flip", "flip", "overwrite", "overwrite"]))
        if kind == "truncate":
            actions.append(("truncate", draw(st.integers(0, size - 1)) if draw(st.booleans()) else offset, None))
            break  # nothing after the end is left to damage
        if kind == "flip":
            actions.append(("flip", offset, draw(st.integers(0, 7))))
        else:
            length = draw(st.integers(1, 64))
            fill = draw(st.sampled_from([b"\x00", b"\xff", None]))
            payload = fill * length if fill else draw(st.binary(min_size=length, max_size=length))
            actions.append(("overwrite", offset, payload))
    return actions


def _check_damaged_cache(pristine_cache, target: str, actions: list[tuple], verify_must_survive: bool = True) -> None:
    directory, videos, shard_of, _ = pristine_cache
    with tempfile.TemporaryDirectory() as tmp:
        damaged = Path(tmp) / "cache"
        shutil.copytree(directory, damaged)
        path = damaged / "catalog.sqlite" if target == "catalog" else damaged / "shards" / f"{shard_of[target]}.h5"
        for action in actions:
            _damage(path, action)
        status, result = _in_child(_read_everything, damaged, videos)
    assert status == "ok", f"reading the damaged cache {status}: {result}"

    # 1. every read either returns exactly what was stored, or raises a clean, documented error
    # a damaged catalog may also name a shard it now points to wrongly (a changed shard name)
    named = (str(path), "/shards/") if target == "catalog" else (shard_of[target],)
    if result["open"] is not None:
        kind, message = result["open"]
        assert target == "catalog" and kind == "cache" and str(path) in message, result["open"]
        event("Cache(): catalog unreadable")
    for api, view, outcome, detail in result["reads"]:
        event(f"read {outcome}" + (f": {detail[0]}" if outcome == "error" else ""))
        if outcome != "error":
            continue
        kind, message = detail
        assert kind in ("cache", "key"), f"{api}({view}) raised {kind}: {message}"
        if kind == "cache":
            assert any(n in message for n in named) and "vidcache verify" in message, f"{api}({view}): {message}"
        else:  # KeyError: the catalog no longer lists the video as done
            assert target == "catalog", f"{api}({view}) raised KeyError: {message}"
    if target != "catalog":  # damage stays in its shard (and the catalog's listings are untouched)
        others = [r for r in result["reads"] if r[1] != target]
        assert all(r[2] == "exact" for r in others), others
    assert not [r for r in result["reads"] if r[1] == "listing" and r[2] == "wrong"], result["reads"]

    # 2. `vidcache verify` never crashes, and names the shard whenever a read returned wrong arrays
    # (a damaged shard: also whenever a read failed; a damaged catalog may fail a read cleanly with
    # a KeyError, e.g. a status that is no longer "done", which is not a shard's fault)
    code, _, err = result["verify"]
    wrong = {view for _, view, outcome, _ in result["reads"] if outcome == "wrong" and view != "listing"}
    if code == "crashed" and not verify_must_survive:
        assert not wrong, f"reads of {wrong} are silently wrong and verify crashed: {err}"
        event("verify crashed")
        return
    assert code in (0, 1, 2) and "Traceback" not in err, f"verify exited {code}: {err}"
    if code == 2:  # a fatal VidcacheError: only for a catalog it cannot read
        assert target == "catalog" and str(path) in err, err
        event("verify: catalog unreadable")
        return
    broken = result["verify_report"]["broken"]
    failed = {view for _, view, outcome, _ in result["reads"] if outcome == "error" and view != "listing"}
    failed = failed if target != "catalog" else set()
    for view in wrong | failed:
        assert shard_of[view] in broken, f"{view} reads are not exact but verify reports {broken}: {result['reads']}"
    if all(r[2] == "exact" for r in result["reads"]):
        event("reads exact" + (", verify flags a shard" if broken else ""))


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="reads each damaged cache in a forked child")


@needs_fork
@_settings(max_examples=120)
@given(data=st.data())
def test_damaged_shard_reads_exact_or_clean_error_and_verify_flags_it(pristine_cache, data):
    directory, _, shard_of, regions = pristine_cache
    target = data.draw(st.sampled_from(sorted(shard_of)), label="view whose shard is damaged")
    size = (directory / "shards" / f"{shard_of[target]}.h5").stat().st_size
    actions = data.draw(_actions(regions[target], size), label="damage")
    _check_damaged_cache(pristine_cache, target, actions)


@needs_fork
@_settings(max_examples=60)
@given(data=st.data())
def test_damaged_catalog_reads_exact_or_clean_error(pristine_cache, data):
    directory, _, _, regions = pristine_cache
    size = (directory / "catalog.sqlite").stat().st_size
    actions = data.draw(_actions(regions["catalog"], size), label="damage")
    _check_damaged_cache(pristine_cache, "catalog", actions, verify_must_survive=False)


@needs_fork
@settings(_settings(40))
@given(data=st.data())
def test_damaged_catalog_verify_does_not_crash(pristine_cache, data):
    directory, _, _, regions = pristine_cache
    size = (directory / "catalog.sqlite").stat().st_size
    actions = data.draw(_actions(regions["catalog"], size), label="damage")
    _check_damaged_cache(pristine_cache, "catalog", actions, verify_must_survive=True)


def test_damaged_flow_scale_in_catalog_is_refused_not_decoded(pristine_cache, tmp_path):
    """One changed digit of `bound_px` in the catalog (SQLite keeps no checksums) silently rescaled
    every decoded flow value, and `vidcache verify` (raw rows only) saw nothing wrong."""
    from vidcache import Cache
    from vidcache.errors import CacheError

    directory, videos, shard_of, _ = pristine_cache
    shutil.copytree(directory, tmp_path / "cache")
    catalog = tmp_path / "cache" / "catalog.sqlite"
    data = catalog.read_bytes()
    assert data.count(b'"bound_px": 20.0') == 1
    catalog.write_bytes(data.replace(b'"bound_px": 20.0', b'"bound_px": 28.0'))
    with Cache(tmp_path / "cache") as cache:
        assert cache.view_info("flow")["bound_px"] == 28.0  # the damage is a valid-looking value
        features, _ = cache.read("v0", "flow", raw=True)  # the stored rows are fine
        assert features.tobytes() == videos["flow"]["v0"][0].tobytes()
        with pytest.raises(CacheError, match=f"bound_px=28.0.*{shard_of['flow']}.*says 20.0"):
            cache.read("v0", "flow")
        with pytest.raises(CacheError, match="one of them is damaged"):
            next(cache.iter_batches("flow"))


def test_a_damaged_catalog_index_is_found_by_verify_and_rebuilt_by_quarantine(pristine_cache, tmp_path):
    """CI found it: one flipped bit in the covering index items_by_view turned a listed video id into
    another ('clip é 1' -> 'blip é 1'); every query the index answers listed the wrong id while the
    table (and so `verify`, which scans it) stayed right, so verify reported a healthy cache. SQLite's
    own integrity check is the reference: verify runs it, and --quarantine rebuilds the indexes."""
    import sqlite3

    from vidcache import Cache
    from vidcache.cli import main

    directory, videos, _, _ = pristine_cache
    video_id = sorted(videos["clip"])[1]
    needle = video_id.encode()

    def listed(path: Path) -> tuple[list, list]:
        """(what the index answers, what a scan of the table holds) for the clip view's video ids."""
        db = sqlite3.connect(f"file:{path / 'catalog.sqlite'}?mode=ro", uri=True)
        try:
            query = "SELECT video_id FROM items {} WHERE view='clip' ORDER BY video_id"
            by_index = [r[0] for r in db.execute(query.format("INDEXED BY items_by_view"))]
            by_table = [r[0] for r in db.execute(query.format("NOT INDEXED"))]
        finally:
            db.close()
        return by_index, by_table

    def verify(path: Path, *extra: str) -> tuple[object, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(["verify", "--cache", str(path), *extra])
                code = 0
            except SystemExit as exc:
                code = exc.code
        return code, out.getvalue(), err.getvalue()

    seen = {"index": 0, "table": 0}
    data = (directory / "catalog.sqlite").read_bytes()
    for found in re.finditer(re.escape(needle), data):
        damaged = tmp_path / f"at{found.start()}"
        shutil.copytree(directory, damaged)
        with open(damaged / "catalog.sqlite", "r+b") as handle:  # 'c' -> 'b': still valid UTF-8 text
            handle.seek(found.start())
            handle.write(bytes([data[found.start()] ^ 1]))
        by_index, by_table = listed(damaged)
        if by_index == by_table:
            continue  # this copy of the id lives in another table or index: not this case
        where = "index" if by_table == sorted(videos["clip"]) else "table"
        seen[where] += 1
        code, _, err = verify(damaged)
        assert code == 2 and str(damaged / "catalog.sqlite") in err and "--quarantine" in err, (code, err)
        code, out, err = verify(damaged, "--quarantine", "--json")
        assert code == 0, (code, out, err)
        report = json.loads(out)
        assert report["repaired"] and report["repaired"][0].startswith("catalog indexes rebuilt"), report
        # the rebuilt index agrees with the table; a damaged table row names no rows of any shard, so
        # that one (video, view) is set aside and the next extract redoes it; nothing else is touched
        lost = [] if where == "index" else [video_id]
        wrong_ids = [v for v in by_table if v not in videos["clip"]]  # [] when only the index was damaged
        assert [q["video_id"] for q in report["quarantined_items"]] == wrong_ids, report
        kept = sorted(v for v in videos["clip"] if v not in lost)
        assert listed(damaged) == (kept, kept)
        with Cache(damaged) as cache:
            assert sorted(cache.video_ids("clip")) == kept
            for kept_id in kept:
                features, _ = cache.read(kept_id, "clip", raw=True)
                assert features.tobytes() == videos["clip"][kept_id][0].tobytes()
        assert verify(damaged)[0] == 0
    assert seen["index"] >= 1 and seen["table"] >= 1, f"the id was not found both in the index and the table: {seen}"
