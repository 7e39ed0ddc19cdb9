"""While a run executes, a thread of its own, whatever the run is doing: every second it looks at
the run's export, connection and record, to stop the run within 2 s of a change that means its
profiles must no longer go out; every few seconds it writes the heartbeat, the phase and the counts
into the run record, and renews the export's lease."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from types import TracebackType
from typing import Any

from shared.control.definition import definition_fingerprint
from shared.control.lease import Held
from shared.control.services import Services
from shared.engine import Counts, Phase
from shared.telemetry import run_context

log = logging.getLogger(__name__)

# How often the export, connection and run record are read: a change stops the run within 2 s.
LOOK_SECONDS = 1.0
# How often the heartbeat, phase and counts are written (well inside the lease's stale time).
HEARTBEAT_SECONDS = 2.0
# How often the export's lease is renewed.
RENEW_SECONDS = 15.0


class RunMonitor:
    """The engine's watch over one run (phase, stop_reason) and its progress callback, with the
    thread that does the reading and writing; use it as a context manager around the run."""

    def __init__(self, services: Services, run: dict[str, Any], export: dict[str, Any], held: Held | None) -> None:
        self._services, self._run_id, self._export_name = services, run["run_id"], run["export_name"]
        self._generation = export.get("generation")
        # What the run was started for: an edit between two invocations of it counts too.
        self._definition = run.get("definition") or definition_fingerprint(export)
        self._held = held
        self._counts: Counts | None = None
        self._phase = Phase.CHECKING
        self._reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"monitor-{self._run_id[:20]}", daemon=True)

    @property
    def held(self) -> Held | None:
        """The lease as last renewed (None once lost)."""
        return self._held

    def __enter__(self) -> RunMonitor:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()

    # -- the engine's side: cheap, in memory ------------------------------------------------------
    def __call__(self, counts: Counts) -> None:
        self._counts = counts  # the report's counts, changed in place: each heartbeat writes them as they are

    def phase(self, phase: Phase) -> None:
        self._phase = phase

    def stop_reason(self) -> str | None:
        return self._reason

    # -- the thread ---------------------------------------------------------------------------------
    def _watch(self) -> None:
        with run_context(self._run_id, self._export_name):
            next_beat = next_renewal = time.monotonic()
            while not self._done.wait(LOOK_SECONDS):
                try:
                    if self._reason is None:
                        self._reason = self._look()
                        if self._reason:
                            log.info("run %s stops: %s", self._run_id, self._reason)
                    now = time.monotonic()
                    if now >= next_renewal:
                        self._renew()
                        next_renewal = now + RENEW_SECONDS
                    if now >= next_beat:
                        self._beat()
                        next_beat = now + HEARTBEAT_SECONDS
                except Exception as exc:  # a passing storage error: the next look tries again
                    log.warning("run %s: heartbeat failed (%s); trying again", self._run_id, type(exc).__name__)

    def _look(self) -> str | None:
        """Why the run must stop now, from the records as they are, or None."""
        store = self._services.store
        run = store.get_run(self._run_id)
        if run is not None and run.get("cancel_requested"):
            return "cancelled on request"
        export = store.get_export(self._export_name)
        if export is None:
            return "the export was deleted"
        if export.get("generation") != self._generation:
            return "the export was deleted and created again"
        if definition_fingerprint(export) != self._definition:
            return "the export was edited (its list, mapping, segment, connection or options changed)"
        connection = store.get_connection(export["connection"])
        if connection is None:
            return f"connection {export['connection']!r} was deleted"
        if not connection.get("consent"):
            return f"the privacy consent of connection {export['connection']!r} was withdrawn"
        return None

    def _beat(self) -> None:
        changes: dict[str, Any] = {"heartbeat": time.time(), "phase": self._phase.value}
        if self._counts is not None:
            changes["counts"] = asdict(self._counts)
        self._services.store.update_run(self._run_id, changes)

    def _renew(self) -> None:
        if self._held is None:
            return
        self._held = self._services.store.leases.renew(self._held)
        if self._held is None and self._reason is None:
            self._reason = "another worker took this export over (this run's heartbeat had gone stale)"
