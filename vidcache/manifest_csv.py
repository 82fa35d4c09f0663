"""A plain CSV/TSV manifest read by pyarrow's CSV parser and checked column by column (issue 29: a
1M-row manifest in about a second instead of the csv module's 30 s with a Python check per row).

It vouches only for what it can prove matches the csv-module reader (`manifest.read_manifest`):
no quote character anywhere (so no field spans lines or holds a separator), a header on line 1,
every row with the header's number of fields, no NUL, no field over the csv module's size limit.
Anything else returns None and the csv-module reader runs, so every message (with its line) comes
from one place. Rows it cannot prove plain (a URL, a `..` or `//` in the path, an unusual number,
whitespace the csv module strips differently, --root confinement) go through `row_entry` one by one;
any problem in any row also returns None, and the csv-module reader reports them all.
"""

from __future__ import annotations

import csv
import os

from .manifest_rows import LABEL_SEPARATOR, VideoEntry, row_entry

_COLUMNS = ("path", "video_id", "labels", "split", "start_s", "end_s")
# cells whose first or last character is not printable ASCII: Python's str.strip() may remove more
# (or other) whitespace than the ASCII trim here, so such rows take the row-by-row rules
_ODD_EDGE = r"^[^!-~]|[^!-~]$"
_PLAIN_BYTES = bytes(range(0x20, 0x7F)) + b"\t\r\n"  # printable ASCII and line ends: only ASCII trims
_NOT_NORMAL = r"(^|/)\.\.?(/|$)|//|/$"  # what os.path.normpath would change, or a ".." relpath
# a plain decimal float() and pyarrow's cast read alike (no sign, inf, nan, "_" or hex; short enough
# to stay finite)
_NUMBER = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,2})?$"


def _header(data: bytes, sep: str) -> list[str] | None:
    line = data.split(b"\n", 1)[0].split(b"\r", 1)[0]
    try:
        names = [name.strip() for name in line.decode("utf-8").split(sep)]
    except UnicodeDecodeError:
        return None
    return names if line.strip() else None


