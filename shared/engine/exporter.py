"""One export run from start to report: checks, checkpoint, the chunk pipeline feeding the uploader,
waiting for the import jobs, the sync state, and the run's outcome."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from shared.engine.batching import PartNames
from shared.engine.checkpoint import CheckpointStore, RunCheckpoint
from shared.engine.checks import check_before_sending
from shared.engine.jobs import JobTracker
from shared.engine.memory import tune_allocator
from shared.engine.pipeline import ChunkPipeline
from shared.engine.report import RejectsFile, RunReport
from shared.engine.spec import ConfigurationError, ExportSpec, Phase, ProgressCallback
from shared.engine.status import RunStatus
from shared.engine.subscriber import Subscriber
from shared.engine.tally import RunTally
from shared.engine.uploader import Uploader
from shared.klaviyo import KlaviyoClient, KlaviyoError
from shared.sources import SegmentError, SegmentSource, SegmentUnavailable
from shared.sync import RemovalStopped, SyncRun, SyncStateStore
from shared.telemetry import run_context

log = logging.getLogger(__name__)


def now_iso() -> str:
    """The time now, in UTC to the millisecond, as the report gives its times."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def run_export(
    source: SegmentSource,
    spec: ExportSpec,
    client: KlaviyoClient | None,
    progress: ProgressCallback | None = None,
    rejects: RejectsFile | None = None,
    checkpoints: CheckpointStore | None = None,
    sync_state: SyncStateStore | None = None,
) -> RunReport:
    """Runs one export to the end and returns its report. Raises ConfigurationError only for
    problems found before anything was sent; any later failure is a report with status failed.
    With a sync state store, only new and changed profiles are sent (unless spec.full) and, in
    mirror mode, profiles that left the segment are taken off the list."""
    if spec.sync.reconcile and sync_state is None:
        raise ConfigurationError("reconcile needs a sync state")
    if spec.sync.mirror and sync_state is None:
        raise ConfigurationError("mirror mode needs a sync state (where the profiles put on the list are recorded)")
    report = RunReport(
        spec.run_id,
        spec.export_name,
        spec.list_id,
        source.location,
        source.version,
        started_at=now_iso(),
        dry_run=spec.dry_run,
        mode=spec.sync.mode.value,
        sync_state=sync_state.location if sync_state is not None else None,
        metadata=source.metadata,
        parts=[part.name for part in source.parts],
    )
    tune_allocator()
    rejects = rejects or RejectsFile()
    rejects.order_parts(report.parts)  # rejects.csv lists the rows part by part, in the segment's order
    run = ExportRun(source, spec, client, report, rejects, progress, checkpoints, sync_state)
    with run_context(spec.run_id, spec.export_name):
        return run.execute()


