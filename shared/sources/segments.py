"""Segment readers: stream CSV or JSON Lines rows (optionally gzipped) from blobs or local files."""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, NamedTuple, Protocol, TypeVar

import numpy as np
import orjson
import pyarrow as pa

from shared.sources.csv_blocks import BLOCK_BYTES, BlockReader, Prepended, TableChunk, valid_utf8
from shared.sources.jsonl_blocks import JsonBlocks

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

Format = Literal["csv", "jsonl"]
_Read = TypeVar("_Read", int, bytes)
DELIMITERS = ",;\t|"
# Klaviyo refuses profiles over 100 KB; a single field far past that is garbage, not data.
MAX_FIELD_CHARS = 1_000_000
# A longer line is cut there (the rest is skipped unread, and its row rejected): a file with no line
# breaks at all must not be read whole into memory.
MAX_LINE_BYTES = 1024 * 1024
# A JSON Lines row is about twice a CSV row: twice the block, about the same rows (~8,500 a table;
# a smaller table costs the mapping more per row).
JSONL_BLOCK_BYTES = 2 * 1024 * 1024
# JSON Lines is read in pieces this large, and blocks cut from them: a blob's downloaded ranges
# (storage.DOWNLOAD_RANGE_BYTES) come whole, not copied.
JSONL_PIECE_BYTES = 8 * 1024 * 1024
# Put where a line was cut: bytes that are never UTF-8, so the row holding them is rejected (and its
# reason can say why), whichever reader takes it.
CUT_MARK = b"\xff\xfe\xfd\xfc"
DEFAULT_MAX_UNCOMPRESSED_BYTES = 50 * 1024**3
CHUNK_ROWS = 4096
# Files a CDP writes next to the data parts of a folder segment.
NON_DATA_NAMES = {"model.json", "_success", "_committed", "_started"}
_UNDECODABLE = re.compile("[\udc80-\udcff]")
_UNREADABLE = re.compile("[\x00\udc80-\udcff]")
_CUT = CUT_MARK.decode("utf-8", errors="surrogateescape")
_LONG_NUMBER = re.compile(r"\d[\d ()./-]{5,}\d")
_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}


class SegmentError(Exception):
    """The segment cannot be read at all (a run-level error, with the file named)."""


class SegmentUnavailable(SegmentError):
    """The data could not be fetched (changed, deleted, storage failing): the run fails, it is not a
    configuration mistake."""


class RowChunk(NamedTuple):
    """Consecutive rows of one part: CSV records as lists of values under `columns`, JSON Lines
    records as dicts (`columns` None); rows that could not be read are in `errors`."""

    source: str
    columns: list[str] | None
    numbers: list[int]
    records: list[Any]
    errors: list[tuple[int, str]]


class SegmentRow(NamedTuple):
    """One input row: where it came from, its 1-based row (CSV) or line (JSONL) number, and its
    fields, or the reason it could not be read."""

    source: str
    number: int
    fields: dict[str, object] | None
    error: str | None = None


class SegmentPart(Protocol):
    """One file of a segment: a local file or a blob pinned to the etag seen when listing it."""

    name: str
    version: str | None
    size: int

    def open(self) -> BinaryIO: ...


@dataclass(frozen=True)
class LocalPart:
    path: Path
    name: str
    size: int
    version: str | None = None

    def open(self) -> BinaryIO:
        return self.path.open("rb")


@dataclass(frozen=True)
class BlobPart:
    container: ContainerClient
    name: str
    size: int
    version: str | None  # the etag: reads fail rather than mix two versions of the blob

    def open(self) -> BinaryIO:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError

        try:
            downloader = self.container.download_blob(
                self.name,
                etag=self.version,
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=1,
            )
        except ResourceModifiedError:
            raise SegmentUnavailable(f"{self.name}: the blob was deleted or changed while it was being read") from None
        except ResourceNotFoundError:
            raise SegmentUnavailable(f"{self.name}: the blob was deleted while it was being read") from None
        except AzureError as exc:
            raise SegmentUnavailable(f"{self.name}: reading the blob failed: {exc.message}") from None
        return _ChunkStream(downloader.chunks())


