"""Executing runs from the queue: a message names a run, one worker claims it, runs the export and records
the outcome, so that a run takes effect once however often its message is delivered."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, NamedTuple

from azure.core.exceptions import ResourceExistsError

from shared.control.definition import definition_fingerprint, sync_state_prefix, version_kept
from shared.control.lease import STALE_AFTER_SECONDS, Held
from shared.control.monitor import RunMonitor
from shared.control.services import Services
from shared.control.store import utc_now
from shared.control.triggers import enqueue_run, export_segment
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
from shared.mapping import FieldMapping, SubscribeOptions
from shared.secrets import SecretError
from shared.sources import SegmentError, SegmentSource
from shared.storage import report_prefix, save_report
from shared.sync import DEFAULT_MAX_REMOVAL_SHARE, BlobSyncState, SyncMode
from shared.telemetry import run_context, run_finished

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

log = logging.getLogger(__name__)

# How long a run waits in the queue before it looks again whether its export's running run is done.
WAIT_BEHIND_SECONDS = 10


class RunBusy(Exception):
    """Another worker holds this run right now: let the queue deliver the message again later."""


class _CannotStart(Exception):
    """Why a run fails before anything is read or sent (the message is the run's reason)."""


class _RunInputs(NamedTuple):
    """What a run needs before it starts: the connection's API key and the segment as it is now."""

    api_key: str
    source: SegmentSource


def execute_run(
    services: Services, message: dict[str, Any], thread_initializer: Callable[[], None] | None = None
) -> dict[str, Any] | None:
    """Runs the run named by a queue message. A repeated message for a finished run does nothing;
    one for a run another worker is executing raises RunBusy (the queue retries it later). While
    another run of the same export executes, the message goes back on the queue to wait behind it."""
    run_id = str(message.get("run_id", ""))
    with run_context(run_id[:64], str(message.get("export_name", ""))[:63]):
        found = services.store.get_run_with_etag(run_id)
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
        held = services.store.leases.take(run["export_name"], run_id)
        if held is None:
            return _wait_behind(services, run)
        try:
            _claim(services, run, etag)
            services.store.leases.started(run["export_name"], run_id)
            return _execute(services, run, held, thread_initializer)
        finally:
            services.store.leases.release(run["export_name"], run_id)


def _wait_behind(services: Services, run: dict[str, Any]) -> dict[str, Any]:
    """Another run of the export executes: this one goes back on the queue, to look again later."""
    holder = services.store.leases.holder(run["export_name"])
    log.info("run %s waits: run %s of export %s is executing", run["run_id"], holder, run["export_name"])
    enqueue_run(services, run, delay_seconds=WAIT_BEHIND_SECONDS)
    return run


def _claim(services: Services, run: dict[str, Any], etag: str) -> None:
    """Marks the run as this worker's. The update succeeds only if nobody changed the record since it was
    read (optimistic concurrency), so two deliveries of one message never both run it."""
    run_id = run["run_id"]
    now = time.time()
    claim = {
        "status": RunStatus.RUNNING,
        "started_at": utc_now(),
        "heartbeat": now,
        "first_started": run.get("first_started") or now,  # the run's duration spans its continuations
        "attempts": int(run.get("attempts", 0)) + 1,
    }
    if not services.store.update_run(run_id, claim, etag=etag):
        raise RunBusy(f"run {run_id} was claimed by another worker")
    run.update(claim)


def _execute(
    services: Services, run: dict[str, Any], held: Held, thread_initializer: Callable[[], None] | None
) -> dict[str, Any]:
    export = services.store.get_export(run["export_name"])
    if export is None:
        return _finish(services, run, RunStatus.SKIPPED, reason="the export was deleted before the run started")
    if run.get("export_generation") and export.get("generation") != run["export_generation"]:
        reason = "the export was deleted and created again before the run started"  # that one has runs of its own
        return _finish(services, run, RunStatus.SKIPPED, reason=reason)
    try:
        api_key, source = _run_inputs(services, run, export)
    except (_CannotStart, SecretError, SegmentError) as exc:
        return _finish(services, run, RunStatus.FAILED, reason=str(exc))
    if not run.get("definition"):  # what the run is for, kept across its continuations
        run["definition"] = definition_fingerprint(export)
        services.store.update_run(run["run_id"], {"definition": run["definition"]})
    monitor = RunMonitor(services, run, export, held)
    spec = _export_spec(services, run, export, thread_initializer)
    spec.watch = monitor
    client = services.klaviyo(api_key)
    rejects = RejectsFile()
    checkpoints = _checkpoints(services, export["name"], run["run_id"])
    sync_state = sync_state_of(services, run, export)
    try:
        with monitor:
            report = run_export(source, spec, client, monitor, rejects, checkpoints, sync_state)
    except (ConfigurationError, KlaviyoError) as exc:
        rejects.discard()
        return _finish(services, run, RunStatus.FAILED, reason=str(exc), source_version=source.version)
    finally:
        client.close()
    if report.status == RunStatus.INCOMPLETE:
        rejects.discard()
        return _continue_later(services, run, report)
    finished = _record_outcome(services, run, export["name"], report, rejects, source)
    checkpoints.delete()
    if finished["status"] not in (RunStatus.FAILED, RunStatus.CANCELLED):
        _record_success(services, run, export, source)
    return finished


def _record_success(services: Services, run: dict[str, Any], export: dict[str, Any], source: SegmentSource) -> None:
    """Records in the export what its last successful run sent (the segment's version and the definition
    it ran with: the timer skips the export while both stay the same), only into the generation the run
    was started for: an export deleted, or deleted and created again, since is left alone."""
    definition = run.get("definition") or definition_fingerprint(export)
    success = {
        "last_success_version": version_kept(source.version),
        "last_success_run": run["run_id"],
        "last_success_definition": definition,
    }
    if not services.store.update_export_of_generation(export["name"], run.get("export_generation"), success):
        log.info(
            "run %s: export %s was deleted or created again since; its outcome is not recorded there",
            run["run_id"],
            export["name"],
        )


def _run_inputs(services: Services, run: dict[str, Any], export: dict[str, Any]) -> _RunInputs:
    """The API key and the segment, once the export's connection allows sending. Raises _CannotStart,
    SecretError or SegmentError with the reason the run fails."""
    connection = services.store.get_connection(export["connection"])
    if connection is None:
        raise _CannotStart(f"connection {export['connection']!r} does not exist")
    if not connection.get("consent"):
        raise _CannotStart(f"connection {connection['name']!r} has no recorded privacy consent: nothing was sent")
    api_key = services.secrets.get(connection["secret_name"])
    return _RunInputs(api_key, export_segment(services, export, run.get("segment_hint")))


def _export_spec(
    services: Services, run: dict[str, Any], export: dict[str, Any], thread_initializer: Callable[[], None] | None
) -> ExportSpec:
    """The engine's spec from the stored export, with this run's own options on top of the export's."""
    return ExportSpec(
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
        subscribe=SubscribeOptions.from_dict(export["subscribe"]) if export.get("subscribe") else None,
    )


def _record_outcome(
    services: Services,
    run: dict[str, Any],
    export_name: str,
    report: RunReport,
    rejects: RejectsFile,
    source: SegmentSource,
) -> dict[str, Any]:
    """Saves the report and its rejects, then finishes the run with the report's outcome; a run whose
    report could not be written fails instead."""
    status, reason = report.status, report.error
    fields: dict[str, Any] = {
        "counts": _counts(report.counts),
        "source_version": source.version,
        "jobs": len(report.job_ids),
        "duration_seconds": report.duration_seconds,
    }
    reports_container = services.settings.reports_container
    try:
        save_report(services.blobs, reports_container, report, rejects)
        fields["report_path"] = f"{reports_container}/{report_prefix(export_name, run['run_id'])}report.json"
    except Exception as exc:  # a run whose report is lost must not pass for a success
        status, reason = RunStatus.FAILED, f"the report could not be written to blob storage ({type(exc).__name__})"
        log.error("run %s: %s", run["run_id"], reason)
    finally:
        rejects.discard()
    if reason:
        fields["reason"] = reason
    return _finish(services, run, status, **fields)


def _finish(services: Services, run: dict[str, Any], status: str, **fields: Any) -> dict[str, Any]:
    changes = {"status": status, "finished_at": utc_now(), **fields}
    try:
        services.store.update_run(run["run_id"], changes)
    except Exception as exc:  # the outcome cannot be stored as it is: the run must still end, as failed
        log.error("run %s: its outcome could not be recorded (%s)", run["run_id"], type(exc).__name__)
        reason = f"the run's outcome could not be recorded ({type(exc).__name__}); see the logs"
        changes = {"status": RunStatus.FAILED, "finished_at": changes["finished_at"], "reason": reason}
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


def _continue_later(services: Services, run: dict[str, Any], report: RunReport) -> dict[str, Any]:
    """The time budget ran out: the run goes back on the queue and resumes from its checkpoint."""
    changes = {
        "status": RunStatus.QUEUED,
        "counts": _counts(report.counts),
        "continuations": int(run.get("continuations", 0)) + 1,
    }
    services.store.update_run(run["run_id"], changes)
    run.update(changes)
    enqueue_run(services, run)
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


def sync_state_of(services: Services, run: dict[str, Any], export: dict[str, Any]) -> BlobSyncState:
    """Where a run's sync state lives: <reports container>/<export>/sync/<generation>/<digest>/, the
    generation the run was started for and a digest of the list, connection and mapping it sends with
    (definition.sync_state_prefix), so that a state is only ever used for what it was built for."""
    prefix = sync_state_prefix(export["name"], run.get("export_generation"), export)
    return BlobSyncState(_reports_container(services), prefix)


def _checkpoints(services: Services, export_name: str, run_id: str) -> BlobCheckpoints:
    """Where a run's checkpoint lives: <reports container>/<export>/<run id>/checkpoint.json."""
    return BlobCheckpoints(_reports_container(services), report_prefix(export_name, run_id) + "checkpoint.json")


def _reports_container(services: Services) -> ContainerClient:
    """The reports container, created on first use."""
    container = services.blobs.get_container_client(services.settings.reports_container)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    return container


def _counts(counts: Counts) -> dict[str, int]:
    return asdict(counts)
