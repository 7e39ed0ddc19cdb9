"""App settings, read from the environment (app settings in Azure, local.settings.json locally)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.engine import DEFAULT_UPLOAD_THREADS
from shared.klaviyo import (
    CONNECT_TIMEOUT_SECONDS,
    DEFAULT_BASE_URL,
    DEFAULT_READ_TIMEOUT_SECONDS,
    KlaviyoClient,
    rate_limit_scale,
)
from shared.secrets import DEFAULT_TTL_SECONDS

RUNS_QUEUE = "export-runs"
# The app settings naming the storage accounts: the app's own (queue, tables, reports) and the segments'.
STORAGE_SETTING = "AzureWebJobsStorage"
SEGMENTS_STORAGE_SETTING = "SegmentsStorage"


@dataclass(frozen=True)
class StorageConnection:
    """One storage account, named the way a Functions `connection` names it: the setting `NAME` holds a
    connection string, or `NAME__accountName` (or `NAME__blobServiceUri`, `__queueServiceUri`,
    `__tableServiceUri`) locates the account for an identity: `NAME__credential=managedidentity` with
    `NAME__clientId` signs in as that user-assigned managed identity, anything else as
    DefaultAzureCredential."""

    setting: str = ""
    connection_string: str = field(default="", repr=False)  # may hold an account key
    blob_url: str = ""
    queue_url: str = ""
    table_url: str = ""
    managed_identity: bool = False
    client_id: str = ""

    @classmethod
    def from_string(cls, connection_string: str, setting: str = "") -> StorageConnection:
        return cls(setting, connection_string=connection_string)

    @classmethod
    def from_env(cls, setting: str, env: Mapping[str, str]) -> StorageConnection:
        if env.get(setting, "").strip():
            return cls.from_string(env[setting].strip(), setting)

        def value(suffix: str) -> str:
            return env.get(f"{setting}__{suffix}", "").strip()

        account = value("accountName")

        def endpoint(service: str) -> str:
            # Public cloud only; other clouds set the service URIs explicitly.
            return value(f"{service}ServiceUri") or (f"https://{account}.{service}.core.windows.net" if account else "")

        return cls(
            setting,
            blob_url=value("serviceUri") or endpoint("blob"),  # serviceUri: the blob-only form of older extensions
            queue_url=endpoint("queue"),
            table_url=endpoint("table"),
            managed_identity=value("credential").lower() == "managedidentity",
            client_id=value("clientId"),
        )

    @property
    def configured(self) -> bool:
        return bool(self.connection_string or self.blob_url or self.queue_url or self.table_url)

    def endpoint(self, service: str) -> str:
        """The account URL of `service` ('blob', 'queue', 'table') for an identity-based connection."""
        url = {"blob": self.blob_url, "queue": self.queue_url, "table": self.table_url}[service]
        if not url:
            name = self.setting or "the storage connection"
            raise ValueError(
                f"{name} has no {service} endpoint: set {name} (a connection string), {name}__accountName "
                f"or {name}__{service}ServiceUri"
            )
        return url


@dataclass(frozen=True)
class Settings:
    """The app's settings; each default here applies when its environment variable is unset or empty."""

    klaviyo_base_url: str = DEFAULT_BASE_URL
    storage: StorageConnection = StorageConnection(STORAGE_SETTING)
    segments_storage: StorageConnection = StorageConnection(SEGMENTS_STORAGE_SETTING)
    reports_container: str = "reports"
    segments_container: str = "segments"
    key_vault_url: str = ""
    secret_cache_seconds: float = DEFAULT_TTL_SECONDS
    local_api_key: str = field(default="", repr=False)
    upload_concurrency: int = DEFAULT_UPLOAD_THREADS
    klaviyo_read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS
    # Seconds a run may take in one invocation before it checkpoints and goes on in the next: a little
    # under the Consumption plan's 10-minute limit.
    run_time_budget: float = 540.0
    # A multiple of Klaviyo's published rate limits; infinity means the app sets no pace of its own.
    klaviyo_rate_limit_scale: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """The settings from the environment; a setting that is unset or empty keeps its default."""
        defaults = cls()
        storage = StorageConnection.from_env(STORAGE_SETTING, env)
        segments = StorageConnection.from_env(SEGMENTS_STORAGE_SETTING, env)
        return cls(
            klaviyo_base_url=env.get("KLAVIYO_BASE_URL") or defaults.klaviyo_base_url,
            storage=storage,
            segments_storage=segments if segments.configured else storage,
            reports_container=env.get("REPORTS_CONTAINER") or defaults.reports_container,
            segments_container=env.get("SEGMENTS_CONTAINER") or defaults.segments_container,
            key_vault_url=env.get("KEY_VAULT_URL", defaults.key_vault_url),
            secret_cache_seconds=float(env.get("SECRET_CACHE_SECONDS") or defaults.secret_cache_seconds),
            local_api_key=env.get("LOCAL_KLAVIYO_API_KEY", defaults.local_api_key),
            upload_concurrency=int(env.get("UPLOAD_CONCURRENCY") or defaults.upload_concurrency),
            klaviyo_read_timeout=float(env.get("KLAVIYO_TIMEOUT_SECONDS") or defaults.klaviyo_read_timeout),
            run_time_budget=float(env.get("RUN_TIME_BUDGET_SECONDS") or defaults.run_time_budget),
            klaviyo_rate_limit_scale=rate_limit_scale(env.get("KLAVIYO_RATE_LIMITS", "")),
        )

    def klaviyo_client(self, api_key: str) -> KlaviyoClient:
        """A Klaviyo client as these settings say (base URL, read timeout, pace): the app's and the CLI's."""
        return KlaviyoClient(
            api_key,
            self.klaviyo_base_url,
            timeout=(CONNECT_TIMEOUT_SECONDS, self.klaviyo_read_timeout),
            rate_limit_scale=self.klaviyo_rate_limit_scale,
        )
