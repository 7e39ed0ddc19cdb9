"""App settings, read from the environment (app settings in Azure, local.settings.json locally)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from shared.klaviyo import DEFAULT_BASE_URL

RUNS_QUEUE = "export-runs"


@dataclass(frozen=True)
class Settings:
    klaviyo_base_url: str = DEFAULT_BASE_URL
    storage_connection: str = ""
    segments_connection: str = ""
    reports_container: str = "reports"
    segments_container: str = "segments"
    key_vault_url: str = ""
    secret_cache_seconds: float = 300.0
    local_api_key: str = ""
    upload_concurrency: int = 6
    klaviyo_read_timeout: float = 60.0
    run_time_budget: float = 540.0  # a little under the Consumption plan's 10-minute limit

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        storage = env.get("AzureWebJobsStorage", "")
        return cls(
            klaviyo_base_url=env.get("KLAVIYO_BASE_URL") or DEFAULT_BASE_URL,
            storage_connection=storage,
            segments_connection=env.get("SegmentsStorage") or storage,
            reports_container=env.get("REPORTS_CONTAINER") or "reports",
            segments_container=env.get("SEGMENTS_CONTAINER") or "segments",
            key_vault_url=env.get("KEY_VAULT_URL", ""),
            secret_cache_seconds=float(env.get("SECRET_CACHE_SECONDS") or 300),
            local_api_key=env.get("LOCAL_KLAVIYO_API_KEY", ""),
            upload_concurrency=int(env.get("UPLOAD_CONCURRENCY") or 6),
            klaviyo_read_timeout=float(env.get("KLAVIYO_TIMEOUT_SECONDS") or 60),
            run_time_budget=float(env.get("RUN_TIME_BUDGET_SECONDS") or 540),
        )
