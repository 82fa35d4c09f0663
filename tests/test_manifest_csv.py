"""The vectorised CSV manifest reader (vidcache/manifest_csv.py) against the csv-module reader it
stands in for: on a generated family of plain, odd and bad manifests, `read_manifest` gives the same
entries or the same ManifestError problems (messages and lines) as with the pyarrow path switched off,
and the plain ones really take the pyarrow path."""

from __future__ import annotations

import itertools

import pytest

import vidcache.manifest_csv as manifest_csv
from vidcache.errors import ManifestError
from vidcache.manifest import read_manifest

HEADER = "path,video_id,labels,split,start_s,end_s"
GOOD = ["a.mp4,,cat;dog,train,,", "b/c.mp4,vb,, val ,1.5,3", "d.mp4,,x,,0,.5"]
# one cell replaced at a time: (column index, value)
CELLS = [
    (0, " e.mp4 "), (0, "\te.mp4"), (0, "e.mp4\xa0"), (0, "\u2003e.mp4"), (0, "./e.mp4"), (0, "f//e.mp4"),
    (0, "../e.mp4"), (0, "f/../e.mp4"), (0, "f/"), (0, "."), (0, "..e.mp4"), (0, "s3://bucket/e.mp4"),
    (0, "https://user:pw@host/e.mp4"), (0, ""), (0, "{abs}/g/e.mp4"), (0, "{abs}"), (0, "/elsewhere/e.mp4"),
    (0, "é/ü.mp4"), (1, "a.mp4"), (1, "vb"), (1, " id "), (2, " a ; ;b "), (2, ";;"), (2, "\xa0x"),
    (3, "TRAIN"), (4, "1e3"), (4, "1e999"), (4, "-1"), (4, "inf"), (4, "nan"), (4, "1_0"), (4, " 2 "),
    (4, "0x1"), (4, "abc"), (4, "5"), (5, "1.5"), (5, "00.70"), (5, "7."), (5, "1" * 400),
]  # fmt: skip
WHOLE = [
    lambda t: t.replace("\n", "\r\n"), lambda t: t.replace("\n", "\r"), lambda t: t.replace("\n", "\n\n"),
    lambda t: "\n" + t, lambda t: t + "\n\n", lambda t: t.rstrip("\n"), lambda t: "\ufeff" + t,
    lambda t: t.replace("a.mp4,", "a.mp4,,", 1), lambda t: t.replace("a.mp4,,", "a.mp4,", 1),
    lambda t: t.replace("d.mp4", '"d.mp4"'), lambda t: t.replace("d.mp4", "d\x00.mp4"),
    lambda t: t.replace(HEADER, " path , video_id,labels,split,start_s,end_s,extra"),
    lambda t: t.replace(HEADER, "path,path,labels"), lambda t: t.replace(HEADER, "video_id,file,labels"),
    lambda t: t.replace("\n", ",\n"), lambda t: t + "   \n", lambda t: t + "h.mp4," + "x" * 140_000 + ",,,,\n",
]  # fmt: skip


def _texts(base: str):
    rows = [row.replace("{abs}", base) for row in GOOD]
    yield HEADER + "\n" + "\n".join(rows) + "\n"
    for (column, value), row in itertools.product(CELLS, range(len(rows))):
        cells = rows[row].split(",")
        cells[column] = value.replace("{abs}", base)
        yield HEADER + "\n" + "\n".join([*rows[:row], ",".join(cells), *rows[row + 1 :]]) + "\n"
    for change in WHOLE:
        yield change(HEADER + "\n" + "\n".join(rows) + "\n")


def _outcome(path, **options):
    try:
        return read_manifest(path, **options)
    except ManifestError as exc:
        return exc.problems


@pytest.mark.parametrize("options", [{}, {"require_path": False}, {"root": "."}], ids=["default", "no-path", "root"])
def test_pyarrow_reader_equals_the_csv_module_reader(tmp_path, monkeypatch, options):
    if "root" in options:
        options = {"root": tmp_path}
    plain = 0
    real = manifest_csv.plain_entries
    for i, text in enumerate(_texts(str(tmp_path))):
        path = tmp_path / f"m{i}.csv"
        path.write_bytes(text.encode("utf-8"))
        taken: list = []

        def recorded(*args, taken=taken, **kwargs):
            taken.append(real(*args, **kwargs))
            return taken[0]

        monkeypatch.setattr(manifest_csv, "plain_entries", recorded)
        fast = _outcome(path, **options)
        monkeypatch.setattr(manifest_csv, "plain_entries", lambda *a, **k: None)  # the csv-module reader alone
        reference = _outcome(path, **options)
        assert fast == reference, (text, fast, reference)
        plain += bool(taken and taken[0] is not None)
    assert plain > 20  # the pyarrow path really ran on the plain ones, not only the fallback


def test_tsv_non_utf8_and_line_numbers_of_failing_rows(tmp_path):
    tsv = tmp_path / "m.tsv"
    tsv.write_text("path\tlabels\na.mp4\tx;y\nb.mp4\t\n")
    assert [(e.video_id, e.labels) for e in read_manifest(tsv)] == [("a.mp4", ("x", "y")), ("b.mp4", ())]
    bad = tmp_path / "m.csv"
    bad.write_bytes(b"path,start_s\na.mp4,1\n\nb\xff.mp4,\nc.mp4,x\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(bad)
    assert info.value.problems == ["line 4: byte 0xff is not UTF-8; save the manifest as UTF-8"]
    bad.write_bytes(b"path,start_s\na.mp4,1\n\nb.mp4,\nc.mp4,x\n\n,2\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(bad)
    assert info.value.problems == [  # committed messages: only the failing rows, each with its line
        "row 3 (line 5): start_s='x' is not a number of seconds",
        "row 4 (line 7): empty path",
    ]


def test_a_plain_csv_manifest_loads_no_pandas(tmp_path):
    """pyarrow imports pandas when it converts Python objects (0.25 s of every extract's start-up); the
    plain reader builds its arrays and scalars from buffers, so reading a CSV manifest, with a base
    directory and non-ASCII paths, leaves pandas unimported (a fresh interpreter checks)."""
    import subprocess
    import sys

    (tmp_path / "m.csv").write_text(HEADER + "\n" + "\n".join([*GOOD, "é/ü.mp4,,,,,"]) + "\n")
    code = (
        "import sys\n"
        "from vidcache.manifest import read_manifest\n"
        "import vidcache.manifest_csv as m\n"
        "calls = []\n"
        "plain = m.plain_entries\n"
        "m.plain_entries = lambda *a, **k: calls.append(1) or plain(*a, **k)\n"
        f"entries = read_manifest({str(tmp_path / 'm.csv')!r})\n"
        "assert calls and len(entries) == 4, (calls, entries)\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
