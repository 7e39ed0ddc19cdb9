"""Shared fixtures: Azurite once per session, a Klaviyo simulator per test, and helpers to run exports."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import orjson
import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.control import ADMIN, Services, encode_principal, use_services
from shared.control.auth import CONTRIBUTOR
from shared.engine import ExportSpec, RejectsFile, RunReport, run_export
from shared.klaviyo import KlaviyoClient
from shared.mapping import FieldMapping
from shared.sources import blob_segment
from tests.api_contract import Exchange, check_exchange
from tools.azurite import Azurite
from tools.functions_host import FUNCTIONS, LocalFunctionsHost
from tools.keyvault_sim import LocalKeyVault
from tools.klaviyo_sim import KlaviyoSimulator, SimulatorConfig
from tools.queue_worker import WorkerConfig

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
def env(monkeypatch, klaviyo: KlaviyoSimulator, azurite) -> None:
    """The environment the command line reads: the simulator's address and key, and Azurite."""
    monkeypatch.setenv("KLAVIYO_BASE_URL", klaviyo.url)
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)


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


# -- the Functions app, called through its user functions ------------------------------------------------
SECRET = "klaviyo-main"
ADMIN_HEADERS = {"x-ms-client-principal": encode_principal("ada@contoso.example", ADMIN)}
CONTRIB_HEADERS = {"x-ms-client-principal": encode_principal("cole@contoso.example", CONTRIBUTOR)}
NOBODY_HEADERS = {"x-ms-client-principal": encode_principal("nina@contoso.example", "Reader")}


@pytest.fixture(scope="module")
def vault() -> Iterator[LocalKeyVault]:
    with LocalKeyVault() as local_vault:
        local_vault.set_secret(SECRET, API_KEY)
        yield local_vault


class App:
    """Calls the app's user functions the way the host would; checks every HTTP exchange against the
    OpenAPI document."""

    def __init__(self, services: Services, segments: str, config: WorkerConfig | None = None) -> None:
        self.services, self.segments = services, segments
        self.config = config  # what a worker process needs to be another instance of this app
        self.host = LocalFunctionsHost(services)
        self.functions = self.host.user
        self.exchanges: set[Exchange] = set()

    def http(
        self,
        function: str,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        **route: str,
    ) -> tuple[int, Any, func.HttpResponse]:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
        headers = headers or ADMIN_HEADERS
        request = func.HttpRequest(
            method, f"http://localhost:7071/api/{path}", headers=headers, route_params=route, body=data
        )
        response = self.functions[function](request)
        route_template = FUNCTIONS[function].get_trigger().route
        self.exchanges.add(check_exchange(method, route_template, route, headers, data, response))
        body = response.get_body()
        # JSON answers parsed; a page or a downloaded CSV file as it is.
        payload = (orjson.loads(body) if response.mimetype == "application/json" else body) if body else None
        return response.status_code, payload, response

    def drain_queue(self) -> int:
        """Delivers every queued run message to the queue function (as the host would)."""
        return self.host.deliver_queue()

    def put_connection(self, name: str = "main", **fields: Any) -> Any:
        body = {
            "display_name": "Main Klaviyo",
            "secret_name": SECRET,
            "usable_by": "contributors",
            "privacy_consent": True,
            **fields,
        }
        return self.http("connections", "PUT", f"connections/{name}", body, name=name)

    def put_export(self, name: str, list_id: str, segment: dict[str, Any], **fields: Any) -> Any:
        body = {"connection": "main", "list_id": list_id, "segment": {"container": self.segments, **segment}, **fields}
        return self.http("exports", "PUT", f"exports/{name}", body, name=name)

    def upload(self, blob: str, data: bytes) -> None:
        self.services.blobs.get_blob_client(self.segments, blob).upload_blob(data, overwrite=True)


AUTH_SETTINGS = ("LOCAL_AUTH_BYPASS_ROLE", "WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME", "WEBSITE_AUTH_ENABLED")


def build_app(azurite: Azurite, klaviyo: KlaviyoSimulator, vault: LocalKeyVault) -> App:
    """The app's services on Azurite (tables, queue and containers of their own), the simulator and the vault."""
    tag = uuid.uuid4().hex[:8]
    config = WorkerConfig(
        azurite.connection_string,
        klaviyo.url,
        vault.url,
        vault.ca_cert_path,
        table_prefix=f"t{tag}",
        reports_container=f"reports-{tag}",
        segments_container=f"segments-{tag}",
    )
    services = config.services()
    try:
        services.queue.create_queue()
    except Exception:
        services.queue.clear_messages()
    BlobServiceClient.from_connection_string(azurite.connection_string).create_container(config.segments_container)
    use_services(services)
    return App(services, config.segments_container, config)


@pytest.fixture
def app(azurite: Azurite, klaviyo: KlaviyoSimulator, vault: LocalKeyVault, monkeypatch) -> Iterator[App]:
    for name in AUTH_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    yield build_app(azurite, klaviyo, vault)
    use_services(None)
