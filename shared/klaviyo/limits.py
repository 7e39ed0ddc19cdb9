"""What Klaviyo publishes and the client keeps to: the API's address and revision, payload sizes, request rates."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_BASE_URL = "https://a.klaviyo.com"
# The API revision every request names, so that Klaviyo's answers keep the shape this client reads.
REVISION = "2026-07-15"
JSON_API = "application/vnd.api+json"

MAX_PROFILES_PER_JOB = 10_000
# Klaviyo says 5 MB for a bulk import job; the decimal reading is the smaller, so the safe one.
MAX_JOB_BYTES = 5_000_000
MAX_PROFILE_BYTES = 100_000
# How many profiles one call that adds them to or removes them from a list may name.
MAX_LIST_RELATIONSHIP_IDS = 1_000
# How many profiles one bulk subscribe call, and one bulk unsubscribe call, may name.
MAX_SUBSCRIBE_PROFILES = 1_000
MAX_UNSUBSCRIBE_PROFILES = 100
# The largest page of a collection Klaviyo serves.
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class Limit:
    """A published rate limit: requests in any one second (the burst window) and in any one minute."""

    burst_per_second: int
    steady_per_minute: int


# Klaviyo's published limits per endpoint group (see README "Limits").
BULK_IMPORT = Limit(10, 150)
JOB_READS = Limit(10, 150)
LIST_READS = Limit(75, 750)
LIST_WRITES = Limit(10, 150)
# GET /api/profiles: not in ../shared/klaviyo-api.md; Klaviyo's tier L (75/s burst, 700/m steady), as its
# rate-limits guide lists the tiers: https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling
PROFILE_READS = Limit(75, 700)
# Values one any(field,[...]) filter may hold (a lookup by identifier asks for at most this many).
MAX_FILTER_VALUES = 100
SUBSCRIPTION_JOBS = Limit(75, 750)


class EndpointGroup(StrEnum):
    """The endpoints Klaviyo counts in a window of their own: the client paces each group apart.

    Reading the job list, one job and a job's errors are separate endpoints with a limit each, and
    their RateLimit headers differ, so each has its own group even where the published limit is the same."""

    IMPORT = "import"
    JOBS = "jobs"
    JOB = "job"
    JOB_ERRORS = "job_errors"
    JOB_PROFILES = "job_profiles"
    LISTS = "lists"
    LIST_MEMBERS = "list_members"
    LIST_WRITES = "list_writes"
    PROFILES = "profiles"
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"


PUBLISHED_LIMITS: Mapping[str, Limit] = {
    EndpointGroup.IMPORT: BULK_IMPORT,
    EndpointGroup.JOBS: JOB_READS,
    EndpointGroup.JOB: JOB_READS,
    EndpointGroup.JOB_ERRORS: JOB_READS,
    EndpointGroup.JOB_PROFILES: JOB_READS,
    EndpointGroup.LISTS: LIST_READS,
    EndpointGroup.LIST_MEMBERS: LIST_READS,
    EndpointGroup.LIST_WRITES: LIST_WRITES,
    EndpointGroup.PROFILES: PROFILE_READS,
    EndpointGroup.SUBSCRIBE: SUBSCRIPTION_JOBS,
    EndpointGroup.UNSUBSCRIBE: SUBSCRIPTION_JOBS,
}
