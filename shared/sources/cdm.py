"""Common Data Model folders, as Dynamics 365 Customer Insights exports them to Blob Storage or ADLS Gen2:
`<container>/CustomerInsights_<id>/<destination>/<entity>/YYYY/MM/DD/HHMM/<entity>_<n>.csv`, with one
model.json at the destination level listing each entity's attributes (the column names) and its partitions
(absolute URLs of the CSV files); or a folder governed by the newer `<name>.manifest.cdm.json` (cdm_manifest).
Either metadata file names the exact files of the segment, in order, and is never read as data.

Small typed readers of model.json (https://learn.microsoft.com/common-data-model/model-json) and manifests:
Microsoft's commondatamodel-objectmodel package resolves whole CDM corpora through its own storage adapters
and asynchronous API, far more than the flat list of attributes and partitions a segment needs."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from shared.sources.cdm_manifest import is_manifest_name, read_manifest_entity, relative_path
from shared.sources.cdm_model import entity_dialect, is_cdm_model, read_entity
from shared.sources.errors import SegmentError
from shared.sources.parts import DEFAULT_FOLDER_MARKER, BlobPart, LocalPart, SegmentPart
from shared.sources.segments import SegmentSource

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

MODEL_FILE = DEFAULT_FOLDER_MARKER
MAX_MODEL_BYTES = 64 * 1024 * 1024
DEFAULT_MANIFEST = "default.manifest.cdm.json"


def blob_of(location: str, container: str, folder: str, account: str | None) -> str | None:
    """The blob a partition URL names, when it lies in `container` under `folder` (model.json's folder,
    ending with "/") of the storage account `account`; None when it lies anywhere else. A manifest's
    location relative to its folder, or an adapter path (`adls:/...`, from the container's root), is
    resolved the same way."""
    relative = relative_path(location)
    if relative is not None:
        return folder + relative
    url = urlsplit(location)
    if url.scheme and not url.netloc:  # an adapter path
        adapter = posixpath.normpath(url.path).lstrip("/")
        return adapter if adapter.startswith(folder) and ".." not in adapter.split("/") else None
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
    found after the URL's last path segment named like that folder (a manifest's relative location: below
    the folder); None when there is none."""
    relative = relative_path(location)
    if relative is not None:
        return folder.joinpath(*relative.split("/"))
    parts = [unquote(p) for p in urlsplit(location).path.split("/") if p]
    if any(p in (".", "..") for p in parts) or folder.name not in parts:
        return None
    start = len(parts) - parts[::-1].index(folder.name)
    return folder.joinpath(*parts[start:]) if start < len(parts) else None


def cdm_blob_segment(
    container: ContainerClient, folder: str, entity: str | None, metadata: str | None = None
) -> SegmentSource:
    """The entity's partitions listed by the folder's metadata file (`metadata`, else the folder's model.json
    or its one manifest), each blob pinned to its etag; a listed partition that is missing, or lies outside
    the folder, fails before anything is read. `folder` may name the metadata file itself."""
    if metadata is None and is_cdm_metadata(folder):
        folder, metadata = posixpath.split(folder)
    folder = folder.rstrip("/") + "/" if folder else ""
    model = None if metadata else _cdm_model(container, folder)
    name = folder + (MODEL_FILE if model else metadata or _one_blob_manifest(container, folder) or MODEL_FILE)
    where = f"{container.container_name}/{name}"
    data, etag = model or _download(container, name, where, "the CDM folder's metadata file")
    return _blob_entity_segment(container, folder, name, data, etag, entity)


def model_json_segment(container: ContainerClient, folder: str, entity: str | None) -> SegmentSource | None:
    """The entity's partitions when the folder's model.json lists entities (read once, both to tell and to
    read); None when the folder has no such model.json."""
    folder = folder.rstrip("/") + "/" if folder else ""
    model = _cdm_model(container, folder)
    if model is None:
        return None
    return _blob_entity_segment(container, folder, folder + MODEL_FILE, *model, entity)


def _blob_entity_segment(
    container: ContainerClient, folder: str, name: str, data: bytes, etag: str, entity: str | None
) -> SegmentSource:
    """The segment of the entity that the metadata blob `name` (its bytes and etag read) describes."""
    where = f"{container.container_name}/{name}"
    if is_manifest_name(name):

        def load(relative: str) -> bytes:
            document = f"{container.container_name}/{folder}{relative}"
            return _download(container, folder + relative, document, f"the entity document {where} names")[0]

        def list_files(root: str) -> list[str]:
            return [
                b.name[len(folder) :] for b in container.list_blobs(name_starts_with=folder + (root and root + "/"))
            ]

        cdm = read_manifest_entity(where, data, entity, load, list_files)
    else:
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


def _download(container: ContainerClient, name: str, where: str, what: str) -> tuple[bytes, str]:
    """A metadata blob's bytes and etag; one that is missing, or too large to be metadata, is refused."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        downloader = container.get_blob_client(name).download_blob(max_concurrency=1)
        if downloader.size > MAX_MODEL_BYTES:
            raise SegmentError(f"{where}: larger than {MAX_MODEL_BYTES:,} bytes: is this CDM metadata?")
        return downloader.readall(), str(downloader.properties.etag)
    except ResourceNotFoundError:
        raise SegmentError(f"{where}: not found ({what})") from None


def cdm_local_segment(folder: Path, entity: str | None, metadata: str | None = None) -> SegmentSource:
    """The entity's partitions listed by the folder's metadata file (`metadata`, else its model.json or its
    one manifest), found under the local folder. `folder` may name the metadata file itself."""
    if metadata is None and folder.is_file() and is_cdm_metadata(folder.name):
        folder, metadata = folder.parent, folder.name
    model = folder / (metadata or local_metadata(folder) or MODEL_FILE)
    data = _read_local(model, "the CDM folder's metadata file")
    if is_manifest_name(model.name):

        def load(relative: str) -> bytes:
            return _read_local(folder.joinpath(*relative.split("/")), f"the entity document {model.name} names")

        def list_files(root: str) -> list[str]:
            below = folder.joinpath(*root.split("/"))
            return [p.relative_to(folder).as_posix() for p in below.rglob("*") if p.is_file()]

        cdm = read_manifest_entity(str(model), data, entity, load, list_files)
    else:
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


def _read_local(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise SegmentError(f"{path}: not found ({what})")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SegmentError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def local_metadata(folder: Path) -> str | None:
    """The name of the file governing a local CDM folder: its model.json when that lists entities, else
    its one manifest; None when it is no CDM folder (several manifests are refused: name one)."""
    model = folder / MODEL_FILE
    if model.is_file() and model.stat().st_size <= MAX_MODEL_BYTES and is_cdm_model(model.read_bytes()):
        return MODEL_FILE
    if not folder.is_dir():
        return None
    return _one_manifest(str(folder), [p.name for p in folder.iterdir() if p.is_file()])


def blob_metadata(container: ContainerClient, folder: str) -> str | None:
    """The name of the file governing the blobs right under `folder` (model.json listing entities, else
    the one manifest); None when they are no CDM folder."""
    folder = folder.rstrip("/") + "/" if folder else ""
    return MODEL_FILE if _cdm_model(container, folder) else _one_blob_manifest(container, folder)


def _cdm_model(container: ContainerClient, folder: str) -> tuple[bytes, str] | None:
    """The folder's model.json (its bytes and etag, read once) when it lists entities; None when there is
    none, or it is some other file of that name."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        downloader = container.get_blob_client(folder + MODEL_FILE).download_blob(max_concurrency=1)
        if downloader.size <= MAX_MODEL_BYTES and is_cdm_model(data := downloader.readall()):
            return data, str(downloader.properties.etag)
    except ResourceNotFoundError:
        pass
    return None


def _one_blob_manifest(container: ContainerClient, folder: str) -> str | None:
    names = [b.name[len(folder) :] for b in container.walk_blobs(name_starts_with=folder, delimiter="/")]
    return _one_manifest(f"{container.container_name}/{folder}", names)


def _one_manifest(where: str, names: list[str]) -> str | None:
    """The folder's one manifest; among several, default.manifest.cdm.json (the spec's convention)."""
    manifests = sorted(n for n in names if is_manifest_name(n))
    if DEFAULT_MANIFEST in manifests:
        return DEFAULT_MANIFEST
    if len(manifests) > 1:
        raise SegmentError(f"{where}: several CDM manifests ({', '.join(manifests)}): name the one to read")
    return manifests[0] if manifests else None


def governs_local(folder: Path) -> bool:
    """Whether a local folder is a CDM folder (it holds a model.json listing entities, or one manifest), or
    the path is such a metadata file."""
    return (folder.is_file() and is_cdm_metadata(folder.name)) or local_metadata(folder) is not None


def governs_blobs(container: ContainerClient, folder: str) -> bool:
    """Whether the blobs under `folder` are a CDM folder (a model.json listing entities, or one manifest), or
    `folder` names such a metadata file."""
    return is_cdm_metadata(folder) or blob_metadata(container, folder) is not None


def is_cdm_metadata(name: str) -> bool:
    """Whether a file name is a CDM folder's metadata file (model.json or a manifest)."""
    return posixpath.basename(name) == MODEL_FILE or is_manifest_name(name)


def model_folder(name: str) -> str:
    """The folder (ending with "/") of a metadata blob name ("" at the container's root)."""
    folder = posixpath.dirname(name)
    return folder + "/" if folder else ""
