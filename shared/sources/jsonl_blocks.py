"""The JSON Lines fast path: a block of flat JSON objects parsed by Arrow's JSON reader into the mapped
columns, as strings. Any other block is read line by line (orjson).

Arrow's reader is given only blocks it provably reads as the line reader does, and never a top-level
`null`: pyarrow 26.0.1 reads the stack of open objects there while it is empty (`HandlerBase::Null`
in arrow/json/parser.cc; apache/arrow issue 47409), which killed the process when such a line came
first in a block, and made a row of nulls from it later on. A block takes the fast path only when
each line is one flat object, `{"key": "text" or null, ...}`, with spaces as the only whitespace,
and the whole block is valid UTF-8 with no backslash (so no escape) and no control character but
the line ends. Such a line is valid JSON, orjson and Arrow make the same strings of it (the bytes
between its quotes), and its top-level value is an object. Arrow still refuses a mapped key twice
in a line (orjson keeps the last): that block too is read line by line.

Most files write every line alike: the same keys in the same order, each with a string, the same
spacing (a table export). Such a block skips Arrow's JSON parser. With no escape, every quote opens
or closes a string, so a line with as many quotes as the first, and the same bytes outside its
values' text, is the first line with other plain strings: each value lies between known quotes
and is cut out by position. The bytes outside the values of all lines are taken into one buffer
and compared with the first line's, repeated."""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from shared.sources.utf8 import unmarked_utf8

# A longer line is left to the line reader (and the row-by-row mapper's limits), as in csv_blocks.
MAX_PLAIN_LINE = 100_000
_EMPTY = pa.scalar("", pa.string())
_NEWLINE, _QUOTE = 10, 34


class JsonBlocks:
    """Turns blocks of JSON Lines into tables of the mapped columns."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = list(dict.fromkeys(columns))
        schema = pa.schema([(column, pa.string()) for column in self.columns])
        self._parse = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        self._read = pa_json.ReadOptions(use_threads=False, block_size=4 * 1024 * 1024)
        self._layouts = True  # while the blocks keep one layout

    def table(self, block: bytes, utf8: bool = False) -> pa.Table | None:
        """The block's rows (one per line; the block ends at a line end or at the end of the part) as
        a table of strings, nulls and absent keys as "", or None when it must be read line by line.
        `utf8`: the caller knows the block is valid UTF-8 (its reader checked every byte)."""
        lines = plain_lines(block, utf8)
        if lines is None:
            return None
        if self._layouts:
            table = self._by_layout(block, lines)
            if table is not None:
                return table
        if not _all_flat(lines):
            return None
        try:
            table = pa_json.read_json(pa.py_buffer(block), self._read, self._parse)
        except pa.ArrowInvalid:
            return None  # a line names a mapped key twice
        if table.num_rows != len(lines):
            return None
        columns = [column.combine_chunks() for column in table.select(self.columns).columns]
        return pa.table([c.fill_null(_EMPTY) if c.null_count else c for c in columns], names=self.columns)

    def _by_layout(self, block: bytes, lines: pa.Array) -> pa.Table | None:
        """The table when every line is the first line's bytes but for the text of its values."""
        try:
            first = orjson.loads(lines[0].as_py())
        except orjson.JSONDecodeError:
            return None
        if type(first) is not dict or not first or any(type(value) is not str for value in first.values()):
            return None
        keys = list(first)
        starts = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines))
        spans = _layout_spans(block, starts, len(keys))
        if spans is None:
            self._layouts = False  # the lines differ: the next blocks go straight to the flat check
            return None
        rows, per_line = len(lines), 2 * len(keys) + 1
        columns = []
        for name in self.columns:
            if name in first:
                value = 2 * keys.index(name) + 1
                columns.append(spans.take(pa.array(np.arange(value, rows * per_line, per_line, dtype=np.int32))))
            else:
                columns.append(pa.repeat(_EMPTY, rows))
        return pa.table(columns, names=self.columns)


