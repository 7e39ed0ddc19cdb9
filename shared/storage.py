"""Storage clients from a connection string or a managed identity, and where run reports are kept."""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any, TypedDict

from azure.core.exceptions import ResourceExistsError

from shared.engine import RejectsFile, RunReport
from shared.settings import STORAGE_SETTING, StorageConnection

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueClient

log = logging.getLogger(__name__)


@functools.cache
def identity_credential(managed_identity: bool, client_id: str) -> TokenCredential:
    """One credential per process for each identity, shared by the blob, queue and table clients."""
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if managed_identity:
        return ManagedIdentityCredential(client_id=client_id or None)
    return DefaultAzureCredential()


def _credential(connection: StorageConnection) -> TokenCredential:
    return identity_credential(connection.managed_identity, connection.client_id)


def _require(connection: StorageConnection) -> None:
    if not connection.configured:
        name = connection.setting or STORAGE_SETTING
        raise ValueError(f"no storage connection: set {name} (a connection string) or {name}__accountName")


# The SDK's defaults fetch a blob's first 32 MB in one response and hold it as one bytes object,
# and read a stream of up to 64 MB whole before uploading it; a segment (and a sync state, both
# ways) passes as a stream, so smaller ranges and blocks keep the export's memory flat. Below 8 MB
# each request's overhead shows: Azurite spends twice the CPU serving a 100 MB blob in 4 MB ranges.
DOWNLOAD_RANGE_BYTES = 8 * 1024 * 1024
UPLOAD_BLOCK_BYTES = 4 * 1024 * 1024


class TransferSizes(TypedDict):
    """The blob client's transfer options this app sets (keyword arguments of BlobServiceClient)."""

    max_single_get_size: int
    max_chunk_get_size: int
    max_single_put_size: int
    max_block_size: int


_TRANSFER_SIZES = TransferSizes(
    max_single_get_size=DOWNLOAD_RANGE_BYTES,
    max_chunk_get_size=DOWNLOAD_RANGE_BYTES,
    max_single_put_size=UPLOAD_BLOCK_BYTES,
    max_block_size=UPLOAD_BLOCK_BYTES,
)


def blob_service(connection: StorageConnection) -> BlobServiceClient:
    from azure.storage.blob import BlobServiceClient

    _require(connection)
    if connection.connection_string:
        return BlobServiceClient.from_connection_string(connection.connection_string, **_TRANSFER_SIZES)
    return BlobServiceClient(connection.endpoint("blob"), credential=_credential(connection), **_TRANSFER_SIZES)


def queue_client(connection: StorageConnection, queue: str, **options: Any) -> QueueClient:
    from azure.storage.queue import QueueClient

    _require(connection)
    if connection.connection_string:
        return QueueClient.from_connection_string(connection.connection_string, queue, **options)
    return QueueClient(connection.endpoint("queue"), queue, credential=_credential(connection), **options)


def table_service(connection: StorageConnection) -> TableServiceClient:
    from azure.data.tables import TableServiceClient

    _require(connection)
    if connection.connection_string:
        return TableServiceClient.from_connection_string(connection.connection_string)
    return TableServiceClient(connection.endpoint("table"), credential=_credential(connection))


def split_blob_path(path: str) -> tuple[str, str]:
    """'container/blob/path' -> ('container', 'blob/path')."""
    container, _, blob = path.strip("/").partition("/")
    if not container:
        raise ValueError(f"{path!r} is not container/blob/path")
    return container, blob


def report_prefix(export_name: str, run_id: str) -> str:
    return f"{export_name}/{run_id}/"


def save_report(service: BlobServiceClient, container: str, report: RunReport, rejects: RejectsFile) -> str:
    """Writes report.json and rejects.csv under reports/<export>/<run id>/; returns the folder URL.
    Raises on failure: a run whose report could not be written must not pass for a success."""
    client = service.get_container_client(container)
    with contextlib.suppress(ResourceExistsError):
        client.create_container()
    prefix = report_prefix(report.export_name, report.run_id)
    rejects.close()
    with open(rejects.path, "rb") as data:
        client.upload_blob(prefix + "rejects.csv", data, overwrite=True)
    report.rejects_file = f"{container}/{prefix}rejects.csv"
    client.upload_blob(prefix + "report.json", report.to_json(), overwrite=True)
    return f"{container}/{prefix}"