class ExportRun:
    """Runs the phases of one export in order and turns how they ended into the report. The work
    itself is done by the chunk pipeline (reading to batches), the uploader (batches to import
    jobs) and the job tracker (jobs to accepted and failed rows); the counts are the tally's."""

    def __init__(
        self,
        source: SegmentSource,
        spec: ExportSpec,
        client: KlaviyoClient | None,
        report: RunReport,
        rejects: RejectsFile,
        progress: ProgressCallback | None = None,
        checkpoints: CheckpointStore | None = None,
        sync_state: SyncStateStore | None = None,
    ) -> None:
        self.source, self.spec, self.client, self.report, self.rejects = source, spec, client, report, rejects
        self.tally = RunTally(report.counts, progress)
        self.sync = (
            SyncRun(sync_state, spec.sync, spec.list_id, spec.run_id, report.counts, client, spec.dry_run)
            if sync_state is not None
            else None
        )
        # A dry run sends nothing, so it has nothing to go on from.
        self.checkpoint = RunCheckpoint(None if spec.dry_run else checkpoints, spec.run_id, source.version)
        self.parts = PartNames([p.name for p in source.parts])
        self.jobs = JobTracker(
            client, spec, report.started_at, report.job_ids, self.parts, self.tally, rejects, self.checkpoint, self.sync
        )
        self.uploader = Uploader(client, spec, self.parts, self.tally, rejects, self.checkpoint, self.jobs)
        self.subscriber = (
            Subscriber(client, spec, spec.subscribe, report.counts, rejects, self.parts)
            if spec.subscribe is not None
            else None
        )
        self.interrupted = False  # the time budget ran out: the run checkpoints and stops
        self.cancelled: str | None = None  # why the run stopped before its end, on request or by a change

    def execute(self) -> RunReport:
        started = time.monotonic()
        try:
            self._run_phases()
        except ConfigurationError:
            raise
        except (KlaviyoError, SegmentError) as exc:
            self.report.error = str(exc)
            log.error("run %s failed: %s", self.spec.run_id, exc)
        except Exception as exc:  # the report must say the run failed, whatever broke
            self.report.error = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("run %s failed unexpectedly", self.spec.run_id)
        finally:
            if self.subscriber is not None:
                self.subscriber.close()
            self.rejects.close()
            self._save_sync_state()
        elapsed = time.monotonic() - started
        self._complete_report(elapsed)
        self.tally.report_progress()
        self._log_outcome(elapsed)
        return self.report

    def _run_phases(self) -> None:
        spec = self.spec
        spec.enter(Phase.CHECKING)
        check_before_sending(self.source, spec, self.client)
        self._load_checkpoint()
        if self.subscriber is not None:
            self.subscriber.resume(self.checkpoint.subscriptions())
        if self.sync is not None:
            self.sync.load(resumed=self.checkpoint.invocations > 1)
            self.report.list_members = self.sync.list_members
        spec.enter(Phase.SENDING)
        self._stream_and_upload()
        if self.subscriber is not None:
            self.subscriber.segment_read(self.checkpoint, interrupted=self.interrupted)
        self.cancelled = self.cancelled or self.uploader.cancelled
        if self.interrupted:
            self.checkpoint.save()
        elif self.cancelled:
            self.jobs.collect_finished(pages=1, direct=0)  # what is already known; the run does not wait
        elif not spec.dry_run:
            spec.enter(Phase.WAITING)
            self.cancelled = self.jobs.wait_for_all()
        if self.subscriber is not None:
            done = self.subscriber.complete(bool(self.interrupted or self.cancelled), self.checkpoint)
            self.cancelled = self.cancelled or self.subscriber.calls.cancelled
            if not done:  # time ran out with calls left: they go on in the next invocation
                self.interrupted = True
                self.checkpoint.save()
        if self.sync is not None and not self.interrupted and not self.cancelled:
            self.cancelled = spec.stop_reason()
            if not self.cancelled:
                spec.enter(Phase.REMOVING)
                try:
                    self.report.error = self.sync.remove_departed(spec.stop_reason)
                except RemovalStopped as stopped:
                    self.cancelled = str(stopped)

    def _load_checkpoint(self) -> None:
        store = self.checkpoint.store
        if store is None:
            return
        found = store.load()
        if found is not None:
            if found.source_version != self.source.version:
                raise SegmentUnavailable(
                    f"{self.source.location}: the segment changed since this run started; start a new run"
                )
            self.checkpoint.resume(found)
            log.info("run %s resumes: %d batches already sent", self.spec.run_id, self.checkpoint.batches_sent)
        self.checkpoint.begin_invocation()

    def _stream_and_upload(self) -> None:
        flush_points, subscriber = self.checkpoint.flush_points(), self.subscriber
        pipeline = ChunkPipeline(
            self.source, self.spec, self.parts, self.tally, self.rejects, self.sync, flush_points, subscriber
        )
        uploader, deadline = self.uploader, self.spec.deadline
        with uploader.threads():
            last_look = time.monotonic()
            for mapped_chunk in pipeline.mapped_chunks():
                if uploader.stopping:
                    break
                self.cancelled = self.spec.stop_reason()
                if self.cancelled:
                    uploader.stopping = True
                    break
                for batch in pipeline.batches(mapped_chunk):
                    uploader.submit(batch)
                self.tally.report_progress()
                if not self.spec.dry_run and self.jobs.look_due(time.monotonic() - last_look):
                    self.jobs.collect_finished(pages=1, direct=0)
                    last_look = time.monotonic()
                # Only once this invocation has sent something new, so every invocation makes progress.
                if deadline is not None and uploader.sent_new and time.monotonic() > deadline:
                    self._stop_for_time(pipeline)
                    break
            last = None if self.interrupted or self.cancelled or uploader.stopping else pipeline.flush()
            if last is not None:
                uploader.submit(last)
            uploader.finish()

    def _stop_for_time(self, pipeline: ChunkPipeline) -> None:
        """The time budget ran out: the batch being filled is sent as it is, and the checkpoint notes
        where it was cut, so the next invocation cuts its batches there too."""
        early = pipeline.flush()
        if early is not None:
            self.checkpoint.add_flush_point(early.rows[-1])
            self.uploader.submit(early)
        self.interrupted = True
        log.info(
            "run %s: time budget spent after %d rows; checkpointing", self.spec.run_id, self.tally.counts.rows_read
        )

    def _save_sync_state(self) -> None:
        """What Klaviyo accepted goes into the sync state, however the run ended; an interrupted run
        keeps it aside until its last invocation, so its own delta filter stays the same throughout."""
        if self.sync is None or self.spec.dry_run:
            return
        try:
            self.sync.save(finished=not self.interrupted)
        except Exception as exc:
            self.report.error = self.report.error or f"the sync state could not be saved: {type(exc).__name__}: {exc}"
            log.exception("run %s: sync state not saved", self.spec.run_id)

    def _complete_report(self, elapsed: float) -> None:
        r, counts = self.report, self.tally.counts
        r.finished_at, r.duration_seconds = now_iso(), round(elapsed, 3)
        r.rows_per_second = round(counts.rows_read / elapsed, 1) if elapsed > 0 else 0.0
        if self.client is not None:
            r.retries = {k: v for k, v in self.client.stats.counts.items() if k.startswith("retried_")}
        r.reasons = self.rejects.reasons()
        if r.error or self.interrupted or self.cancelled:
            self.tally.stopped_early()
        if r.error:
            r.status = RunStatus.FAILED
        elif self.cancelled:
            r.status, r.error = RunStatus.CANCELLED, self.cancelled
        elif self.interrupted:
            r.status = RunStatus.INCOMPLETE
        elif counts.rejected or counts.failed or counts.not_subscribed:
            r.status = RunStatus.COMPLETED_WITH_REJECTS
        else:
            r.status = RunStatus.SUCCEEDED

    def _log_outcome(self, elapsed: float) -> None:
        counts = self.tally.counts
        log.info(
            "run %s %s: %d read, %d sent, %d accepted, %d failed, %d rejected, %d duplicates in %.1f s",
            self.report.run_id,
            self.report.status,
            counts.rows_read,
            counts.sent,
            counts.accepted,
            counts.failed,
            counts.rejected,
            counts.duplicates,
            elapsed,
        )
