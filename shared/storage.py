"""Blob storage: clients from a connection string, and where run reports are kept."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from azure.core.exceptions import ResourceExistsError

from shared.report import RejectsFile, RunReport

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

log = logging.getLogger(__name__)


def blob_service(connection_string: str) -> BlobServiceClient:
    from azure.storage.blob import BlobServiceClient

    if not connection_string:
        raise ValueError("no storage connection string: set AzureWebJobsStorage or pass --connection-string")
    return BlobServiceClient.from_connection_string(connection_string)


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
