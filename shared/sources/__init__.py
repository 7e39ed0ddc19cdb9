"""Reading segments: blob and local files, byte streams, CSV and JSON Lines readers and their fast paths,
Parquet files and Delta tables."""

from shared.sources.cdm import cdm_blob_segment, cdm_local_segment, governs_blobs, governs_local, is_cdm_metadata
from shared.sources.chunks import RowChunk, TableChunk
from shared.sources.csv_dialect import CsvDialect
from shared.sources.csv_header import looks_like_data
from shared.sources.delta import (
    blob_delta_segment,
    commit_version,
    has_delta_log,
    is_local_delta,
    local_delta_segment,
)
from shared.sources.errors import SegmentError, SegmentUnavailable
from shared.sources.locate import LocateMode, SegmentLocator, locate_segment
from shared.sources.parts import DEFAULT_FOLDER_MARKER, BlobPart, is_data_name, is_data_part
from shared.sources.read_progress import ReadProgress
from shared.sources.segments import SegmentSource, blob_segment, local_segment

__all__ = [
    "BlobPart",
    "CsvDialect",
    "DEFAULT_FOLDER_MARKER",
    "LocateMode",
    "ReadProgress",
    "RowChunk",
    "SegmentError",
    "SegmentLocator",
    "SegmentSource",
    "SegmentUnavailable",
    "TableChunk",
    "blob_delta_segment",
    "blob_segment",
    "cdm_blob_segment",
    "cdm_local_segment",
    "commit_version",
    "governs_blobs",
    "governs_local",
    "has_delta_log",
    "is_local_delta",
    "local_delta_segment",
    "is_cdm_metadata",
    "is_data_name",
    "is_data_part",
    "local_segment",
    "locate_segment",
    "looks_like_data",
]
