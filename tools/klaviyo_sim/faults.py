"""Decides which fault, if any, the simulator injects into one /api/ request."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .state import SimulatorConfig

SERVER_ERROR_STATUSES = (500, 502, 503, 504)


@dataclass(frozen=True)
class Fault:
    """What to do to one request: kind is None, "reset", "storm", "error" or "challenge"."""

    kind: str | None = None
    status: int = 0
    retry_after: int = 0
    delay: float = 0.0


NO_FAULT = Fault()


class FaultInjector:
    """Draws faults from the configured rates; throttle storms recur every N seconds from the last reconfiguration."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(None if config.seed is None else config.seed + 1)
        self._storm_origin = clock()

    def reconfigure(self, config: SimulatorConfig) -> None:
        with self._lock:
            old = self._config
            if (old.throttle_storm_every, old.throttle_storm_seconds) != (
                config.throttle_storm_every,
                config.throttle_storm_seconds,
            ):
                self._storm_origin = self._clock()
            if old.seed != config.seed:
                self._rng = random.Random(None if config.seed is None else config.seed + 1)
            self._config = config

    def decide(self) -> Fault:
        with self._lock:
            config = self._config
            rng = self._rng
            delay = config.slow_seconds if config.slow_rate and rng.random() < config.slow_rate else 0.0
            if config.reset_rate and rng.random() < config.reset_rate:
                return Fault("reset")
            if config.throttle_storm_every > 0 and config.throttle_storm_seconds > 0:
                phase = (self._clock() - self._storm_origin) % config.throttle_storm_every
                if phase < config.throttle_storm_seconds:
                    retry_after = max(1, math.ceil(config.throttle_storm_seconds - phase))
                    return Fault("storm", 429, retry_after, delay)
            if config.error_rate and rng.random() < config.error_rate:
                return Fault("error", rng.choice(SERVER_ERROR_STATUSES), delay=delay)
            if config.challenge_rate and rng.random() < config.challenge_rate:
                return Fault("challenge", 403, delay=delay)
            return Fault(delay=delay) if delay else NO_FAULT
