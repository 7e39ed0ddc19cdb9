"""The JSON Lines fast path: a block of plain lines parsed by Arrow's JSON reader into the mapped
columns, as strings. A block is plain when Arrow and the line-by-line reader (orjson) cannot
disagree on it: valid UTF-8, one object a line, no blank lines or carriage returns, no line near
the row size limit, every mapped value a string or null, no control character in a value, no key
twice in an object (Arrow refuses those). Any other block is read line by line."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.json as pa_json

BOM = b"\xef\xbb\xbf"
_EMPTY = pa.scalar("", pa.string())


class JsonBlocks:
    """Turns blocks of JSON Lines into tables of the mapped columns."""

    def __init__(self, columns: list[str], max_line: int) -> None:
        self.columns, self._max_line = list(dict.fromkeys(columns)), max_line
        schema = pa.schema([(column, pa.string()) for column in self.columns])
        self._parse = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        self._read = pa_json.ReadOptions(use_threads=False, block_size=4 * 1024 * 1024)

    def table(self, block: bytes) -> pa.Table | None:
        """The block's rows (one a line) as a table of strings, nulls as "", or None when the block
        must be read line by line."""
        if not block or block.startswith((b"\n", BOM)) or b"\n\n" in block or b"\r" in block:
            return None
        if not block.isascii():
            try:
                block.decode("utf-8")
            except UnicodeDecodeError:
                return None
        codes = np.frombuffer(block, dtype=np.uint8)
        newlines = np.flatnonzero(codes == 10)
        if len(block) > self._max_line:
            ends = np.concatenate((newlines, [len(block)]))
            if np.diff(ends, prepend=-1).max() > self._max_line:
                return None
        try:
            table = pa_json.read_json(pa.py_buffer(block), self._read, self._parse)
        except pa.ArrowInvalid:
            return None
        lines = len(newlines) + (0 if block.endswith(b"\n") else 1)
        if table.num_rows != lines:
            return None  # a line holding no object, or two
        columns = [column.combine_chunks().fill_null(_EMPTY) for column in table.select(self.columns).columns]
        for column in columns:
            data = column.buffers()[2]
            if data is not None and np.count_nonzero(np.frombuffer(data, dtype=np.uint8) < 32):
                return None  # an escaped control character: orjson's escaping is the line reader's
        return pa.table(columns, names=self.columns)
