"""Is a source video still the file its rows were made from? Size and mtime first; when only the
mtime changed (`touch`, a copy that kept the bytes, a restore from backup), a fast content hash
recorded at extraction decides, so the file and its segments are not extracted again for nothing."""

from __future__ import annotations

import hashlib
import os
import stat

from ..remote import is_url

WHOLE_FILE_BYTES = 4 << 20  # smaller files are hashed whole
EDGE_BYTES = 1 << 20  # larger ones: the first and last MiB (container headers, moov/index) ...
SAMPLE_BYTES = 64 << 10  # ... and 32 blocks spread evenly between them
SAMPLES = 32


def content_digest(path: str) -> str | None:
    """A fast content hash (BLAKE2b-128) of a local file: its size, then the whole file when under
    4 MiB, else its first and last MiB and 32 evenly spaced 64 KiB blocks (about 4 MiB read whatever
    the size; an edit of the same size that touches none of them goes unnoticed). None for a URL, a
    file that cannot be read, or anything but a regular file."""
    if is_url(path):
        return None
    try:
        # O_NONBLOCK: a plain open() of a named pipe blocks until a writer comes, which stalled a whole
        # run on one manifest row (decode names the FIFO as the row's failure; here it has no hash)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        with open(fd, "rb") as f:
            size = info.st_size
            digest = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
            if size <= WHOLE_FILE_BYTES:
                digest.update(f.read())
                return digest.hexdigest()
            span = size - 2 * EDGE_BYTES - SAMPLE_BYTES
            offsets = [0, *(EDGE_BYTES + span * i // (SAMPLES - 1) for i in range(SAMPLES)), size - EDGE_BYTES]
            for offset in offsets:
                f.seek(offset)
                digest.update(f.read(EDGE_BYTES if offset in (0, size - EDGE_BYTES) else SAMPLE_BYTES))
            return digest.hexdigest()
    except OSError:
        return None


class SourceCheck:
    """Confirms, by the recorded content hash, that a source whose mtime changed while its size did
    not is the file its rows were made from; collects the records to restamp with the new mtime, and
    the hashes to record for the sources about to be extracted. Each file is hashed once per run
    (segments of one file share it)."""

    def __init__(self, recorded: dict[str, tuple[int, int, str]]):
        self._recorded = recorded  # video_id → (size, mtime_ns, digest) recorded at its extraction
        self._digests: dict[str, str | None] = {}
        self.restamp: dict[str, tuple[int, int, int, str]] = {}  # video_id → (size, old, new mtime_ns, digest)

    def digest(self, path: str) -> str | None:
        if path not in self._digests:
            self._digests[path] = content_digest(path)
        return self._digests[path]

    def same_content(self, video_id: str, path: str, item_size: int | None, item_mtime_ns: int | None,
                     size: int, mtime_ns: int) -> bool:  # fmt: skip
        """Whether the (video, view) record made from (item_size, item_mtime_ns) still holds for the
        file now at (size, mtime_ns): same size, and the same content hash as recorded."""
        recorded = self._recorded.get(video_id)
        if item_size != size or recorded is None or recorded[:2] != (item_size, item_mtime_ns):
            return False
        digest = self.digest(path)
        if digest is None or digest != recorded[2]:
            return False
        self.restamp[video_id] = (size, recorded[1], mtime_ns, digest)
        return True

    def to_record(self, planned: list[tuple[str, str, int, int]]) -> list[tuple[str, int, int, str]]:
        """(video_id, size, mtime_ns, digest) for each (video_id, path, size, mtime_ns) about to be
        extracted, so a later `touch` of it is recognised; URLs and unreadable files are left out."""
        rows = []
        for video_id, path, size, mtime_ns in planned:
            digest = self.digest(path)
            if digest is not None:
                rows.append((video_id, size, mtime_ns, digest))
        return rows
