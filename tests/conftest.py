"""Shared fixtures: Azurite once per session, a Klaviyo simulator per test, and helpers to run exports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.exporter import ExportSpec, run_export
from shared.klaviyo import KlaviyoClient
from shared.mapping import FieldMapping
from shared.report import RejectsFile, RunReport
from shared.segments import blob_segment
from tools.azurite import Azurite
from tools.klaviyo_sim import KlaviyoSimulator, SimulatorConfig

API_KEY = "pk_test_simulator_key_0001"


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    with Azurite(in_memory=True) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def blob_service(azurite: Azurite) -> BlobServiceClient:
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@pytest.fixture
def container(blob_service: BlobServiceClient) -> Iterator[ContainerClient]:
    client = blob_service.create_container(f"segments-{uuid.uuid4().hex[:12]}")
    yield client
    client.delete_container()


@pytest.fixture
def klaviyo() -> Iterator[KlaviyoSimulator]:
    with KlaviyoSimulator(SimulatorConfig(processing_seconds=0.02, seed=1)) as simulator:
        simulator.add_api_key(API_KEY)
        yield simulator


@pytest.fixture
def list_id(klaviyo: KlaviyoSimulator) -> str:
    return klaviyo.create_list("Test segment")


@pytest.fixture
def client(klaviyo: KlaviyoSimulator) -> Iterator[KlaviyoClient]:
    api = KlaviyoClient(API_KEY, klaviyo.url, timeout=(2.0, 10.0))
    yield api
    api.close()


class Exporter:
    """Uploads a segment blob and runs the engine on it, keeping the rejects file for assertions."""

    def __init__(self, container: ContainerClient, client: KlaviyoClient, list_id: str, tmp_path: Path) -> None:
        self.container, self.client, self.list_id, self.tmp_path = container, client, list_id, tmp_path
        self.rejects_rows: list[list[str]] = []

    def upload(self, name: str, data: bytes) -> str:
        self.container.upload_blob(name, data, overwrite=True)
        return name

    def run(self, path: str, mapping: FieldMapping | None = None, **spec: object) -> RunReport:
        import csv

        source = blob_segment(self.container, path)
        rejects = RejectsFile()
        report = run_export(
            source,
            ExportSpec("test-export", self.list_id, mapping or FieldMapping(), **spec),
            self.client,
            rejects=rejects,
        )
        with open(rejects.path, newline="", encoding="utf-8") as f:
            self.rejects_rows = list(csv.reader(f))[1:]
        rejects.discard()
        return report


@pytest.fixture
def exporter(container: ContainerClient, client: KlaviyoClient, list_id: str, tmp_path: Path) -> Exporter:
    return Exporter(container, client, list_id, tmp_path)


def member_emails(klaviyo: KlaviyoSimulator, list_id: str) -> set[str]:
    return {m["email"] for m in klaviyo.list_members(list_id) if m.get("email")}
