"""The local stack in one object: Azurite, the Klaviyo simulator and the local Key Vault, with the
app's services pointed at them (used by the demo and the local Functions host)."""

from __future__ import annotations

import contextlib
from typing import Any

from shared.control import ADMIN, Services, encode_principal, use_services
from shared.secrets import KeyVaultSecrets
from shared.settings import Settings, StorageConnection
from tools.azurite import Azurite
from tools.keyvault_sim import LocalKeyVault, StaticTokenCredential
from tools.klaviyo_sim import KlaviyoSimulator, SimulatorConfig

API_KEY = "pk_local_simulator_only_0000"
SECRET_NAME = "klaviyo-api-key"


class LocalStack(contextlib.AbstractContextManager["LocalStack"]):
    def __init__(self, processing_seconds: float = 0.2) -> None:
        self._exit = contextlib.ExitStack()
        self.azurite = Azurite()
        self.klaviyo = KlaviyoSimulator(SimulatorConfig(processing_seconds=processing_seconds))
        self.vault = LocalKeyVault()
        self.services: Services
        self.list_id = ""

    def __enter__(self) -> LocalStack:
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
        return self

    def __exit__(self, *exc: Any) -> None:
        use_services(None)
        self._exit.close()

    def describe(self, host_url: str) -> str:
        principal = encode_principal("admin@contoso.example", ADMIN)
        return "\n".join(
            [
                f"local Functions host  {host_url}/api/",
                f"Azurite               {self.azurite.connection_string}",
                f"Klaviyo simulator     {self.klaviyo.url} (list {self.list_id})",
                f"Key Vault             {self.vault.url} (secret {SECRET_NAME})",
                f"segments container    {self.services.settings.segments_container}",
                "an Admin principal, as App Service Authentication would send it:",
                f"  export PRINCIPAL={principal}",
                f"  export LIST_ID={self.list_id}",
            ]
        )
