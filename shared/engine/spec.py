"""What an export run is asked to do (ExportSpec), and the error for a request that cannot work."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from enum import StrEnum
from typing import Protocol

from shared.engine.report import Counts
from shared.mapping import FieldMapping, SubscribeOptions
from shared.sync import DEFAULT_MAX_REMOVAL_SHARE, SyncMode, SyncOptions, SyncOptionsError

# Upload threads: enough to keep Klaviyo's import rate busy while each job's body is sent; the rate
# limiter, not this number, sets the pace.
DEFAULT_UPLOAD_THREADS = 6

# Called with the run's counts as they change (after each chunk, and while waiting for the jobs).
ProgressCallback = Callable[[Counts], None]


class Phase(StrEnum):
    """What a run is doing (its record shows it while it runs)."""

    CHECKING = "checking"  # the list, the key and the segment's columns, before anything is sent
    SENDING = "sending"  # reading the segment and sending import jobs
    WAITING = "waiting_for_jobs"  # everything sent: waiting for Klaviyo to finish the jobs
    REMOVING = "removing"  # mirror mode: taking the profiles that left the segment off the list


class RunWatch(Protocol):
    """Who looks over a run while it executes (the Functions app's heartbeat): told the phase, and
    asked before each upload whether the run must stop."""

    def phase(self, phase: Phase) -> None:
        """The run has moved on to `phase`."""
        ...

    def stop_reason(self) -> str | None:
        """Why the run must stop now (cancelled, its export edited or deleted, consent withdrawn), or None."""
        ...


class ConfigurationError(Exception):
    """Found before anything was sent: a missing column, a bad mapping, a key or list that won't work."""


@dataclass
class ExportSpec:
    """One export run's request: the list, the segment's mapping, and how the run is to go."""

    export_name: str
    list_id: str
    mapping: FieldMapping
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    dry_run: bool = False
    max_in_flight: int = DEFAULT_UPLOAD_THREADS
    poll_interval: float = 0.5  # the longest pause between looks at the jobs once everything is sent
    job_timeout: float = 3600.0  # how long the jobs may take to finish once everything is sent
    # Run first in each thread the run starts, e.g. to carry the Functions invocation id into its logs.
    thread_initializer: Callable[[], None] | None = None
    deadline: float | None = None  # the time.monotonic() after which the run checkpoints and stops
    watch: RunWatch | None = None  # asked before each upload whether to stop; told each phase
    subscribe: SubscribeOptions | None = None  # subscribe the rows whose consent column says yes
    # The sync options, given one by one and checked once into `sync` (read them there: as init-only
    # fields, spec.mode and the others always read their defaults).
    mode: InitVar[str] = SyncMode.ADD
    full: InitVar[bool] = False
    confirm_removals: InitVar[bool] = False
    max_removal_share: InitVar[float] = DEFAULT_MAX_REMOVAL_SHARE
    reconcile: InitVar[bool] = False
    sync: SyncOptions = field(init=False)

    def stop_reason(self) -> str | None:
        """Why the run must stop now, as its watch says (None without a watch)."""
        return self.watch.stop_reason() if self.watch is not None else None

    def enter(self, phase: Phase) -> None:
        if self.watch is not None:
            self.watch.phase(phase)

    def __post_init__(
        self, mode: str, full: bool, confirm_removals: bool, max_removal_share: float, reconcile: bool
    ) -> None:
        try:
            self.sync = SyncOptions.of(mode, full, confirm_removals, max_removal_share, reconcile)
        except SyncOptionsError as exc:
            raise ConfigurationError(str(exc)) from None
