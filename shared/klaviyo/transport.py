"""The HTTP side of the Klaviyo client: one session with the key's headers and retries, each request paced."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, NamedTuple, Self

import orjson
import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from shared.klaviyo.errors import RETRY_STATUSES, KlaviyoError, error_for, is_challenge
from shared.klaviyo.limits import JSON_API
from shared.klaviyo.pacing import Pacer

log = logging.getLogger(__name__)

USER_AGENT = "klaviyo-segment-export/1"
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
    which must count every request and hear of every throttle (see Transport.call)."""

    RETRY_AFTER_STATUS_CODES = frozenset({503})
    stats: CallStats | None = None

    def new(self, **kw: Any) -> Self:
        retry = super().new(**kw)
        retry.stats = self.stats
        return retry

    def get_retry_after(self, response: BaseHTTPResponse) -> float | None:
        # A little jitter on top of Retry-After, so the threads (and runs) told to wait together
        # do not all come back at once.
        seconds = super().get_retry_after(response)
        return None if seconds is None else seconds + random.uniform(0.05, 0.25 + 0.1 * seconds)

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        if self.stats is not None:
            if response is not None and response.status:
                self.stats.add(f"retried_{response.status}")
            elif error is not None:
                self.stats.add(f"retried_{_ERROR_NAMES.get(type(error).__name__, type(error).__name__)}")
        return super().increment(method, url, response, error, _pool, _stacktrace)


def _retry(max_retries: int, stats: CallStats) -> _ObservedRetry:
    """urllib3's retries of server errors and lost connections, `max_retries` of each kind."""
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
    retry.stats = stats
    return retry


@dataclass(frozen=True)
class _Request:
    """One API call as the session sends it; `what` names it in errors and logs."""

    method: str
    url: str
    what: str
    body: bytes | memoryview | None
    params: dict[str, str] | None
    headers: dict[str, str] | None


class _Sent(NamedTuple):
    """An answer, and the send time its pacer handed out for the request."""

    response: requests.Response
    at: float


class Transport:
    """The only place that talks HTTP to Klaviyo: it owns the session (base URL, auth headers, timeouts,
    urllib3's retries) and sends every request in its turn from the pacer of its endpoint group. Thread-safe."""

    def __init__(
        self,
        api_key: str,
        base_url: str,
        pacers: Mapping[str, Pacer],
        *,
        revision: str,
        timeout: tuple[float, float],
        max_retries: int,
        pool_size: int,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries  # of 429s and of challenges, each; urllib3 counts the others
        self.pacers = pacers
        self.stats = CallStats()
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=_retry(max_retries, self.stats), pool_connections=1, pool_maxsize=pool_size)
        self.session.mount(self.base_url, adapter)
        self.session.headers.update(
            {
                "Authorization": f"Klaviyo-API-Key {api_key}",
                "revision": revision,
                "accept": JSON_API,
                "User-Agent": USER_AGENT,
            }
        )

    def close(self) -> None:
        self.session.close()

    def call(
        self,
        method: str,
        path: str,
        group: str,
        *,
        what: str,
        body: bytes | memoryview | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """The JSON document Klaviyo answers `path` with (empty when it answers with no body), or the
        KlaviyoError its failure means once the retries are spent."""
        pacer = self.pacers[group]
        self.stats.add("requests")
        headers = {"content-type": JSON_API} if body is not None else None
        response = self._answer(pacer, _Request(method, self.base_url + path, what, body, params, headers))
        if response.status_code < 300:
            return orjson.loads(response.content) if response.content else {}
        raise error_for(response, what)

    def _answer(self, pacer: Pacer, request: _Request) -> requests.Response:
        """The last answer to `request`: sent again after a challenge or a 429, up to max_retries times."""
        throttled = challenged = 0
        while True:
            sent = self._send(pacer, request)
            if is_challenge(sent.response):
                # Klaviyo's edge sometimes challenges cloud IPs: not a missing scope, so retry.
                pacer.completed(sent.at)
                if challenged >= self.max_retries:
                    return sent.response
                challenged += 1
                self.stats.add("retried_challenge")
                time.sleep(min(8.0, 0.5 * 2**challenged) * random.uniform(0.75, 1.25))
                continue
            if sent.response.status_code != 429:
                pacer.completed(sent.at, sent.response.headers)
                return sent.response
            # Every sender on the account shares its limit: the limiter backs off and holds the
            # other threads too, and the retry waits its turn in the limiter like any request.
            hold = pacer.throttled(sent.at, retry_after(sent.response))
            if throttled >= self.max_retries:
                return sent.response
            throttled += 1
            self.stats.add("retried_429")
            log.debug("%s: throttled (429), retrying in %.2f s", request.what, hold)

    def _send(self, pacer: Pacer, request: _Request) -> _Sent:
        """Sends the request in its turn; a failure with no answer still tells the pacer it is over."""
        sent_at = pacer.acquire()
        try:
            response = self.session.request(
                request.method,
                request.url,
                # requests sends a memoryview as it is, a body of len() bytes, without copying it;
                # its type stubs list only bytes-like types that iterate as bytes.
                data=request.body,  # type: ignore[arg-type]
                params=request.params,
                headers=request.headers,
                timeout=self.timeout,
            )
        except BaseException as exc:
            pacer.completed(sent_at)
            if isinstance(exc, requests.RequestException):
                what = request.what
                raise KlaviyoError(f"{what}: no answer from Klaviyo after retries ({type(exc).__name__})") from None
            raise
        return _Sent(response, sent_at)


def retry_after(response: requests.Response) -> float:
    """Seconds from a 429's Retry-After (a number or an HTTP date); 1 when absent or unreadable."""
    value = (response.headers.get("Retry-After") or "").strip()
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return 1.0
