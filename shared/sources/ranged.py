"""Random access to a segment part: a Parquet reader seeks to its footer and to each column chunk, so a
blob is read in ranges, each pinned to the etag seen when listing it (never two versions mixed)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from shared.sources.errors import reading_blob
from shared.sources.parts import BlobPart, LocalPart, SegmentPart

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class BlobRangeFile(io.RawIOBase):
    """A seekable read-only file over a blob: each read is one ranged download at the pinned etag."""

    def __init__(self, part: BlobPart) -> None:
        self._part, self._at = part, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._part.size}[whence]
        self._at = max(0, base + offset)
        return self._at

    def readinto(self, target: WriteableBuffer) -> int:
        view = memoryview(target)
        length = min(len(view), self._part.size - self._at)
        if length <= 0:
            return 0
        data = self._download(self._at, length)
        view[: len(data)] = data
        self._at += len(data)
        return len(data)

    def _download(self, offset: int, length: int) -> bytes:
        from azure.core import MatchConditions

        part = self._part
        with reading_blob(part.name):
            downloader = part.container.download_blob(
                part.name,
                offset=offset,
                length=length,
                etag=part.version,
                match_condition=MatchConditions.IfNotModified,
                max_concurrency=4,
            )
            return downloader.readall()


def random_access(part: SegmentPart) -> io.RawIOBase | io.BufferedIOBase:
    """The part opened for reading at any position (a local file, or a blob read in ranges)."""
    if isinstance(part, LocalPart):
        return part.path.open("rb")
    if isinstance(part, BlobPart):
        return BlobRangeFile(part)
    raise TypeError(f"{part.name}: cannot be read at random positions")
