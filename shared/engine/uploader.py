"""Sends the run's batches to Klaviyo as import jobs, a few at a time in upload threads: splits the
batches Klaviyo refuses until the profiles it refuses are out, replays the batches a checkpoint says
were sent, and stops sending after a fatal answer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from orjson import loads

from shared.engine.batching import Batch, PartNames
from shared.engine.checkpoint import BatchRecord, RunCheckpoint
from shared.engine.jobs import JobTracker
from shared.engine.report import RejectLine, RejectsFile
from shared.engine.spec import ExportSpec
from shared.engine.tally import RunTally
from shared.klaviyo import InvalidPayload, KlaviyoClient, KlaviyoError
from shared.privacy import mask_attributes, redact
from shared.telemetry import carry_run_context

log = logging.getLogger(__name__)

# Where Klaviyo's error pointers name a profile of the job: this prefix, then its index in the job.
_POINTER_PREFIX = "/data/attributes/profiles/data/"


class Uploader:
    """Sends batches as import jobs in `spec.max_in_flight` upload threads (`submit`, within
    `threads()`), or one on the calling thread (`upload`). A batch a checkpoint says was sent is
    counted again, never sent again. After a fatal answer (a bad key, a missing scope, a deleted
    list) nothing more is sent: every other upload would fail too."""

    def __init__(
        self,
        client: KlaviyoClient | None,
        spec: ExportSpec,
        parts: PartNames,
        tally: RunTally,
        rejects: RejectsFile,
        checkpoint: RunCheckpoint,
        jobs: JobTracker,
    ) -> None:
        self.client, self.spec, self.parts = client, spec, parts
        self.tally, self.rejects, self.checkpoint, self.jobs = tally, rejects, checkpoint, jobs
        self.stopping = False  # set by an upload thread on a fatal answer: batches not yet sent are not sent
        self.sent_new = False  # whether this invocation has sent a batch itself (not just replayed one)
        self.cancelled: str | None = None  # why an upload thread found the run must stop: nothing more is sent
        self._pool: ThreadPoolExecutor | None = None
        # Upload threads whose jobs Klaviyo refuses at once (a deleted list refuses them all) look at
        # the list one at a time; the first fatal answer is kept and the others stop with it.
        self._refusals = threading.Lock()
        self._fatal: KlaviyoError | None = None
        self._in_flight: set[Future[None]] = set()

    @contextmanager
    def threads(self) -> Iterator[None]:
        """The upload threads, for `submit`; leaving waits for the uploads still running."""
        with ThreadPoolExecutor(
            max_workers=self.spec.max_in_flight,
            thread_name_prefix="upload",
            initializer=carry_run_context(self.spec.thread_initializer),
        ) as pool:
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    def submit(self, batch: Batch) -> None:
        """Hands a batch to an upload thread. While every thread is busy, one batch more may wait
        for them (each waiting batch holds about 5 MB); the next one waits here until one is done."""
        done = self.checkpoint.sent_before(batch)
        if done is not None:
            self._replay(batch, done)
            return
        if self.spec.dry_run:
            self.tally.sent(len(batch))
            return
        assert self._pool is not None, "submit() is for use within threads()"
        in_flight = self._in_flight
        while len(in_flight) >= self.spec.max_in_flight + 1:
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                in_flight.discard(future)
                future.result()
        self.sent_new = True
        in_flight.add(self._pool.submit(self.upload, batch))

    def finish(self) -> None:
        """Waits for the uploads submitted; raises the error of the first that failed."""
        for future in self._in_flight:
            future.result()

    def upload(self, batch: Batch) -> None:
        """Sends a batch (split as Klaviyo's refusals require), then records it in the checkpoint."""
        if self.stopping:
            return
        reason = self.spec.stop_reason()
        if reason:
            self.cancelled, self.stopping = reason, True
            return
        record = BatchRecord()
        try:
            self._send(batch, record)
        except KlaviyoError as exc:
            if exc.fatal:
                self.stopping = True
            raise
        self.checkpoint.record_batch(batch, record)

    def _send(self, batch: Batch, record: BatchRecord) -> None:
        assert self.client is not None
        try:
            job = self.client.create_import_job(batch.body(self.spec.list_id))
        except InvalidPayload as exc:
            self._split_invalid(batch, exc, record)
            return
        batch.release()
        self.jobs.sent(job, batch)
        self.tally.sent(len(batch))
        record.jobs.append(job.id)
        record.sent += len(batch)
        log.info("import job %s: %d profiles sent", job.id, len(batch))

    def _replay(self, batch: Batch, record: BatchRecord) -> None:
        """A batch an earlier invocation already sent: count it, never send it again."""
        self.tally.sent(record.sent)
        if record.rejects:
            self.tally.rejected(len(record.rejects))
            self.rejects.add_many(record.rejects)
        self.jobs.replay(record, batch)

    def _split_invalid(self, batch: Batch, exc: InvalidPayload, record: BatchRecord) -> None:
        """Klaviyo refuses a whole job for one bad profile: take out the profiles its pointers name
        and resend the rest; with no usable pointer, halve the batch until the culprit is alone."""
        bad: dict[int, str] = {}
        pointers = [(error.get("source") or {}).get("pointer") or "" for error in exc.errors]
        if any(pointers) and not any(p.startswith(_POINTER_PREFIX) for p in pointers):
            self._refused_job(exc)
        for error, pointer in zip(exc.errors, pointers, strict=True):
            index = _pointer_index(pointer, len(batch))
            if index is not None:
                bad.setdefault(index, redact(error.get("detail") or error.get("title") or "invalid profile"))
        if bad:
            for index, reason in bad.items():
                self._reject_sent(batch, index, f"Klaviyo refused the profile: {reason}", record)
            rest = [i for i in range(len(batch)) if i not in bad]
            if rest:
                self._send(batch.subset(rest), record)
        elif len(batch) == 1:
            self._reject_sent(batch, 0, f"Klaviyo refused the profile: {exc}", record)
        else:
            half = len(batch) // 2
            self._send(batch.subset(list(range(half))), record)
            self._send(batch.subset(list(range(half, len(batch)))), record)

    def _refused_job(self, exc: InvalidPayload) -> None:
        """Klaviyo refused the job itself, not a profile in it (e.g. the list is gone): no part of
        any batch would go through, so the run stops. Only the first upload refused asks why."""
        with self._refusals:
            if self._fatal is None:
                self._fatal = self._why_refused(exc)
                self.stopping = True
            first = self._fatal
        raise KlaviyoError(str(first), first.status, first.code, fatal=True)

    def _why_refused(self, exc: InvalidPayload) -> KlaviyoError:
        """The fatal error a refused job stands for: the list's own (a 404 once it is deleted), else the
        refusal itself. A passing failure to look at the list is raised as it is."""
        assert self.client is not None
        try:
            self.client.get_list(self.spec.list_id)
        except KlaviyoError as answer:
            if not answer.fatal:
                raise
            return answer
        return KlaviyoError(f"Klaviyo refused the import job itself: {exc}", exc.status, exc.code, fatal=True)

    def _reject_sent(self, batch: Batch, index: int, reason: str, record: BatchRecord) -> None:
        part, number = self.parts.row_of(batch.rows[index])
        line = RejectLine(part, number, mask_attributes(_attributes(batch.profile(index))), "rejected", "", reason)
        record.rejects.append(line)
        self.tally.rejected(1)
        self.rejects.add(line)


def _pointer_index(pointer: str, size: int) -> int | None:
    """The index of the profile an error pointer names, if it names one of the batch's."""
    if not pointer.startswith(_POINTER_PREFIX):
        return None
    head = pointer[len(_POINTER_PREFIX) :].split("/", 1)[0]
    return int(head) if head.isdigit() and int(head) < size else None


def _attributes(profile: bytes) -> dict[str, Any]:
    return loads(profile).get("attributes", {})