def _columns(data: bytes, sep: str, header: list[str]):
    """{known column: its cells, ASCII-trimmed, as a pyarrow string array}, None when the file is not
    plain (see the module's docstring)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    present = {name: f"c{i}" for i, name in reversed(list(enumerate(header))) if name in _COLUMNS}
    names = [f"c{i}" for i in range(len(header))]
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(data),
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1, block_size=8 << 20),
            parse_options=pa_csv.ParseOptions(delimiter=sep, quote_char=False, ignore_empty_lines=True),
            convert_options=pa_csv.ConvertOptions(
                column_types={c: pa.string() for c in present.values()},
                include_columns=list(present.values()),
                strings_can_be_null=False,
                null_values=[],
            ),
        )
    except (pa.ArrowInvalid, OSError):  # a row with another number of fields, text that is not UTF-8
        return None
    return {
        name: pc.utf8_trim(table.column(c).combine_chunks(), characters=" \t\n\r\x0b\x0c")
        for name, c in present.items()
    }, table.num_rows


def plain_entries(data: bytes, sep: str, *, base: str, confine: bool, require_path: bool) -> list[VideoEntry] | None:
    """The entries of a plain CSV manifest with no problem in any row (the same entries as the
    csv-module reader makes), or None: then that reader decides (and reports)."""
    import pyarrow.compute as pc

    if b'"' in data or b"\x00" in data or data[:1] in (b"\n", b"\r"):
        return None
    header = _header(data, sep)
    if header is None or ("path" not in header and (require_path or "video_id" not in header)):
        return None
    if any(header.count(name) > 1 for name in _COLUMNS):
        return None
    read = _columns(data, sep, header)
    if read is None:
        return None
    columns, n = read
    limit = csv.field_size_limit()  # a longer field is the csv module's error, in any column
    if len(data) > limit:
        if any(name not in _COLUMNS for name in header):  # columns pyarrow did not keep: the lines
            if max(map(len, data.split(b"\n" if b"\n" in data else b"\r"))) > limit:
                return None
        elif any(pc.max(pc.binary_length(cells)).as_py() > limit for cells in columns.values()):
            return None
    if n == 0:
        return None
    empty = _blank_strings(n)
    path, video_id = columns.get("path", empty), columns.get("video_id", empty)
    start, end = columns.get("start_s", empty), columns.get("end_s", empty)

    blank = _text("")
    odd = pc.equal(path, blank)
    if data.translate(None, _PLAIN_BYTES):  # a byte str.strip() may see differently: check cell edges
        for cells in columns.values():
            odd = pc.or_(odd, pc.match_substring_regex(cells, _ODD_EDGE))
    odd = pc.or_(odd, pc.match_substring(path, "://"))  # a URL, or a path is_url might take for one
    odd = pc.or_(odd, pc.match_substring_regex(path, _NOT_NORMAL))
    for cells in (start, end):
        odd = pc.or_(odd, pc.and_(pc.not_equal(cells, blank), pc.invert(pc.match_substring_regex(cells, _NUMBER))))
    if confine:
        odd = _all_true(n)

    prefix = base if base.endswith(os.sep) else base + os.sep
    absolute_path = pc.if_else(
        pc.starts_with(path, os.sep), path, pc.binary_join_element_wise(_text(prefix), path, blank)
    )
    # relpath "." is the row rules'
    absolute_path = pc.if_else(pc.equal(absolute_path, _text(base)), blank, absolute_path)
    odd = pc.or_(odd, pc.equal(absolute_path, blank))
    under = pc.starts_with(absolute_path, prefix)
    named = pc.if_else(under, pc.utf8_slice_codeunits(absolute_path, len(prefix)), absolute_path)
    ids = pc.if_else(pc.equal(video_id, blank), named, video_id)

    start_s, end_s = _seconds(start, odd), _seconds(end, odd)
    if start_s is None or end_s is None or pc.any(pc.less_equal(end_s, start_s)).as_py():
        return None  # out of range, or an end not after its start: the csv-module reader's messages
    numbers = [start_s.to_pylist(), end_s.to_pylist()]
    labels = _labels(columns.get("labels"), n)
    split = columns.get("split", empty).dictionary_encode()
    split_values = [value or None for value in split.dictionary.to_pylist()]
    split_of = split.indices.to_pylist()

    splits = [split_values[i] for i in split_of]
    id_list = ids.to_pylist()
    fields = (id_list, absolute_path.to_pylist(), labels, splits, *numbers, range(1, n + 1))
    if not pc.any(odd).as_py():  # every row plain (the usual 1M-row manifest): built from C, no loop here
        if len(set(id_list)) != n:
            return None  # a duplicate video_id: reported with both rows by the csv-module reader
        return list(map(VideoEntry, *fields))
    entries: list[VideoEntry] = []
    for *values, irregular in zip(*fields, odd.to_pylist(), strict=True):
        if not irregular:
            entries.append(VideoEntry(*values))
            continue
        row = values[-1]  # the row-by-row rules; any problem: the csv-module reader reports it, with its line
        record = {name: cells[row - 1].as_py() for name, cells in columns.items()}
        entry, problems, _ = row_entry(f"row {row}", row, record, base=base, confine=confine, require_path=require_path)
        if problems or entry is None:
            return None
        entries.append(entry)
    if len({entry.video_id for entry in entries}) != len(entries):
        return None
    return entries


# Arrays and scalars are built from buffers, never from Python objects: converting Python objects makes
# pyarrow import pandas (its check for a Series), 0.25 s of every extract process's start-up (issue 29)
def _blank_strings(n: int):
    """n empty strings, as a pyarrow string array."""
    import numpy as np
    import pyarrow as pa

    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(np.zeros(n + 1, np.int32)), pa.py_buffer(b"")])


def _text(value: str):
    """`value` as a pyarrow string scalar."""
    import numpy as np
    import pyarrow as pa

    data = value.encode("utf-8")
    offsets = np.array([0, len(data)], np.int32)
    return pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])[0]


def _all_true(n: int):
    """n True values, as a pyarrow boolean array."""
    import numpy as np
    import pyarrow as pa

    bits = np.packbits(np.ones(n, dtype=bool), bitorder="little")
    return pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(bits)])


def _seconds(cells, odd):
    """start_s / end_s of the plain rows as float64 (null where empty or odd), None when one is not a
    finite number >= 0."""
    import pyarrow as pa
    import pyarrow.compute as pc

    usable = pc.and_(pc.invert(odd), pc.not_equal(cells, _text("")))
    values = pc.cast(pc.if_else(usable, cells, pa.nulls(1, pa.string())[0]), pa.float64())
    return None if pc.any(pc.invert(pc.is_finite(values))).as_py() else values


def _labels(cells, n: int) -> list[tuple[str, ...]]:
    """Each row's labels, split and stripped once per distinct cell (a 1M-row manifest has a few
    hundred distinct label cells)."""
    if cells is None:
        return [()] * n
    encoded = cells.dictionary_encode()
    distinct = [
        tuple(part.strip() for part in text.split(LABEL_SEPARATOR) if part.strip())
        for text in encoded.dictionary.to_pylist()
    ]
    return [distinct[i] for i in encoded.indices.to_pylist()]
