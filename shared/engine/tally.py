"""The run's counts: the one object that writes them, and which thread writes each."""

from __future__ import annotations

import threading

from shared.engine.report import Counts
from shared.engine.spec import ProgressCallback


class RunTally:
    """Owns the run's counts (the report's `Counts`); the engine changes them only through these
    methods, and the progress callback is told of them from here.

    Which thread writes which count:

    - rows_read and duplicates: the run's thread, as it checks each chunk.
    - rejected: the run's thread (invalid and oversized rows, and the refused profiles of batches
      replayed from a checkpoint) and the upload threads (profiles Klaviyo refuses).
    - sent: the upload threads; the run's thread in a dry run and for replayed batches.
    - accepted and failed: the run's thread, as it finishes jobs (between chunks and at the end)
      and replays the jobs a checkpoint says were finished.
    - not_sent: the run's thread, once the run has stopped.
    - unchanged: the sync's delta filter (SyncRun.changed), on the run's thread. added and updated:
      the sync as jobs finish (SyncRun.accepted, and for jobs a checkpoint says were finished
      SyncRun.count_accepted), so they never exceed accepted; a dry run's, by the delta filter as
      it reads. removed: the sync, after the upload. The sync writes these four to `counts`
      itself, under its own lock.

    A count more than one thread writes changes under this object's lock. rows_read has one writer
    and is changed without it. Readers (the progress callback, the final report) read `counts`
    without the lock: each count is one int, and a progress line may be a moment behind."""

    def __init__(self, counts: Counts, progress: ProgressCallback | None = None) -> None:
        self.counts = counts
        self._progress = progress
        self._lock = threading.Lock()

    def read(self, rows: int) -> None:
        self.counts.rows_read += rows

    def dropped(self, rejected: int, duplicates: int) -> None:
        """Rows of a chunk that are not sent: invalid or too large, or repeating an earlier identifier."""
        with self._lock:
            self.counts.duplicates += duplicates
            self.counts.rejected += rejected

    def rejected(self, rows: int) -> None:
        with self._lock:
            self.counts.rejected += rows

    def sent(self, profiles: int) -> None:
        with self._lock:
            self.counts.sent += profiles

    def jobs_finished(self, accepted: int, failed: int) -> None:
        with self._lock:
            self.counts.accepted += accepted
            self.counts.failed += failed

    def stopped_early(self) -> None:
        """The run failed or ran out of time: the valid rows read but not sent are counted as such."""
        self.counts.not_sent = self.counts.unaccounted

    def report_progress(self) -> None:
        if self._progress is not None:
            self._progress(self.counts)
