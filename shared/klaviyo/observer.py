"""What our answers' RateLimit headers tell of a Klaviyo account: its steady window, and our share of its requests."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

# Our share of the account's traffic is read from our answers of the last _HORIZON seconds, over
# whole periods of at least _SPAN seconds; requests sent within _GROUP_GAP of each other left together.
_HORIZON = 2.0
_SPAN = 1.0
_GROUP_GAP = 0.1
# A window end estimated from RateLimit-Reset (whole seconds, read after the network delay) is never
# early, and the next window's end is a minute later: any estimate in between is the same window.
_SAME_WINDOW = 2.0
_MINUTE = 60.0


class WindowCount(NamedTuple):
    """The account's steady (one-minute) window as one answer's RateLimit headers give it."""

    used: int
    remaining: int
    reset: float  # seconds until the window ends


class Measurement(NamedTuple):
    """Requests in a recent range of the account's count: ours, everyone's, and over how many
    seconds (None for a range shorter than a period)."""

    ours: int
    counted: int
    span: float | None


@dataclass
class _Sample:
    """One of our requests the server admitted: when it left and came back, and the account's count
    in the steady window it was given (None when the answer carried no RateLimit headers)."""

    sent: float
    received: float
    used: int | None
    window: int


class AccountObserver:
    """The answers of one endpoint group, as the account's count in Klaviyo's steady window shows them.

    It keeps the current window's end and remaining budget, and the admitted requests whose answers
    measure our share of the account's traffic. Not thread-safe: its limiter holds the lock."""

    def __init__(self, burst: float, rng: random.Random) -> None:
        self._burst = burst
        self._rng = rng
        self._samples: deque[_Sample] = deque()
        self.window = 0
        self.window_end: float | None = None  # None until an answer told it
        self.first_sent = 0.0  # our first request counted in the current window
        self.remaining = 0
        # Senders whose windows end together do not all send again at the same moment.
        self.resume_jitter = 0.0

    def counted(self, sent_at: float, now: float, count: WindowCount) -> None:
        """An answer with the account's count: which window it belongs to, and what it tells of our share."""
        window = self._observe_window(now, sent_at, count.remaining, count.reset)
        self._samples.append(_Sample(sent_at, now, count.used if window == self.window else None, window))
        # A slow sender keeps enough answers to span a period.
        while len(self._samples) > 2 * self._burst and self._samples[0].received < now - 2 * _HORIZON:
            self._samples.popleft()

    def uncounted(self, sent_at: float, now: float) -> None:
        """An answer without the headers (e.g. a 400): the server still counted the request."""
        if self.window_end is not None:
            self._samples.append(_Sample(sent_at, now, None, self.window))

    def _observe_window(self, now: float, sent_at: float, remaining: int, reset: float) -> int:
        """Which steady window an answer belongs to; keeps the current window's end and budget."""
        end = now + reset
        if self.window_end is None or end > self.window_end + _SAME_WINDOW:
            self.window += 1
            self.window_end, self.remaining = end, remaining
            self.first_sent = sent_at
            self.resume_jitter = self._rng.uniform(0.05, 0.5)
            return self.window
        if end < self.window_end - _SAME_WINDOW:
            return self.window - 1  # a late answer from the previous window
        self.window_end = min(self.window_end, end)
        self.first_sent = min(self.first_sent, sent_at)
        self.remaining = min(self.remaining, remaining)
        return self.window

    def measure(self, settled_before: float, sent_since: float, never_slowed: bool) -> Measurement | None:
        """Our requests and everyone's in a recent range of the account's count, from the gaps between
        the counts our answers got, for requests sent from `sent_since` on.

        Only answers received before `settled_before` (when the oldest request still in flight was
        sent) are used: any of our requests counted before one of those has been answered too, so a
        gap is someone else's. The range runs from the start of one group of our requests to the start
        of the latest, whole periods, because within a group sent together hardly anyone else's
        request gets counted. `never_slowed`: no 429 of ours has slowed the pace yet."""
        current = [s for s in self._samples if s.window == self.window and s.sent >= sent_since]
        settled = sorted((s for s in current if s.used is not None and s.received < settled_before), key=_sent)
        if not settled:
            return None
        starts = [i for i, s in enumerate(settled) if i == 0 or s.sent - settled[i - 1].sent > _GROUP_GAP]
        latest = starts[-1]
        whole = [i for i in starts if settled[latest].sent - settled[i].sent >= _SPAN]
        recent = [i for i in whole if settled[i].sent >= settled[latest].sent - _HORIZON]
        first = recent[0] if recent else whole[-1] if whole else None
        if first is not None:
            low = min(_used(s) for s in settled[first : starts[starts.index(first) + 1]])
            high = min(_used(s) for s in settled[latest:])
            since, until = settled[first].sent, settled[latest].sent
            ours = sum(1 for s in current if s.used is not None and low <= s.used < high)
            # Our admitted requests whose answers had no headers fill gaps too.
            ours += sum(1 for s in current if s.used is None and since <= s.sent < until)
            return Measurement(ours, high - low, until - since) if high > low else None
        # Not a whole period yet. If the steady window opened about when we started in it and none
        # of ours was throttled, its count so far is everyone's requests since, ours and the others'
        # (senders that start together see each other in their first answers). Else only the
        # others' requests counted among our last group show.
        group = settled[latest:]
        high = max(_used(s) for s in group)
        window_start = (self.window_end or 0.0) - _MINUTE
        if window_start >= self.first_sent - _SPAN and never_slowed:
            in_window = (s for s in self._samples if s.window == self.window)
            ours = sum(1 for s in in_window if (s.sent <= group[-1].sent if s.used is None else s.used <= high))
            return Measurement(ours, high, None)
        return Measurement(len(group), high - min(_used(s) for s in group) + 1, None)


def _sent(sample: _Sample) -> float:
    return sample.sent


def _used(sample: _Sample) -> int:
    return sample.used or 0


def window_count(headers: Mapping[str, str] | None) -> WindowCount | None:
    """The steady window's count from RateLimit-* headers, if the answer has them."""
    if headers is None:
        return None
    try:
        limit = int(_first(headers.get("RateLimit-Limit")))
        remaining = int(_first(headers.get("RateLimit-Remaining")))
        reset = float(_first(headers.get("RateLimit-Reset")))
    except (TypeError, ValueError):
        return None
    if limit <= 0 or remaining < 0 or reset < 0:
        return None
    return WindowCount(max(0, limit - remaining), remaining, reset)


def _first(value: str | None) -> str:
    # Accepts the IETF draft's structured form ("150, 150;w=60") as well as a plain number.
    return "" if value is None else value.split(",")[0].split(";")[0].strip()
