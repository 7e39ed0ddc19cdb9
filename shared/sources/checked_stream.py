"""Reads of a part checked on the way: failures named, lines past the limit cut short, and bytes that
are not UTF-8 (or a NUL) noted, so the readers know when rows must be checked one by one."""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from shared.sources.errors import SegmentError, reading_blob
from shared.sources.streams import ByteStream
from shared.sources.utf8 import Utf8Watch

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

# A longer line is cut there (the rest is skipped unread, and its row rejected): a file with no line
# breaks at all must not be read whole into memory.
MAX_LINE_BYTES = 1024 * 1024
# Put where a line was cut: bytes that are never UTF-8, so the row holding them is rejected (and its
# reason can say why), whichever reader takes it.
CUT_MARK = b"\xff\xfe\xfd\xfc"
# The cut mark as it appears in text decoded with errors="surrogateescape".
CUT_TEXT = CUT_MARK.decode("utf-8", errors="surrogateescape")
_Read = TypeVar("_Read", int, bytes)


class CheckedStream(io.RawIOBase):
    """Turns low-level read failures (truncated gzip, a blob changed mid-read) into a SegmentError
    naming the file, and notes bytes the rows must be checked for. Given `max_line`, it cuts longer
    lines there (CUT_MARK and a line break put in, the rest of the line skipped unread)."""

    def __init__(self, inner: ByteStream, name: str, max_line: int | None = None, text_lines: bool = False) -> None:
        self._inner, self._name = inner, name
        # Once a read holds bytes that are not UTF-8 (or a NUL), rows are checked one by one (a rare, slower path).
        self.undecodable = False
        self.nul = False
        self._utf8 = Utf8Watch()
        self._cutter = LineCutter(max_line, text_lines) if max_line is not None else None

    def readable(self) -> bool:
        return True

    def readinto(self, target: WriteableBuffer) -> int:
        view = memoryview(target)
        while True:
            count = self._read(lambda: self._inner.readinto(target))
            if not count:
                return 0
            if self._cutter is None and self.undecodable and self.nul:
                return count  # nothing left to note, and no line to cut
            data = bytes(view[:count])
            kept = self._checked(data)
            if kept:
                break
        if kept is not data:
            view[: len(kept)] = kept
        return len(kept)

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes, as the inner stream returned them when no line was cut (a blob's
        downloaded range uncopied)."""
        if size is None or size < 0:
            return self.readall()
        while True:
            data = self._read(lambda: self._inner.read(size))
            if not data:
                return b""
            kept = self._checked(data)
            if kept:
                return kept

    def _checked(self, data: bytes) -> bytes:
        """The bytes read, with a line past the limit cut; notes a NUL and bytes that are not UTF-8."""
        kept = self._cutter.cut(data) if self._cutter is not None else data
        if not self.nul and b"\x00" in kept:
            self.nul = True
        if not self.undecodable:
            self.undecodable = not self._utf8.valid(kept)
        return kept

    def _read(self, read: Callable[[], _Read]) -> _Read:
        """`read()`, its failures as errors naming the file; at the end of the stream, a character
        the last read left cut marks the bytes as not UTF-8."""
        try:
            with reading_blob(self._name):
                got = read()
        except SegmentError:
            raise
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise SegmentError(f"{self._name}: compressed data is damaged or truncated ({exc})") from None
        if not got:
            self.undecodable = self.undecodable or self._utf8.cut_at_end
        return got

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


class LineCutter:
    """Cuts lines longer than `limit` bytes out of bytes read piece by piece: CUT_MARK and a line
    break go in at the limit, and the rest of the line is dropped up to its end."""

    def __init__(self, limit: int, text_lines: bool) -> None:
        # Lines end at \n, and for a text reader also at \r (the csv module's reading).
        self._limit, self._text_lines = limit, text_lines
        self._line_bytes = 0  # bytes of the line not yet ended
        self._skipping = False  # dropping the rest of a cut line, up to its end
        self._drop_lf = False  # the cut line ended with the \r of the last read: drop a \n next

    def cut(self, data: bytes) -> bytes:
        """The piece with its lines past the limit cut (the piece itself when none is)."""
        limit = self._limit
        if self._drop_lf:
            self._drop_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if not self._skipping and self._line_bytes + len(data) <= limit:
            self._note_tail(data)  # the common case: no line can grow too long in this read
            return data
        pieces = []
        while data:
            end = self._line_end(data)
            if self._skipping:
                if end < 0:
                    break
                end += 1
                if data[end - 1 : end] == b"\r" and data[end : end + 1] == b"\n":
                    end += 1
                self._skipping, self._drop_lf = False, end == len(data) and data[-1:] == b"\r"
                data = data[end:]
                continue
            if self._line_bytes + (len(data) if end < 0 else end) <= limit:
                self._note_tail(data)
                pieces.append(data)
                break
            keep = max(0, limit - self._line_bytes)
            pieces.append(data[:keep] + CUT_MARK + b"\n")
            self._line_bytes, self._skipping = 0, True
            data = data[keep:]
        return b"".join(pieces)

    def _line_end(self, data: bytes) -> int:
        newline = data.find(b"\n")
        if not self._text_lines:
            return newline
        cr = data.find(b"\r", 0, None if newline < 0 else newline)
        return newline if cr < 0 else cr

    def _note_tail(self, data: bytes) -> None:
        """Counts the bytes of the line the piece leaves open."""
        last = max(data.rfind(b"\n"), data.rfind(b"\r") if self._text_lines else -1)
        self._line_bytes = self._line_bytes + len(data) if last < 0 else len(data) - last - 1