def _layout_spans(block: bytes, starts: np.ndarray, keys: int) -> pa.Array | None:
    """The block cut into each line's spans when every line (from `starts`) has the first line's
    bytes outside its values' text; None when not. A line's spans are, in turn, its bytes before
    its first value's text, that text, the bytes up to the next value's text, ..., and those after
    its last value's, the line end included: 2 × keys + 1 spans. The block holds no escape, so every
    quote opens or closes a string: such a line is the first one with other plain strings."""
    if not block.endswith(b"\n"):
        block += b"\n"  # a file's last line without its line end: its spans end like the others'
    codes = np.frombuffer(block, dtype=np.uint8)
    quotes = np.flatnonzero(codes == _QUOTE).astype(np.int32)
    rows, per_line = len(starts), 2 * keys + 1
    if len(quotes) != rows * 4 * keys:
        return None
    line_quotes = quotes.reshape(rows, 4 * keys)  # one row per line while the lines keep the layout
    # The k-th value's text lies between the line's quotes 4k + 2 and 4k + 3.
    bounds = np.empty((rows, per_line), dtype=np.int32)
    bounds[:, 0], bounds[:, 1::2], bounds[:, 2::2] = starts, line_quotes[:, 2::4] + 1, line_quotes[:, 3::4]
    offsets = np.append(bounds.ravel(), np.int32(len(block)))
    # A line with more quotes than the first and one with fewer would cut some outside span short.
    outside_sizes = np.diff(offsets).reshape(rows, per_line)[:, 0::2]
    if not (outside_sizes == outside_sizes[0]).all():
        return None
    spans = pa.Array.from_buffers(pa.string(), rows * per_line, [None, pa.py_buffer(offsets), pa.py_buffer(block)])
    # Every line's bytes outside its values, in one buffer: it must be the first line's, once per line.
    line_spans = np.arange(0, rows * per_line, per_line, dtype=np.int32)[:, None]
    outside = spans.take(pa.array((line_spans + np.arange(0, per_line, 2, dtype=np.int32)).ravel()))
    width, data = int(outside_sizes[0].sum()), outside.buffers()[2]
    if not data.slice(0, width * rows).equals(pa.py_buffer(data.slice(0, width).to_pybytes() * rows)):
        return None
    return spans


def plain_lines(block: bytes, utf8: bool = False) -> pa.Array | None:
    """The block's lines (binary, with their line ends) when it is valid UTF-8 (known to be, given
    `utf8`) with no escape, no control character but the line ends and no line longer than
    MAX_PLAIN_LINE (None when not)."""
    if b"\\" in block or not unmarked_utf8(block, utf8):
        return None
    codes = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(codes == _NEWLINE)
    if np.count_nonzero(codes < 32) != len(ends):
        return None  # a raw control character, which orjson refuses inside a string
    starts = np.concatenate(([0], ends + 1))
    if starts[-1] < len(block):
        starts = np.append(starts, len(block))  # a last line without its line end
    if len(block) > MAX_PLAIN_LINE and np.diff(starts).max() > MAX_PLAIN_LINE:
        return None
    return pa.Array.from_buffers(
        pa.binary(), len(starts) - 1, [None, pa.py_buffer(starts.astype(np.int32)), pa.py_buffer(block)]
    )


def flat_object_lines(block: bytes) -> int | None:
    """How many lines the block has when each is a flat object of strings and nulls with no escape,
    no whitespace but spaces and no line longer than MAX_PLAIN_LINE (None when not)."""
    lines = plain_lines(block)
    return len(lines) if lines is not None and _all_flat(lines) else None


def _all_flat(lines: pa.Array) -> bool:
    """Whether every line is a flat object of pairs (not blank), checked by Arrow's regular
    expressions (RE2) outside the GIL."""
    return bool(pc.all(pc.match_substring_regex(lines, _FLAT_LINE)).as_py())


_STRING = r'"[^"\\\x00-\x1f]*"'
_PAIR = rf"{_STRING} *: *(?:{_STRING}|null) *"
_FLAT_LINE = rf"^ *\{{ *(?:{_PAIR}(?:, *{_PAIR})*)?\}} *\n?$"
