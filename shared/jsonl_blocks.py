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
in a line (orjson keeps the last): that block too is read line by line."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from shared.csv_blocks import unmarked_utf8

# A longer line is left to the line reader (and the row-by-row mapper's limits), as in csv_blocks.
MAX_PLAIN_LINE = 100_000
_EMPTY = pa.scalar("", pa.string())
_NEWLINE = 10


class JsonBlocks:
    """Turns blocks of JSON Lines into tables of the mapped columns."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = list(dict.fromkeys(columns))
        schema = pa.schema([(column, pa.string()) for column in self.columns])
        self._parse = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        self._read = pa_json.ReadOptions(use_threads=False, block_size=4 * 1024 * 1024)

    def table(self, block: bytes) -> pa.Table | None:
        """The block's rows (one a line; the block ends at a line end or at the end of the part) as
        a table of strings, nulls and absent keys as "", or None when it must be read line by line."""
        lines = flat_object_lines(block)
        if lines is None:
            return None
        try:
            table = pa_json.read_json(pa.py_buffer(block), self._read, self._parse)
        except pa.ArrowInvalid:
            return None  # a mapped key twice in a line
        if table.num_rows != lines:
            return None
        columns = [column.combine_chunks() for column in table.select(self.columns).columns]
        return pa.table([c.fill_null(_EMPTY) if c.null_count else c for c in columns], names=self.columns)


def flat_object_lines(block: bytes) -> int | None:
    """How many lines the block has when each is a flat object of strings and nulls with no escape,
    no whitespace but spaces and no line longer than MAX_PLAIN_LINE (None when not)."""
    if b"\\" in block or not unmarked_utf8(block):
        return None
    codes = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(codes == _NEWLINE)
    if np.count_nonzero(codes < 32) != len(ends):
        return None  # a control character: raw in a string orjson refuses it
    starts = np.concatenate(([0], ends + 1))
    if starts[-1] < len(block):
        starts = np.append(starts, len(block))  # a last line without its line end
    if len(block) > MAX_PLAIN_LINE and np.diff(starts).max() > MAX_PLAIN_LINE:
        return None
    lines = pa.Array.from_buffers(
        pa.binary(), len(starts) - 1, [None, pa.py_buffer(starts.astype(np.int32)), pa.py_buffer(block)]
    )
    # Arrow's regular expressions (RE2) check every line outside the GIL.
    if not pc.all(pc.match_substring_regex(lines, _FLAT_LINE)).as_py():
        return None  # a line not of pairs (or blank)
    return len(lines)


_STRING = r'"[^"\\\x00-\x1f]*"'
_PAIR = rf"{_STRING} *: *(?:{_STRING}|null) *"
_FLAT_LINE = rf"^ *\{{ *(?:{_PAIR}(?:, *{_PAIR})*)?\}} *\n?$"
