"""The rows a segment's readers hand out: chunks of parsed rows, tables of plain rows, and single rows."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa


class RowChunk(NamedTuple):
    """Consecutive rows of one part: CSV records as lists of values under `columns`, JSON Lines
    records as dicts (`columns` None); rows that could not be read are in `errors`."""

    source: str
    columns: list[str] | None
    numbers: list[int]
    records: list[Any]
    errors: list[tuple[int, str]]


class TableChunk(NamedTuple):
    """Consecutive plain rows of one part as an Arrow table of strings (one column per header name),
    with each row's 1-based line number and the bytes of the part they were read from."""

    source: str
    columns: list[str]
    numbers: np.ndarray
    table: pa.Table
    errors: list[tuple[int, str]]
    size: int


class SegmentRow(NamedTuple):
    """One input row: where it came from, its 1-based row (CSV) or line (JSONL) number, and its
    fields, or the reason it could not be read."""

    source: str
    number: int
    fields: dict[str, object] | None
    error: str | None = None


def as_row_chunk(chunk: RowChunk | TableChunk) -> RowChunk:
    """A chunk with its rows as lists of values (an Arrow table's rows converted)."""
    if isinstance(chunk, RowChunk):
        return chunk
    records = [list(values) for values in zip(*(column.to_pylist() for column in chunk.table.columns), strict=True)]
    return RowChunk(chunk.source, chunk.columns, chunk.numbers.tolist(), records, chunk.errors)
