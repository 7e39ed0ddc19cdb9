"""Segment readers: stream CSV or JSON Lines rows (optionally gzipped) from blobs or local files."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import orjson

from shared.sources.checked_stream import CUT_TEXT, MAX_LINE_BYTES, CheckedStream
from shared.sources.chunks import RowChunk, SegmentRow, TableChunk, as_row_chunk
from shared.sources.csv_blocks import BLOCK_BYTES, BlockReader
from shared.sources.errors import SegmentError

# Kept importable from here until shared/control/runs.py imports it from shared.sources (this branch may
# not edit control); nothing in this module uses it.
from shared.sources.errors import SegmentUnavailable as SegmentUnavailable
from shared.sources.jsonl_blocks import JsonBlocks
from shared.sources.parts import BlobPart, Format, LocalPart, SegmentPart, detect_format, is_data_name
from shared.sources.streams import BUFFER_BYTES, ByteStream, Prepended, decompressed, line_blocks
from shared.sources.utf8 import BOM, UNDECODABLE

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

DELIMITERS = ",;\t|"
# Klaviyo refuses profiles over 100 KB; a single field far past that is garbage, not data.
MAX_FIELD_CHARS = 1_000_000
# A JSON Lines row is about twice a CSV row: twice the block, about the same rows (~8,500 a table;
# a smaller table costs the mapping more per row).
JSONL_BLOCK_BYTES = 2 * 1024 * 1024
# JSON Lines is read in pieces this large, and blocks cut from them: a blob's downloaded ranges
# (storage.DOWNLOAD_RANGE_BYTES) come whole, not copied.
JSONL_PIECE_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_UNCOMPRESSED_BYTES = 50 * 1024**3
CHUNK_ROWS = 4096
_UNREADABLE = re.compile("[\x00\udc80-\udcff]")
_LINE_CUT = f"the line is longer than {MAX_LINE_BYTES:,} bytes; the rest of it was skipped"
_LONG_NUMBER = re.compile(r"\d[\d ()./-]{5,}\d")


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

    def _binary(self, part: SegmentPart) -> ByteStream:
        return decompressed(part.open(), part.name, self.max_uncompressed_bytes)

    def _buffered(self, part: SegmentPart, text_lines: bool = False) -> io.BufferedReader:
        raw = CheckedStream(self._binary(part), part.name, MAX_LINE_BYTES, text_lines)
        return io.BufferedReader(raw, buffer_size=BUFFER_BYTES)

    def _start(self, part: SegmentPart, stream: BinaryIO) -> tuple[bytes, type[csv.Dialect]]:
        """The first block of a CSV part (without a byte order mark) and its dialect."""
        first = stream.read(BLOCK_BYTES)
        if first.startswith(BOM):
            first = first[len(BOM) :]
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
        watch = CheckedStream(data, part.name)
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
        with CheckedStream(self._binary(part), part.name, MAX_LINE_BYTES) as checked:
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
            if number == 1 and line.startswith(BOM):
                line = line[len(BOM) :]
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
    if any(CUT_TEXT in line for line in lines[:1]):
        return _LINE_CUT
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
        if CUT_TEXT in joined:
            reason = _LINE_CUT
        elif UNDECODABLE.search(joined):
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
    if any(CUT_TEXT in c for c in columns):
        raise SegmentError(f"{name}: the header row is longer than {MAX_LINE_BYTES:,} bytes: is this a CSV file?")
    if any(UNDECODABLE.search(c) for c in columns):
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
