"""Reading segments: blob and local files, byte streams, CSV and JSON Lines readers and their fast paths."""

from shared.sources.csv_blocks import TableChunk
from shared.sources.locate import DEFAULT_FOLDER_MARKER, LocateMode, SegmentLocator, locate_segment
from shared.sources.segments import (
    BlobPart,
    RowChunk,
    SegmentError,
    SegmentSource,
    SegmentUnavailable,
    blob_segment,
    is_data_name,
    local_segment,
    looks_like_data,
)

__all__ = [
    "BlobPart",
    "DEFAULT_FOLDER_MARKER",
    "LocateMode",
    "RowChunk",
    "SegmentError",
    "SegmentLocator",
    "SegmentSource",
    "SegmentUnavailable",
    "TableChunk",
    "blob_segment",
    "is_data_name",
    "local_segment",
    "locate_segment",
    "looks_like_data",
]
