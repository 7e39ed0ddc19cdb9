"""Where a run stands: one set of names for the engine's outcomes and the control plane's run states."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"  # recorded and on the queue, or back on it to go on after its time budget
    RUNNING = "running"  # a worker holds it (and keeps its heartbeat fresh)
    SUCCEEDED = "succeeded"
    COMPLETED_WITH_REJECTS = "completed_with_rejects"  # sent, but some rows were rejected or failed
    FAILED = "failed"
    SKIPPED = "skipped"  # nothing to do: the segment is unchanged, or the export is gone
    INCOMPLETE = "incomplete"  # the engine's outcome when the time budget ran out: a checkpoint says where to go on
    CANCELLED = "cancelled"  # stopped on request, or because its export or connection changed: nothing sent after

    @property
    def terminal(self) -> bool:
        """A run in this state never changes again."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.COMPLETED_WITH_REJECTS, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.CANCELLED}
)

# The engine's outcomes under their own names, as callers and tests compare reports with them.
SUCCEEDED = RunStatus.SUCCEEDED
COMPLETED_WITH_REJECTS = RunStatus.COMPLETED_WITH_REJECTS
FAILED = RunStatus.FAILED
INCOMPLETE = RunStatus.INCOMPLETE
CANCELLED = RunStatus.CANCELLED
