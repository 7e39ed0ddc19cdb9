"""How far a segment's parts have been read, in bytes as stored, for a progress display: counted as the
readers take blocks from each part's stream (never per row)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from shared.sources.streams import ByteStream

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class ReadProgress:
    """Bytes of the segment's parts read so far, of `total` (their sizes as listed; a .gz part counts
    its compressed bytes). Written by the thread reading the segment, read by the progress display
    without a lock: each count is one int, and a display may be a moment behind."""

    def __init__(self, total: int = 0) -> None:
        self.total = total
        self._finished = 0  # bytes of the parts read to their end
        self._current = 0  # bytes read of the part being read

    @property
    def bytes_read(self) -> int:
        return min(self._finished + self._current, self.total) if self.total else self._finished + self._current

    def restart(self) -> None:
        self._finished = self._current = 0

    def add(self, count: int) -> None:
        """Bytes read of the part being read."""
        self._current += count

    def part_done(self, size: int) -> None:
        """The part being read was read to its end: it counts its whole size, whatever was counted."""
        self._current = 0
        self._finished += size


class CountedStream(io.RawIOBase):
    """A part's stream as read, each read's bytes added to a ReadProgress (a read is a block, not a row)."""

    def __init__(self, inner: ByteStream, progress: ReadProgress) -> None:
        self._inner, self._progress = inner, progress

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self._inner.read(-1 if size is None else size)
        self._progress.add(len(data))
        return data  # as the inner stream returned it (a blob's downloaded range uncopied)

    def readinto(self, target: WriteableBuffer) -> int:
        count = self._inner.readinto(target) or 0
        self._progress.add(count)
        return count

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()
