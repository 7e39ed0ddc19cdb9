"""Klaviyo API client: auth, JSON:API, retries, rate limits, bulk profile import jobs."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.klaviyo.errors import RETRY_STATUSES, KlaviyoError, error_for, is_challenge
from shared.klaviyo.jobs import ImportJob
from shared.klaviyo.limits import (
    BULK_IMPORT,
    DEFAULT_BASE_URL,
    JOB_READS,
    JSON_API,
    LIST_READS,
    LIST_WRITES,
    MAX_LIST_RELATIONSHIP_IDS,
    REVISION,
    Limit,
)
from shared.klaviyo.pacing import RATE_LIMITS_SETTING, pacer

log = logging.getLogger(__name__)

# The client retries 429s itself, through the rate limiter; urllib3 retries the rest.
_TRANSPORT_RETRY_STATUSES = tuple(s for s in RETRY_STATUSES if s != 429)
# How the report names the transport failures urllib3 retried.
_ERROR_NAMES = {
    "ReadTimeoutError": "timeout",
    "ConnectTimeoutError": "connect_timeout",
    "ProtocolError": "connection_lost",
    "NewConnectionError": "connection_refused",
}


class CallStats:
    """What the transport saw: retries by cause, requests sent; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n


class _ObservedRetry(Retry):
    """urllib3 Retry for server errors and lost connections that tells the run what was retried.

    429s are not retried here: a retry sent from inside urllib3 would bypass the rate limiter,
    which must count every request and hear of every throttle (see KlaviyoClient._call)."""

    RETRY_AFTER_STATUS_CODES = frozenset({503})
    stats: CallStats | None = None

    def new(self, **kw: Any) -> Retry:
        retry = super().new(**kw)
        retry.stats = self.stats  # type: ignore[attr-defined]
        return retry

    def get_retry_after(self, response: Any) -> float | None:
        # A little jitter on top of Retry-After, so the threads (and runs) told to wait together
        # do not all come back at once.
        seconds = super().get_retry_after(response)
        return None if seconds is None else seconds + random.uniform(0.05, 0.25 + 0.1 * seconds)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        if self.stats is not None:
            if response is not None and response.status:
                self.stats.add(f"retried_{response.status}")
            elif error is not None:
                self.stats.add(f"retried_{_ERROR_NAMES.get(type(error).__name__, type(error).__name__)}")
        return super().increment(method, url, response, error, _pool, _stacktrace)


