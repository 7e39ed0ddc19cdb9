"""App settings, read from the environment (app settings in Azure, local.settings.json locally)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from shared.klaviyo import DEFAULT_BASE_URL


@dataclass(frozen=True)
class Settings:
    klaviyo_base_url: str = DEFAULT_BASE_URL
    storage_connection: str = ""
    reports_container: str = "reports"
    key_vault_url: str = ""
    upload_concurrency: int = 6
    klaviyo_read_timeout: float = 60.0

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            klaviyo_base_url=env.get("KLAVIYO_BASE_URL") or DEFAULT_BASE_URL,
            storage_connection=env.get("AzureWebJobsStorage", ""),
            reports_container=env.get("REPORTS_CONTAINER") or "reports",
            key_vault_url=env.get("KEY_VAULT_URL", ""),
            upload_concurrency=int(env.get("UPLOAD_CONCURRENCY") or 6),
            klaviyo_read_timeout=float(env.get("KLAVIYO_TIMEOUT_SECONDS") or 60),
        )
