"""Client-side rate limiter: paces one process so that all senders on a Klaviyo account stay within its limits."""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from shared.klaviyo.limits import Limit
from shared.klaviyo.observer import AccountObserver, window_count

# Klaviyo counts in fixed windows on its own clock; a slightly longer sliding window here keeps
# network jitter from pushing one request too many into a server window.
_SLACK = 1.05
# Requests by others within a measured range that make the account count as shared, and for how long
# after the last of them it still does: longer than the period of a sender at _MIN_RATE, as a sender
# that is held back must stay visible to those holding it back.
_OTHERS_SHARED = 1
_SHARED_MEMORY = 6.0
# Sharing senders steer the account's total towards this fraction of the burst limit: the rest is
# room for a sender that joins later (or lost the race at the start) to get in and be seen. Each
# closes its share of the gap between the total and the target at this rate per second.
_TARGET = 0.9
_GAIN = 0.5
_EQUALIZE = 0.3
# Throttled before any answer told our share: guess one other sender like us. Senders that collide
# at the start guess alike, and the shares they measure next come from the rates they guessed.
# Answers without RateLimit headers (a proxy may strip them) will never tell it: then no guess, a 429
# only halves the rate and it grows back as when alone.
_UNKNOWN_SHARE = 0.5
# A new limiter sends this fraction of the burst, then waits (up to _FIRST_WAIT seconds) for their
# answers before sending more: senders that start together collide with a few requests, not a burst
# each, and their answers already show each other. Alone it costs nothing while answers come back
# within a second, as the burst window would hold the rest of the first second's requests anyway.
_FIRST_GROUP = 0.2
_FIRST_WAIT = 1.0
_POLL = 0.01
# AIMD on a 429: the rate halves, once per congestion episode; alone, it then grows back by this
# fraction of the burst limit per second (sharing, the gap to the target drives it).
_BACKOFF = 0.5
_MAX_EXTRA_HOLD = 5.0
_RECOVERY = 0.15
_MIN_RATE = 0.2


