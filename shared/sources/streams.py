"""Binary streams under the readers: a blob download as a stream, a gunzip that refuses a decompression
bomb, bytes put back in front of a stream, and a stream's bytes in blocks that end at line ends."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, TypeAlias

from shared.sources.errors import SegmentError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# A readable binary stream, raw (a blob download, the streams here) or buffered (a file, BytesIO, gzip).
ByteStream: TypeAlias = io.RawIOBase | io.BufferedIOBase
# The buffer of each stream the readers read through: reads about as large as their blocks.
BUFFER_BYTES = 1024 * 1024


class ChunkStream(io.RawIOBase):
    """A readable binary stream over an iterator of byte chunks (a blob download). A read of at
    least the rest of a whole chunk returns the chunk itself, uncopied."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._chunk, self._at = b"", 0

    def readable(self) -> bool:
        return True

    def _current(self) -> bool:
        """Whether there are bytes left: the next chunk is downloaded once the current one is spent."""
        while self._at == len(self._chunk):
            self._chunk, self._at = b"", 0  # the spent range goes before the next one is downloaded
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            self._chunk = chunk
        return True

    def _take(self, size: int) -> tuple[int, int]:
        """Where the next `size` bytes lie in the current chunk (nothing at the end of the stream)."""
        if not size or not self._current():
            return 0, 0
        start, self._at = self._at, min(len(self._chunk), self._at + size)
        return start, self._at

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        start, end = self._take(size)
        return self._chunk[start:end]  # the chunk itself when that is all of it

    def readinto(self, target: WriteableBuffer) -> int:
        view = memoryview(target)
        start, end = self._take(len(view))
        view[: end - start] = memoryview(self._chunk)[start:end]
        return end - start


class LimitedStream(io.RawIOBase):
    """Stops a decompression bomb: fails once more than `limit` bytes have been produced."""

    def __init__(self, inner: ByteStream, limit: int, name: str, source: ByteStream) -> None:
        self._inner, self._limit, self._name, self._produced = inner, limit, name, 0
        self._source = source  # the compressed stream: GzipFile(fileobj=...) does not close it

    def readable(self) -> bool:
        return True

    def readinto(self, target: WriteableBuffer) -> int:
        count = self._inner.readinto(target)
        self._produced += count
        if self._produced > self._limit:
            raise SegmentError(f"{self._name}: expands past the limit of {self._limit:,} uncompressed bytes; refused")
        return count

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            try:
                self._source.close()
            finally:
                super().close()


def decompressed(raw: ByteStream, name: str, limit: int) -> ByteStream:
    """The bytes of the part `name` opened as `raw`: gunzipped, at most `limit` of them, when the
    name ends in .gz."""
    if not name.lower().endswith(".gz"):
        return raw
    return io.BufferedReader(LimitedStream(gzip.GzipFile(fileobj=raw), limit, name, raw), buffer_size=BUFFER_BYTES)


class Prepended(io.RawIOBase):
    """A stream that first gives `head`, then the rest of `tail`."""

    def __init__(self, head: bytes, tail: ByteStream) -> None:
        self._head, self._tail = memoryview(head), tail

    def readable(self) -> bool:
        return True

    def readinto(self, target: WriteableBuffer) -> int:
        view = memoryview(target)
        if self._head:
            count = min(len(view), len(self._head))
            view[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        data = self._tail.read(len(view))
        view[: len(data)] = data
        return len(data)


def line_blocks(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The bytes of the pieces in blocks that end at a line end (but the last), of about `size`
    bytes (at most half as much again, so no piece leaves a small block behind); a longer line is
    a block of its own. Each block is one copy out of the pieces (none when it is a whole piece)."""
    pending = b""  # the start of a line the last piece cut
    for piece in pieces:
        at = 0
        while at < len(piece):
            whole = len(pending) + len(piece) - at <= size + size // 2
            end = piece.rfind(b"\n", at, len(piece) if whole else max(at, at + size - len(pending))) + 1
            if not end and not whole:
                end = piece.find(b"\n", at) + 1  # a line longer than a block
            if not end:
                pending += piece[at:]  # no line end in the rest of the piece
                break
            yield pending + piece[at:end] if pending else piece[at:end]
            pending, at = b"", end
    if pending:
        yield pending
