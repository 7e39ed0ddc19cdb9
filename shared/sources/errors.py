"""The errors of reading a segment: one that cannot be read at all, and data that could not be fetched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class SegmentError(Exception):
    """The segment cannot be read at all (a run-level error, with the file named)."""


class SegmentUnavailable(SegmentError):
    """The data could not be fetched (changed, deleted, storage failing): the run fails, it is not a
    configuration mistake."""


def storage_failure(name: str, exc: Exception) -> SegmentUnavailable | None:
    """The error to raise, naming the file, when reading the blob `name` failed with `exc`; None
    when `exc` is not a failure of Azure Storage."""
    # Imported here: reading local files must not need the Azure SDK loaded.
    from azure.core.exceptions import AzureError, ResourceModifiedError, ResourceNotFoundError

    if isinstance(exc, ResourceModifiedError):
        return SegmentUnavailable(f"{name}: the blob was deleted or changed while it was being read")
    if isinstance(exc, ResourceNotFoundError):
        return SegmentUnavailable(f"{name}: the blob was deleted while it was being read")
    if isinstance(exc, AzureError):
        return SegmentUnavailable(f"{name}: reading the blob failed: {exc.message}")
    return None


@contextmanager
def reading_blob(name: str) -> Iterator[None]:
    """Raises a failure of Azure Storage inside the block as storage_failure names it; other errors as they are."""
    try:
        yield
    except Exception as exc:
        failure = storage_failure(name, exc)
        if failure is None:
            raise
        raise failure from None
