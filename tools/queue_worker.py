"""One more instance of the app's queue worker, in a process of its own: what a second Azure instance
is to the first. It takes run messages off the shared runs queue and hands each to the app's queue
function, as the Functions host does (a message is deleted once the function returns; one whose
function raised comes back after the visibility timeout).

`python -m tools.queue_worker CONFIG.json` with a WorkerConfig as JSON; tests start two of them on
the same Azurite to check what must hold across instances (one executing run per export, takeovers)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from azure.data.tables import TableServiceClient

from shared.control import Services, use_services
from shared.control.store import Store
from shared.klaviyo import KlaviyoClient
from shared.secrets import KeyVaultSecrets
from shared.settings import Settings, StorageConnection
from tools.keyvault_sim import StaticTokenCredential

# As host.json's queues.visibilityTimeout: a message whose function failed comes back after this.
VISIBILITY_SECONDS = 60


@dataclass(frozen=True)
class WorkerConfig:
    """Where an instance's services are: the storage account (and the tables' prefix, so tests can
    share one Azurite), the Klaviyo API, the Key Vault and its test CA."""

    connection_string: str
    klaviyo_url: str
    vault_url: str
    vault_ca_path: str
    table_prefix: str
    reports_container: str
    segments_container: str
    upload_concurrency: int = 6

    def services(self) -> Services:
        settings = Settings(
            storage=StorageConnection.from_string(self.connection_string),
            klaviyo_base_url=self.klaviyo_url,
            key_vault_url=self.vault_url,
            reports_container=self.reports_container,
            segments_container=self.segments_container,
            upload_concurrency=self.upload_concurrency,
        )
        vault = {"verify_challenge_resource": False, "connection_verify": self.vault_ca_path}
        secrets = KeyVaultSecrets(self.vault_url, StaticTokenCredential(), ttl_seconds=1.0, **vault)
        services = Services.from_settings(settings, secrets)
        table_service = TableServiceClient.from_connection_string(self.connection_string)
        services.store = Store(table_service, prefix=self.table_prefix)
        services.klaviyo = lambda key: KlaviyoClient(key, self.klaviyo_url, timeout=(2.0, 10.0))
        return services

    def save(self, path: Path) -> Path:
        path.write_bytes(orjson.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, path: Path) -> WorkerConfig:
        data: dict[str, Any] = orjson.loads(path.read_bytes())
        return cls(**data)


def serve(services: Services, poll_seconds: float = 0.2) -> None:
    """Delivers run messages to the queue function, one at a time, until the process is stopped."""
    from tools.functions_host import LocalFunctionsHost

    host = LocalFunctionsHost(services)
    while True:
        delivered = False
        for message in host.queue.receive_messages(max_messages=1, visibility_timeout=VISIBILITY_SECONDS):
            delivered = True
            try:
                host.deliver(message)
            except Exception as exc:  # as the host: the message comes back after its visibility timeout
                print(f"run_export failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        if not delivered:
            time.sleep(poll_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    services = WorkerConfig.load(args.config).services()
    use_services(services)
    print("worker ready", flush=True)
    serve(services)


if __name__ == "__main__":
    main()
