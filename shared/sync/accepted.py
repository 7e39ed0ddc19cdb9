"""What Klaviyo accepted during a run, gathered as its import jobs finish, until it goes into the sync
state (at the run's end) or aside (when the run's time budget runs out before its end)."""

from __future__ import annotations

import threading

import numpy as np

from shared.sync.state import Int64Blocks, SyncState


class AcceptedProfiles:
    """The identifier and profile fingerprints of the profiles Klaviyo accepted. Thread-safe: jobs
    finish on several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = Int64Blocks()
        self._prints = Int64Blocks()

    def add(self, ids: np.ndarray, prints: np.ndarray) -> None:
        with self._lock:
            self._ids.extend(ids)
            self._prints.extend(prints)

    def restore(self, pending: SyncState) -> None:
        """Takes back what an earlier invocation of the run put aside."""
        with self._lock:
            self._ids.extend(pending.ids)
            self._prints.extend(pending.fingerprints)

    def merge_into(self, state: SyncState) -> None:
        """Records everything gathered in `state`. The fingerprints move there, so that a large run
        does not hold them twice."""
        with self._lock:
            if len(self._ids):
                state.merge(self._ids.take(), self._prints.take())

    def aside(self, list_id: str) -> SyncState | None:
        """Everything gathered, moved into a state of its own to be put aside (None when Klaviyo
        accepted nothing yet)."""
        with self._lock:
            if not len(self._ids):
                return None
            aside = SyncState(list_id)
            aside.merge(self._ids.take(), self._prints.take())
            return aside
