"""A Delta table as a segment: the `deltalake` package (delta-rs) reads the table's log at its latest
version (or a given one) and names the data files of that version (delta_log, in a process of its own);
those Parquet files are then read like any Parquet part, each blob pinned to its etag.

In blob storage the log is downloaded (every blob under `_delta_log/`, pinned to its etag) into a
temporary folder and delta-rs reads it there: the storage account is reached through the app's own
client and credential (a connection string, Azurite, a managed identity), with nothing to configure
twice, and the data files go through the same ranged reads as every Parquet part. Data files are never
rewritten in place (a new version adds new files), so a run reads one version however many commits
land while it runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.sources.errors import SegmentError, SegmentUnavailable, reading_blob
from shared.sources.parts import BlobPart, LocalPart, SegmentPart
from shared.sources.segments import SegmentSource

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

LOG_FOLDER = "_delta_log/"
# A commit of the log: 20 digits, the version (https://github.com/delta-io/delta/blob/master/PROTOCOL.md#delta-log-entries).
_COMMIT = re.compile(r"(?:^|/)_delta_log/(\d{20})\.json$")
_PARTITION_COLUMN = "a partition column of the Delta table (its values are in folder names, not in the data files)"
# Reading a log takes well under a second; a hung reader must not hold the run.
_LOG_SECONDS = 300


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
    table = _table_files(str(path), str(path), version)
    parts: list[SegmentPart] = []
    for name in table.files:
        file = path / name
        if not file.is_file():
            raise SegmentUnavailable(f"{path}: data file {name} of version {table.version} is missing (vacuumed?)")
        parts.append(LocalPart(file, str(file), file.stat().st_size))
    return _segment(str(path), parts, table, None)


def blob_delta_segment(container: ContainerClient, folder: str, version: int | None = None) -> SegmentSource:
    """A Delta table in blob storage (`folder`: the prefix holding `_delta_log/`), at `version` (None:
    the latest)."""
    prefix = folder.rstrip("/") + "/" if folder else ""
    location = f"{container.container_name}/{prefix}"
    with reading_blob(location):
        blobs = {b.name: b for b in container.list_blobs(name_starts_with=prefix)}
    log = [b for name, b in blobs.items() if name.startswith(prefix + LOG_FOLDER) and b.size]
    if not log:
        raise SegmentError(f"{location}: no Delta log ({LOG_FOLDER}) in the folder")
    with tempfile.TemporaryDirectory(prefix="delta-log-") as copy:
        for blob in log:
            target = Path(copy, blob.name[len(prefix) :])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(_download(container, blob.name, blob.etag))
        table = _table_files(copy, location, version)
    commit = next((b for b in log if b.name == f"{prefix}{LOG_FOLDER}{table.version:020d}.json"), None)
    parts: list[SegmentPart] = []
    for name in table.files:
        data = blobs.get(prefix + name)
        if data is None:
            raise SegmentUnavailable(f"{location}: data file {name} of version {table.version} is missing")
        parts.append(BlobPart(container, data.name, data.size, data.etag))
    return _segment(location, parts, table, commit.etag if commit is not None else None)


def _segment(location: str, parts: list[SegmentPart], table: TableFiles, commit: str | None) -> SegmentSource:
    """The segment of the table's data files, named by its version (and its commit's etag in storage,
    so a table written again from scratch is not taken for the one read before)."""
    version = f"delta v{table.version}" + (f" ({commit})" if commit else "")
    # A partition column's values are in the files' folder names, not in the files (not read yet).
    absent = dict.fromkeys(table.partition_columns, _PARTITION_COLUMN)
    return SegmentSource(location, parts, "parquet", table_version=version, absent_columns=absent)


@dataclass(frozen=True)
class TableFiles:
    """A version of a Delta table: its number, its data files (relative to its folder) and partition columns."""

    version: int
    files: list[str]
    partition_columns: list[str]


def _table_files(uri: str, location: str, version: int | None) -> TableFiles:
    """The table's version and files, read by delta_log in a process of its own (see there why)."""
    # Run as a script, not a module of the package: the child needs deltalake only, not all of `shared`.
    script = str(Path(__file__).with_name("delta_log.py"))
    command = [sys.executable, script, uri, "" if version is None else str(version)]
    # The child imports as this process does (the Functions worker adds the app's packages to sys.path itself).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    done = subprocess.run(command, capture_output=True, env=env, timeout=_LOG_SECONDS, check=False)  # noqa: S603
    try:
        found = json.loads(done.stdout)
    except ValueError:
        last = (done.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise SegmentError(f"{location}: the Delta log could not be read: {last}") from None
    if "error" in found:
        raise SegmentError(f"{location}: {found['error']}")
    return TableFiles(int(found["version"]), list(found["files"]), list(found["partition_columns"]))


def _download(container: ContainerClient, name: str, etag: str | None) -> bytes:
    from azure.core import MatchConditions

    with reading_blob(name):
        return container.download_blob(name, etag=etag, match_condition=MatchConditions.IfNotModified).readall()