class _ChunkStream(io.RawIOBase):
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

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        start, end = self._take(len(target))
        target[: end - start] = memoryview(self._chunk)[start:end]
        return end - start


class _LimitedStream(io.RawIOBase):
    """Stops a decompression bomb: fails once more than `limit` bytes have been produced."""

    def __init__(self, inner: BinaryIO, limit: int, name: str, source: BinaryIO) -> None:
        self._inner, self._limit, self._name, self._produced = inner, limit, name, 0
        self._source = source  # the compressed stream: GzipFile(fileobj=...) does not close it

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._inner.readinto(target)  # type: ignore[attr-defined]
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


@dataclass
class SegmentSource:
    """A segment: one file, or a folder of part files read in name order as one segment."""

    location: str
    parts: list[SegmentPart]
    format: Format | None = None
    delimiter: str | None = None
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES
    fast: bool = True  # plain CSV blocks parsed by Arrow (see csv_blocks); False: the csv module reads all
    _headers: dict[str, list[str]] = field(default_factory=dict, repr=False)

    @property
    def version(self) -> str:
        """One string naming the exact versions read (etags of every part)."""
        return ",".join(f"{p.version}" for p in self.parts if p.version) or ""

    def format_of(self, part: SegmentPart) -> Format:
        return self.format or detect_format(part.name)

    def headers(self) -> dict[str, list[str]]:
        """The CSV header of every part, read before any row is sent (a missing column is a
        run-level error). JSON Lines parts have no header and are left out."""
        if not self._headers:
            for part in self.parts:
                if self.format_of(part) == "csv":
                    with self._buffered(part, text_lines=True) as stream:
                        first, dialect = self._start(part, stream)
                        self._headers[part.name] = _read_header(part.name, Prepended(first, stream), dialect)
        return self._headers

    def rows(self) -> Iterator[SegmentRow]:
        """Every row of every part, in order, each with its source and number."""
        for chunk in map(as_row_chunk, self.chunks()):
            fields: list[tuple[int, dict[str, object] | None, str | None]] = [
                (n, dict(zip(chunk.columns, r, strict=True)) if chunk.columns is not None else r, None)
                for n, r in zip(chunk.numbers, chunk.records, strict=True)
            ]
            fields += [(n, None, reason) for n, reason in chunk.errors]
            for number, row, error in sorted(fields, key=lambda f: f[0]):
                yield SegmentRow(chunk.source, number, row, error)

    def chunks(self, size: int = CHUNK_ROWS, columns: list[str] | None = None) -> Iterator[RowChunk | TableChunk]:
        """The rows in chunks: the fast path (no object per row beyond the parsed values, or a
        table of plain rows). JSON Lines comes as tables of `columns` where given (the mapped ones)."""
        for part in self.parts:
            if self.format_of(part) == "csv":
                yield from self._csv_chunks(part, size)
            else:
                yield from self._jsonl_chunks(part, size, columns)

    def _binary(self, part: SegmentPart) -> BinaryIO:
        raw = part.open()
        if part.name.lower().endswith(".gz"):
            raw = io.BufferedReader(
                _LimitedStream(gzip.GzipFile(fileobj=raw), self.max_uncompressed_bytes, part.name, raw),
                buffer_size=1024 * 1024,
            )
        return raw

    def _buffered(self, part: SegmentPart, text_lines: bool = False) -> io.BufferedReader:
        raw = _ReadErrors(self._binary(part), part.name, MAX_LINE_BYTES, text_lines)
        return io.BufferedReader(raw, buffer_size=1024 * 1024)

    def _start(self, part: SegmentPart, stream: BinaryIO) -> tuple[bytes, type[csv.Dialect]]:
        """The first block of a CSV part (without a byte order mark) and its dialect."""
        first = stream.read(BLOCK_BYTES)
        if first.startswith(codecs.BOM_UTF8):
            first = first[len(codecs.BOM_UTF8) :]
        return first, self._dialect(part, _sniff_delimiter(first) if self.delimiter is None else self.delimiter)

    def _dialect(self, part: SegmentPart, delimiter: str) -> type[csv.Dialect]:
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise SegmentError(
                f"{part.name}: the delimiter must be one character other than a quote or newline, not {delimiter!r}"
            )
        return _make_dialect(delimiter)

    def _csv_chunks(self, part: SegmentPart, size: int) -> Iterator[RowChunk | TableChunk]:
        name = part.name
        with self._buffered(part, text_lines=True) as stream:
            first, dialect = self._start(part, stream)
            header_end = _header_end(first)
            if not self.fast or header_end is None:
                yield from self._python_csv(part, Prepended(first, stream), dialect, None, 1, size)[0]
                return
            header_text = first[:header_end].decode("utf-8", errors="surrogateescape")
            header = next(csv.reader(io.StringIO(header_text, newline=""), dialect=dialect), None)
            columns = _clean_header(name, header)

            def python_rows(
                data: BinaryIO, line: int, final: bool
            ) -> tuple[Iterator[RowChunk], Callable[[], int], Callable[[], bytes]]:
                return self._python_csv(part, data, dialect, columns, line, size, final)

            reader = BlockReader(name, columns, dialect.delimiter, python_rows)
            yield from reader.chunks(stream, first[header_end:], 2)

    def _python_csv(
        self,
        part: SegmentPart,
        data: BinaryIO,
        dialect: type[csv.Dialect],
        columns: list[str] | None,
        first_line: int,
        size: int,
        final: bool = True,
    ) -> tuple[Iterator[RowChunk], Callable[[], int], Callable[[], bytes]]:
        """The csv module's reading of `data` (with its header when `columns` is None), numbering
        lines from `first_line`; and, once read, how many lines it spanned and (unless `final`) the
        bytes of a record left open at its end: they are read again with what follows."""
        watch = _ReadErrors(data, part.name)
        text = io.TextIOWrapper(
            io.BufferedReader(watch, buffer_size=1024 * 1024), encoding="utf-8", errors="surrogateescape", newline=""
        )
        # The lines of the record being read, and lines to read again: a record broken by an
        # unbalanced quote is rejected as its first line only, and the lines it ran over are read
        # again as rows of their own (by a new reader, numbering from `base`).
        memory: list[str] = []
        again: list[str] = []
        left_open: list[str] = []
        reader = csv.reader(_remembered(text, memory, again), dialect=dialect)
        offset = base = first_line - 1

        def chunks() -> Iterator[RowChunk]:
            name = part.name
            nonlocal columns, reader, base
            if columns is None:
                columns = _next_header(name, reader)
            width = len(columns)
            line = base + reader.line_num
            memory.clear()
            forget = memory.clear
            limit = size
            while True:
                chunk = RowChunk(name, columns, [], [], [])
                records, numbers, errors = chunk.records, chunk.numbers, chunk.errors
                broken = False
                try:
                    for values in reader:
                        start, line = line + 1, base + reader.line_num  # a record starts after the previous one
                        if len(values) == width:
                            forget()
                            numbers.append(start)
                            records.append(values)
                            if len(records) >= limit:
                                break
                        elif line > start:
                            reason = f"row has {len(values)} fields but the header has {width}"
                            errors.append((start, _broken_record(reason, start, line, memory)))
                            broken = True
                            break
                        else:
                            if values and (values != [""] or width == 1):  # else a blank line, not a row
                                reason = f"row has {len(values)} fields but the header has {width}"
                                errors.append((start, _cut_reason(memory) or reason))
                            forget()
                    else:
                        limit = 0  # the reader is exhausted: this is the last chunk
                except csv.Error as exc:
                    if not final and not again and "end of data" in str(exc):
                        left_open.extend(memory)  # the record goes on in what follows this block
                        limit = 0
                    else:
                        start = line + 1
                        line = start + max(len(memory), 1) - 1
                        errors.append((start, _broken_record(_csv_reason(exc), start, line, memory)))
                        broken = True
                if broken:
                    again.extend(reversed(memory[1:]))
                    memory.clear()
                    reader = csv.reader(_remembered(text, memory, again), dialect=dialect)
                    base = line = start
                if watch.undecodable or watch.nul:
                    _move_unreadable(chunk)
                if records or errors:
                    yield chunk
                if limit == 0:
                    return

        def spanned() -> int:
            return base + reader.line_num - offset - len(left_open)

        return chunks(), spanned, lambda: "".join(left_open).encode("utf-8", errors="surrogateescape")

    def _jsonl_chunks(self, part: SegmentPart, size: int, columns: list[str] | None) -> Iterator[RowChunk | TableChunk]:
        if not self.fast or not columns:
            with self._buffered(part) as stream:
                yield from self._jsonl_lines(part.name, stream, 1, size)
            return
        blocks = JsonBlocks(columns)
        with _ReadErrors(self._binary(part), part.name, MAX_LINE_BYTES) as checked:
            pieces = iter(lambda: checked.read(JSONL_PIECE_BYTES), b"")
            line = 1
            for block in line_blocks(pieces, JSONL_BLOCK_BYTES):
                # Every byte read so far was checked as UTF-8; a block cut at a line end holds whole characters.
                table = blocks.table(block, utf8=not checked.undecodable and block.endswith(b"\n"))
                if table is not None:
                    numbers = np.arange(line, line + table.num_rows, dtype=np.int64)
                    yield TableChunk(part.name, blocks.columns, numbers, table, [], len(block))
                    line += table.num_rows  # a row a line
                else:
                    yield from self._jsonl_lines(part.name, io.BytesIO(block), line, size)
                    line += block.count(b"\n")

    def _jsonl_lines(self, name: str, stream: BinaryIO, first_line: int, size: int) -> Iterator[RowChunk]:
        """JSON Lines read line by line (orjson), numbering lines from `first_line`."""
        loads, decode_error = orjson.loads, orjson.JSONDecodeError
        chunk = RowChunk(name, None, [], [], [])
        for number, line in enumerate(stream, start=first_line):
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            if len(line) > MAX_FIELD_CHARS:  # checked first: parsing it would take ten times its size
                chunk.errors.append((number, f"line is longer than {MAX_FIELD_CHARS:,} bytes"))
                continue
            try:
                value = loads(line)
            except decode_error as exc:
                if not line.strip():
                    continue  # a blank line is not a row
                reason = "line is not valid UTF-8" if "utf-8" in str(exc).lower() else "line is not valid JSON"
                chunk.errors.append((number, reason))
                continue
            if type(value) is not dict:
                chunk.errors.append((number, f"line is a JSON {type(value).__name__}, not an object"))
            else:
                chunk.numbers.append(number)
                chunk.records.append(value)
                if len(chunk.records) >= size:
                    yield chunk
                    chunk = RowChunk(name, None, [], [], [])
        if chunk.records or chunk.errors:
            yield chunk


