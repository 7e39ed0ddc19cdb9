"""The CSV fast path: blocks of plain rows parsed by Arrow, the rest handed to Python's csv module.

A block is cut at a line end outside quotes. Arrow parses it when its rows are plain, one row a
line (so row numbers are line numbers), and when Arrow and the csv module cannot disagree on it:
valid UTF-8, no control characters, no blank lines, no lone carriage returns, no quoted line
breaks, every quote a well-formed quoted field, no line near the csv module's field limit.
Any other block is read by `python_rows` (the same reader the slow path uses), so each row ends
the same way whichever reader took it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import NamedTuple, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from shared.sources.chunks import RowChunk, TableChunk
from shared.sources.csv_dialect import unescaped
from shared.sources.streams import ByteStream, Prepended
from shared.sources.utf8 import unmarked_utf8

BLOCK_BYTES = 1024 * 1024
# A field this long is left to the csv module, which enforces its own limit (131,072 characters).
MAX_PLAIN_FIELD = 100_000
# Past this many bytes without a line end outside quotes, the rest of the part goes to the csv module.
MAX_PENDING_BYTES = 64 * 1024 * 1024
_TAB, _NEWLINE, _RETURN = 9, 10, 13


class BlockRows(Protocol):
    """The rows of one block (or of the rest of a part), as one of the two readers reads them."""

    def chunks(self) -> Iterator[RowChunk | TableChunk]:
        """The rows in chunks."""
        ...

    def lines(self) -> int:
        """How many lines the chunks spanned (known once they are read)."""
        ...

    def left_open(self) -> bytes:
        """The bytes of a record still open at the end of the block (known once the chunks are
        read): they are read again with what follows."""
        ...


class PythonRows(Protocol):
    """The csv module's reader of data rows from a binary stream whose first line is `line`."""

    def __call__(self, stream: ByteStream, line: int, final: bool, /) -> BlockRows:
        """The rows of the stream; a record still open at its end is left open unless `final`."""
        ...


class _ArrowRows(NamedTuple):
    """A block of plain rows, parsed by Arrow into one table."""

    chunk: TableChunk

    def chunks(self) -> Iterator[TableChunk]:
        return iter((self.chunk,))

    def lines(self) -> int:
        return len(self.chunk.numbers)  # one row per line

    def left_open(self) -> bytes:
        return b""


