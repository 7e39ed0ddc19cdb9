"""Runs: queued by the timer, the HTTP API or a dropped blob; executed from the queue, exactly once in effect."""

from __future__ import annotations

import contextlib
import logging
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import orjson
from azure.core.exceptions import ResourceExistsError

from shared.control.services import Services
from shared.control.store import new_run_id, utc_now
from shared.engine import (
    TERMINAL_STATUSES,
    BlobCheckpoints,
    ConfigurationError,
    Counts,
    ExportSpec,
    RejectsFile,
    RunReport,
    RunStatus,
    run_export,
)
from shared.klaviyo import KlaviyoError
from shared.mapping import FieldMapping
from shared.secrets import SecretError
from shared.sources.segments import (
    BlobPart,
    SegmentError,
    SegmentSource,
    SegmentUnavailable,
    blob_segment,
    is_data_name,
)
from shared.storage import report_prefix, save_report
from shared.sync import DEFAULT_MAX_REMOVAL_SHARE, BlobSyncState, SyncMode
from shared.telemetry import run_context, run_finished

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15.0
STALE_AFTER_SECONDS = 90.0
_PROGRESS_EVERY_SECONDS = 2.0


class RunBusy(Exception):
    """Another worker holds this run right now: let the queue deliver the message again later."""


# -- starting runs ----------------------------------------------------------------------------------
def start_run(
    services: Services,
    export_name: str,
    trigger: str,
    requested_by: str,
    segment_hint: str | None = None,
    options: dict[str, bool] | None = None,
) -> dict[str, Any]:
    """Records a queued run and puts its message on the queue; `options` (full, confirm_removals)
    apply to this run only, on top of the export's own."""
    run: dict[str, Any] = {
        "run_id": new_run_id(),
        "export_name": export_name,
        "trigger": trigger,
        "status": RunStatus.QUEUED,
        "requested_by": requested_by,
        "created_at": utc_now(),
        "attempts": 0,
    }
    if segment_hint:
        run["segment_hint"] = segment_hint
    run.update({k: v for k, v in (options or {}).items() if k in ("full", "confirm_removals", "reconcile") and v})
    services.store.create_run(run)
    _enqueue(services, run)
    log.info("run %s of export %s queued (%s)", run["run_id"], export_name, trigger)
    return run


def _enqueue(services: Services, run: dict[str, Any]) -> None:
    # The export name rides along only so that the log lines before the run record is read carry it.
    services.queue.send_message(orjson.dumps({"run_id": run["run_id"], "export_name": run["export_name"]}).decode())


def record_skipped(services: Services, export_name: str, trigger: str, reason: str) -> dict[str, Any]:
    now = utc_now()
    run = {
        "run_id": new_run_id(),
        "export_name": export_name,
        "trigger": trigger,
        "status": RunStatus.SKIPPED,
        "requested_by": trigger,
        "created_at": now,
        "finished_at": now,
        "reason": reason,
        "attempts": 0,
    }
    services.store.create_run(run)
    log.info("export %s skipped (%s): %s", export_name, trigger, reason)
    run_finished(run)
    return run


def plan_scheduled_runs(services: Services) -> list[dict[str, Any]]:
    """Timer: a run for each enabled export whose segment changed since its last successful run."""
    planned = []
    active = {r["export_name"] for r in services.store.active_runs()}
    for export in services.store.list_exports():
        name = export["name"]
        if not export.get("enabled", True):
            continue
        if name in active:
            planned.append(record_skipped(services, name, "timer", "a run of this export is already queued or running"))
            continue
        try:
            version = resolve_segment(services, export).version
        except SegmentError as exc:
            planned.append(record_skipped(services, name, "timer", f"segment not available: {exc}"))
            continue
        if not export.get("run_always") and version and version == export.get("last_success_version"):
            planned.append(
                record_skipped(services, name, "timer", f"segment unchanged since run {export.get('last_success_run')}")
            )
            continue
        planned.append(start_run(services, name, "timer", "timer"))
    return planned


def on_segment_blob(services: Services, container: str, blob_name: str) -> list[dict[str, Any]]:
    """Blob trigger: a run for each enabled export whose segment is this blob (or whose folder this
    completion marker closes), once per segment version however often the trigger fires."""
    runs = []
    for export in services.store.list_exports():
        segment = export["segment"]
        if not export.get("enabled", True) or segment["container"] != container:
            continue
        hint = _matching_hint(segment, blob_name)
        if hint is None:
            continue
        try:
            version = resolve_segment(services, export, hint).version
        except SegmentError as exc:
            log.warning("export %s: dropped blob matched but the segment cannot be read: %s", export["name"], exc)
            continue
        if not services.store.first_sighting(export["name"], version):
            log.info("export %s: segment version already seen; the repeated trigger is ignored", export["name"])
            continue
        runs.append(start_run(services, export["name"], "blob", "blob-trigger", hint))
    if not runs:
        log.info("blob %s/%s matches no enabled export, or was seen already; ignored", container, blob_name)
    return runs