class _ReadErrors(io.RawIOBase):
    """Turns low-level read failures (truncated gzip, a blob changed mid-read) into a SegmentError
    naming the file, and notes bytes the rows must be checked for. Given `max_line`, it cuts longer
    lines there (CUT_MARK and a line break put in, the rest of the line skipped unread)."""

    def __init__(self, inner: BinaryIO, name: str, max_line: int | None = None, text_lines: bool = False) -> None:
        self._inner, self._name = inner, name
        # Once a read holds bytes that are not UTF-8 (or a NUL), rows are checked one by one (a rare, slower path).
        self.undecodable = False
        self.nul = False
        self._utf8 = _Utf8Watch()
        # Lines end at \n, and for a text reader also at \r (the csv module's reading).
        self._max_line, self._text_lines = max_line, text_lines
        self._line_bytes = 0  # bytes of the line not yet ended
        self._skipping = False  # dropping the rest of a cut line, up to its end
        self._drop_lf = False  # the cut line ended with the \r of the last read: drop a \n next

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while True:
            count = self._read(lambda: self._inner.readinto(target))  # type: ignore[attr-defined]
            if not count:
                return 0
            if self._max_line is None and self.undecodable and self.nul:
                return count
            data = bytes(target[:count])
            kept = self._checked(data)
            if kept:
                break
        if kept is not data:
            target[: len(kept)] = kept
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
        """The bytes read, a line past the limit cut; notes a NUL and bytes that are not UTF-8."""
        kept = self._cut_long_lines(data, self._max_line) if self._max_line is not None else data
        if not self.nul and b"\x00" in kept:
            self.nul = True
        if not self.undecodable:
            self.undecodable = not self._utf8.valid(kept)
        return kept

    def _cut_long_lines(self, data: bytes, limit: int) -> bytes:
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
        last = max(data.rfind(b"\n"), data.rfind(b"\r") if self._text_lines else -1)
        self._line_bytes = self._line_bytes + len(data) if last < 0 else len(data) - last - 1

    def _read(self, read: Callable[[], _Read]) -> _Read:
        """`read()`, its failures as errors naming the file; at the end of the stream, a character
        the last read left cut marks the bytes as not UTF-8."""
        try:
            got = read()
        except SegmentError:
            raise
        except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise SegmentError(f"{self._name}: compressed data is damaged or truncated ({exc})") from None
        except Exception as exc:
            from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError

            if isinstance(exc, ResourceModifiedError):
                message = "the blob was deleted or changed while it was being read"
                raise SegmentUnavailable(f"{self._name}: {message}") from None
            if isinstance(exc, ResourceNotFoundError):
                raise SegmentUnavailable(f"{self._name}: the blob was deleted while it was being read") from None
            if isinstance(exc, AzureError):
                raise SegmentUnavailable(f"{self._name}: reading the blob failed: {exc.message}") from None
            raise
        if not got:
            self.undecodable = self.undecodable or self._utf8.cut_at_end
        return got

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            super().close()


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


