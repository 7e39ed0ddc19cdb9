"""Reading a JSON Lines part: blocks of flat objects as Arrow tables of the mapped columns (jsonl_blocks),
and any other block, or the whole part when no columns are asked for, line by line with orjson."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import numpy as np
import orjson

from shared.sources.checked_stream import CheckedStream
from shared.sources.chunks import RowChunk, TableChunk
from shared.sources.jsonl_blocks import JsonBlocks
from shared.sources.streams import line_blocks
from shared.sources.utf8 import BOM

# A JSON Lines row takes about twice the bytes of a CSV row, so its blocks are twice as large to hold
# about as many rows (some 8,500 rows per table): a smaller table costs the mapping more per row.
JSONL_BLOCK_BYTES = 2 * 1024 * 1024
# JSON Lines is read in pieces this large and cut into blocks: a piece the size of a blob's downloaded
# range (storage.DOWNLOAD_RANGE_BYTES) is that range itself, not a copy of it.
JSONL_PIECE_BYTES = 8 * 1024 * 1024
# A longer line is rejected unparsed: Klaviyo refuses profiles over 100 KB, so a line far past that is
# not a profile, and parsing it would take about ten times its size in memory.
MAX_FIELD_CHARS = 1_000_000


def jsonl_tables(name: str, checked: CheckedStream, columns: list[str], size: int) -> Iterator[RowChunk | TableChunk]:
    """The rows of the part `name`, read from a stream that checks every byte: each block as a table of
    `columns` where it is plain enough, else line by line in chunks of at most `size` rows."""
    blocks = JsonBlocks(columns)
    pieces = iter(lambda: checked.read(JSONL_PIECE_BYTES), b"")
    line = 1
    for block in line_blocks(pieces, JSONL_BLOCK_BYTES):
        # Every byte read so far was checked as UTF-8; a block cut at a line end holds whole characters.
        table = blocks.table(block, utf8=not checked.undecodable and block.endswith(b"\n"))
        if table is not None:
            numbers = np.arange(line, line + table.num_rows, dtype=np.int64)
            yield TableChunk(name, blocks.columns, numbers, table, [], len(block))
            line += table.num_rows  # one row per line
        else:
            yield from jsonl_rows(name, io.BytesIO(block), line, size)
            line += block.count(b"\n")


def jsonl_rows(name: str, lines: Iterable[bytes], first_line: int, size: int) -> Iterator[RowChunk]:
    """JSON Lines read line by line (orjson), numbering lines from `first_line`, in chunks of at most
    `size` rows."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    chunk = RowChunk(name, None, [], [], [])
    for number, line in enumerate(lines, start=first_line):
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
