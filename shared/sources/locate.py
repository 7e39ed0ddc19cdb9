"""Finding a segment's current blobs in storage: one named blob, the newest set of data blobs under a prefix
(every part of the newest folder), or the newest folder of parts that a marker file declares complete."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from shared.sources.cdm import MODEL_FILE, cdm_blob_segment, model_folder, model_json_segment
from shared.sources.cdm_manifest import is_manifest_name
from shared.sources.csv_dialect import CsvDialect
from shared.sources.delta import blob_delta_segment, commit_version, has_delta_log
from shared.sources.errors import SegmentError, SegmentUnavailable
from shared.sources.parts import DEFAULT_FOLDER_MARKER, BlobPart, Format, SegmentPart, is_data_part
from shared.sources.segments import SegmentSource, blob_segment

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient

# blob: one named blob; newest: the newest set of data blobs under a prefix (every part of the newest
# folder); folder: every data blob of the newest folder under a prefix that holds the marker file.
LocateMode = Literal["blob", "newest", "folder"]


@dataclass(frozen=True)
class SegmentLocator:
    """Where a segment lives in blob storage and how its files are read."""

    container: str
    mode: LocateMode = "blob"
    blob: str | None = None  # mode "blob" only
    prefix: str | None = None  # modes "newest" and "folder" (ends with "/")
    marker: str = DEFAULT_FOLDER_MARKER  # mode "folder" only
    # None: from each file's name (folder mode: a Delta table, or a CDM folder, when the folder is one)
    format: Format | Literal["cdm", "delta"] | None = None
    entity: str | None = None  # format cdm: the entity of model.json to read (None: its only one)
    dialect: CsvDialect = field(default_factory=CsvDialect)
    version: int | None = None  # a Delta table's version to read (None: the latest, or the commit that fired)

    @property
    def location(self) -> str:
        """container/blob or container/prefix, as error messages name the segment."""
        return f"{self.container}/{self.blob or self.prefix}"


def locate_segment(service: BlobServiceClient, locator: SegmentLocator, hint: str | None = None) -> SegmentSource:
    """The segment's current blobs, each pinned to its etag. In folder mode `hint` names the folder to read
    (a blob trigger has just seen its marker); without it the newest complete folder is read. A folder
    holding a Delta table is read at the version of the commit the hint names, else the latest. The other
    modes ignore the hint and read what is there now."""
    from azure.core.exceptions import ResourceNotFoundError

    container = service.get_container_client(locator.container)
    try:
        if locator.mode == "blob":
            if locator.format == "cdm":
                blob = str(locator.blob)
                return cdm_blob_segment(container, model_folder(blob), locator.entity, posixpath.basename(blob))
            return _named_blob(container, locator)
        if locator.mode == "newest":
            return _newest_set(container, locator)
        if locator.format == "delta" or (locator.format is None and has_delta_log(container, str(locator.prefix))):
            return _delta_table(container, locator, hint)
        folder = hint or _newest_complete_folder(container, locator)
        if locator.format == "cdm" or (locator.format is None and is_manifest_name(locator.marker)):
            return cdm_blob_segment(container, folder, locator.entity, locator.marker)
        # A folder whose marker is a model.json listing entities is a CDM folder, read as it says.
        if locator.format is None and locator.marker == MODEL_FILE:
            cdm = model_json_segment(container, folder, locator.entity)
            if cdm is not None:
                return cdm
        return blob_segment(container, folder, _part_format(locator), locator.dialect)
    except ResourceNotFoundError:
        raise SegmentUnavailable(f"{locator.location}: not found") from None


def _delta_table(container: ContainerClient, locator: SegmentLocator, hint: str | None) -> SegmentSource:
    """The Delta table at the prefix, at the export's version, else the version whose commit fired the
    trigger, else the latest."""
    commit = commit_version(hint) if hint else None
    version = locator.version if locator.version is not None else commit[1] if commit else None
    return blob_delta_segment(container, str(locator.prefix), version)


def _part_format(locator: SegmentLocator) -> Format | None:
    """The format each file is read in. A CDM folder and a Delta table are read whole, in folder mode."""
    if locator.format == "cdm":
        raise SegmentError(
            f"{locator.location}: a CDM folder is read in folder mode (or name its model.json or manifest)"
        )
    if locator.format == "delta":
        raise SegmentError(f"{locator.location}: a Delta table is read in folder mode, its prefix the table's folder")
    return locator.format


def _named_blob(container: ContainerClient, locator: SegmentLocator) -> SegmentSource:
    name = str(locator.blob)
    props = container.get_blob_client(name).get_blob_properties()
    part = BlobPart(container, name, props.size, props.etag)
    return SegmentSource(locator.location, [part], _part_format(locator), locator.dialect)


def _newest_set(container: ContainerClient, locator: SegmentLocator) -> SegmentSource:
    """The newest complete set under the prefix: every data blob of the folder that holds the newest data
    blob (a run written as several parts), or that blob alone when it lies right under the prefix (a
    producer writing one file a run next to earlier runs' files)."""
    prefix = str(locator.prefix)
    blobs = [b for b in container.list_blobs(name_starts_with=prefix) if is_data_part(b.name, b.size)]
    if not blobs:
        raise SegmentUnavailable(f"{locator.location}: no data blobs under the prefix")
    newest = max(blobs, key=lambda b: (b.last_modified, b.name))
    folder = posixpath.dirname(newest.name) + "/"
    if not folder.startswith(prefix) or folder == prefix:
        chosen, location = [newest], newest.name
    else:
        chosen, location = sorted((b for b in blobs if b.name.startswith(folder)), key=lambda b: b.name), folder
    parts: list[SegmentPart] = [BlobPart(container, b.name, b.size, b.etag) for b in chosen]
    return SegmentSource(f"{locator.container}/{location}", parts, _part_format(locator), locator.dialect)


def _newest_complete_folder(container: ContainerClient, locator: SegmentLocator) -> str:
    """The folder (ending with "/") whose marker file is the newest under the locator's prefix."""
    markers = [
        b for b in container.list_blobs(name_starts_with=locator.prefix) if posixpath.basename(b.name) == locator.marker
    ]
    if not markers:
        raise SegmentUnavailable(f"{locator.container}/{locator.prefix}: no complete folder yet (no {locator.marker})")
    newest = max(markers, key=lambda b: (b.last_modified, b.name))
    return posixpath.dirname(newest.name) + "/"
