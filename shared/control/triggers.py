"""Starting runs: the timer, the HTTP API and a dropped blob each record a queued run (or a skipped one)
and put its message on the queue, where the executor picks it up."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import orjson

from shared.control.definition import definition_fingerprint, version_kept
from shared.control.models import csv_dialect
from shared.control.services import Services
from shared.control.store import new_run_id, utc_now
from shared.engine import RunStatus
from shared.sources import SegmentError, SegmentLocator, SegmentSource, commit_version, is_data_name, locate_segment
from shared.telemetry import run_finished

log = logging.getLogger(__name__)


class Trigger(StrEnum):
    """What started a run (a run record's `trigger`, and an attribute of the run metrics)."""

    HTTP = "http"
    TIMER = "timer"
    BLOB = "blob"


# The options a caller may set for one run, on top of the export's own.
RUN_OPTIONS = ("full", "confirm_removals", "reconcile")


def start_run(
    services: Services,
    export_name: str,
    trigger: Trigger,
    requested_by: str,
    segment_hint: str | None = None,
    options: Mapping[str, bool] | None = None,
    *,
    generation: str | None,
) -> dict[str, Any]:
    """Records a queued run and puts its message on the queue; `options` (see RUN_OPTIONS) apply to
    this run only, on top of the export's own. `generation` is the export's (None for an export saved
    before generations existed): the run's outcome is recorded only into that generation. While a run
    of the export's generation waits in the queue (not yet started), the request joins it instead:
    that run is returned, with the options and the segment hint of this request added."""
    joined, stale_marker = _join_waiting(services, export_name, generation, segment_hint, options or {})
    if joined is not None:
        log.info("run of export %s requested (%s): joins queued run %s", export_name, trigger, joined["run_id"])
        return joined
    run: dict[str, Any] = {
        "run_id": new_run_id(),
        "export_name": export_name,
        "export_generation": generation,
        "trigger": trigger,
        "status": RunStatus.QUEUED,
        "requested_by": requested_by,
        "created_at": utc_now(),
        "attempts": 0,
    }
    if segment_hint:
        run["segment_hint"] = segment_hint
    run.update({k: v for k, v in (options or {}).items() if k in RUN_OPTIONS and v})
    services.store.create_run(run)
    services.store.leases.wait(export_name, run["run_id"], replacing=stale_marker)
    enqueue_run(services, run)
    log.info("run %s of export %s queued (%s)", run["run_id"], export_name, trigger)
    return run


def _join_waiting(
    services: Services,
    export_name: str,
    generation: str | None,
    segment_hint: str | None,
    options: Mapping[str, bool],
) -> tuple[dict[str, Any] | None, str | None]:
    """The export's run still waiting to start, updated with this request's options and hint, or None
    with the etag of a waiting-run record that no longer names a waiting run (to replace)."""
    waiting = services.store.leases.waiting(export_name)
    if waiting is None:
        return None, None
    run_id, marker_etag = waiting
    found = services.store.get_run_with_etag(run_id)
    if found is None or found[0]["status"] != RunStatus.QUEUED or found[0].get("attempts"):
        return None, marker_etag  # started (or cancelled) since: a new run queues behind it
    if found[0].get("export_generation") != generation:
        return None, marker_etag  # a run of the export before it was deleted and created again
    run, etag = found
    changes: dict[str, Any] = {k: True for k in RUN_OPTIONS if options.get(k) and not run.get(k)}
    if segment_hint:
        changes["segment_hint"] = segment_hint
    if changes and not services.store.update_run(run_id, changes, etag=etag):
        return None, marker_etag  # claimed by a worker this very moment
    run.update(changes)
    return run, None


def enqueue_run(services: Services, run: Mapping[str, Any], delay_seconds: int = 0) -> None:
    """Puts a recorded run's message on the queue (a new run, one going on after its time budget, or
    one waiting behind another run of its export), visible after `delay_seconds`."""
    # The export name rides along only so that the log lines before the run record is read carry it.
    message = orjson.dumps({"run_id": run["run_id"], "export_name": run["export_name"]}).decode()
    services.queue.send_message(message, visibility_timeout=delay_seconds or None)


def record_skipped(
    services: Services, export_name: str, trigger: Trigger, reason: str, *, generation: str | None
) -> dict[str, Any]:
    """Records a run that a trigger decided not to start, with the reason, so the run history shows it."""
    now = utc_now()
    run = {
        "run_id": new_run_id(),
        "export_name": export_name,
        "export_generation": generation,
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
    """Timer: a run for each enabled export whose segment changed since its last successful run; the
    others are recorded as skipped, with the reason."""
    planned = []
    # A run of an earlier generation (the export was deleted and saved again since) does not hold up this one.
    active = {(r["export_name"], r.get("export_generation")) for r in services.store.active_runs()}
    for export in services.store.list_exports():
        if not export.get("enabled", True):
            continue
        name, generation = export["name"], export.get("generation")
        reason = _reason_to_skip(services, export, (name, generation) in active)
        if reason is None:
            planned.append(start_run(services, name, Trigger.TIMER, "timer", generation=generation))
        else:
            planned.append(record_skipped(services, name, Trigger.TIMER, reason, generation=generation))
    return planned


def _reason_to_skip(services: Services, export: dict[str, Any], active: bool) -> str | None:
    """Why the timer leaves this export alone now, or None to run it: a run is queued or running, the
    segment cannot be read, or nothing changed since the last successful run (neither the segment's
    version nor the export's definition: its list, mapping, connection, segment, format or sync options)."""
    if active:
        return "a run of this export is already queued or running"
    try:
        version = export_segment(services, export).version
    except SegmentError as exc:
        return f"segment not available: {exc}"
    if export.get("run_always") or not version or version_kept(version) != export.get("last_success_version"):
        return None
    # An export whose last success predates definition fingerprints counts as changed (it runs once more).
    if definition_fingerprint(export) != export.get("last_success_definition"):
        return None
    return f"segment and export unchanged since run {export.get('last_success_run')}"


def on_segment_blob(services: Services, container: str, blob_name: str) -> list[dict[str, Any]]:
    """Blob trigger: a run for each enabled export whose segment is this blob (or whose folder this
    completion marker closes, or whose Delta table this commit gives a new version), once per segment
    version however often the trigger fires."""
    runs = []
    for export in services.store.list_exports():
        if not export.get("enabled", True) or export["segment"]["container"] != container:
            continue
        locator = segment_locator(export)
        hint = _matching_hint(locator, blob_name)
        if hint is None:
            continue
        try:
            version = locate_segment(services.segments, locator, hint).version
        except SegmentError as exc:
            log.warning("export %s: dropped blob matched but the segment cannot be read: %s", export["name"], exc)
            continue
        generation = export.get("generation")
        if not services.store.first_sighting(export["name"], version, generation):
            log.info("export %s: segment version already seen; the repeated trigger is ignored", export["name"])
            continue
        runs.append(start_run(services, export["name"], Trigger.BLOB, "blob-trigger", hint, generation=generation))
    if not runs:
        log.info("blob %s/%s matches no enabled export, or was seen already; ignored", container, blob_name)
    return runs


def _matching_hint(locator: SegmentLocator, blob_name: str) -> str | None:
    """What a dropped blob tells the run about its export's segment: the blob itself when it is the
    segment (or, in newest mode, a data blob under the prefix), its folder when it is a folder's marker,
    the commit when it is one of the folder's Delta table; None when the blob is not about this segment."""
    if locator.mode == "blob":
        return blob_name if blob_name == locator.blob else None
    if not blob_name.startswith(str(locator.prefix)):
        return None
    if locator.mode == "newest":
        return blob_name if is_data_name(blob_name) else None
    commit = commit_version(blob_name)
    if commit is not None:  # a new version of a Delta table: the run reads that version
        return blob_name if commit[0] == locator.prefix and locator.format in (None, "delta") else None
    if posixpath.basename(blob_name) == locator.marker:
        return posixpath.dirname(blob_name) + "/"
    return None


def segment_locator(export: Mapping[str, Any]) -> SegmentLocator:
    """Where a stored export's segment lives and how it is read. Fields a record stored without keep
    the locator's defaults."""
    segment = export["segment"]
    where = {name: segment[name] for name in ("mode", "blob", "prefix", "marker") if name in segment}
    fmt = export.get("format", "auto")
    dialect = csv_dialect(export.get("csv"), export.get("delimiter"))
    entity = export.get("entity")
    return SegmentLocator(
        segment["container"],
        **where,
        format=None if fmt == "auto" else fmt,
        dialect=dialect,
        entity=entity,
        version=export.get("version"),
    )


def export_segment(services: Services, export: Mapping[str, Any], hint: str | None = None) -> SegmentSource:
    """A stored export's segment as it is now, each blob pinned to its etag."""
    return locate_segment(services.segments, segment_locator(export), hint)