class BlockReader:
    """Reads the data rows of one CSV part (after its header) from a binary stream."""

    def __init__(self, name: str, columns: list[str], dialect: type[csv.Dialect], python_rows: PythonRows) -> None:
        self.name, self.columns = name, columns
        self._delimiter = dialect.delimiter.encode()
        self._quote = str(dialect.quotechar).encode()
        self._escape = dialect.escapechar
        self._python_rows = python_rows
        self._parse = pa_csv.ParseOptions(
            delimiter=dialect.delimiter,
            quote_char=dialect.quotechar,
            double_quote=True,
            escape_char=dialect.escapechar or False,
            newlines_in_values=False,
            ignore_empty_lines=False,
            invalid_row_handler=self._note_invalid,
        )
        self._read = pa_csv.ReadOptions(column_names=columns, block_size=2 * BLOCK_BYTES, use_threads=False)
        # Read as bytes, then viewed as text without a copy: the block was checked to be UTF-8 as a
        # whole, and a value cut from it at ASCII delimiters, quotes and line ends is UTF-8 too.
        self._convert = pa_csv.ConvertOptions(
            column_types={c: pa.binary() for c in columns},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        self._invalid_rows = 0

    def _note_invalid(self, row: object) -> str:
        self._invalid_rows += 1
        return "skip"

    def chunks(self, stream: ByteStream, pending: bytes, line: int) -> Iterator[RowChunk | TableChunk]:
        """Every row after the header: `pending` holds bytes already read past it, `line` is the
        line number of the first data row."""
        block_bytes, eof = BLOCK_BYTES, False
        # A record the csv module left open at the end of a block (a quote thrown off the count of
        # quotes the cuts rely on) starts the next block, which must end past it.
        floor = 0
        while pending or not eof:
            if not eof and len(pending) < floor + block_bytes:
                data = stream.read(block_bytes)
                eof, pending = not data, pending + data
                continue
            cut = self._safe_cut(pending, floor + block_bytes, floor) or self._safe_cut(pending, len(pending), floor)
            if cut is None and not eof:
                if len(pending) > MAX_PENDING_BYTES:
                    yield from self._python_rows(Prepended(pending, stream), line, True).chunks()
                    return
                data = stream.read(block_bytes)
                eof, pending = not data, pending + data
                continue
            cut = cut or len(pending)
            block, pending = pending[:cut], pending[cut:]
            rows = self._block(block, line, eof and not pending)
            yield from rows.chunks()
            line += rows.lines()
            left_open = rows.left_open()
            pending, floor = left_open + pending, len(left_open)

    def _safe_cut(self, buffer: bytes, within: int, floor: int = 0) -> int | None:
        """Just past the last line end in the first `within` bytes that is outside quotes (and past `floor`)."""
        if self._escape is not None:
            buffer = unescaped(buffer[:within], self._escape)  # escaped quotes and line ends do not count
        end = buffer.rfind(b"\n", floor, within)
        if end < 0:
            return None
        # Most often the last line end is outside quotes (an even count of quotes before it): counting
        # them is one vectorised pass, where finding every line end and quote is several.
        codes = np.frombuffer(buffer, dtype=np.uint8, count=end + 1)
        if np.count_nonzero(codes == self._quote[0]) % 2 == 0:
            return end + 1
        newlines = np.flatnonzero(codes == _NEWLINE)
        quotes_before = np.searchsorted(np.flatnonzero(codes == self._quote[0]), newlines)
        even = newlines[quotes_before % 2 == 0]
        return int(even[-1]) + 1 if len(even) and even[-1] >= floor else None

    def _block(self, block: bytes, line: int, final: bool) -> BlockRows:
        lines = self._plain_lines(block)
        if lines is None:
            return self._python_rows(io.BytesIO(block), line, final)
        self._invalid_rows = 0
        try:
            table = pa_csv.read_csv(pa.py_buffer(block), self._read, self._parse, self._convert)
        except pa.ArrowInvalid:
            return self._python_rows(io.BytesIO(block), line, final)
        if self._invalid_rows or table.num_rows != lines or _longest_field(table) > MAX_PLAIN_FIELD:
            return self._python_rows(io.BytesIO(block), line, final)
        numbers = np.arange(line, line + lines, dtype=np.int64)
        text = pa.Table.from_arrays([_as_text(column) for column in table.columns], names=self.columns)
        return _ArrowRows(TableChunk(self.name, self.columns, numbers, text, [], len(block)))

    def _plain_lines(self, block: bytes) -> int | None:
        """How many rows (lines) a plain block holds; None when it is not plain."""
        if not unmarked_utf8(block):
            return None
        if self._escape is not None:
            block = unescaped(block, self._escape)
            if self._escape.encode() in block:
                return None  # an escape before a control character or at the end
        codes = np.frombuffer(block, dtype=np.uint8)
        controls = np.flatnonzero(codes < 32)  # one pass: line ends, carriage returns, anything else
        kinds = codes[controls]
        newlines, returns = controls[kinds == _NEWLINE], controls[kinds == _RETURN]
        allowed = len(newlines) + len(returns) + (np.count_nonzero(kinds == _TAB) if self._delimiter == b"\t" else 0)
        if allowed != len(controls):
            return None  # a control character (orjson escapes them; the csv module may see a line end)
        if len(newlines) and (newlines[0] == 0 or (np.diff(newlines) == 1).any()):
            return None  # a blank line
        if len(returns):
            after = returns + 1
            if after[-1] >= len(codes) or (codes[after] != _NEWLINE).any():
                return None  # a lone carriage return
            if returns[0] == 0 or (codes[returns - 1] == _NEWLINE).any():
                return None  # a blank line ending in CRLF
        if self._quote in block:
            quotes = np.flatnonzero(codes == self._quote[0])
            if not self._whole_quoted_fields(codes, quotes):
                return None  # a quote that is not a whole quoted field: the csv module's rules apply
            if (np.searchsorted(quotes, newlines) % 2).any():
                return None  # a quoted line break (an odd count of quotes before a line end): rows are not lines
        return len(newlines) + (0 if block.endswith(b"\n") else 1)

    def _whole_quoted_fields(self, codes: np.ndarray, quotes: np.ndarray) -> bool:
        """Whether every quote belongs to a whole quoted field: one that starts a line or follows a
        delimiter, ends one or precedes a delimiter, and doubles the quotes inside it. Counting quotes
        from the start, a quote that makes the count odd opens a field (or is the second of a doubled
        pair); one that makes it even closes the field (or is the first of a pair). Checked with
        arrays, not a regular expression: a file quoting every value has millions of fields."""
        if len(quotes) % 2:
            return False  # a field left open at the end
        quote, delimiter = self._quote[0], self._delimiter[0]
        opening, closing = quotes[0::2], quotes[1::2]
        before = codes[np.maximum(opening - 1, 0)]
        opens = (opening == 0) | (before == delimiter) | (before == _NEWLINE) | (before == quote)
        after = codes[np.minimum(closing + 1, len(codes) - 1)]
        ends = (closing == len(codes) - 1) | (after == delimiter) | (after == _NEWLINE) | (after == _RETURN)
        return bool(opens.all() and (ends | (after == quote)).all())


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    return pa.chunked_array([chunk.view(pa.string()) for chunk in column.chunks], pa.string())


def _longest_field(table: pa.Table) -> int:
    return max((pc.max(pc.binary_length(column)).as_py() or 0 for column in table.columns), default=0)
