"""The files of a segment: local files and blobs as parts to open, which names hold data, and their format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from shared.sources.errors import SegmentError, reading_blob
from shared.sources.streams import ByteStream, ChunkStream

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

Format = Literal["csv", "jsonl", "parquet"]
# The file whose arrival says a folder segment is complete, unless the segment names another.
DEFAULT_FOLDER_MARKER = "model.json"
# Files a CDP writes next to the data parts of a folder segment (names starting with "_" or "." are never
# data either: Spark's _SUCCESS, _committed_*, _started_*, and Hadoop's hidden .crc checksums).
NON_DATA_NAMES = {DEFAULT_FOLDER_MARKER}
NON_DATA_SUFFIXES = (".cdm.json", ".crc")
# Folders whose files are a table's metadata or a job's scratch space, never data.
NON_DATA_FOLDERS = {"_delta_log", "_temporary"}
_SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


class SegmentPart(Protocol):
    """One file of a segment: a local file or a blob pinned to the etag seen when listing it."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str | None: ...

    @property
    def size(self) -> int: ...

    def open(self) -> ByteStream: ...


@dataclass(frozen=True)
class LocalPart:
    """A local file of a segment."""

    path: Path
    name: str
    size: int
    version: str | None = None

    def open(self) -> ByteStream:
        return self.path.open("rb")


@dataclass(frozen=True)
class BlobPart:
    """A blob of a segment, read at the version it had when it was listed."""

    container: ContainerClient
    name: str
    size: int
    version: str | None  # the etag: reads fail rather than mix two versions of the blob

    def open(self) -> ByteStream:
        from azure.core import MatchConditions

        with reading_blob(self.name):
            downloader = self.container.download_blob(
                self.name,
                etag=self.version,
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=1,
            )
        return ChunkStream(downloader.chunks())


def detect_format(name: str) -> Format:
    """The format from a file name: .csv, .tsv, .jsonl, .ndjson, optionally ending in .gz; .parquet."""
    lowered = name.lower().removesuffix(".gz")
    for suffix, fmt in _SUFFIXES.items():
        if lowered.endswith(suffix):
            return fmt
    raise SegmentError(f"{name}: cannot tell the format from the name; give it (csv, jsonl or parquet)")


def is_data_name(name: str) -> bool:
    """Whether a file of a folder segment holds data: not hidden, not a marker or a producer's metadata
    (a Delta table's _delta_log/, Common Data Model's model.json and *.cdm.json, Spark's _SUCCESS)."""
    *folders, base = name.split("/")
    lowered = base.lower()
    return (
        bool(base)
        and not base.startswith((".", "_"))
        and lowered not in NON_DATA_NAMES
        and not lowered.endswith(NON_DATA_SUFFIXES)
        and not NON_DATA_FOLDERS.intersection(folders)
    )


def is_data_part(name: str, size: int) -> bool:
    """Whether a listed file is a data part of a segment: a data name and not empty (a zero-byte file
    is a producer's marker, never a part)."""
    return size > 0 and is_data_name(name)
