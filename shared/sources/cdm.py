"""Common Data Model folders (model.json), as Dynamics 365 Customer Insights exports them to Blob Storage or
ADLS Gen2: `<container>/CustomerInsights_<id>/<destination>/<entity>/YYYY/MM/DD/HHMM/<entity>_<n>.csv`, with
one model.json at the destination level listing each entity's attributes (the column names) and its
partitions (absolute URLs of the CSV files).

A small typed reader of model.json (https://learn.microsoft.com/common-data-model/model-json): Microsoft's
commondatamodel-objectmodel package resolves whole CDM corpora through its own storage adapters and
asynchronous API, far more than the flat list of attributes and partitions a segment needs."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import orjson

from shared.sources.csv_dialect import CsvDialect
from shared.sources.errors import SegmentError
from shared.sources.parts import DEFAULT_FOLDER_MARKER, BlobPart, LocalPart, SegmentPart
from shared.sources.segments import SegmentSource

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

MODEL_FILE = DEFAULT_FOLDER_MARKER
MAX_MODEL_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class CdmPartition:
    """One data file of an entity: its absolute URL and how its CSV is written."""

    name: str
    location: str
    dialect: CsvDialect


@dataclass(frozen=True)
class CdmEntity:
    """An entity of a model.json: its attribute names in column order and its partitions in order."""

    name: str
    attributes: tuple[str, ...]
    partitions: tuple[CdmPartition, ...]


def is_cdm_model(data: bytes) -> bool:
    """Whether a model.json is a Common Data Model folder's (it lists entities), not some other marker."""
    try:
        model = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(model, dict) and isinstance(model.get("entities"), list)


def read_entity(name: str, data: bytes, entity: str | None) -> CdmEntity:
    """The entity `entity` of the model.json `name` (the only one when None); a file that is not a
    model.json, or lacks the entity, is refused naming the file."""
    try:
        model = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SegmentError(f"{name}: not JSON ({exc.msg} at line {exc.lineno}), so not a model.json") from None
    entities = model.get("entities") if isinstance(model, dict) else None
    if not isinstance(entities, list):
        raise SegmentError(f"{name}: no 'entities' list, so not a Common Data Model model.json")
    local = {
        e.get("name"): e for e in entities if isinstance(e, dict) and e.get("$type", "LocalEntity") == "LocalEntity"
    }
    names = ", ".join(sorted(str(n) for n in local)) or "none"
    if entity is None:
        if len(local) != 1:
            raise SegmentError(f"{name}: name the entity to export (entities: {names})")
        entity = str(next(iter(local)))
    if entity not in local:
        raise SegmentError(f"{name}: no entity {entity!r} (entities: {names})")
    return _entity(name, local[entity])


def _entity(name: str, data: dict[str, Any]) -> CdmEntity:
    entity = str(data["name"])
    attributes = tuple(str(a.get("name", "")) for a in data.get("attributes") or [] if isinstance(a, dict))
    if not attributes or not all(attributes):
        raise SegmentError(f"{name}: entity {entity!r} lists no attributes (or one without a name)")
    partitions = []
    if not data.get("partitions"):
        raise SegmentError(f"{name}: entity {entity!r} lists no partitions")
    for item in data.get("partitions") or []:
        if not isinstance(item, dict) or not isinstance(item.get("location"), str):
            raise SegmentError(f"{name}: entity {entity!r} has a partition without a location")
        partitions.append(CdmPartition(str(item.get("name", "")), item["location"], _dialect(name, item, attributes)))
    return CdmEntity(entity, attributes, tuple(partitions))


def _dialect(name: str, partition: dict[str, Any], attributes: tuple[str, ...]) -> CsvDialect:
    """The CSV dialect of a partition's fileFormatSettings (columnHeaders false unless stated)."""
    settings = partition.get("fileFormatSettings") or {}
    kind = settings.get("$type", "CsvFormatSettings")
    if kind != "CsvFormatSettings":
        raise SegmentError(f"{name}: partition {partition.get('name')!r} is {kind}; only CSV partitions are read")
    if settings.get("quoteStyle", "QuoteStyle.Csv") != "QuoteStyle.Csv":
        raise SegmentError(f"{name}: partition {partition.get('name')!r}: only QuoteStyle.Csv is read")
    encoding = str(settings.get("encoding", "UTF-8")).replace("-", "").lower()
    if encoding != "utf8":
        raise SegmentError(f"{name}: partition {partition.get('name')!r} is {settings['encoding']}; only UTF-8 is read")
    header = bool(settings.get("columnHeaders", False))
    return CsvDialect(header, None if header else attributes, None, '"', str(settings.get("delimiter", ",")))


def entity_dialect(name: str, entity: CdmEntity) -> CsvDialect:
    """The one dialect of all the entity's partitions (a segment is read in one dialect)."""
    dialects = {p.dialect for p in entity.partitions}
    if len(dialects) > 1:
        raise SegmentError(f"{name}: the partitions of {entity.name!r} are not all written alike")
    return dialects.pop()