class _Utf8Watch:
    """Checks a stream read piece by piece as UTF-8: a character cut by the end of one piece is
    checked with the first bytes of the next."""

    def __init__(self) -> None:
        self._cut = b""  # the start of the last piece's cut character

    @property
    def cut_at_end(self) -> bool:
        return bool(self._cut)

    def valid(self, data: bytes) -> bool:
        """Whether the piece, after those before it, is still valid UTF-8."""
        start = 0
        if self._cut:
            start = min(_utf8_size(self._cut[0]) - len(self._cut), len(data))
            self._cut += data[:start]
            if len(self._cut) < _utf8_size(self._cut[0]):
                return True  # still cut: the next piece finishes it
            seam, self._cut = self._cut, b""
            if not valid_utf8(seam):
                return False
        elif data.isascii():
            return True
        end = len(data)
        for at in range(len(data) - 1, max(start, len(data) - 3) - 1, -1):
            if data[at] >= 0xC0:  # the last character's lead byte: is it whole?
                if at + _utf8_size(data[at]) > len(data):
                    end, self._cut = at, data[at:]
                break
            if data[at] < 0x80:
                break
        return valid_utf8(pa.py_buffer(data).slice(start, end - start))


def _utf8_size(lead: int) -> int:
    """The bytes of a UTF-8 character from its lead byte (1 for a byte that cannot lead one)."""
    return 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else 4 if 0xF0 <= lead < 0xF8 else 1


