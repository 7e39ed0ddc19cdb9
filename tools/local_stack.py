"""The local stack in one object: Azurite, the Klaviyo simulator and the local Key Vault, with the
app's services pointed at them (used by the demo and the local Functions host).

`python -m tools.local_stack upload FILE [BLOB]` puts a segment file into the segments container of
the account in `AzureWebJobsStorage` (which `make host` prints), for trying the API locally."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient

from shared.control import ADMIN, Services, encode_principal, use_services
from shared.secrets import KeyVaultSecrets
from shared.settings import Settings, StorageConnection
from tools.azurite import Azurite
from tools.keyvault_sim import LocalKeyVault, StaticTokenCredential
from tools.klaviyo_sim import KlaviyoSimulator, SimulatorConfig
from tools.segment_gen import upload_segment

# The simulator's key: it opens only this local simulator, never a Klaviyo account (not a secret).
API_KEY = "pk_local_simulator_only_0000"
SECRET_NAME = "klaviyo-api-key"
SAMPLE_BLOB = "demo/vip-customers.csv"
SAMPLE_ROWS = 1_000


class LocalStack(contextlib.AbstractContextManager["LocalStack"]):
    def __init__(self, processing_seconds: float = 0.2) -> None:
        self._exit = contextlib.ExitStack()
        self.azurite = Azurite()
        self.klaviyo = KlaviyoSimulator(SimulatorConfig(processing_seconds=processing_seconds))
        self.vault = LocalKeyVault()
        self.services: Services
        self.list_id = ""

    def __enter__(self) -> LocalStack:
        try:
            self._start()
        except BaseException:  # a failed or interrupted start (SIGTERM) stops what it had started
            self._exit.close()
            self.azurite.stop()  # Azurite's process exists before its context is entered
            raise
        return self

    def _start(self) -> None:
        self._exit.enter_context(self.azurite)
        self._exit.enter_context(self.klaviyo)
        self._exit.enter_context(self.vault)
        self.klaviyo.add_api_key(API_KEY)
        self.list_id = self.klaviyo.create_list("VIP customers")
        self.vault.set_secret(SECRET_NAME, API_KEY)
        settings = Settings(
            storage=StorageConnection.from_string(self.azurite.connection_string),
            klaviyo_base_url=self.klaviyo.url,
            key_vault_url=self.vault.url,
        )
        # The real SecretClient, told to trust the local vault's test CA (production keeps the defaults).
        secrets = KeyVaultSecrets(self.vault.url, StaticTokenCredential(), **self.vault.client_kwargs())
        self.services = Services.from_settings(settings, secrets)
        with contextlib.suppress(Exception):
            self.services.queue.create_queue()
        with contextlib.suppress(Exception):
            self.services.segments.create_container(settings.segments_container)
        use_services(self.services)

    def __exit__(self, *exc: Any) -> None:
        use_services(None)
        self._exit.close()

    def add_sample_segment(self) -> str:
        """A small synthetic segment (a few invalid and duplicate rows among them) for trying things."""
        container = self.services.settings.segments_container
        upload_segment(self.services.segments.get_blob_client(container, SAMPLE_BLOB), SAMPLE_ROWS, seed=2026)
        return f"{container}/{SAMPLE_BLOB}"

    def describe(self, host_url: str) -> str:
        principal = encode_principal("admin@contoso.example", ADMIN)
        container = self.services.settings.segments_container
        return "\n".join(
            [
                f"local Functions host  {host_url}/api/",
                f"console               {host_url}/api/console  (open it in a browser; sign in locally as a role)",
                f"Azurite               {self.azurite.connection_string}",
                f"Klaviyo simulator     {self.klaviyo.url} (list {self.list_id}, API key {API_KEY})",
                f"Key Vault             {self.vault.url} (secret {SECRET_NAME} holds the simulator's key)",
                f"segments container    {container} (watched: a new or overwritten blob fires segment_dropped)",
                f"sample segment        {container}/{SAMPLE_BLOB} ({SAMPLE_ROWS:,} synthetic profiles)",
                f"state                 in memory and in {self.azurite.location}: all gone when the host stops",
                "for another shell (local values only: the simulator's key opens no Klaviyo account):",
                f"  export PRINCIPAL={principal}   # an Admin, as App Service Authentication sends it",
                f"  export LIST_ID={self.list_id}",
                f"  export AzureWebJobsStorage='{self.azurite.connection_string}'",
                f"  export KLAVIYO_BASE_URL={self.klaviyo.url}",
                f"  export KLAVIYO_API_KEY={API_KEY}",
            ]
        )


def upload(connection_string: str, container: str, path: Path, blob: str) -> str:
    """Uploads (or overwrites) one segment file; returns where it went."""
    service = BlobServiceClient.from_connection_string(connection_string)
    with contextlib.suppress(ResourceExistsError):
        service.create_container(container)
    with path.open("rb") as data:
        service.get_blob_client(container, blob).upload_blob(data, overwrite=True)
    return f"{container}/{blob}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.local_stack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    put = commands.add_parser("upload", help="upload a segment file to the local stack's segments container")
    put.add_argument("file", type=Path)
    put.add_argument("blob", nargs="?", help="the blob's name (default: the file's name)")
    put.add_argument("--container", default=os.environ.get("SEGMENTS_CONTAINER", "segments"))
    args = parser.parse_args(argv)
    connection_string = os.environ.get("AzureWebJobsStorage")  # noqa: SIM112 (the Functions setting's name)
    if not connection_string:
        print("AzureWebJobsStorage is not set: export it as `make host` prints it", file=sys.stderr)
        return 2
    if not args.file.is_file():
        print(f"{args.file}: no such file", file=sys.stderr)
        return 2
    where = upload(connection_string, args.container, args.file, args.blob or args.file.name)
    print(f"uploaded {args.file.stat().st_size:,} bytes to {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
