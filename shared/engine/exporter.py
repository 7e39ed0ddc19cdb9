"""The export run: stream -> map/validate -> dedupe -> batch -> upload (overlapped) -> poll jobs -> report."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from orjson import loads

from shared.engine.batching import Batch, Batcher
from shared.engine.checkpoint import Checkpoint, CheckpointStore
from shared.engine.dedupe import SeenKeys
from shared.engine.memory import tune_allocator
from shared.engine.report import Counts, RejectsFile, RunReport
from shared.engine.status import RunStatus
from shared.klaviyo import MAX_PROFILE_BYTES, ImportJob, InvalidPayload, KlaviyoClient, KlaviyoError
from shared.mapping import (
    ColumnarMapper,
    ColumnsMapped,
    FieldMapping,
    MappedRows,
    ProfileMapper,
    identifier_text,
    text_fingerprints,
)
from shared.privacy import mask_attributes, redact
from shared.sources import RowChunk, SegmentError, SegmentSource, SegmentUnavailable, TableChunk, looks_like_data
from shared.sync import DEFAULT_MAX_REMOVAL_SHARE, SyncMode, SyncOptions, SyncOptionsError, SyncRun, SyncStateStore
from shared.telemetry import carry_run_context, run_context

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Counts], None]
_POINTER_PREFIX = "/data/attributes/profiles/data/"
_POLL_DURING_UPLOAD_SECONDS = 5.0
_JOBS_KEPT = 16  # jobs waiting (each holds ~160 KB of keys and rows) that bring the next look after 1 s
_DUPLICATE = "same identifier as an earlier row; the first row was kept"
_FIRST_POLL_SECONDS = 0.05
_CHUNKS_AHEAD = 1  # read and mapping while the current one is sent (each ~10,000 rows)
_MAPPERS = 1  # threads mapping chunks: the GIL leaves little for a second one (measured: no faster)


class ConfigurationError(Exception):
    """Found before anything was sent: a missing column, a bad mapping, a key or list that won't work."""


@dataclass
class ExportSpec:
    export_name: str
    list_id: str
    mapping: FieldMapping
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    dry_run: bool = False
    max_in_flight: int = 6  # upload threads; the rate limiter, not this, sets the pace
    poll_interval: float = 0.5
    job_timeout: float = 3600.0
    thread_initializer: Callable[[], None] | None = None  # e.g. carries the Functions invocation id
    deadline: float | None = None  # time.monotonic() after which the run checkpoints and stops
    # The sync options, given one by one and checked once into `sync` (read them there: as init-only
    # fields, spec.mode and the others always read their defaults).
    mode: InitVar[str] = SyncMode.ADD
    full: InitVar[bool] = False
    confirm_removals: InitVar[bool] = False
    max_removal_share: InitVar[float] = DEFAULT_MAX_REMOVAL_SHARE
    reconcile: InitVar[bool] = False
    sync: SyncOptions = field(init=False)

    def __post_init__(
        self, mode: str, full: bool, confirm_removals: bool, max_removal_share: float, reconcile: bool
    ) -> None:
        try:
            self.sync = SyncOptions.of(mode, full, confirm_removals, max_removal_share, reconcile)
        except SyncOptionsError as exc:
            raise ConfigurationError(str(exc)) from None


def now_iso() -> str:
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
    )
    tune_allocator()
    run = _Run(source, spec, client, report, rejects or RejectsFile(), progress, checkpoints, sync_state)
    with run_context(spec.run_id, spec.export_name):
        return run.execute()


