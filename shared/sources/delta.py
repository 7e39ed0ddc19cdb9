"""A Delta table as a segment: the `deltalake` package (delta-rs) reads the table's log at its latest
version (or a given one) and names the data files of that version; those Parquet files are then read
like any Parquet part, each blob pinned to its etag.

In blob storage the log is downloaded (every blob under `_delta_log/`, pinned to its etag) into a
temporary folder and delta-rs reads it there: the storage account is reached through the app's own
client and credential (a connection string, Azurite, a managed identity), with nothing to configure
twice, and the data files go through the same ranged reads as every Parquet part. Data files are never
rewritten in place (a new version adds new files), so a run reads one version however many commits
land while it runs."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from shared.sources.errors import SegmentError, SegmentUnavailable, storage_failure
from shared.sources.parts import BlobPart, LocalPart, SegmentPart
from shared.sources.segments import SegmentSource

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient
    from deltalake import DeltaTable

LOG_FOLDER = "_delta_log/"
# A commit of the log: 20 digits, the version (https://github.com/delta-io/delta/blob/master/PROTOCOL.md#delta-log-entries).
_COMMIT = re.compile(r"(?:^|/)_delta_log/(\d{20})\.json$")
# Reader features whose tables read right from the data files the log lists; any other is refused.
_PARTITION_COLUMN = "a partition column of the Delta table (its values are in folder names, not in the data files)"
# variantType: a variant column maps to nothing (the type check refuses it), the others read as they are.
_READABLE_FEATURES = {"timestampNtz", "v2Checkpoint", "vacuumProtocolCheck", "typeWidening", "variantType"}


def commit_version(blob_name: str) -> tuple[str, int] | None:
    """(the table's folder, the version) when the blob is a commit of a Delta log, else None."""
    found = _COMMIT.search(blob_name)
    if found is None:
        return None
    return blob_name[: found.start() + (1 if found.group(0).startswith("/") else 0)], int(found.group(1))


def is_local_delta(path: Path) -> bool:
    return (path / LOG_FOLDER).is_dir()


def has_delta_log(container: ContainerClient, folder: str) -> bool:
    prefix = folder.rstrip("/") + "/" + LOG_FOLDER if folder else LOG_FOLDER
    return next(iter(container.list_blobs(name_starts_with=prefix, results_per_page=1)), None) is not None


def local_delta_segment(path: Path, version: int | None = None) -> SegmentSource:
    """A Delta table in a local folder, at `version` (None: the latest)."""
    table = _open_table(str(path), str(path), version)
    files = _data_files(table, str(path))
    parts: list[SegmentPart] = []
    for name in files:
        file = path / name
        if not file.is_file():
            raise SegmentUnavailable(f"{path}: data file {name} of version {table.version()} is missing (vacuumed?)")
        parts.append(LocalPart(file, str(file), file.stat().st_size))
    return _segment(str(path), parts, table, None)


def blob_delta_segment(container: ContainerClient, folder: str, version: int | None = None) -> SegmentSource:
    """A Delta table in blob storage (`folder`: the prefix holding `_delta_log/`), at `version` (None:
    the latest)."""
    prefix = folder.rstrip("/") + "/" if folder else ""
    location = f"{container.container_name}/{prefix}"
    try:
        blobs = {b.name: b for b in container.list_blobs(name_starts_with=prefix)}
    except Exception as exc:
        failure = storage_failure(location, exc)
        if failure is None:
            raise
        raise failure from None
    log = [b for name, b in blobs.items() if name.startswith(prefix + LOG_FOLDER) and b.size]
    if not log:
        raise SegmentError(f"{location}: no Delta log ({LOG_FOLDER}) in the folder")
    with tempfile.TemporaryDirectory(prefix="delta-log-") as copy:
        for blob in log:
            target = Path(copy, blob.name[len(prefix) :])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_download(container, blob.name, blob.etag))
        table = _open_table(copy, location, version)
        files = _data_files(table, location)
        commit = next((b for b in log if b.name == f"{prefix}{LOG_FOLDER}{table.version():020d}.json"), None)
    parts: list[SegmentPart] = []
    for name in files:
        data = blobs.get(prefix + name)
        if data is None:
            raise SegmentUnavailable(f"{location}: data file {name} of version {table.version()} is missing")
        parts.append(BlobPart(container, data.name, data.size, data.etag))
    return _segment(location, parts, table, commit.etag if commit is not None else None)


def _segment(location: str, parts: list[SegmentPart], table: DeltaTable, commit: str | None) -> SegmentSource:
    """The segment of the table's data files, named by its version (and its commit's etag in storage,
    so a table written again from scratch is not taken for the one read before)."""
    version = f"delta v{table.version()}" + (f" ({commit})" if commit else "")
    # A partition column's values are in the files' folder names, not in the files (not read yet).
    absent = {column: _PARTITION_COLUMN for column in table.metadata().partition_columns}
    return SegmentSource(location, parts, "parquet", table_version=version, absent_columns=absent)


def _open_table(uri: str, location: str, version: int | None) -> DeltaTable:
    """The table at the version, refused when reading its data files alone would not give its rows."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    try:
        table = DeltaTable(uri, version=version)
    except (DeltaError, OSError, ValueError) as exc:
        at = f"version {version}" if version is not None else "its latest version"
        raise SegmentError(f"{location}: the Delta table cannot be read at {at}: {exc}") from None
    protocol = table.protocol()
    unknown = sorted(set(protocol.reader_features or ()) - _READABLE_FEATURES - {"columnMapping", "deletionVectors"})
    if unknown:
        raise SegmentError(f"{location}: the Delta table uses reader feature(s) {', '.join(unknown)}, not supported")
    mode = table.metadata().configuration.get("delta.columnMapping.mode", "none")
    if mode != "none":
        raise SegmentError(
            f"{location}: the Delta table uses column mapping (mode {mode}): its files' column names are not "
            "the table's; not supported"
        )
    return table


def _data_files(table: DeltaTable, location: str) -> list[str]:
    """The data files of the table's version, relative to its folder, in name order."""
    actions = pa.table(table.get_add_actions(flatten=True))
    vectors = [name for name in actions.column_names if name.startswith("deletionVector")]
    if any(actions.column(name).null_count < actions.num_rows for name in vectors):
        raise SegmentError(
            f"{location}: version {table.version()} has deletion vectors (rows deleted without rewriting "
            "their files); not supported: run OPTIMIZE/REORG ... APPLY (PURGE) or turn them off"
        )
    return sorted(actions.column("path").to_pylist())


def _download(container: ContainerClient, name: str, etag: str | None) -> bytes:
    from azure.core import MatchConditions

    try:
        return container.download_blob(name, etag=etag, match_condition=MatchConditions.IfNotModified).readall()
    except Exception as exc:
        failure = storage_failure(name, exc)
        if failure is None:
            raise
        raise failure from None
