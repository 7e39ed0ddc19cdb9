"""A segment: one file, or a folder of part files read in name order as one segment; and the segment a
local path or a blob path names."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shared.sources.checked_stream import MAX_LINE_BYTES, CheckedStream
from shared.sources.chunks import RowChunk, SegmentRow, TableChunk, as_row_chunk
from shared.sources.csv_dialect import CsvDialect
from shared.sources.csv_reader import csv_chunks, part_header
from shared.sources.errors import SegmentError
from shared.sources.jsonl_reader import jsonl_rows, jsonl_tables
from shared.sources.parquet_reader import ParquetPart
from shared.sources.parts import BlobPart, Format, LocalPart, SegmentPart, detect_format, is_data_part
from shared.sources.ranged import random_access
from shared.sources.read_progress import CountedStream, ReadProgress
from shared.sources.streams import BUFFER_BYTES, ByteStream, decompressed

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

DEFAULT_MAX_UNCOMPRESSED_BYTES = 50 * 1024**3
CHUNK_ROWS = 4096


@dataclass
class SegmentSource:
    """A segment: one file, or a folder of part files read in name order as one segment."""

    location: str
    parts: list[SegmentPart]
    format: Format | None = None
    dialect: CsvDialect = field(default_factory=CsvDialect)
    # The metadata file that lists the parts (a CDM folder's model.json), with its version.
    metadata: str | None = None
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES
    # True: blocks of plain rows are parsed by Arrow (see csv_blocks and jsonl_blocks); False: every
    # row is read by the csv module or orjson.
    fast: bool = True
    # A table read at one version of its log (Delta): names that version instead of the parts' etags.
    table_version: str | None = None
    # Columns of the table that its files do not hold (a Delta table's partition columns), with what they are.
    absent_columns: dict[str, str] = field(default_factory=dict)
    _headers: dict[str, list[str]] = field(default_factory=dict, repr=False)
    _kinds: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    # How far `chunks` has read, in bytes of the parts as stored (for a progress display).
    reading: ReadProgress = field(default_factory=ReadProgress, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.reading.total = sum(part.size for part in self.parts)

    @property
    def version(self) -> str:
        """One string naming the exact versions read (a table's version, else etags of every part)."""
        if self.table_version is not None:
            return self.table_version
        return ",".join(f"{p.version}" for p in self.parts if p.version) or ""

    def format_of(self, part: SegmentPart) -> Format:
        return self.format or detect_format(part.name)

    def headers(self) -> dict[str, list[str]]:
        """The CSV header of every part, read before any row is sent (a missing column is a
        run-level error). JSON Lines parts have no header and are left out; a Parquet part's header is
        its column paths."""
        if not self._headers:
            for part in self.parts:
                if self.format_of(part) == "csv":
                    with self._buffered(part, text_lines=True) as stream:
                        self._headers[part.name] = part_header(part.name, stream, self.dialect)
                elif self.format_of(part) == "parquet":
                    self._headers[part.name] = list(self.column_kinds()[part.name])
        return self._headers

    def column_kinds(self) -> dict[str, dict[str, str]]:
        """Each typed (Parquet) part's columns and their kinds (see parquet_reader.column_kind), read
        from the footers before any row is sent: a truncated file fails here."""
        if not self._kinds:
            for part in self.parts:
                if self.format_of(part) == "parquet":
                    with random_access(part) as file:
                        parquet = ParquetPart(part.name, file, part.size)
                        self._kinds[part.name] = {**self.absent_columns, **parquet.kinds()}
                        parquet.close()
        return self._kinds

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
        table of plain rows). JSON Lines comes as tables of `columns` where given (the mapped ones).
        `reading` counts the bytes read as it goes."""
        reading = self.reading
        reading.restart()
        for part in self.parts:
            if self.format_of(part) == "csv":
                with self._buffered(part, text_lines=True, reading=reading) as stream:
                    yield from csv_chunks(part.name, stream, self.dialect, size, self.fast)
            elif self.format_of(part) == "parquet":
                with random_access(part) as file:
                    parquet = ParquetPart(part.name, file, part.size)
                    for table in parquet.tables(columns):
                        reading.add(table.size)  # a share of the file's bytes, as its rows are of its rows
                        yield table
                    parquet.close()
            elif self.fast and columns:
                with CheckedStream(self._binary(part, reading), part.name, MAX_LINE_BYTES) as checked:
                    yield from jsonl_tables(part.name, checked, columns, size)
            else:
                with self._buffered(part, reading=reading) as stream:
                    yield from jsonl_rows(part.name, stream, 1, size)
            reading.part_done(part.size)

    def _binary(self, part: SegmentPart, reading: ReadProgress | None = None) -> ByteStream:
        raw = part.open() if reading is None else CountedStream(part.open(), reading)
        return decompressed(raw, part.name, self.max_uncompressed_bytes)

    def _buffered(
        self, part: SegmentPart, text_lines: bool = False, reading: ReadProgress | None = None
    ) -> io.BufferedReader:
        raw = CheckedStream(self._binary(part, reading), part.name, MAX_LINE_BYTES, text_lines)
        return io.BufferedReader(raw, buffer_size=BUFFER_BYTES)


def local_segment(path: str | Path, fmt: Format | None = None, dialect: CsvDialect | None = None) -> SegmentSource:
    """A local file, or a directory whose data files are read in name order."""
    root = Path(path)
    if root.is_dir():
        files = sorted(p for p in root.iterdir() if p.is_file() and is_data_part(p.name, p.stat().st_size))
        if not files:
            raise SegmentError(f"{root}: the folder holds no data files")
        parts: list[SegmentPart] = [LocalPart(p, str(p), p.stat().st_size) for p in files]
    elif root.is_file():
        parts = [LocalPart(root, str(root), root.stat().st_size)]
    else:
        raise SegmentError(f"{root}: no such file or folder")
    return SegmentSource(str(root), parts, fmt, dialect or CsvDialect())


def blob_segment(
    container: ContainerClient, path: str, fmt: Format | None = None, dialect: CsvDialect | None = None
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
            part = BlobPart(container, path, props.size, props.etag)
            return SegmentSource(location, [part], fmt, dialect or CsvDialect())
    prefix = path.rstrip("/") + "/" if path else ""
    try:
        blobs = sorted(
            (b for b in container.list_blobs(name_starts_with=prefix) if is_data_part(b.name, b.size)),
            key=lambda b: b.name,
        )
    except ResourceNotFoundError:
        raise SegmentError(f"{location}: the container does not exist") from None
    if not blobs:
        raise SegmentError(f"{location}: no such blob, and no data blobs under that prefix")
    parts: list[SegmentPart] = [BlobPart(container, b.name, b.size, b.etag) for b in blobs]
    return SegmentSource(location, parts, fmt, dialect or CsvDialect())
