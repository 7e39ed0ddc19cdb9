"""Reading a CSV part: its first block and dialect, then its rows, plain blocks parsed by Arrow (csv_blocks)
and the rest read by the csv module (PythonCsv), which takes broken records apart line by line."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from shared.sources.checked_stream import CUT_TEXT, MAX_LINE_BYTES, CheckedStream
from shared.sources.chunks import RowChunk, TableChunk
from shared.sources.csv_blocks import BLOCK_BYTES, BlockReader
from shared.sources.csv_dialect import CsvDialect
from shared.sources.csv_header import (
    clean_header,
    csv_dialect,
    csv_reason,
    header_end,
    next_header,
    read_header,
    sniff_delimiter,
)
from shared.sources.streams import BUFFER_BYTES, ByteStream, Prepended
from shared.sources.utf8 import BOM, UNDECODABLE

if TYPE_CHECKING:
    from _csv import Reader

# A row whose text holds one of these is rejected: bytes that were not UTF-8 (kept as surrogates, the
# cut mark among them) or a NUL.
_UNREADABLE = re.compile("[\x00\udc80-\udcff]")
BACKSLASHED = "looks backslash-escaped: set escape"
_LINE_CUT = f"the line is longer than {MAX_LINE_BYTES:,} bytes; the rest of it was skipped"


class CsvStart(NamedTuple):
    """The first block of a CSV part (without a byte order mark) and the part's dialect."""

    head: bytes
    dialect: type[csv.Dialect]


def read_start(name: str, stream: ByteStream, dialect: CsvDialect) -> CsvStart:
    """The first block of the part `name` and its dialect, the delimiter sniffed unless given."""
    head = stream.read(BLOCK_BYTES)
    if head.startswith(BOM):
        head = head[len(BOM) :]
    delimiter = sniff_delimiter(head, dialect) if dialect.delimiter is None else dialect.delimiter
    return CsvStart(head, csv_dialect(name, delimiter, dialect))


def part_header(name: str, stream: ByteStream, dialect: CsvDialect) -> list[str]:
    """The checked header row of a CSV part read from the start of its stream, or the dialect's
    column names when the part has no header row."""
    start = read_start(name, stream, dialect)
    if dialect.columns is not None:
        return list(dialect.columns)
    return read_header(name, Prepended(start.head, stream), start.dialect)


def csv_chunks(
    name: str, stream: ByteStream, dialect: CsvDialect, size: int, fast: bool
) -> Iterator[RowChunk | TableChunk]:
    """The rows of a CSV part in chunks of at most `size` rows; given `fast`, its blocks of plain rows
    as Arrow tables. A header that is not one plain line leaves the whole part to the csv module."""
    start = read_start(name, stream, dialect)
    if dialect.columns is not None:  # no header row: the data starts at line 1
        columns: list[str] | None = list(dialect.columns)
        end: int | None = 0
    else:
        columns, end = None, header_end(start.head, dialect)
    if not fast or end is None:
        headless = PythonCsv(name, Prepended(start.head, stream), start.dialect, columns, 1, size)
        headless.headerless = not dialect.header
        yield from headless.chunks()
        return
    if columns is None:
        header_text = start.head[:end].decode("utf-8", errors="surrogateescape")
        header = next(csv.reader(io.StringIO(header_text, newline=""), dialect=start.dialect), None)
        columns = clean_header(name, header)
    named = columns

    def python_rows(data: ByteStream, line: int, final: bool) -> PythonCsv:
        rows = PythonCsv(name, data, start.dialect, named, line, size, final)
        rows.headerless = not dialect.header
        return rows

    reader = BlockReader(name, named, start.dialect, python_rows)
    yield from reader.chunks(stream, start.head[end:], 1 if end == 0 else 2)