def _matching_hint(segment: dict[str, Any], blob_name: str) -> str | None:
    mode = segment.get("mode", "blob")
    if mode == "blob":
        return blob_name if blob_name == segment["blob"] else None
    prefix = segment["prefix"]
    if not blob_name.startswith(prefix):
        return None
    if mode == "newest":
        return blob_name if is_data_name(blob_name) else None
    if posixpath.basename(blob_name) == segment.get("marker", "model.json"):
        return posixpath.dirname(blob_name) + "/"
    return None


# -- where the segment is -------------------------------------------------------------------------------
def resolve_segment(services: Services, export: dict[str, Any], hint: str | None = None) -> SegmentSource:
    """The segment's current blobs, each pinned to its etag."""
    from azure.core.exceptions import ResourceNotFoundError

    segment = export["segment"]
    container = services.segments.get_container_client(segment["container"])
    fmt = None if export.get("format", "auto") == "auto" else export["format"]
    delimiter = export.get("delimiter")
    mode = segment.get("mode", "blob")
    location = f"{segment['container']}/{segment.get('blob') or segment.get('prefix')}"
    try:
        if mode == "blob":
            props = container.get_blob_client(segment["blob"]).get_blob_properties()
            return SegmentSource(
                location, [BlobPart(container, segment["blob"], props.size, props.etag)], fmt, delimiter
            )
        if mode == "newest":
            blobs = [b for b in container.list_blobs(name_starts_with=segment["prefix"]) if is_data_name(b.name)]
            if not blobs:
                raise SegmentUnavailable(f"{location}: no data blobs under the prefix")
            newest = max(blobs, key=lambda b: (b.last_modified, b.name))
            return SegmentSource(
                f"{segment['container']}/{newest.name}",
                [BlobPart(container, newest.name, newest.size, newest.etag)],
                fmt,
                delimiter,
            )
        folder = hint or _newest_complete_folder(container, segment)
        return blob_segment(container, folder, fmt, delimiter)
    except ResourceNotFoundError:
        raise SegmentUnavailable(f"{location}: not found") from None


def _newest_complete_folder(container: Any, segment: dict[str, Any]) -> str:
    marker = segment.get("marker", "model.json")
    markers = [
        b for b in container.list_blobs(name_starts_with=segment["prefix"]) if posixpath.basename(b.name) == marker
    ]
    if not markers:
        raise SegmentUnavailable(f"{segment['container']}/{segment['prefix']}: no complete folder yet (no {marker})")
    newest = max(markers, key=lambda b: (b.last_modified, b.name))
    return posixpath.dirname(newest.name) + "/"


# -- executing a run ------------------------------------------------------------------------------------
def execute_run(
    services: Services, message: dict[str, Any], thread_initializer: Callable[[], None] | None = None
) -> dict[str, Any] | None:
    """Runs the run named by a queue message. A repeated message for a finished run does nothing;
    one for a run another worker is executing raises RunBusy (the queue retries it later)."""
    store = services.store
    run_id = str(message.get("run_id", ""))
    with run_context(run_id[:64], str(message.get("export_name", ""))[:63]):
        found = store.get_run_with_etag(run_id)
        if found is None:
            log.warning("queue message for unknown run %s ignored", run_id[:40])
            return None
    run, etag = found
    with run_context(run_id, run["export_name"]):
        if run["status"] in TERMINAL_STATUSES:
            log.info("run %s is already %s; repeated message ignored", run_id, run["status"])
            return run
        if run["status"] == RunStatus.RUNNING and time.time() - float(run.get("heartbeat", 0)) < STALE_AFTER_SECONDS:
            raise RunBusy(f"run {run_id} is being executed by another worker")
        now = time.time()
        claim = {
            "status": RunStatus.RUNNING,
            "started_at": utc_now(),
            "heartbeat": now,
            "first_started": run.get("first_started") or now,  # the run's duration spans its continuations
            "attempts": int(run.get("attempts", 0)) + 1,
        }
        if not store.update_run(run_id, claim, etag=etag):
            raise RunBusy(f"run {run_id} was claimed by another worker")
        run.update(claim)
        return _execute(services, run, thread_initializer)