class RateLimiter:
    """Paces the requests of one endpoint group of one process; thread-safe.

    Alone on the account it sends at the full burst rate, capped by sliding windows a little longer
    than Klaviyo's. Other senders on the same account show up as gaps between the account-wide counts
    (RateLimit-Limit minus RateLimit-Remaining) that our answers carry, which give our share of the
    account's traffic and the account's total rate. Sharing, each sender moves its rate by its share
    of the gap between that total and a target a little under the limit, and sends at most
    floor(rate) requests in any window a little over a second, so that the senders' requests fit in
    the server's one-second windows together. A 429 holds every caller for Retry-After plus jitter
    and halves the rate, once per congestion episode; it then recovers additively. Near the end of the
    steady (one-minute) window a sharing sender spreads the remaining budget over the time left, and
    no one sends once it is spent. Answers that never carry the headers tell nothing of others: a 429
    then halves the rate and it recovers additively, as when alone."""

    def __init__(
        self,
        limit: Limit,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.limit = limit
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._burst = float(limit.burst_per_second)
        self._sent: deque[float] = deque()
        self._pending: list[float] = []
        self._first_until: float | None = None
        self._paused_until = -math.inf
        self._rate = self._burst
        self._recovering_since = -math.inf
        self._adjusted_at = -math.inf
        self._decreased_at = -math.inf
        self._throttled_in_a_row = 0
        self._share: float | None = None  # None while alone
        self._others_seen_at = -math.inf
        self._measure_since = -math.inf
        self._account = AccountObserver(self._burst, self._rng)
        self._headerless = False  # answers came without RateLimit headers, and none with them yet

    # -- the callers' side ----------------------------------------------------------------------
    def acquire(self) -> float:
        """Blocks until one more request may be sent; returns its send time, to hand back to
        `completed` or `throttled` with the answer."""
        while True:
            with self._lock:
                now = self._clock()
                delay = self._delay(now)
                if delay <= 0:
                    self._sent.append(now)
                    self._pending.append(now)
                    return now
            self._sleep(delay)

    def completed(self, sent_at: float, headers: Mapping[str, str] | None = None) -> None:
        """Any answer but a 429, or none: learns from its RateLimit headers, if it has them."""
        with self._lock:
            now = self._clock()
            self._forget(sent_at)
            count = window_count(headers)
            if count is None:
                # An answer without the headers was still counted by the server; no answer tells nothing.
                if headers is not None:
                    self._account.uncounted(sent_at, now)
                    if self._account.window_end is None:
                        self._no_headers()
                return
            self._throttled_in_a_row = 0
            self._account.counted(sent_at, now, count)
            self._adapt(now)

    def throttled(self, sent_at: float, retry_after: float) -> float:
        """A 429: holds every caller for Retry-After plus jitter and backs off; returns the hold."""
        with self._lock:
            now = self._clock()
            self._forget(sent_at)
            rate = self._current_rate(now)
            if self._share is None and self._account.window_end is None and not self._headerless:
                self._share = _UNKNOWN_SHARE
                rate = min(rate, _UNKNOWN_SHARE * _TARGET * self._burst)
            # Requests that were in flight when we last slowed down tell nothing new.
            if sent_at > self._decreased_at:
                rate *= _BACKOFF
                self._decreased_at = now
                self._throttled_in_a_row += 1
                if self._share is not None:
                    # What we measured before was shaped by the rates we had then.
                    self._measure_since = now
            # Jitter, so that senders throttled together do not all come back at the same moment;
            # and longer each time nothing got through in between (a sender that others crowd out
            # would otherwise knock every second until they finish).
            extra = min(_MAX_EXTRA_HOLD, 0.5 * (2 ** (self._throttled_in_a_row - 1) - 1))
            hold = retry_after + extra + self._rng.uniform(0.05, 0.25 + 0.1 * retry_after)
            self._paused_until = max(self._paused_until, now + hold)
            self._rate = max(_MIN_RATE, rate)
            self._recovering_since = self._adjusted_at = self._paused_until
            return hold

    def pause(self, seconds: float) -> None:
        """Holds every caller for `seconds` without changing the pace."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def rate(self) -> float:
        """Requests per second this limiter allows now, before the hard caps and the steady window."""
        with self._lock:
            return self._current_rate(self._clock())

    @property
    def share(self) -> float | None:
        """Our fraction of the account's recent requests in this group; None while alone."""
        return self._share

    # -- pacing ---------------------------------------------------------------------------------
    def _delay(self, now: float) -> float:
        minute, second = 60.0 * _SLACK, 1.0 * _SLACK
        while self._sent and self._sent[0] <= now - minute:
            self._sent.popleft()
        delays = [self._paused_until - now]
        if self._first_until is None:
            self._first_until = now + _FIRST_WAIT
        elif now < self._first_until:
            if not self._pending and self._sent:
                self._first_until = now  # the first group was answered
            elif len(self._sent) >= math.ceil(_FIRST_GROUP * self._burst):
                delays.append(min(_POLL, self._first_until - now))
        if len(self._sent) >= self.limit.steady_per_minute:
            delays.append(self._sent[-self.limit.steady_per_minute] + minute - now)
        if len(self._sent) >= self.limit.burst_per_second:
            delays.append(self._sent[-self.limit.burst_per_second] + second - now)
        rate = self._current_rate(now)
        window_end, resume_jitter = self._account.window_end, self._account.resume_jitter
        if window_end is not None and now < window_end + resume_jitter:
            left = self._account.remaining - len(self._pending)
            if left <= 0:
                delays.append(window_end + resume_jitter - now)
            elif self._share is not None and left < self._burst and now < window_end:
                # Sharing and nearly spent: spread what is left of the minute rather than race for it.
                rate = min(rate, max(_MIN_RATE, self._share * left / (window_end - now)))
        if rate < self._burst:
            # At most floor(rate) requests in any window a little over a second (or one in a longer
            # window): then no one-second window of the server's holds more than that many of ours.
            count, window = (int(rate + 1e-9), second) if rate >= 1 else (1, second / rate)
            if len(self._sent) >= count:
                delays.append(self._sent[-count] + window - now)
        return max(delays)

    def _current_rate(self, now: float) -> float:
        if self._share is not None:
            return self._rate
        grown = _RECOVERY * self._burst * max(0.0, now - self._recovering_since)
        return min(self._burst, self._rate + grown)

    # -- learning from answers ------------------------------------------------------------------
    def _forget(self, sent_at: float) -> None:
        with contextlib.suppress(ValueError):
            self._pending.remove(sent_at)

    def _no_headers(self) -> None:
        """Answers come without RateLimit headers: no share will be measured, so a guessed one is
        dropped and the rate grows back from where the 429 left it (after its hold), as when alone.
        The answer also shows that requests get through again, so the next 429's hold starts short."""
        self._headerless, self._throttled_in_a_row, self._share = True, 0, None

    def _adapt(self, now: float) -> None:
        """Updates the share and the rate from what the answers so far tell."""
        settled_before = min(self._pending, default=math.inf)
        found = self._account.measure(settled_before, self._measure_since, self._decreased_at == -math.inf)
        if found is None:
            return
        ours, counted, span = found
        share = min(1.0, ours / counted)
        if counted - ours >= _OTHERS_SHARED:
            self._others_seen_at = now
        rate = self._current_rate(now)
        target = _TARGET * self._burst
        if now - self._others_seen_at > _SHARED_MEMORY and (span is not None or self._share is None):
            # Others quiet for a while (not just paused after a 429), over whole periods: alone again.
            if self._share is not None:
                self._share, self._rate, self._recovering_since = None, rate, now
            return
        if span is None or self._share is None:
            # Others just seen (at the start, or by someone joining): take our share of the target.
            if counted - ours >= _OTHERS_SHARED or self._share is not None:
                self._share = share if self._share is None else min(self._share, share)
                self._rate, self._adjusted_at = max(_MIN_RATE, min(rate, self._share * target)), now
            return
        # Each sender closes its share of the gap between the account's total and the target, so the
        # total converges; the floor() of each rate moves at its own moment, so the total fills up
        # one request at a time. Small senders grow as if their share were _EQUALIZE: growth that
        # does not shrink with the share, against decreases that do, evens the shares out over time.
        self._share = share
        gap = target - counted / span
        elapsed = min(1.0, max(0.0, now - self._adjusted_at))
        rate += _GAIN * (max(share, _EQUALIZE) if gap > 0 else share) * gap * elapsed
        self._rate, self._adjusted_at = min(self._burst, max(_MIN_RATE, rate)), now
