"""Reading a Parquet part: the footer's columns (struct fields by dotted path, as `personalEmail.address`)
and their kinds, then the mapped columns a record batch at a time as TableChunks, with no Python object
per row. Values keep their type where Klaviyo's profile properties have one (numbers, booleans);
timestamps and dates become ISO 8601 text. Rows are numbered from 1 within each file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.privacy import short_names
from shared.sources.chunks import TableChunk
from shared.sources.errors import SegmentError, SegmentUnavailable
from shared.sources.streams import ByteStream

# Rows per table handed to the mapping (1M rows: 8K took 175 MB and 10% longer, 16K 205 MB, 32K 250 MB):
# a row group, often far larger (Spark writes 128 MB), is read (its mapped columns only) in batches of these.
PARQUET_BATCH_ROWS = 16_384
# What a column becomes: text (strings, and timestamps and dates as ISO 8601), a JSON number or boolean.
Kind = Literal["text", "number", "boolean", "date"]
_EMPTY = pa.scalar("", pa.string())


def column_kind(kind: pa.DataType) -> Kind | None:
    """How a column of this Arrow type is mapped; None when it cannot be (lists, maps, structs, binary)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return "text"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "number"
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
        return "date"
    return None


def _paths(fields: list[pa.Field], prefix: str = "") -> Iterator[tuple[str, pa.DataType]]:
    """Every column and struct field by its dotted path (a struct itself too: it cannot be mapped)."""
    for field in fields:
        yield prefix + field.name, field.type
        if pa.types.is_struct(field.type):
            yield from _paths(list(field.type), prefix + field.name + ".")


class ParquetPart:
    """One Parquet file of a segment, opened for random access (its footer is read at once)."""

    def __init__(self, name: str, file: ByteStream, size: int) -> None:
        self.name, self.size = name, size
        try:
            self._file = pq.ParquetFile(file, pre_buffer=False)  # pre-buffering took 30 MB more at 1M rows
        except (pa.ArrowException, OSError) as exc:
            if isinstance(exc, SegmentUnavailable):
                raise
            raise SegmentError(f"{name}: not a readable Parquet file (truncated or corrupt?): {exc}") from None
        self.types: dict[str, pa.DataType] = {}
        for path, kind in _paths(list(self._file.schema_arrow)):
            self.types.setdefault(path, kind)  # a top-level name holding a dot wins over a struct path

    def kinds(self) -> dict[str, str]:
        """Each column's kind, or its Arrow type where it cannot be mapped (named in the error)."""
        return {path: column_kind(kind) or str(kind) for path, kind in self.types.items()}

    def tables(self, columns: list[str] | None) -> Iterator[TableChunk]:
        """The columns (every mappable one when None) a batch at a time, typed as column_kind says."""
        wanted = list(dict.fromkeys(columns if columns is not None else self._mappable()))
        missing = [c for c in wanted if c not in self.types]
        if missing:
            raise SegmentError(f"{self.name}: no column {short_names(missing)}")
        rows = max(1, self._file.metadata.num_rows)
        first = 1
        try:
            for batch in self._file.iter_batches(PARQUET_BATCH_ROWS, columns=wanted, use_threads=False):
                table = pa.table([_normalized(_column(batch, c)) for c in wanted], names=wanted)
                numbers = np.arange(first, first + table.num_rows, dtype=np.int64)
                first += table.num_rows
                yield TableChunk(self.name, wanted, numbers, table, [], self.size * table.num_rows // rows)
        except (pa.ArrowException, OSError) as exc:
            if isinstance(exc, SegmentUnavailable):
                raise
            raise SegmentError(f"{self.name}: reading rows from {first} failed (corrupt file?): {exc}") from None

    def close(self) -> None:
        self._file.close()

    def _mappable(self) -> list[str]:
        return [path for path, kind in self.types.items() if column_kind(kind) is not None]


def _column(batch: pa.RecordBatch, path: str) -> pa.Array:
    """A column or struct field of a batch; a null struct makes its fields null."""
    if path in batch.schema.names:
        return batch.column(path)
    head, _, rest = path.partition(".")
    values: pa.Array = batch.column(head)
    while rest:
        names = [field.name for field in values.type]
        name = next((rest[: len(n)] for n in names if rest == n or rest.startswith(n + ".")), rest)
        values = values.flatten()[names.index(name)]
        rest = rest[len(name) + 1 :]
    return values


def _normalized(values: pa.Array) -> pa.Array:
    """A column as the mapping takes it: strings ("" for null), int64, float64 (NaN and infinities
    null: JSON has none), booleans; timestamps and dates as ISO 8601 strings. Other types are left
    (the check before sending refuses them)."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        values, kind = values.dictionary_decode(), kind.value_type
    if pa.types.is_timestamp(kind):
        values = _iso_timestamps(values)
    elif pa.types.is_date(kind) or pa.types.is_time(kind):
        values = values.cast(pa.string())
    elif pa.types.is_integer(kind):
        values = values.cast(pa.int64())
    elif pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = values.cast(pa.float64())
        values = pc.if_else(pc.is_finite(values), values, pa.scalar(None, pa.float64()))
    if column_kind(values.type) == "text":
        values = values.cast(pa.string())
        return values.fill_null(_EMPTY) if values.null_count else values
    return values


def _iso_timestamps(values: pa.Array) -> pa.Array:
    """ISO 8601: UTC with a Z when the column has a time zone, else as written; a fraction of a second
    only on the values that have one."""
    kind: pa.TimestampType = values.type
    zone = "Z" if kind.tz else ""
    if kind.tz:
        values = values.cast(pa.timestamp(kind.unit, "UTC"))
    seconds = pc.floor_temporal(values, unit="second")
    whole = pc.strftime(seconds.cast(pa.timestamp("s", kind.tz and "UTC")), format=f"%Y-%m-%dT%H:%M:%S{zone}")
    if kind.unit == "s" or pc.all(pc.equal(seconds, values)).as_py() is not False:
        return whole
    return pc.if_else(pc.equal(seconds, values), whole, pc.strftime(values, format=f"%Y-%m-%dT%H:%M:%S{zone}"))
