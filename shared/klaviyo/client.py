"""The Klaviyo API client: the calls the export and the sync make, on lists, import jobs and list members."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from shared.klaviyo.errors import KlaviyoError
from shared.klaviyo.jobs import ImportJob
from shared.klaviyo.limits import (
    DEFAULT_BASE_URL,
    MAX_FILTER_VALUES,
    MAX_LIST_RELATIONSHIP_IDS,
    MAX_PAGE_SIZE,
    PUBLISHED_LIMITS,
    REVISION,
    EndpointGroup,
    Limit,
)
from shared.klaviyo.pacing import endpoint_pacers
from shared.klaviyo.pagination import paged
from shared.klaviyo.subscriptions import Subscriptions
from shared.klaviyo.transport import CallStats, Transport

_JOBS = "/api/profile-bulk-import-jobs"
_FULL_PAGE = {"page[size]": str(MAX_PAGE_SIZE)}
# The profile collections are read for their identifiers only.
_IDENTIFIED_PROFILES = {**_FULL_PAGE, "fields[profile]": "email,phone_number,external_id"}


_LIST_MEMBER_FILTERS = ("email", "phone_number")
_PROFILE_FILTERS = ("email", "phone_number", "external_id")


class _WithoutQueries(logging.Filter):
    """Cuts the query string off the URLs urllib3 logs (a retry's warning names the URL): a lookup's
    query holds the emails and phone numbers looked up."""

    _QUERY = re.compile(r"\?\S*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._QUERY.sub("?…", a) if isinstance(a, str) else a for a in record.args)
        return True


for _logger in ("urllib3.connectionpool", "urllib3.util.retry"):
    logging.getLogger(_logger).addFilter(_WithoutQueries())


def _any_filter(field: str, values: list[str]) -> str:
    """Klaviyo's filter for profiles whose `field` is one of `values`: any(field,["a","b"]), each value
    a quoted string with its quotes and backslashes escaped."""
    if not 1 <= len(values) <= MAX_FILTER_VALUES:
        raise ValueError(f"a lookup takes from 1 to {MAX_FILTER_VALUES} values, not {len(values)}")
    return f"any({field},{orjson.dumps(values).decode()})"


# Seconds to wait for a connection, and for an answer (a large import job can take a while to be accepted).
CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_READ_TIMEOUT_SECONDS = 60.0


class KlaviyoClient:
    """Klaviyo's API as the app uses it. Thread-safe for concurrent job uploads.

    `limits` replaces the published pace of the endpoint groups it names (see EndpointGroup);
    `rate_limit_scale` multiplies every group's pace (infinite: no pace of our own)."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        revision: str = REVISION,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT_SECONDS, DEFAULT_READ_TIMEOUT_SECONDS),
        max_retries: int = 8,
        pool_size: int = 16,
        limits: dict[str, Limit] | None = None,
        rate_limit_scale: float = 1.0,
    ) -> None:
        if not api_key:
            raise KlaviyoError("no Klaviyo API key was given", fatal=True)
        pacers = endpoint_pacers({**PUBLISHED_LIMITS, **(limits or {})}, rate_limit_scale)
        self.transport = Transport(
            api_key, base_url, pacers, revision=revision, timeout=timeout, max_retries=max_retries, pool_size=pool_size
        )
        # Bulk subscribe and unsubscribe, and the scope check before them (see subscriptions.py).
        self.subscriptions = Subscriptions(self.transport)

    @property
    def stats(self) -> CallStats:
        """Requests sent and retries by cause, for the run's report."""
        return self.transport.stats

    def close(self) -> None:
        self.transport.close()

    # -- lists -------------------------------------------------------------------------------
    def get_list(self, list_id: str) -> dict[str, Any]:
        """The list, or a fatal error saying why it cannot be used (bad key, scope, unknown id)."""
        return self.transport.call("GET", f"/api/lists/{list_id}", EndpointGroup.LISTS, what=f"list {list_id}")["data"]

    def check_import_access(self, list_id: str) -> dict[str, Any]:
        """Fails fast, before anything is sent, when the key or the list will not work."""
        found = self.get_list(list_id)
        self.transport.call(
            "GET",
            _JOBS,
            EndpointGroup.JOBS,
            params={"page[size]": "1"},
            what="import jobs (needs profiles:read and lists:read)",
        )
        return found

    # -- bulk import ---------------------------------------------------------------------------
    def create_import_job(self, body: bytes | memoryview) -> ImportJob:
        """Posts one prepared bulk-import body (see batching.py); 400s raise InvalidPayload."""
        data = self.transport.call("POST", _JOBS, EndpointGroup.IMPORT, body=body, what="import job")
        return ImportJob.from_resource(data["data"])

    def get_import_job(self, job_id: str) -> ImportJob:
        data = self.transport.call("GET", f"{_JOBS}/{job_id}", EndpointGroup.JOB, what=f"import job {job_id}")
        return ImportJob.from_resource(data["data"])

    def recent_import_jobs(self, page_size: int = MAX_PAGE_SIZE) -> Iterator[ImportJob]:
        """The account's import jobs, newest first, a page (one call) at a time."""
        params = {"sort": "-created_at", "page[size]": str(page_size)}
        jobs = paged(self.transport, _JOBS, EndpointGroup.JOBS, params=params, what="import jobs")
        return map(ImportJob.from_resource, jobs)

    def unfinished_import_jobs(self) -> Iterator[ImportJob]:
        """The account's import jobs still queued or processing (every writer's), a page at a time."""
        params = {"filter": 'any(status,["queued","processing"])', "page[size]": str(MAX_PAGE_SIZE)}
        jobs = paged(self.transport, _JOBS, EndpointGroup.JOBS, params=params, what="unfinished import jobs")
        return map(ImportJob.from_resource, jobs)

    def import_errors(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The profiles a finished job failed to import, with Klaviyo's reason and payload."""
        path, what = f"{_JOBS}/{job_id}/import-errors", f"import errors of job {job_id}"
        errors = paged(self.transport, path, EndpointGroup.JOB_ERRORS, params=dict(_FULL_PAGE), what=what)
        return (error.get("attributes", {}) for error in errors)

    def import_job_profiles(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The profiles a job imported: (Klaviyo profile id, identifier attributes), 100 a call."""
        path, what = f"{_JOBS}/{job_id}/profiles", f"profiles of import job {job_id}"
        return self._identified_profiles(path, EndpointGroup.JOB_PROFILES, what)

    # -- list membership -------------------------------------------------------------------------
    def list_member_ids(self, list_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The list's members: (profile id, identifier attributes), 100 a call."""
        path, what = f"/api/lists/{list_id}/profiles", f"members of list {list_id}"
        return self._identified_profiles(path, EndpointGroup.LIST_MEMBERS, what)

    def list_members_by(self, list_id: str, field: str, values: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """The list's members whose `field` (email or phone_number) is one of `values` (at most 100):
        (profile id, identifier attributes). A value no member has is simply not in the answer."""
        if field not in _LIST_MEMBER_FILTERS:
            raise ValueError(f"list members can be looked up by {' or '.join(_LIST_MEMBER_FILTERS)}, not {field}")
        path, what = f"/api/lists/{list_id}/profiles", f"members of list {list_id} by {field}"
        return self._identified_profiles(path, EndpointGroup.LIST_MEMBERS, what, _any_filter(field, values))

    def profiles_by(self, field: str, values: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        """The account's profiles whose `field` (email, phone_number or external_id) is one of
        `values` (at most 100): (profile id, identifier attributes)."""
        if field not in _PROFILE_FILTERS:
            raise ValueError(f"profiles can be looked up by {', '.join(_PROFILE_FILTERS)}, not {field}")
        what = f"profiles by {field}"
        return self._identified_profiles("/api/profiles", EndpointGroup.PROFILES, what, _any_filter(field, values))

    def _identified_profiles(
        self, path: str, group: str, what: str, filter_text: str | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        params = dict(_IDENTIFIED_PROFILES) | ({"filter": filter_text} if filter_text else {})
        profiles = paged(self.transport, path, group, params=params, what=what)
        return ((profile["id"], profile.get("attributes") or {}) for profile in profiles)

    def remove_from_list(
        self, list_id: str, profile_ids: list[str], on_removed: Callable[[int], None] | None = None
    ) -> int:
        """Takes profiles off a list (never deletes or unsubscribes them), 1,000 a call; returns how
        many were sent for removal. `on_removed` hears the count of each call as it succeeds."""
        for start in range(0, len(profile_ids), MAX_LIST_RELATIONSHIP_IDS):
            chunk = profile_ids[start : start + MAX_LIST_RELATIONSHIP_IDS]
            body = orjson.dumps({"data": [{"type": "profile", "id": pid} for pid in chunk]})
            self.transport.call(
                "DELETE",
                f"/api/lists/{list_id}/relationships/profiles",
                EndpointGroup.LIST_WRITES,
                body=body,
                what=f"removal of {len(chunk)} profiles from list {list_id}",
            )
            if on_removed is not None:
                on_removed(len(chunk))
        return len(profile_ids)
