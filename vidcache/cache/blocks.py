"""Row ranges grouped into large sequential reads (verify, compact): one HDF5 read per dataset per
block of about `BLOCK_BYTES` instead of one per (video, view); each range is then a slice of its block."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

BLOCK_BYTES = 64 << 20  # rows read at once: sequential and large, memory bounded (never a whole shard)


def row_blocks(
    ranges: Sequence[tuple[int, int]], *, row_bytes: int, block_bytes: int | None = None
) -> Iterator[tuple[int, int, list[int]]]:
    """(lo, hi, [positions in `ranges`]) per block, for `ranges` of (row_start, row_stop) sorted by
    row_start: a block ends before the range that would take it past `block_bytes` (default
    BLOCK_BYTES; a single range larger than that is a block of its own). Rows between ranges (dead
    rows) are read with them."""
    block_bytes = BLOCK_BYTES if block_bytes is None else block_bytes
    row_bytes = max(1, row_bytes)
    members: list[int] = []
    lo = hi = 0
    for position, (start, stop) in enumerate(ranges):
        if members and (max(hi, stop) - lo) * row_bytes > block_bytes:
            yield lo, hi, members
            members = []
        if not members:
            lo, hi = start, stop
        members.append(position)
        hi = max(hi, stop)
    if members:
        yield lo, hi, members