def as_row_chunk(chunk: RowChunk | TableChunk) -> RowChunk:
    """A chunk with its rows as lists of values (an Arrow table's rows converted)."""
    if isinstance(chunk, RowChunk):
        return chunk
    records = [list(values) for values in zip(*(column.to_pylist() for column in chunk.table.columns), strict=True)]
    return RowChunk(chunk.source, chunk.columns, chunk.numbers.tolist(), records, chunk.errors)


def _remembered(text: Iterator[str], memory: list[str], again: list[str]) -> Iterator[str]:
    """The lines for the CSV reader: first those to read again (last first), then the file's; each
    is kept in `memory` until the record it belongs to is done with."""
    remember = memory.append
    while again:
        line = again.pop()
        remember(line)
        yield line
    for line in text:
        remember(line)
        yield line


def _csv_reason(exc: csv.Error) -> str:
    message = str(exc)
    if "field limit" in message:
        return f"a field is longer than {csv.field_size_limit():,} characters"
    if "end of data" in message:
        return "a quoted field is never closed (an unbalanced quote)"
    if "expected after" in message:
        return "a closing quote is followed by more text (an unbalanced quote)"
    return f"unreadable CSV row: {message}"


def _cut_reason(lines: list[str]) -> str | None:
    if any(_CUT in line for line in lines[:1]):
        return f"the line is longer than {MAX_LINE_BYTES:,} bytes; the rest of it was skipped"
    return None


