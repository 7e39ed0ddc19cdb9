"""The JSON Lines fast path: a block of lines parsed by orjson, one line at a time as the line reader
does, its mapped columns handed over as Arrow strings for the column-wise mapper.

A block takes this path only when the line reader would make the same rows of it: one object a
line (no blank line, no line orjson refuses, no byte order mark), every mapped value a string or
null, no control character but TAB in a mapped value, no line longer than MAX_PLAIN_LINE. Any other
block is read line by line.

Arrow's own JSON reader is not used: pyarrow 26.0.1 dereferences a null pointer (a segmentation
fault, the whole process gone) when the first line of a block is the JSON value `null` (apache/arrow
issue 47409), and reads a later `null` line as a row of nulls. orjson is the line reader's parser,
so what it accepts here is exactly what the line reader accepts."""

from __future__ import annotations

from itertools import repeat

import numpy as np
import orjson
import pyarrow as pa

BOM = b"\xef\xbb\xbf"  # the line reader drops it from line 1 only
# A longer line is left to the line reader (and the row-by-row mapper's limits), as in csv_blocks.
MAX_PLAIN_LINE = 100_000
_EMPTY = pa.scalar("", pa.string())
_TAB = 9


class JsonBlocks:
    """Turns blocks of JSON Lines into tables of the mapped columns."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = list(dict.fromkeys(columns))

    def table(self, block: bytes) -> pa.Table | None:
        """The block's rows (one a line; the block ends at a line end or at the end of the part) as
        a table of strings, nulls and missing keys as "", or None when it must be read line by line."""
        if block.startswith(BOM):
            return None
        lines = block.split(b"\n")
        if not lines[-1]:
            lines.pop()
        if not lines or max(map(len, lines)) > MAX_PLAIN_LINE:
            return None
        try:
            # The line reader parses each line with its "\n"; trailing whitespace never changes a parse.
            records = list(map(orjson.loads, lines))
        except orjson.JSONDecodeError:
            return None  # a blank line or a damaged one: the line reader skips it or says why
        if set(map(type, records)) != {dict}:
            return None
        columns: list[pa.Array] = []
        for name in self.columns:
            try:
                column = pa.array(list(map(dict.get, records, repeat(name))), pa.string())
            except (pa.ArrowException, UnicodeError):
                return None  # a number, list, object or boolean: the row-by-row mapper's reasons apply
            _, offsets, data = column.buffers()
            if data is not None:
                end = int(np.frombuffer(offsets, dtype=np.int32)[len(column)])
                codes = np.frombuffer(data, dtype=np.uint8, count=end)
                if np.count_nonzero(codes < 32) != np.count_nonzero(codes == _TAB):
                    return None  # an escaped control character: left to the row-by-row serializer
            columns.append(column.fill_null(_EMPTY))
        return pa.table(columns, names=self.columns)