def blob_of(location: str, container: str, folder: str, account: str | None) -> str | None:
    """The blob a partition URL names, when it lies in `container` under `folder` (model.json's folder,
    ending with "/") of the storage account `account`; None when it lies anywhere else."""
    url = urlsplit(location)
    if url.scheme not in ("https", "http") or not url.netloc:
        return None
    parts = [unquote(p) for p in url.path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    host_account = url.netloc.split(".", 1)[0]
    if parts[:1] == [account] and host_account != account:  # path-style (Azurite): /<account>/<container>/...
        parts = parts[1:]
    elif account and host_account != account:
        return None
    if len(parts) < 2 or parts[0] != container:
        return None
    blob = "/".join(parts[1:])
    return blob if blob.startswith(folder) else None


def local_file_of(location: str, folder: Path) -> Path | None:
    """The local file a partition URL names: the same path relative to the folder holding model.json,
    found after the URL's last path segment named like that folder; None when there is none."""
    parts = [unquote(p) for p in urlsplit(location).path.split("/") if p]
    if any(p in (".", "..") for p in parts) or folder.name not in parts:
        return None
    start = len(parts) - parts[::-1].index(folder.name)
    return folder.joinpath(*parts[start:]) if start < len(parts) else None


def cdm_blob_segment(container: ContainerClient, folder: str, entity: str | None) -> SegmentSource:
    """The entity's partitions listed by `<folder>/model.json`, each blob pinned to its etag; a listed
    partition that is missing, or lies outside the folder, fails before anything is read."""
    from azure.core.exceptions import ResourceNotFoundError

    folder = folder.rstrip("/") + "/" if folder else ""
    model_name = folder + MODEL_FILE
    where = f"{container.container_name}/{model_name}"
    try:
        model_blob = container.get_blob_client(model_name)
        downloader = model_blob.download_blob(max_concurrency=1)
        if downloader.size > MAX_MODEL_BYTES:
            raise SegmentError(f"{where}: larger than {MAX_MODEL_BYTES:,} bytes: is this a model.json?")
        data, etag = downloader.readall(), downloader.properties.etag
    except ResourceNotFoundError:
        raise SegmentError(f"{where}: not found (a CDM folder's model.json)") from None
    cdm = read_entity(where, data, entity)
    account = getattr(container, "account_name", None)
    names = []
    for partition in cdm.partitions:
        blob = blob_of(partition.location, container.container_name, folder, account)
        if blob is None:
            raise SegmentError(
                f"{where}: partition {partition.name!r} lies outside {container.container_name}/{folder}"
            )
        names.append(blob)
    listed = {b.name: b for b in container.list_blobs(name_starts_with=folder)}
    missing = [n for n in names if n not in listed]
    if missing:
        raise SegmentError(f"{where}: listed partition(s) missing: {', '.join(missing[:5])}")
    parts: list[SegmentPart] = [BlobPart(container, n, listed[n].size, listed[n].etag) for n in names]
    source = SegmentSource(f"{where}#{cdm.name}", parts, "csv", entity_dialect(where, cdm))
    source.metadata = f"{where} (etag {etag})"
    return source


def cdm_local_segment(folder: Path, entity: str | None) -> SegmentSource:
    """The entity's partitions listed by `<folder>/model.json`, found under the local folder."""
    model = folder / MODEL_FILE
    try:
        data = model.read_bytes()
    except OSError as exc:
        raise SegmentError(f"{model}: cannot be read ({exc.strerror or exc})") from None
    cdm = read_entity(str(model), data, entity)
    parts: list[SegmentPart] = []
    for partition in cdm.partitions:
        path = local_file_of(partition.location, folder)
        if path is None:
            raise SegmentError(f"{model}: partition {partition.name!r} lies outside the folder {folder.name}")
        if not path.is_file():
            raise SegmentError(f"{model}: listed partition missing: {path}")
        parts.append(LocalPart(path, str(path), path.stat().st_size))
    source = SegmentSource(f"{model}#{cdm.name}", parts, "csv", entity_dialect(str(model), cdm))
    source.metadata = str(model)
    return source


def governs_local(folder: Path) -> bool:
    """Whether a local folder is a CDM folder: it holds a model.json listing entities."""
    model = folder / MODEL_FILE
    return model.is_file() and model.stat().st_size <= MAX_MODEL_BYTES and is_cdm_model(model.read_bytes())


def governs_blobs(container: ContainerClient, folder: str) -> bool:
    """Whether the blobs under `folder` are a CDM folder: it holds a model.json listing entities."""
    from azure.core.exceptions import ResourceNotFoundError

    name = (folder.rstrip("/") + "/" if folder else "") + MODEL_FILE
    try:
        downloader = container.get_blob_client(name).download_blob(max_concurrency=1)
    except ResourceNotFoundError:
        return False
    return downloader.size <= MAX_MODEL_BYTES and is_cdm_model(downloader.readall())


def model_folder(name: str) -> str:
    """The folder (ending with "/") of a model.json blob name ("" at the container's root)."""
    folder = posixpath.dirname(name)
    return folder + "/" if folder else ""