def _broken_record(reason: str, start: int, end: int, lines: list[str]) -> str:
    reason = _cut_reason(lines) or reason
    if end <= start:
        return reason
    return f"{reason}; the record ran on to line {end}, so the lines after this one are read again as rows"


def _move_unreadable(chunk: RowChunk) -> None:
    """Moves rows holding bytes that were not UTF-8 (kept as surrogates), a NUL, or the mark of a
    line cut short from records to errors."""
    bad = [i for i, values in enumerate(chunk.records) if _UNREADABLE.search("".join(values))]
    if not bad:
        return
    for i in bad:
        joined = "".join(chunk.records[i])
        if _CUT in joined:
            reason = f"the line is longer than {MAX_LINE_BYTES:,} bytes; the rest of it was skipped"
        elif _UNDECODABLE.search(joined):
            reason = "row holds bytes that are not valid UTF-8"
        else:
            reason = "row holds a NUL byte"
        chunk.errors.append((chunk.numbers[i], reason))
    keep = sorted(set(range(len(chunk.records))) - set(bad))
    chunk.records[:] = [chunk.records[i] for i in keep]
    chunk.numbers[:] = [chunk.numbers[i] for i in keep]


def _read_header(name: str, data: BinaryIO, dialect: type[csv.Dialect]) -> list[str]:
    text = io.TextIOWrapper(io.BufferedReader(data), encoding="utf-8", errors="surrogateescape", newline="")
    return _next_header(name, csv.reader(text, dialect=dialect))


def _next_header(name: str, reader: Any) -> list[str]:
    """The first row that is not blank (blank lines before it are skipped), checked."""
    try:
        header = next(reader, None)
        while header == []:
            header = next(reader, None)
    except csv.Error as exc:
        raise SegmentError(f"{name}: unreadable header row: {_csv_reason(exc)}") from None
    return _clean_header(name, header)


def _header_end(head: bytes) -> int | None:
    """Just past the header line when it is one plain line (else the csv module reads the part)."""
    end = head.find(b"\n")
    if end < 0 or head.count(b'"', 0, end) % 2 or b"\r" in head[: max(end - 1, 0)] or head[:1] in b"\r\n":
        return None  # also blank lines before the header: the csv module skips them
    return end + 1