class _Run:
    def __init__(
        self,
        source: SegmentSource,
        spec: ExportSpec,
        client: KlaviyoClient | None,
        report: RunReport,
        rejects: RejectsFile,
        progress: ProgressCallback | None,
        checkpoints: CheckpointStore | None = None,
        sync_state: SyncStateStore | None = None,
    ) -> None:
        self.source, self.spec, self.client, self.report = source, spec, client, report
        self.sync = (
            SyncRun(sync_state, spec.sync, spec.list_id, spec.run_id, report.counts, client, spec.dry_run)
            if sync_state is not None
            else None
        )
        self.checkpoints = None if spec.dry_run else checkpoints
        self.checkpoint = Checkpoint(spec.run_id, source.version)
        self.interrupted = False
        self.stopping = False  # a fatal Klaviyo answer: batches not yet sent are not sent
        self.sent_new = False
        self.counts = report.counts
        self.rejects = rejects
        self.progress = progress
        self.lock = threading.Lock()
        self.jobs: dict[str, tuple[ImportJob, Batch]] = {}
        self.part_names = [p.name for p in source.parts]

    # -- phases --------------------------------------------------------------------------------
    def execute(self) -> RunReport:
        started = time.monotonic()
        try:
            self._check_before_sending()
            self._load_checkpoint()
            if self.sync is not None:
                self.sync.load(resumed=self.checkpoint.invocations > 1)
                self.report.list_members = self.sync.list_members
            self._stream_and_upload()
            if self.interrupted:
                self._save_checkpoint()
            elif not self.spec.dry_run:
                self._wait_for_jobs()
            if self.sync is not None and not self.interrupted:
                self.report.error = self.sync.remove_departed()
        except ConfigurationError:
            raise
        except (KlaviyoError, SegmentError) as exc:
            self.report.error = str(exc)
            log.error("run %s failed: %s", self.spec.run_id, exc)
        except Exception as exc:  # the report must say the run failed, whatever broke
            self.report.error = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("run %s failed unexpectedly", self.spec.run_id)
        finally:
            self.rejects.close()
            self._save_sync_state()
        elapsed = time.monotonic() - started
        r = self.report
        r.finished_at, r.duration_seconds = now_iso(), round(elapsed, 3)
        r.rows_per_second = round(self.counts.rows_read / elapsed, 1) if elapsed > 0 else 0.0
        if self.client is not None:
            r.retries = {k: v for k, v in self.client.stats.counts.items() if k.startswith("retried_")}
        r.reasons = self.rejects.reasons()
        if r.error or self.interrupted:
            self.counts.not_sent = self.counts.unaccounted
        if r.error:
            r.status = RunStatus.FAILED
        elif self.interrupted:
            r.status = RunStatus.INCOMPLETE
        elif self.counts.rejected or self.counts.failed:
            r.status = RunStatus.COMPLETED_WITH_REJECTS
        else:
            r.status = RunStatus.SUCCEEDED
        self._emit_progress()
        log.info(
            "run %s %s: %d read, %d sent, %d accepted, %d failed, %d rejected, %d duplicates in %.1f s",
            r.run_id,
            r.status,
            self.counts.rows_read,
            self.counts.sent,
            self.counts.accepted,
            self.counts.failed,
            self.counts.rejected,
            self.counts.duplicates,
            elapsed,
        )
        return r

    def _check_before_sending(self) -> None:
        try:
            headers = self.source.headers()
        except SegmentUnavailable:
            raise
        except SegmentError as exc:
            raise ConfigurationError(str(exc)) from None
        for part, header in headers.items():
            missing = self.spec.mapping.missing_columns(header)
            if missing:
                found = (
                    "the first row looks like data, not column names: is the header row missing?"
                    if looks_like_data(header)
                    else f"the header has: {', '.join(header[:30])}"
                )
                raise ConfigurationError(
                    f"{part}: mapped column(s) missing from the header: {', '.join(missing)} ({found})"
                )
        if self.spec.dry_run:
            return
        if self.client is None:
            raise ConfigurationError("no Klaviyo client: give an API key, or use a dry run")
        try:
            self.client.check_import_access(self.spec.list_id)
        except KlaviyoError as exc:
            if exc.fatal:
                raise ConfigurationError(str(exc)) from None
            raise

    def _stream_and_upload(self) -> None:
        mapper = ProfileMapper(self.spec.mapping)
        columnar = ColumnarMapper(mapper)
        batcher = Batcher(self.spec.list_id)
        seen = SeenKeys()
        counts = self.counts
        part_index = {name: i for i, name in enumerate(self.part_names)}
        with ThreadPoolExecutor(
            max_workers=self.spec.max_in_flight,
            thread_name_prefix="upload",
            initializer=carry_run_context(self.spec.thread_initializer),
        ) as pool:
            in_flight: set[Future[None]] = set()

            def submit(batch: Batch) -> None:
                done = self.checkpoint.batches.get(_batch_key(batch))
                if done is not None:
                    self._replay(batch, done)
                    return
                if self.spec.dry_run:
                    with self.lock:
                        counts.sent += len(batch)
                    return
                while len(in_flight) >= self.spec.max_in_flight + 1:  # each waiting batch holds ~5 MB
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    for future in done:
                        in_flight.discard(future)
                        future.result()
                self.sent_new = True
                in_flight.add(pool.submit(self._upload, batch))

            reserved = False
            flush_points = set(self.checkpoint.flush_points)
            last_poll = time.monotonic()
            deadline = self.spec.deadline
            for chunk, mapped in self._mapped_chunks(mapper, columnar):
                if self.stopping:
                    break
                part = part_index[chunk.source]
                if not reserved and isinstance(chunk, TableChunk):
                    reserved = self._make_room(seen, chunk)
                bodies, keys, rows, ids, prints = self._valid_new_profiles(chunk, mapped, seen, part)
                # A resumed run flushes early where the run it resumes did, so its batches are the same.
                cuts = (np.flatnonzero(np.isin(rows, list(flush_points))) + 1).tolist() if flush_points else []
                start = 0
                for end in [*cuts, None]:
                    picked = (
                        (ids[start:end], prints[start:end]) if ids is not None and prints is not None else (None, None)
                    )
                    for full in batcher.add_many(bodies[start:end], keys[start:end], rows[start:end], *picked):
                        submit(full)
                    if end is not None and (early := batcher.flush()) is not None:
                        submit(early)
                    start = end
                self._emit_progress()
                since = time.monotonic() - last_poll
                if not self.spec.dry_run and (
                    since >= _POLL_DURING_UPLOAD_SECONDS or (since >= 1 and len(self.jobs) >= _JOBS_KEPT)
                ):
                    # Finishing jobs as they complete keeps memory flat: each holds its rows' keys.
                    self._collect_finished(pages=1, direct=0)
                    last_poll = time.monotonic()
                # Only once this invocation has sent something new, so every invocation makes progress.
                if deadline is not None and self.sent_new and time.monotonic() > deadline:
                    early = batcher.flush()
                    if early is not None:
                        self.checkpoint.flush_points.append(early.rows[-1])
                        submit(early)
                    self.interrupted = True
                    log.info(
                        "run %s: time budget spent after %d rows; checkpointing",
                        self.spec.run_id,
                        counts.rows_read,
                    )
                    break
            last = None if self.interrupted or self.stopping else batcher.flush()
            if last is not None:
                submit(last)
            for future in in_flight:
                future.result()

    def _mapped_chunks(
        self, mapper: ProfileMapper, columnar: ColumnarMapper
    ) -> Iterator[tuple[RowChunk | TableChunk, MappedRows]]:
        """Each chunk with its mapping, in order. Chunks are read in one thread and mapped in another
        while this one dedupes and sends: Arrow and numpy release the GIL, so they share the cores.
        The rows a table's fast checks leave out are mapped here, on this thread, which would
        otherwise wait: the mapping thread goes on with the column kernels of the next chunk."""
        initializer = carry_run_context(self.spec.thread_initializer)
        ready: queue.Queue[Future[tuple[RowChunk | TableChunk, MappedRows | ColumnsMapped]] | None] = queue.Queue(
            _CHUNKS_AHEAD
        )
        stopping = threading.Event()

        def map_chunk(chunk: RowChunk | TableChunk) -> tuple[RowChunk | TableChunk, MappedRows | ColumnsMapped]:
            if isinstance(chunk, TableChunk):
                return chunk, columnar.map_columns(chunk.table, chunk.numbers)
            return chunk, mapper.map_records(chunk.columns, chunk.numbers, chunk.records)

        def read(mappers: ThreadPoolExecutor) -> None:
            try:
                for chunk in self.source.chunks(columns=mapper.columns):
                    if stopping.is_set():
                        return
                    if isinstance(chunk, TableChunk):
                        ready.put(mappers.submit(map_chunk, chunk))
                    else:  # mapped row by row, all under the GIL: one more thread would only wait for it
                        mapped: Future[tuple[RowChunk | TableChunk, MappedRows | ColumnsMapped]] = Future()
                        mapped.set_result(map_chunk(chunk))
                        ready.put(mapped)
            except BaseException as exc:
                failed: Future[tuple[RowChunk | TableChunk, MappedRows | ColumnsMapped]] = Future()
                failed.set_exception(exc)
                ready.put(failed)
                return
            ready.put(None)

        with (
            ThreadPoolExecutor(_MAPPERS, thread_name_prefix="map", initializer=initializer) as mappers,
            ThreadPoolExecutor(1, thread_name_prefix="read", initializer=initializer) as reader,
        ):
            reading = reader.submit(read, mappers)
            try:
                while (future := ready.get()) is not None:
                    chunk, mapped = future.result()
                    yield chunk, columnar.complete(mapped) if isinstance(mapped, ColumnsMapped) else mapped
            finally:
                stopping.set()
                while not reading.done():  # a reader waiting on a full queue must see the stop
                    with contextlib.suppress(queue.Empty):
                        ready.get(timeout=0.05)

    def _make_room(self, seen: SeenKeys, chunk: TableChunk) -> bool:
        """Room in `seen` at once for about as many identifiers as the segment's parts of the first
        table's format have rows, estimated from that table's rows a byte (growing by doubling
        re-inserts every key each time). A compressed part's bytes make the estimate err low, never
        high. True once done."""
        if not chunk.table.num_rows:
            return False
        source = self.source
        fmt = source.format_of(next(part for part in source.parts if part.name == chunk.source))
        size = sum(part.size for part in source.parts if source.format_of(part) == fmt)
        seen.reserve(int(size * chunk.table.num_rows / chunk.size))
        return True

    def _valid_new_profiles(
        self, chunk: RowChunk | TableChunk, mapped: MappedRows, seen: SeenKeys, part: int
    ) -> tuple[pa.BinaryArray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Records a mapped chunk's rejected rows, drops duplicates (first row wins) and, in a delta
        run, the profiles Klaviyo accepted before exactly as they are; returns what to send:
        serialized profiles (each with a trailing comma), their keys and packed rows, and with a sync
        state their identifier and profile fingerprints."""
        source, counts = chunk.source, self.counts
        counts.rows_read += len(chunk.numbers) + len(chunk.errors)
        lines = [[source, number, "", "rejected", "", reason] for number, reason in chunk.errors]
        lines += [
            [source, number, rejection.masked, "rejected", rejection.field, rejection.reason]
            for number, rejection in mapped.rejections
        ]
        first = seen.add_chunk(mapped.keys)
        sizes = pc.binary_length(mapped.bodies).to_numpy() - 1  # without the comma
        keep = first & (sizes <= MAX_PROFILE_BYTES)
        dropped = np.flatnonzero(~keep)
        duplicates = 0
        for index, number, masked in zip(
            dropped.tolist(), mapped.numbers[dropped].tolist(), mapped.masked(dropped), strict=True
        ):
            if not first[index]:
                duplicates += 1
                lines.append([source, number, masked, "duplicate", "", _DUPLICATE])
            else:
                reason = f"profile is {sizes[index]:,} bytes; Klaviyo allows {MAX_PROFILE_BYTES:,}"
                lines.append([source, number, masked, "rejected", "", reason])
        if lines:
            with self.lock:
                counts.duplicates += duplicates
                counts.rejected += len(lines) - duplicates
            self.rejects.add_many(lines)
        rows = mapped.numbers[keep] | (part << 40)
        kept = pa.array(keep)
        bodies, keys = mapped.bodies.filter(kept), mapped.keys[keep]
        if self.sync is None:
            return bodies, keys, rows, None, None
        identifiers = mapped.identifiers.filter(kept) if mapped.identifiers is not None else None
        send, ids, prints = self.sync.changed(identifiers, bodies)
        if send is None:
            return bodies, keys, rows, ids, prints
        return bodies.filter(pa.array(send)), keys[send], rows[send], ids[send], prints[send]

    def _upload(self, batch: Batch) -> None:
        """Sends a batch (split as Klaviyo's refusals require), then records it as done."""
        if self.stopping:
            return
        record: dict[str, Any] = {"jobs": [], "sent": 0, "rejects": []}
        try:
            self._send(batch, record)
        except KlaviyoError as exc:
            if exc.fatal:  # a bad key, a missing scope, a deleted list: every other upload would fail too
                self.stopping = True
            raise
        with self.lock:
            self.checkpoint.batches[_batch_key(batch)] = record
        self._save_checkpoint()

    def _send(self, batch: Batch, record: dict[str, Any]) -> None:
        assert self.client is not None
        try:
            job = self.client.create_import_job(batch.body(self.spec.list_id))
        except InvalidPayload as exc:
            self._split_invalid(batch, exc, record)
            return
        batch.release()
        with self.lock:
            self.jobs[job.id] = (job, batch)
            self.report.job_ids.append(job.id)
            self.counts.sent += len(batch)
            record["jobs"].append(job.id)
            record["sent"] += len(batch)
        log.info("import job %s: %d profiles sent", job.id, len(batch))

    def _replay(self, batch: Batch, record: dict[str, Any]) -> None:
        """A batch an earlier invocation already sent: count it, never send it again."""
        with self.lock:
            self.counts.sent += record["sent"]
            self.report.job_ids.extend(record["jobs"])
        for line in record["rejects"]:
            self._reject(*line)
        for job_id in record["jobs"]:
            finished = self.checkpoint.finished_jobs.get(job_id)
            if finished is None:  # still to poll, with this batch to attribute its errors to rows
                batch.release()
                self.jobs[job_id] = (ImportJob(job_id, "queued", record["sent"], 0, 0, ""), batch)
                continue
            with self.lock:
                self.counts.accepted += finished["accepted"]
                self.counts.failed += finished["failed"]
            for line in finished["rejects"]:
                self.rejects.add(*line)

    def _load_checkpoint(self) -> None:
        if self.checkpoints is None:
            return
        found = self.checkpoints.load()
        if found is not None:
            if found.source_version != self.source.version:
                raise SegmentUnavailable(
                    f"{self.source.location}: the segment changed since this run started; start a new run"
                )
            self.checkpoint = found
            log.info("run %s resumes: %d batches already sent", self.spec.run_id, len(found.batches))
        self.checkpoint.invocations += 1
        self._save_checkpoint()

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

    def _save_checkpoint(self) -> None:
        if self.checkpoints is not None:
            with self.lock:
                snapshot = Checkpoint.from_json(self.checkpoint.to_json())
            self.checkpoints.save(snapshot)

    def _split_invalid(self, batch: Batch, exc: InvalidPayload, record: dict[str, Any]) -> None:
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
        any batch would go through, so the run stops."""
        assert self.client is not None
        self.client.get_list(self.spec.list_id)  # a fatal 404 if the list was deleted
        raise KlaviyoError(f"Klaviyo refused the import job itself: {exc}", exc.status, exc.code, fatal=True)

    def _wait_for_jobs(self) -> None:
        deadline = time.monotonic() + self.spec.job_timeout
        # The last jobs are often done within moments of their upload: look again soon, then less
        # often (each look is one request of the job-read limit).
        pause = _FIRST_POLL_SECONDS
        while self._collect_finished():
            if time.monotonic() > deadline:
                raise KlaviyoError(
                    f"{len(self.jobs)} import job(s) still not complete after {self.spec.job_timeout:.0f} s"
                )
            time.sleep(min(pause, self.spec.poll_interval))
            pause *= 2
            self._emit_progress()

    def _collect_finished(self, pages: int | None = None, direct: int = 10) -> int:
        """Finishes the jobs Klaviyo has completed (releasing what was kept for them); returns how
        many are still pending."""
        with self.lock:
            pending = {job_id for job_id, (job, _) in self.jobs.items()}
            done_already = [job for job, _ in self.jobs.values() if job.done]
        finished = done_already + self._poll(pending - {j.id for j in done_already}, pages, direct)
        for job in finished:
            with self.lock:
                _, batch = self.jobs.pop(job.id)
            self._finish_job(job, batch)
        return len(pending) - len(finished)

    def _poll(self, pending: set[str], pages: int | None = None, direct: int = 10) -> list[ImportJob]:
        """Finished jobs among `pending`: one listing call covers up to 100 jobs (newest first)."""
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
            if not unseen or job.created_at < self.report.started_at[:19]:
                break
            if pages is not None and seen >= pages * 100:
                return finished
        for job_id in list(unseen)[:direct]:  # not in the listing (another writer's jobs crowd it): ask directly
            job = self.client.get_import_job(job_id)
            if job.done:
                finished.append(job)
        return finished

    def _finish_job(self, job: ImportJob, batch: Batch) -> None:
        assert self.client is not None
        lines: list[list[Any]] = []
        failed_positions: list[int] = []
        if job.failed:
            index = {key: i for i, key in enumerate(batch.keys)}
            errors = list(self.client.import_errors(job.id))
            payloads = [_payload_attributes(error.get("original_payload") or {}) for error in errors]
            # The failed profiles' keys in one call, not an Arrow call per failed profile.
            keys = text_fingerprints([identifier_text(attributes) for attributes in payloads]).tolist()
            for error, attributes, key in zip(errors, payloads, keys, strict=True):
                position = index.get(key, -1)
                detail = redact(error.get("detail") or error.get("title") or error.get("code") or "failed")
                failed_positions.append(position)
                part, number = self._row_of(batch.rows[position]) if position >= 0 else ("", 0)
                where = "the profile" if position >= 0 else f"a profile of job {job.id}"
                lines.append(
                    [
                        part,
                        number,
                        mask_attributes(attributes),
                        "failed",
                        "",
                        f"Klaviyo could not import {where}: {detail}",
                    ]
                )
        failed = max(len(lines), job.failed)
        if job.status == "cancelled":
            failed = max(failed, job.total - job.completed)
        accepted = (job.total or len(batch)) - failed
        for line in lines:
            self.rejects.add(*line)
        if self.sync is not None:
            # Only what Klaviyo surely accepted: a failure it names no row for leaves the whole batch out.
            named = [position for position in failed_positions if position >= 0]
            if job.status == "complete" and len(named) == failed:
                self.sync.accepted(job.id, *batch.fingerprints_except(named))
        with self.lock:
            self.counts.failed += failed
            self.counts.accepted += accepted
            self.checkpoint.finished_jobs[job.id] = {"accepted": accepted, "failed": failed, "rejects": lines}
        self._save_checkpoint()
        log.info("import job %s %s: %d imported, %d failed", job.id, job.status, accepted, failed)

    # -- accounting ----------------------------------------------------------------------------
    def _reject(self, source: str, number: int, identifier: str, outcome: str, field_name: str, reason: str) -> None:
        with self.lock:
            self.counts.rejected += 1
        self.rejects.add(source, number, identifier, outcome, field_name, reason)

    def _reject_sent(self, batch: Batch, index: int, reason: str, record: dict[str, Any]) -> None:
        part, number = self._row_of(batch.rows[index])
        line = [part, number, mask_attributes(_attributes(batch.profile(index))), "rejected", "", reason]
        record["rejects"].append(line)
        self._reject(*line)

    def _row_of(self, packed: int) -> tuple[str, int]:
        return self.part_names[packed >> 40], packed & ((1 << 40) - 1)

    def _emit_progress(self) -> None:
        if self.progress is not None:
            self.progress(self.counts)


def _batch_key(batch: Batch) -> str:
    return f"{batch.rows[0]}:{batch.rows[-1]}"


def _pointer_index(pointer: str, size: int) -> int | None:
    if not pointer.startswith(_POINTER_PREFIX):
        return None
    head = pointer[len(_POINTER_PREFIX) :].split("/", 1)[0]
    return int(head) if head.isdigit() and int(head) < size else None


def _attributes(profile: bytes) -> dict[str, Any]:
    return loads(profile).get("attributes", {})


def _payload_attributes(payload: dict[str, Any]) -> dict[str, Any]:
    return payload.get("attributes", payload)