class PythonCsv:
    """The csv module's reading of `data` (with its header when `columns` is None), numbering lines
    from `first_line`, in chunks of at most `size` rows. Once the chunks are read, `lines` tells how
    many lines they spanned and, unless `final`, `left_open` the bytes of a record left open at the
    end of `data`: they are read again with what follows."""

    def __init__(
        self,
        name: str,
        data: ByteStream,
        dialect: type[csv.Dialect],
        columns: list[str] | None,
        first_line: int,
        size: int,
        final: bool = True,
    ) -> None:
        self._name, self._dialect, self._columns, self._size, self._final = name, dialect, columns, size, final
        self.headerless = False  # the columns were named, not read from a header row (the reasons say so)
        self._watch = CheckedStream(data, name)
        self._text = io.TextIOWrapper(
            io.BufferedReader(self._watch, buffer_size=BUFFER_BYTES),
            encoding="utf-8",
            errors="surrogateescape",
            newline="",
        )
        # The lines of the record being read, and lines to read again: a record broken by an
        # unbalanced quote is rejected as its first line only, and the lines it ran over are read
        # again as rows of their own (by a new reader, numbering its lines from `_base`).
        self._memory: list[str] = []
        self._again: list[str] = []
        self._left_open: list[str] = []
        self._reader = self._new_reader()
        self._offset = self._base = first_line - 1

    def _new_reader(self) -> Reader:
        return csv.reader(_remembered(self._text, self._memory, self._again), dialect=self._dialect)

    def lines(self) -> int:
        """How many lines the chunks spanned, those of a record left open at the end not counted."""
        return self._base + self._reader.line_num - self._offset - len(self._left_open)

    def left_open(self) -> bytes:
        """The bytes of the record left open at the end of the data (none when it is `final`)."""
        return "".join(self._left_open).encode("utf-8", errors="surrogateescape")

    def chunks(self) -> Iterator[RowChunk]:
        """The rows in chunks, with the rows that could not be read as errors."""
        name, memory, again = self._name, self._memory, self._again
        if self._columns is None:
            self._columns = next_header(name, self._reader)
        columns = self._columns
        width = len(columns)
        reader, base = self._reader, self._base
        line = base + reader.line_num
        memory.clear()
        forget = memory.clear
        limit = self._size
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
                        reason = self._broken(_ragged(values, width, self.headerless))
                        errors.append((start, _broken_record(reason, start, line, memory)))
                        broken = True
                        break
                    else:
                        if values and (values != [""] or width == 1):  # else a blank line, not a row
                            ragged = _ragged(values, width, self.headerless)
                            errors.append((start, _cut_reason(memory) or self._broken(ragged)))
                        forget()
                else:
                    limit = 0  # the reader is exhausted: this is the last chunk
            except csv.Error as exc:
                if not self._final and not again and "end of data" in str(exc):
                    self._left_open.extend(memory)  # the record goes on in what follows this block
                    limit = 0
                else:
                    start = line + 1
                    line = start + max(len(memory), 1) - 1
                    errors.append((start, _broken_record(self._broken(csv_reason(exc)), start, line, memory)))
                    broken = True
            if broken:
                reader = self._read_again(start)
                base = line = start
            if self._watch.undecodable or self._watch.nul:
                _move_unreadable(chunk)
            if records or errors:
                yield chunk
            if limit == 0:
                return

    def _broken(self, reason: str) -> str:
        """Why the record being read is broken: quotes escaped with a backslash in a dialect without an
        escape (Spark's and Data Factory's default) break records, and the fix is the setting."""
        quote = self._dialect.quotechar or '"'
        if self._dialect.escapechar is None and any("\\" + quote in line for line in self._memory):
            return BACKSLASHED
        return reason

    def _read_again(self, start: int) -> Reader:
        """A new reader after a broken record that began at line `start`: it reads the lines the
        record ran over again, then the rest of the data."""
        self._again.extend(reversed(self._memory[1:]))
        self._memory.clear()
        self._reader, self._base = self._new_reader(), start
        return self._reader


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


def _ragged(values: list[str], width: int, headerless: bool = False) -> str:
    if headerless:
        return f"row has {len(values)} fields but {width} columns are named"
    return f"row has {len(values)} fields but the header has {width}"


def _cut_reason(lines: list[str]) -> str | None:
    """Why a row is rejected when its first line was cut short."""
    return _LINE_CUT if any(CUT_TEXT in line for line in lines[:1]) else None


def _broken_record(reason: str, start: int, end: int, lines: list[str]) -> str:
    reason = _cut_reason(lines) or reason
    if end <= start or reason == BACKSLASHED:  # kept short: the fix is the setting
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