def _sniff_delimiter(data: bytes) -> str:
    """Picks the delimiter among , ; TAB | by counting them in the header line (outside quotes)."""
    head = data[: 64 * 1024].decode("utf-8", errors="replace").lstrip("\ufeff")
    first_line = next((line for line in re.split(r"\r\n|\r|\n", _strip_quoted(head)) if line), "")
    counts = {d: first_line.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _strip_quoted(text: str) -> str:
    return re.sub(r'"(?:[^"]|"")*"', "", text)


def _make_dialect(delimiter: str) -> type[csv.Dialect]:
    class Dialect(csv.excel):
        pass

    Dialect.delimiter = delimiter
    # Strict: a quote that never closes, or text after a closing quote, is an error (its row is
    # rejected and the lines it ran over are read again) instead of swallowing the following rows.
    Dialect.strict = True
    return Dialect


def _clean_header(name: str, header: list[str] | None) -> list[str]:
    if not header or header == [""]:
        raise SegmentError(f"{name}: the file is empty: no header row")
    columns = [h.strip() for h in header]
    if any(_CUT in c for c in columns):
        raise SegmentError(f"{name}: the header row is longer than {MAX_LINE_BYTES:,} bytes: is this a CSV file?")
    if any(_UNDECODABLE.search(c) for c in columns):
        raise SegmentError(f"{name}: the header row holds bytes that are not valid UTF-8")
    if any("\x00" in c for c in columns):
        raise SegmentError(f"{name}: the header row holds NUL bytes: is the file UTF-16 or binary?")
    seen: set[str] = set()
    duplicates = [c for c in columns if c in seen or seen.add(c)]  # type: ignore[func-returns-value]
    if duplicates:
        named = "" if looks_like_data(duplicates) else f": {', '.join(sorted(set(duplicates)))}"
        raise SegmentError(f"{name}: the header names a column twice{named}")
    return columns


def looks_like_data(header: list[str]) -> bool:
    """True when a header holds what looks like an email or a phone number: a file without a header
    row, whose first row of personal data must not be quoted in messages."""
    return any("@" in column or _LONG_NUMBER.search(column) for column in header)


def detect_format(name: str) -> Format:
    """The format from a file name: .csv, .tsv, .jsonl, .ndjson, optionally ending in .gz."""
    lowered = name.lower().removesuffix(".gz")
    for suffix, fmt in _SUFFIXES.items():
        if lowered.endswith(suffix):
            return fmt
    raise SegmentError(f"{name}: cannot tell the format from the name; give it (csv or jsonl)")


def is_data_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return bool(base) and not base.startswith((".", "_")) and base.lower() not in NON_DATA_NAMES


def local_segment(path: str | Path, fmt: Format | None = None, delimiter: str | None = None) -> SegmentSource:
    """A local file, or a directory whose data files are read in name order."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.is_file() and is_data_name(p.name))
        if not files:
            raise SegmentError(f"{root}: the folder holds no data files")
        parts: list[SegmentPart] = [LocalPart(p, str(p), p.stat().st_size) for p in files]
    elif root.is_file():
        parts = [LocalPart(root, str(root), root.stat().st_size)]
    else:
        raise SegmentError(f"{root}: no such file or folder")
    return SegmentSource(str(root), parts, fmt, delimiter)


def blob_segment(
    container: ContainerClient, path: str, fmt: Format | None = None, delimiter: str | None = None
) -> SegmentSource:
    """A blob, or every data blob under a prefix (a folder segment), each pinned to its etag."""
    from azure.core.exceptions import ResourceNotFoundError

    location = f"{container.container_name}/{path}"
    if path and not path.endswith("/"):
        try:
            props = container.get_blob_client(path).get_blob_properties()
        except ResourceNotFoundError:
            props = None
        if props is not None:
            return SegmentSource(location, [BlobPart(container, path, props.size, props.etag)], fmt, delimiter)
    prefix = path.rstrip("/") + "/" if path else ""
    try:
        blobs = sorted(
            (b for b in container.list_blobs(name_starts_with=prefix) if is_data_name(b.name)),
            key=lambda b: b.name,
        )
    except ResourceNotFoundError:
        raise SegmentError(f"{location}: the container does not exist") from None
    if not blobs:
        raise SegmentError(f"{location}: no such blob, and no data blobs under that prefix")
    parts: list[SegmentPart] = [BlobPart(container, b.name, b.size, b.etag) for b in blobs]
    return SegmentSource(location, parts, fmt, delimiter)
