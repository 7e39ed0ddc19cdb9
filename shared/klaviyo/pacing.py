"""How fast the client may send: the KLAVIYO_RATE_LIMITS setting, and the pacer of each endpoint group."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from shared.klaviyo.limits import Limit
from shared.klaviyo.ratelimit import RateLimiter

log = logging.getLogger(__name__)

# KLAVIYO_RATE_LIMITS: Klaviyo's published limits (the default), none of our own ("off": for the
# simulator without limits and pipeline benchmarks), or a multiple of the published ones (an account
# whose limits Klaviyo raised; below 1 to leave room for other tools on the account).
RATE_LIMITS_SETTING = "KLAVIYO_RATE_LIMITS"
PUBLISHED, OFF = "published", "off"


class Pacer(Protocol):
    """What the transport asks of a limiter: a turn to send, and what became of each request sent."""

    def acquire(self) -> float:
        """Blocks until one more request may be sent; returns its send time."""
        ...

    def completed(self, sent_at: float, headers: Mapping[str, str] | None = None) -> None:
        """Any answer but a 429, or none."""
        ...

    def throttled(self, sent_at: float, retry_after: float) -> float:
        """A 429: holds every caller; returns how long."""
        ...

    def pause(self, seconds: float) -> None:
        """Holds every caller for `seconds`."""
        ...


def rate_limit_scale(value: str) -> float:
    """The setting as a multiple of the published limits: 1 for `published` (or unset), infinite for
    `off`, else the positive number given."""
    text = value.strip().lower()
    if text in ("", PUBLISHED):
        return 1.0
    if text == OFF:
        return math.inf
    try:
        scale = float(text)
    except ValueError:
        scale = math.nan
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(
            f"{RATE_LIMITS_SETTING} is {value!r}: use {PUBLISHED}, {OFF}, "
            "or a positive number of times Klaviyo's published limits"
        )
    return scale


def pacer(limit: Limit, scale: float = 1.0) -> RateLimiter | Unpaced:
    """The limiter of one endpoint group for `limit` times `scale` (none of our own when infinite)."""
    if math.isinf(scale):
        return Unpaced()
    if scale == 1.0:
        return RateLimiter(limit)
    burst = max(1, round(limit.burst_per_second * scale))
    return RateLimiter(Limit(burst, max(burst, round(limit.steady_per_minute * scale))))


def endpoint_pacers(limits: Mapping[str, Limit], scale: float = 1.0) -> dict[str, Pacer]:
    """A pacer for each endpoint group; the log says so when it is not Klaviyo's published pace."""
    pacers: dict[str, Pacer] = {group: pacer(limit, scale) for group, limit in limits.items()}
    if scale != 1.0:
        log.warning(
            "%s: the client paces itself at %s, not Klaviyo's published limits",
            RATE_LIMITS_SETTING,
            "no limit" if math.isinf(scale) else f"{scale:g} times",
        )
    return pacers


class Unpaced:
    """KLAVIYO_RATE_LIMITS=off: no pace of its own, requests go as fast as callers send them; a 429's
    Retry-After still holds every caller (the server's limits, if any, stay in charge)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._paused_until = -math.inf

    def acquire(self) -> float:
        while (delay := self._paused_until - self._clock()) > 0:
            self._sleep(delay)
        return self._clock()

    def completed(self, sent_at: float, headers: Mapping[str, str] | None = None) -> None:
        """Nothing to learn: there is no pace to adapt."""

    def throttled(self, sent_at: float, retry_after: float) -> float:
        self.pause(retry_after)
        return retry_after

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
