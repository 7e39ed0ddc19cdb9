"""The Klaviyo API client: transport, retries, pagination, errors and rate limits."""

from shared.klaviyo.client import CONNECT_TIMEOUT_SECONDS, DEFAULT_READ_TIMEOUT_SECONDS, KlaviyoClient
from shared.klaviyo.errors import InvalidPayload, KlaviyoError
from shared.klaviyo.jobs import ImportJob
from shared.klaviyo.limits import (
    DEFAULT_BASE_URL,
    MAX_JOB_BYTES,
    MAX_PAGE_SIZE,
    MAX_PROFILE_BYTES,
    MAX_PROFILES_PER_JOB,
    MAX_SUBSCRIBE_PROFILES,
    MAX_UNSUBSCRIBE_PROFILES,
)
from shared.klaviyo.pacing import rate_limit_scale

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_BASE_URL",
    "DEFAULT_READ_TIMEOUT_SECONDS",
    "ImportJob",
    "InvalidPayload",
    "KlaviyoClient",
    "KlaviyoError",
    "MAX_JOB_BYTES",
    "MAX_PAGE_SIZE",
    "MAX_PROFILES_PER_JOB",
    "MAX_PROFILE_BYTES",
    "MAX_SUBSCRIBE_PROFILES",
    "MAX_UNSUBSCRIBE_PROFILES",
    "rate_limit_scale",
]
