"""Client-side rate limiter: keeps requests within Klaviyo's per-second and per-minute limits."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    burst_per_second: int
    steady_per_minute: int


# Klaviyo's published limits per endpoint group (see README "Limits").
BULK_IMPORT = Limit(10, 150)
JOB_READS = Limit(10, 150)
LIST_READS = Limit(75, 750)
LIST_WRITES = Limit(10, 150)

# Klaviyo counts in fixed windows on its own clock; a slightly longer sliding window here keeps
# network jitter from pushing one request too many into a server window.
_SLACK = 1.05


class RateLimiter:
    """A sliding-window limiter over two windows (one second, one minute); thread-safe."""

    def __init__(self, limit: Limit, clock: callable = time.monotonic, sleep: callable = time.sleep) -> None:  # type: ignore[valid-type]
        self.limit = limit
        self._clock, self._sleep = clock, sleep
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def acquire(self) -> float:
        """Blocks until one more request fits; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                delay = self._delay(self._clock())
                if delay <= 0:
                    self._sent.append(self._clock())
                    return waited
            self._sleep(delay)
            waited += delay

    def pause(self, seconds: float) -> None:
        """After a 429, hold every caller until the server's Retry-After has passed."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def _delay(self, now: float) -> float:
        minute, second = 60.0 * _SLACK, 1.0 * _SLACK
        while self._sent and self._sent[0] <= now - minute:
            self._sent.popleft()
        delays = [self._paused_until - now]
        if len(self._sent) >= self.limit.steady_per_minute:
            delays.append(self._sent[-self.limit.steady_per_minute] + minute - now)
        if len(self._sent) >= self.limit.burst_per_second:
            delays.append(self._sent[-self.limit.burst_per_second] + second - now)
        return max(delays)