class KlaviyoClient:
    """The only place that talks HTTP to Klaviyo. Thread-safe for concurrent job uploads."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        revision: str = REVISION,
        timeout: tuple[float, float] = (5.0, 60.0),
        max_retries: int = 8,
        pool_size: int = 16,
        limits: dict[str, Limit] | None = None,
        rate_limit_scale: float = 1.0,
    ) -> None:
        if not api_key:
            raise KlaviyoError("no Klaviyo API key was given", fatal=True)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_throttled = max_retries
        self.stats = CallStats()
        # One limiter per window Klaviyo counts in: reading the job list, one job and a job's
        # errors are separate endpoints with a limit each, and their RateLimit headers differ.
        limits = {
            "import": BULK_IMPORT,
            "jobs": JOB_READS,
            "job": JOB_READS,
            "job_errors": JOB_READS,
            "job_profiles": JOB_READS,
            "lists": LIST_READS,
            "list_members": LIST_READS,
            "list_writes": LIST_WRITES,
            **(limits or {}),
        }
        self.limiters = {group: pacer(limit, rate_limit_scale) for group, limit in limits.items()}
        if rate_limit_scale != 1.0:
            log.warning(
                "%s: the client paces itself at %s, not Klaviyo's published limits",
                RATE_LIMITS_SETTING,
                "no limit" if math.isinf(rate_limit_scale) else f"{rate_limit_scale:g} times",
            )
        retry = _ObservedRetry(
            total=max_retries * 2,
            connect=max_retries,
            read=max_retries,
            status=max_retries,
            other=0,
            allowed_methods=None,  # re-sending an import job is safe: Klaviyo upserts profiles
            status_forcelist=_TRANSPORT_RETRY_STATUSES,
            backoff_factor=0.5,
            backoff_max=30,
            backoff_jitter=0.5,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        retry.stats = self.stats
        self._session = requests.Session()
        self._session.mount(self.base_url, HTTPAdapter(max_retries=retry, pool_connections=1, pool_maxsize=pool_size))
        self._session.headers.update(
            {
                "Authorization": f"Klaviyo-API-Key {api_key}",
                "revision": revision,
                "accept": JSON_API,
                "User-Agent": "klaviyo-segment-export/1",
            }
        )

    def close(self) -> None:
        self._session.close()

    # -- lists -------------------------------------------------------------------------------
    def get_list(self, list_id: str) -> dict[str, Any]:
        """The list, or a fatal error saying why it cannot be used (bad key, scope, unknown id)."""
        return self._call("GET", f"/api/lists/{list_id}", "lists", what=f"list {list_id}")["data"]

    def check_import_access(self, list_id: str) -> dict[str, Any]:
        """Fails fast, before anything is sent, when the key or the list will not work."""
        found = self.get_list(list_id)
        self._call(
            "GET",
            "/api/profile-bulk-import-jobs",
            "jobs",
            params={"page[size]": "1"},
            what="import jobs (needs profiles:read and lists:read)",
        )
        return found

    # -- bulk import ---------------------------------------------------------------------------
    def create_import_job(self, body: bytes | memoryview) -> ImportJob:
        """Posts one prepared bulk-import body (see batching.py); 400s raise InvalidPayload."""
        data = self._call("POST", "/api/profile-bulk-import-jobs", "import", body=body, what="import job")
        return ImportJob.from_resource(data["data"])

    def get_import_job(self, job_id: str) -> ImportJob:
        data = self._call("GET", f"/api/profile-bulk-import-jobs/{job_id}", "job", what=f"import job {job_id}")
        return ImportJob.from_resource(data["data"])

    def recent_import_jobs(self, page_size: int = 100) -> Iterator[ImportJob]:
        """The account's import jobs, newest first, a page (one call) at a time."""
        params: dict[str, str] | None = {"sort": "-created_at", "page[size]": str(page_size)}
        path: str | None = "/api/profile-bulk-import-jobs"
        while path:
            data = self._call("GET", path, "jobs", params=params, what="import jobs")
            for resource in data.get("data", []):
                yield ImportJob.from_resource(resource)
            path, params = self._next_page(data), None

    def import_errors(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The profiles a finished job failed to import, with Klaviyo's reason and payload."""
        path: str | None = f"/api/profile-bulk-import-jobs/{job_id}/import-errors"
        params: dict[str, str] | None = {"page[size]": "100"}
        while path:
            data = self._call("GET", path, "job_errors", params=params, what=f"import errors of job {job_id}")
            for resource in data.get("data", []):
                yield resource.get("attributes", {})
            path, params = self._next_page(data), None

    def import_job_profiles(self, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The profiles a job imported: (Klaviyo profile id, identifier attributes), 100 a call."""
        path = f"/api/profile-bulk-import-jobs/{job_id}/profiles"
        return self._identified_profiles(path, "job_profiles", f"profiles of import job {job_id}")

    # -- list membership -------------------------------------------------------------------------
    def list_member_ids(self, list_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The list's members: (profile id, identifier attributes), 100 a call."""
        return self._identified_profiles(f"/api/lists/{list_id}/profiles", "list_members", f"members of list {list_id}")

    def _identified_profiles(self, path: str, group: str, what: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every page of a profiles collection, asking only for the identifiers."""
        params: dict[str, str] | None = {"page[size]": "100", "fields[profile]": "email,phone_number,external_id"}
        next_path: str | None = path
        while next_path:
            data = self._call("GET", next_path, group, params=params, what=what)
            for resource in data.get("data", []):
                yield resource["id"], resource.get("attributes") or {}
            next_path, params = self._next_page(data), None

    def remove_from_list(
        self, list_id: str, profile_ids: list[str], on_removed: Callable[[int], None] | None = None
    ) -> int:
        """Takes profiles off a list (never deletes or unsubscribes them), 1,000 a call; returns how
        many were sent for removal. `on_removed` hears the count of each call as it succeeds."""
        for start in range(0, len(profile_ids), MAX_LIST_RELATIONSHIP_IDS):
            chunk = profile_ids[start : start + MAX_LIST_RELATIONSHIP_IDS]
            body = orjson.dumps({"data": [{"type": "profile", "id": pid} for pid in chunk]})
            self._call(
                "DELETE",
                f"/api/lists/{list_id}/relationships/profiles",
                "list_writes",
                body=body,
                what=f"removal of {len(chunk)} profiles from list {list_id}",
            )
            if on_removed is not None:
                on_removed(len(chunk))
        return len(profile_ids)

    # -- transport -----------------------------------------------------------------------------
    def _next_page(self, document: dict[str, Any]) -> str | None:
        link = (document.get("links") or {}).get("next")
        if not link:
            return None
        if not link.startswith(self.base_url):
            raise KlaviyoError(f"pagination link leaves {self.base_url}; refusing to follow it")
        return link[len(self.base_url) :]

    def _call(
        self,
        method: str,
        path: str,
        group: str,
        *,
        what: str,
        body: bytes | memoryview | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        limiter = self.limiters[group]
        self.stats.add("requests")
        headers = {"content-type": JSON_API} if body is not None else None
        throttled = challenged = 0
        while True:
            sent_at = limiter.acquire()
            try:
                response = self._session.request(
                    method, self.base_url + path, data=body, params=params, headers=headers, timeout=self.timeout
                )
            except BaseException as exc:
                limiter.completed(sent_at)
                if isinstance(exc, requests.RequestException):
                    raise KlaviyoError(f"{what}: no answer from Klaviyo after retries ({type(exc).__name__})") from None
                raise
            if is_challenge(response):
                # Klaviyo's edge sometimes challenges cloud IPs: not a missing scope, so retry.
                limiter.completed(sent_at)
                if challenged >= self.max_throttled:
                    break
                challenged += 1
                self.stats.add("retried_challenge")
                time.sleep(min(8.0, 0.5 * 2**challenged) * random.uniform(0.75, 1.25))
                continue
            if response.status_code != 429:
                limiter.completed(sent_at, response.headers)
                break
            # Every sender on the account shares its limit: the limiter backs off and holds the
            # other threads too, and the retry waits its turn in the limiter like any request.
            hold = limiter.throttled(sent_at, _retry_after(response))
            if throttled >= self.max_throttled:
                break
            throttled += 1
            self.stats.add("retried_429")
            log.debug("%s: throttled (429), retrying in %.2f s", what, hold)
        if response.status_code < 300:
            return orjson.loads(response.content) if response.content else {}
        raise error_for(response, what)


def _retry_after(response: requests.Response) -> float:
    """Seconds from a 429's Retry-After (a number or an HTTP date); 1 when absent or unreadable."""
    value = (response.headers.get("Retry-After") or "").strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return 1.0
