"""Follows the run's import jobs until Klaviyo has finished them: finds them in the account's job
listing (asking for those it does not show one by one), puts each finished job's failures to the
rows they came from, and hands what it imported to the sync."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, NamedTuple

from shared.engine.batching import Batch, PartNames
from shared.engine.checkpoint import BatchRecord, FinishedJob, RunCheckpoint
from shared.engine.report import RejectLine, RejectsFile
from shared.engine.spec import ExportSpec
from shared.engine.tally import RunTally
from shared.klaviyo import MAX_PAGE_SIZE, ImportJob, KlaviyoClient, KlaviyoError
from shared.mapping import identifier_text, text_fingerprints
from shared.privacy import mask_attributes, redact
from shared.sync import AcceptedCounts, SyncRun

log = logging.getLogger(__name__)

# While chunks are still being sent, the jobs are looked at every 5 s; and already 1 s after the last
# look once this many jobs are waiting to be finished, as each holds about 160 KB of keys and rows.
_POLL_DURING_UPLOAD_SECONDS = 5.0
_JOBS_KEPT = 16
# Once everything is sent, the first pause before looking again; each next pause doubles, up to the
# spec's poll_interval. The last jobs are often done within moments of their upload, and each look
# is one request of the job-read rate limit.
_FIRST_POLL_SECONDS = 0.05
_ASKED_DIRECTLY = 10  # jobs missing from the listing that one look asks for one by one


class PendingJob(NamedTuple):
    job: ImportJob
    batch: Batch  # the job's profiles' keys and rows, to tell which rows its failures are


class JobTracker:
    """The run's import jobs from their upload until Klaviyo has finished them. The upload threads
    add the jobs they create; the run's thread looks for finished ones between chunks and, once
    everything is sent, until none is left."""

    def __init__(
        self,
        client: KlaviyoClient | None,
        spec: ExportSpec,
        started_at: str,
        job_ids: list[str],
        parts: PartNames,
        tally: RunTally,
        rejects: RejectsFile,
        checkpoint: RunCheckpoint,
        sync: SyncRun | None,
    ) -> None:
        self.client, self.spec, self.started_at, self.parts = client, spec, started_at, parts
        self.job_ids = job_ids  # the report's list of every job of the run, in the order they were created
        self.tally, self.rejects, self.checkpoint, self.sync = tally, rejects, checkpoint, sync
        self._waiting: dict[str, PendingJob] = {}
        self._lock = threading.Lock()  # guards _waiting and job_ids

    @property
    def pending(self) -> int:
        return len(self._waiting)

    def sent(self, job: ImportJob, batch: Batch) -> None:
        """A job an upload thread created, with its batch (already rid of the profiles themselves)."""
        with self._lock:
            self._waiting[job.id] = PendingJob(job, batch)
            self.job_ids.append(job.id)

    def replay(self, record: BatchRecord, batch: Batch) -> None:
        """The jobs of a batch an earlier invocation sent: those it saw finish count as they ended
        then; the others are followed, with this batch to put their failures to rows."""
        with self._lock:
            self.job_ids.extend(record.jobs)
        for job_id in record.jobs:
            finished = self.checkpoint.finished_before(job_id)
            if finished is None:
                batch.release()
                with self._lock:
                    self._waiting[job_id] = PendingJob(ImportJob(job_id, "queued", record.sent, 0, 0, ""), batch)
                continue
            self.tally.jobs_finished(finished.accepted, finished.failed)
            if self.sync is not None:
                self.sync.count_accepted(AcceptedCounts(finished.added, finished.updated))
            self.rejects.add_many(finished.rejects)

    def look_due(self, since: float) -> bool:
        """While chunks are still being sent, whether to look for finished jobs `since` seconds after
        the last look. Finishing jobs as they complete keeps memory flat."""
        return since >= _POLL_DURING_UPLOAD_SECONDS or (since >= 1 and self.pending >= _JOBS_KEPT)

    def wait_for_all(self) -> str | None:
        """Once everything is sent: finishes the jobs as Klaviyo completes them, until none is left.
        Returns why it stopped waiting early (the run must stop), or None."""
        deadline = time.monotonic() + self.spec.job_timeout
        pause = _FIRST_POLL_SECONDS
        while self.collect_finished():
            reason = self.spec.stop_reason()
            if reason:
                return reason
            if time.monotonic() > deadline:
                raise KlaviyoError(
                    f"{self.pending} import job(s) still not complete after {self.spec.job_timeout:.0f} s"
                )
            time.sleep(min(pause, self.spec.poll_interval))
            pause *= 2
            self.tally.report_progress()
        return None

    def collect_finished(self, pages: int | None = None, direct: int = _ASKED_DIRECTLY) -> int:
        """Finishes the jobs Klaviyo has completed (releasing what was kept for them), looking at up
        to `pages` pages of the listing (None: as many as it takes) and asking for up to `direct`
        jobs one by one; returns how many are still pending."""
        with self._lock:
            pending = set(self._waiting)
            done_already = [waiting.job for waiting in self._waiting.values() if waiting.job.done]
        finished = done_already + self._poll(pending - {j.id for j in done_already}, pages, direct)
        for job in finished:
            with self._lock:
                _, batch = self._waiting.pop(job.id)
            self._finish(job, batch)
        if finished:  # accepted counts up on the progress display as the jobs finish
            self.tally.report_progress()
        return len(pending) - len(finished)

    def _poll(self, pending: set[str], pages: int | None, direct: int) -> list[ImportJob]:
        """The finished jobs among `pending`: one call of the listing (newest first) covers up to
        MAX_PAGE_SIZE jobs."""
        assert self.client is not None
        finished: list[ImportJob] = []
        if not pending:
            return finished
        unseen = set(pending)
        for seen, job in enumerate(self.client.recent_import_jobs(), start=1):
            if job.id in unseen:
                unseen.discard(job.id)
                if job.done:
                    finished.append(job)
            if not unseen or job.created_at < self.started_at[:19]:
                break
            if pages is not None and seen >= pages * MAX_PAGE_SIZE:
                return finished
        # Jobs the listing did not show (other writers' jobs crowd it) are asked for directly.
        for job_id in list(unseen)[:direct]:
            job = self.client.get_import_job(job_id)
            if job.done:
                finished.append(job)
        return finished

    def _finish(self, job: ImportJob, batch: Batch) -> None:
        lines, failed_positions = self._failed_rows(job, batch) if job.failed else ([], [])
        failed = max(len(lines), job.failed)
        if job.status == "cancelled":
            failed = max(failed, job.total - job.completed)
        accepted = (job.total or len(batch)) - failed
        if lines:
            self.rejects.add_many(lines)
        counted = AcceptedCounts()
        if self.sync is not None:
            # Only what Klaviyo surely accepted: a failure it names no row for leaves the whole batch out
            # (of the state, and of the counts of profiles added and updated).
            named = [position for position in failed_positions if position >= 0]
            if job.status == "complete" and len(named) == failed:
                counted = self.sync.accepted(job.id, *batch.fingerprints_except(named))
        self.tally.jobs_finished(accepted, failed)
        self.checkpoint.record_finished(job.id, FinishedJob(accepted, failed, lines, *counted))
        log.info("import job %s %s: %d imported, %d failed", job.id, job.status, accepted, failed)

    def _failed_rows(self, job: ImportJob, batch: Batch) -> tuple[list[RejectLine], list[int]]:
        """The reject lines of a job's failed profiles, and their positions in its batch (-1 for a
        profile no row of the batch matches)."""
        assert self.client is not None
        index = {key: i for i, key in enumerate(batch.keys)}
        errors = list(self.client.import_errors(job.id))
        payloads = [_payload_attributes(error.get("original_payload") or {}) for error in errors]
        # The failed profiles' keys in one call, not an Arrow call per failed profile.
        keys = text_fingerprints([identifier_text(attributes) for attributes in payloads]).tolist()
        lines: list[RejectLine] = []
        positions: list[int] = []
        for error, attributes, key in zip(errors, payloads, keys, strict=True):
            position = index.get(key, -1)
            detail = redact(error.get("detail") or error.get("title") or error.get("code") or "failed")
            positions.append(position)
            part, number = self.parts.row_of(batch.rows[position]) if position >= 0 else ("", 0)
            where = "the profile" if position >= 0 else f"a profile of job {job.id}"
            reason = f"Klaviyo could not import {where}: {detail}"
            lines.append(RejectLine(part, number, mask_attributes(attributes), "failed", "", reason))
        return lines, positions


def _payload_attributes(payload: dict[str, Any]) -> dict[str, Any]:
    """A failed profile's attributes, from the payload Klaviyo returns with the error."""
    return payload.get("attributes", payload)