def _finish(services: Services, run: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
    changes = {"status": status, "finished_at": utc_now(), **fields}
    services.store.update_run(run["run_id"], changes)
    run.update(changes)
    log.info(
        "run %s of export %s %s%s",
        run["run_id"],
        run["export_name"],
        status,
        f": {fields['reason']}" if fields.get("reason") else "",
    )
    run_finished(run)
    return run


def _execute(services: Services, run: dict[str, Any], thread_initializer: Callable[[], None] | None) -> dict[str, Any]:
    store = services.store
    export = store.get_export(run["export_name"])
    if export is None:
        return _finish(services, run, RunStatus.SKIPPED, reason="the export was deleted before the run started")
    connection = store.get_connection(export["connection"])
    if connection is None:
        return _finish(services, run, RunStatus.FAILED, reason=f"connection {export['connection']!r} does not exist")
    if not connection.get("consent"):
        return _finish(
            services,
            run,
            RunStatus.FAILED,
            reason=f"connection {connection['name']!r} has no recorded privacy consent: nothing was sent",
        )
    try:
        api_key = services.secrets.get(connection["secret_name"])
        source = resolve_segment(services, export, run.get("segment_hint"))
    except (SecretError, SegmentError) as exc:
        return _finish(services, run, RunStatus.FAILED, reason=str(exc))
    spec = ExportSpec(
        export["name"],
        export["list_id"],
        FieldMapping.from_dict(export["mapping"]),
        run_id=run["run_id"],
        max_in_flight=services.settings.upload_concurrency,
        thread_initializer=thread_initializer,
        deadline=time.monotonic() + services.settings.run_time_budget,
        mode=export.get("sync_mode", SyncMode.ADD),
        full=bool(run.get("full") or export.get("full")),
        confirm_removals=bool(run.get("confirm_removals") or export.get("confirm_removals")),
        max_removal_share=float(export.get("max_removal_share", DEFAULT_MAX_REMOVAL_SHARE)),
        reconcile=bool(run.get("reconcile") or export.get("reconcile")),
    )
    client = services.klaviyo(api_key)
    rejects = RejectsFile()
    checkpoints = _checkpoints(services, export["name"], run["run_id"])
    progress = _RunProgress(services, run["run_id"])
    sync_state = sync_state_of(services, export["name"])
    try:
        report = run_export(source, spec, client, progress, rejects, checkpoints, sync_state)
    except ConfigurationError as exc:
        rejects.discard()
        return _finish(services, run, RunStatus.FAILED, reason=str(exc), source_version=source.version)
    except KlaviyoError as exc:
        rejects.discard()
        return _finish(services, run, RunStatus.FAILED, reason=str(exc), source_version=source.version)
    finally:
        client.close()
    if report.status == RunStatus.INCOMPLETE:
        rejects.discard()
        return _continue_later(services, run, report)
    status, reason = report.status, report.error
    fields: dict[str, Any] = {
        "counts": _counts(report.counts),
        "source_version": source.version,
        "jobs": len(report.job_ids),
        "duration_seconds": report.duration_seconds,
    }
    try:
        save_report(services.blobs, services.settings.reports_container, report, rejects)
        fields["report_path"] = (
            f"{services.settings.reports_container}/{report_prefix(export['name'], run['run_id'])}report.json"
        )
    except Exception as exc:  # a run whose report is lost must not pass for a success
        status, reason = RunStatus.FAILED, f"the report could not be written to blob storage ({type(exc).__name__})"
        log.error("run %s: %s", run["run_id"], reason)
    finally:
        rejects.discard()
    if reason:
        fields["reason"] = reason
    finished = _finish(services, run, status, **fields)
    checkpoints.delete()
    if status != RunStatus.FAILED:
        store.update_export(export["name"], {"last_success_version": source.version, "last_success_run": run["run_id"]})
    return finished


def sync_state_of(services: Services, export_name: str) -> BlobSyncState:
    """Where an export's sync state lives: <reports container>/<export>/sync/."""
    container = services.blobs.get_container_client(services.settings.reports_container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    return BlobSyncState(container, f"{export_name}/sync/")


def _checkpoints(services: Services, export_name: str, run_id: str) -> BlobCheckpoints:
    container = services.blobs.get_container_client(services.settings.reports_container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    return BlobCheckpoints(container, report_prefix(export_name, run_id) + "checkpoint.json")


def _continue_later(services: Services, run: dict[str, Any], report: RunReport) -> dict[str, Any]:
    """The time budget ran out: the run goes back on the queue and resumes from its checkpoint."""
    changes = {
        "status": RunStatus.QUEUED,
        "counts": _counts(report.counts),
        "continuations": int(run.get("continuations", 0)) + 1,
    }
    services.store.update_run(run["run_id"], changes)
    run.update(changes)
    _enqueue(services, run)
    log.info("run %s continues in a new invocation (%d so far)", run["run_id"], changes["continuations"])
    return run


def mark_poisoned(services: Services, message: dict[str, Any]) -> None:
    """A message the queue gave up on: its run, if not finished, is failed with that reason."""
    run = services.store.get_run(str(message.get("run_id", "")))
    if run is None or run["status"] in TERMINAL_STATUSES:
        return
    with run_context(run["run_id"], run["export_name"]):
        _finish(
            services,
            run,
            RunStatus.FAILED,
            reason="the worker failed repeatedly on this run; its message was moved to the poison queue",
        )


def _counts(counts: Counts) -> dict[str, int]:
    return asdict(counts)


class _RunProgress:
    """Writes progress counts and a heartbeat into the run record every few seconds."""

    def __init__(self, services: Services, run_id: str) -> None:
        self._services, self._run_id = services, run_id
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, counts: Counts) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last < _PROGRESS_EVERY_SECONDS:
                return
            self._last = now
        self._services.store.update_run(self._run_id, {"counts": _counts(counts), "heartbeat": time.time()})
