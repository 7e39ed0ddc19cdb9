"""The app's clients (tables, queue, blobs, Key Vault, Klaviyo), created lazily once per process so
that importing function_app needs no credentials."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from shared.control.auth import running_in_azure
from shared.control.store import Store
from shared.klaviyo import KlaviyoClient
from shared.secrets import KeyVaultSecrets, SecretError
from shared.settings import RUNS_QUEUE, STORAGE_SETTING, Settings
from shared.storage import blob_service, queue_client, table_service

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient
    from azure.storage.queue import QueueClient

log = logging.getLogger(__name__)


class SecretSource(Protocol):
    """Where connections' API keys are read from, by secret name."""

    def get(self, name: str) -> str: ...


class LocalKeySecrets:
    """Local development only: one API key from LOCAL_KLAVIYO_API_KEY for every connection."""

    def __init__(self, key: str) -> None:
        if running_in_azure():
            raise SecretError(
                "LOCAL_KLAVIYO_API_KEY is for local development and is refused in Azure: set KEY_VAULT_URL"
            )
        self._key = key

    def get(self, name: str) -> str:
        log.warning("using LOCAL_KLAVIYO_API_KEY instead of Key Vault secret %r (local development only)", name)
        return self._key


@dataclass
class Services:
    """Everything a trigger or an API handler works with: the settings and one client of each kind."""

    settings: Settings
    store: Store
    queue: QueueClient
    blobs: BlobServiceClient
    segments: BlobServiceClient
    secrets: SecretSource
    klaviyo: Callable[[str], KlaviyoClient]

    @classmethod
    def from_settings(cls, settings: Settings, secrets: SecretSource | None = None) -> Services:
        from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy

        if not settings.storage.configured:
            raise RuntimeError(f"set {STORAGE_SETTING} (a connection string) or {STORAGE_SETTING}__accountName")
        if secrets is None:
            if settings.key_vault_url:
                secrets = KeyVaultSecrets(settings.key_vault_url, ttl_seconds=settings.secret_cache_seconds)
            elif settings.local_api_key:
                secrets = LocalKeySecrets(settings.local_api_key)
            else:
                raise RuntimeError("KEY_VAULT_URL is not set")
        # The Functions queue trigger expects Base64 message bodies.
        queue = queue_client(
            settings.storage,
            RUNS_QUEUE,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )
        blobs = blob_service(settings.storage)
        separate = settings.segments_storage.configured and settings.segments_storage != settings.storage
        segments = blob_service(settings.segments_storage) if separate else blobs

        store = Store(table_service(settings.storage))
        return cls(settings, store, queue, blobs, segments, secrets, settings.klaviyo_client)


_services: Services | None = None
_lock = threading.Lock()


def get_services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = Services.from_settings(Settings.from_env())
        return _services


def use_services(services: Services | None) -> None:
    """Replaces the process's services (tests point them at local servers)."""
    global _services
    with _lock:
        _services = services
