"""Many small `.npy` files read fast (`vidcache import`): one open and one read per file, the array a
view of the bytes read, and each distinct header parsed once by NumPy's own header reader (a million
files of the same shape share one parse; `np.load` parses every header with `ast.literal_eval` and
reads a file in several calls). Formats 1.0 and 2.0 (what `np.save` writes); others go to `np.load`.
Object arrays are refused as `np.load(allow_pickle=False)` refuses them."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

_MAGIC = b"\x93NUMPY"
_HEAD_BYTES = 4096  # what a header read asks for first: np.save's headers are 128 bytes or so
_PARSED: dict[bytes, tuple[np.dtype, bool, tuple[int, ...]]] = {}
_PARSED_MAX = 4096  # distinct headers kept (one per shape and dtype)


def read_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a `.npy` file from its header alone."""
    fd = os.open(path, os.O_RDONLY)
    try:
        head = os.read(fd, _HEAD_BYTES)
        parsed = _parse(head)
        if parsed is None:  # a header longer than the first read
            head += _read_all(fd)
            parsed = _parse(head)
    finally:
        os.close(fd)
    if parsed is None:
        return _fallback(path)[:2]
    _, dtype, _, shape = parsed
    return shape, dtype


def load(path: str | Path) -> np.ndarray:
    """The array of a `.npy` file (read-only: a view of the file's bytes), as `np.load(path,
    allow_pickle=False)` gives it; ValueError or OSError when the file is not a whole `.npy` array."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = _read_all(fd)
    finally:
        os.close(fd)
    parsed = _parse(data)
    if parsed is None:
        return _fallback(path)[2]
    offset, dtype, fortran, shape = parsed
    count = int(np.prod(shape, dtype=np.int64))
    if len(data) - offset < count * dtype.itemsize:
        raise ValueError(f"the file is truncated: {len(data) - offset} bytes of data for shape {shape} of {dtype.str}")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def _read_all(fd: int) -> bytes:
    """The whole file in one read: asking for one byte more than its size, a short answer is the end."""
    want = os.fstat(fd).st_size + 1
    parts = [os.read(fd, want)]
    while len(parts[-1]) == want:  # a file that grew while read: read on to the end
        parts.append(os.read(fd, want := 1 << 20))
    return b"".join(parts)


def _parse(data: bytes) -> tuple[int, np.dtype, bool, tuple[int, ...]] | None:
    """(data offset, dtype, fortran_order, shape); None for a header not wholly in `data` or a
    format version this reader leaves to `np.load`; ValueError for a file that is no `.npy`."""
    if len(data) < 10 or data[:6] != _MAGIC:
        raise ValueError("not a .npy file (it does not start with the NumPy magic string)")
    major = data[6]
    if major not in (1, 2):
        return None
    start = 10 if major == 1 else 12
    end = start + int.from_bytes(data[8:start], "little")
    if len(data) < end:
        return None
    key = data[6:end]
    parsed = _PARSED.get(key)
    if parsed is None:
        reader = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(io.BytesIO(data[8:end]))
        if dtype.hasobject:
            raise ValueError("Object arrays cannot be loaded when allow_pickle=False")
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        parsed = _PARSED[key] = (dtype, bool(fortran), tuple(int(n) for n in shape))
    return (end, *parsed)


def _fallback(path: str | Path) -> tuple[tuple[int, ...], np.dtype, np.ndarray]:
    array = np.load(path, allow_pickle=False)
    return tuple(array.shape), array.dtype, array
