"""The admin and run API, free of the Functions SDK: requests in, JSON responses out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from shared.control.auth import AuthError, Caller, identify
from shared.control.definition import DEFINITION_FIELDS
from shared.control.models import (
    Connection,
    ConnectionIn,
    Export,
    ExportIn,
    Run,
    RunIn,
    is_valid_name,
    validation_problems,
)
from shared.control.services import Services
from shared.control.store import new_generation, utc_now
from shared.control.triggers import Trigger, start_run
from shared.engine import RunStatus
from shared.telemetry import run_finished

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass
class ApiRequest:
    method: str
    params: dict[str, str]
    headers: Mapping[str, str]
    body: bytes = b""
    base_url: str = ""


@dataclass
class ApiResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # a file handed out as it is (a run's report.json or rejects.csv)
    content_type: str = "application/json"

    def json(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return orjson.dumps(self.body) if self.body is not None else b""


class ApiError(Exception):
    def __init__(self, status: int, message: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.problems = status, problems


Handler = Callable[[Services, ApiRequest, Caller], ApiResponse]


def handle(services: Services, request: ApiRequest, handler: Handler) -> ApiResponse:
    """Identifies the caller, runs the handler and turns every failure into a clear JSON error."""
    try:
        caller = identify(request.headers)
        for key, value in request.params.items():
            if key != "run_id" and value and not is_valid_name(value):
                raise ApiError(400, f"{key}: must be lowercase letters, digits and single dashes (at most 63)")
        return handler(services, request, caller)
    except AuthError as exc:
        return _error(exc.status, str(exc))
    except ApiError as exc:
        return _error(exc.status, str(exc), exc.problems)
    except Exception as exc:  # storage that does not answer, say: a JSON answer, never an empty one
        log.exception("%s %s failed unexpectedly", request.method, handler.__name__)
        return _error(500, f"the request failed unexpectedly ({type(exc).__name__}); the app's log has the details")


def _error(status: int, message: str, problems: list[dict[str, str]] | None = None) -> ApiResponse:
    body: dict[str, Any] = {"error": message}
    if problems:
        body["problems"] = problems
    return ApiResponse(status, body)


def _body(request: ApiRequest) -> dict[str, Any]:
    if len(request.body) > MAX_BODY_BYTES:
        raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES:,} bytes")
    try:
        data = orjson.loads(request.body or b"")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def _validated(model: type[ModelT], request: ApiRequest, what: str) -> ModelT:
    """The body as `model`, or a 400 naming each field that is wrong and why."""
    try:
        return model.model_validate(_body(request))
    except ValidationError as exc:
        raise ApiError(400, f"the {what} is not valid", validation_problems(exc)) from None


def _require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise ApiError(403, "this needs the Admin role")


def _usable(services: Services, caller: Caller, export: dict[str, Any]) -> bool:
    """Admins use every export; contributors only those whose connection allows contributors."""
    if caller.is_admin:
        return True
    if not caller.is_contributor:
        return False
    connection = services.store.get_connection(export["connection"])
    return bool(connection and connection.get("usable_by") == "contributors")


def _export_or_404(services: Services, caller: Caller, name: str) -> dict[str, Any]:
    if not caller.is_contributor:
        raise ApiError(403, "this needs the Admin or Contributor role")
    export = services.store.get_export(name)
    if export is None:
        raise ApiError(404, f"no export named {name!r}")
    if not _usable(services, caller, export):
        raise ApiError(403, f"export {name!r} uses a connection reserved for admins")
    return export


# -- connections ------------------------------------------------------------------------------------
def connections(services: Services, request: ApiRequest, caller: Caller) -> ApiResponse:
    _require_admin(caller)
    name = request.params.get("name")
    store = services.store
    if not name:
        if request.method != "GET":
            raise ApiError(405, "use GET on /api/connections, or PUT/GET/DELETE on /api/connections/{name}")
        return ApiResponse(200, {"connections": [_public_connection(c) for c in store.list_connections()]})
    if request.method == "GET":
        found = store.get_connection(name)
        if found is None:
            raise ApiError(404, f"no connection named {name!r}")
        return ApiResponse(200, _public_connection(found))
    if request.method == "DELETE":
        users = sorted(e["name"] for e in store.list_exports() if e["connection"] == name)
        if users:
            raise ApiError(
                409, f"connection {name!r} is used by export(s) {', '.join(users)}: delete or move them first"
            )
        if not store.delete_connection(name):
            raise ApiError(404, f"no connection named {name!r}")
        return ApiResponse(204)
    if request.method != "PUT":
        raise ApiError(405, f"{request.method} is not allowed here")
    submitted = _validated(ConnectionIn, request, "connection")
    existing = store.get_connection(name)
    consent = (existing or {}).get("consent")
    if submitted.privacy_consent and not consent:
        consent = {"agreed_by": caller.name, "agreed_at": utc_now()}
    elif not submitted.privacy_consent:
        consent = None
    data = {
        "name": name,
        "display_name": submitted.display_name,
        "secret_name": submitted.secret_name,
        "usable_by": submitted.usable_by,
        "consent": consent,
        "updated_by": caller.name,
        "updated_at": utc_now(),
        "created_at": (existing or {}).get("created_at") or utc_now(),
    }
    store.put_connection(name, data)
    return ApiResponse(201 if existing is None else 200, _public_connection(data))


def _public_connection(data: dict[str, Any]) -> dict[str, Any]:
    return {**{k: data.get(k) for k in Connection.model_fields}, "privacy_consent": data.get("consent")}


# -- exports ----------------------------------------------------------------------------------------
# What an export is (its definition), and when it runs.
_EXPORT_FIELDS = (*DEFINITION_FIELDS, "enabled", "run_always")
# Exports saved before a field existed read as its default.
_EXPORT_DEFAULTS = {name: ExportIn.model_fields[name].default for name in _EXPORT_FIELDS}


def exports(services: Services, request: ApiRequest, caller: Caller) -> ApiResponse:
    name = request.params.get("name")
    store = services.store
    if not name:
        if request.method != "GET":
            raise ApiError(405, "use GET on /api/exports, or PUT/GET/DELETE on /api/exports/{name}")
        if not caller.is_contributor:
            raise ApiError(403, "this needs the Admin or Contributor role")
        visible = [_public_export(e) for e in store.list_exports() if _usable(services, caller, e)]
        return ApiResponse(200, {"exports": sorted(visible, key=lambda e: e["name"])})
    if request.method == "GET":
        return ApiResponse(200, _public_export(_export_or_404(services, caller, name)))
    _require_admin(caller)
    if request.method == "DELETE":
        if not store.delete_export(name):
            raise ApiError(404, f"no export named {name!r}")
        return ApiResponse(204)
    if request.method != "PUT":
        raise ApiError(405, f"{request.method} is not allowed here")
    submitted = _validated(ExportIn, request, "export")
    if store.get_connection(submitted.connection) is None:
        raise ApiError(
            400,
            "the export is not valid",
            [{"field": "connection", "reason": f"no connection named {submitted.connection!r}"}],
        )
    existing = store.get_export(name) or {}
    data = {
        "name": name,
        **submitted.model_dump(include=set(_EXPORT_FIELDS)),
        "updated_by": caller.name,
        "updated_at": utc_now(),
        "created_at": existing.get("created_at") or utc_now(),
        # A new export (or one deleted and saved again) is a new generation: nothing of an earlier one's
        # runs or sync state applies to it. An edit keeps it (an export saved before generations gets one).
        "generation": existing.get("generation") or new_generation(),
    }
    # Run bookkeeping survives edits; the timer compares the definition too, so an edit that changes
    # what is sent where runs again, and one that does not (enabled, run_always) does not re-send.
    for key in ("last_success_version", "last_success_run", "last_success_definition"):
        if key in existing:
            data[key] = existing[key]
    store.put_export(name, data)
    return ApiResponse(201 if not existing else 200, _public_export(data))


def _public_export(data: dict[str, Any]) -> dict[str, Any]:
    return {k: data.get(k, _EXPORT_DEFAULTS.get(k)) for k in Export.model_fields}


# -- runs ---------------------------------------------------------------------------------------------
def export_runs(services: Services, request: ApiRequest, caller: Caller) -> ApiResponse:
    name = request.params["name"]
    if request.method == "GET":
        return ApiResponse(200, {"runs": [_public_run(r) for r in _runs_of(services, caller, name)]})
    export = _export_or_404(services, caller, name)
    if request.method != "POST":
        raise ApiError(405, f"{request.method} is not allowed here")
    # The body is optional: none, or JSON null, is a run with the export's own options.
    options = _validated(RunIn, request, "run") if request.body.strip() not in (b"", b"null") else RunIn()
    run = start_run(
        services,
        name,
        Trigger.HTTP,
        caller.name,
        options=options.model_dump(exclude_defaults=True),
        generation=export.get("generation"),
    )
    location = f"{request.base_url.rstrip('/')}/api/runs/{run['run_id']}"
    return ApiResponse(202, _public_run(run), {"Location": location})


def _runs_of(services: Services, caller: Caller, name: str) -> list[dict[str, Any]]:
    """The runs recorded under an export's name, of every generation. A deleted export keeps its past
    runs: admins still read them (as GET /api/runs/{run_id} shows them); 404 when there are none."""
    if not caller.is_admin:
        _export_or_404(services, caller, name)  # a contributor reads the runs of an export they may use
    runs = services.store.runs_of(name)
    if not runs and services.store.get_export(name) is None:
        raise ApiError(404, f"no export named {name!r}")
    return runs


def run_status(services: Services, request: ApiRequest, caller: Caller) -> ApiResponse:
    run = _visible_run(services, request, caller)
    body = _public_run(run)
    if run.get("report_path"):
        body["report"] = _read_report(services, run["report_path"])
    return ApiResponse(200, body)


def cancel_run(services: Services, request: ApiRequest, caller: Caller) -> ApiResponse:
    """A queued run is cancelled at once (200); a running one is asked to stop, and does within 2 s
    (202: follow it at GET /api/runs/{run_id}); an ended run cannot be (409)."""
    if request.method != "POST":
        raise ApiError(405, f"{request.method} is not allowed here")
    run = _visible_run(services, request, caller)
    asked = {"cancel_requested": True, "cancel_requested_by": caller.name}
    while True:
        found = services.store.get_run_with_etag(run["run_id"])
        if found is None:
            raise ApiError(404, f"no run {run['run_id']}")
        run, etag = found
        if RunStatus(run["status"]).terminal:
            raise ApiError(409, f"the run has already ended ({run['status']})")
        if run["status"] == RunStatus.QUEUED:
            reason = "cancelled on request before it started"
            changes = {**asked, "status": RunStatus.CANCELLED, "finished_at": utc_now(), "reason": reason}
            status = 200
        else:
            changes, status = asked, 202
        if services.store.update_run(run["run_id"], changes, etag=etag):
            run.update(changes)
            log.info("run %s: cancel requested (%s)", run["run_id"], run["status"])
            if status == 200:
                run_finished(run)
            return ApiResponse(status, _public_run(run))


def _visible_run(services: Services, request: ApiRequest, caller: Caller) -> dict[str, Any]:
    """The run the request names, if the caller may see it (Admin, or a Contributor on an export they may use)."""
    run_id = request.params.get("run_id", "")
    if not caller.is_contributor:
        raise ApiError(403, "this needs the Admin or Contributor role")
    if not run_id.replace("-", "").isalnum() or len(run_id) > 64:
        raise ApiError(400, "run_id: not a run id")
    run = services.store.get_run(run_id)
    if run is None:
        raise ApiError(404, f"no run {run_id}")
    if not caller.is_admin:  # an admin sees every run: the export is read only for a contributor
        export = services.store.get_export(run["export_name"])
        if export is None or not _usable(services, caller, export):
            raise ApiError(403, "this run belongs to an export you cannot use")
    return run


def _read_report(services: Services, path: str) -> dict[str, Any] | None:
    container, _, blob = path.partition("/")
    try:
        return orjson.loads(services.blobs.get_blob_client(container, blob).download_blob().readall())
    except Exception as exc:
        log.warning("report %s could not be read: %s", path, type(exc).__name__)
        return None


def _public_run(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run[k] for k in Run.model_fields if run.get(k) is not None}
