"""The client-side limiter keeps within Klaviyo's burst and steady windows."""

from __future__ import annotations

from shared.ratelimit import Limit, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def sent_times(limit: Limit, requests: int) -> list[float]:
    clock = FakeClock()
    limiter = RateLimiter(limit, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(requests):
        limiter.acquire()
        times.append(clock.now)
    return times


def max_in_window(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_no_second_holds_more_than_the_burst_limit():
    times = sent_times(Limit(10, 150), 60)
    assert max_in_window(times, 1.0) <= 10


def test_no_minute_holds_more_than_the_steady_limit():
    times = sent_times(Limit(10, 150), 400)
    assert max_in_window(times, 60.0) <= 150


def test_a_burst_goes_out_without_waiting():
    assert sent_times(Limit(10, 150), 10) == [0.0] * 10


def test_pause_holds_every_caller_until_retry_after():
    clock = FakeClock()
    limiter = RateLimiter(Limit(10, 150), clock=clock, sleep=clock.sleep)
    limiter.pause(3.0)
    waited = limiter.acquire()
    assert waited >= 3.0 and clock.now >= 3.0
