"""The HTTP API as an OpenAPI 3.1 document, its schemas generated from the pydantic models in models.py."""

from __future__ import annotations

import copy
import functools
from typing import Any

import orjson
from pydantic.json_schema import models_json_schema

from shared.control.api import MAX_BODY_BYTES
from shared.control.auth import MAX_CLAIM_CHARS, PRINCIPAL_HEADER
from shared.control.console_models import ColumnsIn, SegmentColumns
from shared.control.console_openapi import console_paths
from shared.control.models import (
    NAME_PATTERN,
    Connection,
    ConnectionIn,
    ConnectionList,
    Error,
    Export,
    ExportIn,
    ExportList,
    Run,
    RunIn,
    RunList,
    RunWithReport,
)

OPENAPI_VERSION = "3.1.0"
_MODELS = (
    ConnectionIn,
    ExportIn,
    RunIn,
    Connection,
    ConnectionList,
    Export,
    ExportList,
    Run,
    RunWithReport,
    RunList,
    Error,
    ColumnsIn,
    SegmentColumns,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema_name)}}}


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


# Every failure is a JSON body {"error": ..., "problems"?: [...]}; these are shared by the operations.
_COMMON_ERRORS = {
    "401": _error(
        "no authenticated caller, or a malformed principal header (not Base64 JSON, or a name or role claim "
        f"that is not text of at most {MAX_CLAIM_CHARS} characters)"
    ),
    "500": _error(
        "unsafe configuration, every request refused: App Service Authentication is not enabled in Azure, "
        "or LOCAL_AUTH_BYPASS_ROLE is set in Azure; or an unexpected failure, such as storage that did not "
        "answer (the error names its kind only; the details are in the app's log)"
    ),
}
_BAD_NAME = "a path parameter is not a valid name (lowercase letters, digits and single dashes, at most 63)"


def _operation(
    operation_id: str,
    summary: str,
    roles: str,
    responses: dict[str, Any],
    body: str | None = None,
    body_required: bool = True,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "description": f"Roles: {roles}.",
        "responses": {**responses, **_COMMON_ERRORS},
    }
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "description": f"at most {MAX_BODY_BYTES:,} bytes" + ("" if body_required else "; may be left out"),
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return operation


def _name_parameter(what: str) -> dict[str, Any]:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "description": f"the {what}'s name",
        "schema": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 63},
    }


def _paths() -> dict[str, Any]:
    connection = [_name_parameter("connection")]
    export = [_name_parameter("export")]
    run_id = [
        {
            "name": "run_id",
            "in": "path",
            "required": True,
            "description": "as returned when the run was queued (also the last part of its Location header)",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"},
        }
    ]
    admin, contributor = "Admin", "Admin or Contributor (only exports whose connection is usable by contributors)"
    return {
        **console_paths(_operation, _json, _error, run_id),
        "/api/connections": {
            "get": _operation(
                "listConnections",
                "List the connections",
                admin,
                {"200": _json("ConnectionList", "the connections"), "403": _error("the caller is not an Admin")},
            )
        },
        "/api/connections/{name}": {
            "parameters": connection,
            "get": _operation(
                "getConnection",
                "Read a connection",
                admin,
                {
                    "200": _json("Connection", "the connection"),
                    "400": _error(_BAD_NAME),
                    "403": _error("the caller is not an Admin"),
                    "404": _error("no connection of that name"),
                },
            ),
            "put": _operation(
                "putConnection",
                "Create or replace a connection",
                admin,
                {
                    "200": _json("Connection", "replaced"),
                    "201": _json("Connection", "created"),
                    "400": _error("the body is not valid JSON, or a field is invalid: `problems` names each"),
                    "403": _error("the caller is not an Admin"),
                    "413": _error(f"the body is larger than {MAX_BODY_BYTES:,} bytes"),
                },
                body="ConnectionIn",
            ),
            "delete": _operation(
                "deleteConnection",
                "Delete a connection",
                admin,
                {
                    "204": {"description": "deleted"},
                    "400": _error(_BAD_NAME),
                    "403": _error("the caller is not an Admin"),
                    "404": _error("no connection of that name"),
                    "409": _error("exports still use the connection: the error names them"),
                },
            ),
        },
        "/api/exports": {
            "get": _operation(
                "listExports",
                "List the exports the caller may use",
                contributor,
                {"200": _json("ExportList", "the exports, by name"), "403": _error("the caller has neither role")},
            )
        },
        "/api/exports/{name}": {
            "parameters": export,
            "get": _operation(
                "getExport",
                "Read an export",
                contributor,
                {
                    "200": _json("Export", "the export"),
                    "400": _error(_BAD_NAME),
                    "403": _error("the caller may not use this export"),
                    "404": _error("no export of that name"),
                },
            ),
            "put": _operation(
                "putExport",
                "Create or replace an export (saving never runs it)",
                admin,
                {
                    "200": _json("Export", "replaced"),
                    "201": _json("Export", "created"),
                    "400": _error("the body is not valid JSON, a field is invalid, or the connection does not exist"),
                    "403": _error("the caller is not an Admin"),
                    "413": _error(f"the body is larger than {MAX_BODY_BYTES:,} bytes"),
                },
                body="ExportIn",
            ),
            "delete": _operation(
                "deleteExport",
                "Delete an export: its queued runs are skipped, its past runs and reports kept",
                admin,
                {
                    "204": {"description": "deleted"},
                    "400": _error(_BAD_NAME),
                    "403": _error("the caller is not an Admin"),
                    "404": _error("no export of that name"),
                },
            ),
        },
        "/api/exports/{name}/runs": {
            "parameters": export,
            "get": _operation(
                "listRuns",
                "The runs recorded under the export's name, newest first, of every generation (each run shows its "
                "export_generation); a deleted export keeps its past runs, which Admins still read",
                contributor,
                {
                    "200": _json("RunList", "the runs"),
                    "400": _error(_BAD_NAME),
                    "403": _error("the caller may not use this export"),
                    "404": _error("no export of that name (for an Admin: and no runs recorded under it)"),
                },
            ),
            "post": _operation(
                "startRun",
                "Queue a run of the export now",
                contributor,
                {
                    "202": {
                        **_json("Run", "queued; poll the Location"),
                        "headers": {
                            "Location": {
                                "description": "the run's status URL (GET /api/runs/{run_id})",
                                "required": True,
                                "schema": {"type": "string", "format": "uri"},
                            }
                        },
                    },
                    "400": _error(_BAD_NAME + ", or the body is not a valid set of run options"),
                    "403": _error("the caller may not use this export"),
                    "404": _error("no export of that name"),
                },
                body="RunIn",
                body_required=False,
            ),
        },
        "/api/runs/{run_id}": {
            "parameters": run_id,
            "get": _operation(
                "getRun",
                "A run's state, its progress counts while it runs, and its report once done",
                contributor,
                {
                    "200": _json("RunWithReport", "the run"),
                    "400": _error("not a run id"),
                    "403": _error("the run belongs to an export the caller may not use"),
                    "404": _error("no such run"),
                },
            ),
        },
        "/api/runs/{run_id}/cancel": {
            "parameters": run_id,
            "post": _operation(
                "cancelRun",
                "Cancel a run: a queued one at once, a running one within 2 s (nothing is sent after; what "
                "was read and not sent is counted as not_sent)",
                contributor,
                {
                    "200": _json("Run", "the run was still queued: it is cancelled"),
                    "202": _json("Run", "the run is running: it has been asked to stop (follow it at its URL)"),
                    "400": _error("not a run id"),
                    "403": _error("the run belongs to an export the caller may not use"),
                    "404": _error("no such run"),
                    "409": _error("the run has already ended"),
                },
            ),
        },
        "/api/openapi.json": {
            "get": {
                "operationId": "getOpenApiDocument",
                "summary": "This document",
                "description": "Anonymous: it describes the API, holds no data and no secret.",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


_DESCRIPTION = f"""\
Connections, exports and runs of klaviyo-segment-export (segments in Azure Blob Storage into Klaviyo lists).

One thing authenticates a call: the **caller**, from the `{PRINCIPAL_HEADER}` header that App Service
Authentication sets after the caller signs in with Microsoft Entra ID (a browser session, or
`Authorization: Bearer <token>` for automation; it removes any copy a client sends). The functions are
anonymous at the Functions host (a browser has no function key): a function key sent along is ignored, and
in Azure the app refuses every request when App Service Authentication is off. The caller's app roles decide the
rest: `Admin` manages everything; `Contributor` lists exports, starts runs and reads runs, on exports
whose connection is `usable_by: contributors`. Errors are JSON: `{{"error": "...", "problems": [...]}}`,
`problems` naming each invalid field (400 only)."""


@functools.cache
def _document() -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(model, "validation") for model in _MODELS], ref_template="#/components/schemas/{model}"
    )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "klaviyo-segment-export", "version": "1", "description": _DESCRIPTION},
        "paths": _paths(),
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                "appServiceAuthentication": {
                    "type": "apiKey",
                    "in": "header",
                    "name": PRINCIPAL_HEADER,
                    "description": "Set by App Service Authentication from the caller's Microsoft Entra ID sign-in "
                    "(send `Authorization: Bearer <token>` for the app's Entra registration); a copy sent by the "
                    "client is removed. Base64 JSON with the caller's name and app roles (Admin, Contributor), each "
                    f"text of at most {MAX_CLAIM_CHARS} characters. "
                    "Only the local stand-in host (tools/functions_host.py) takes it from the client.",
                },
            },
        },
        "security": [
            {"appServiceAuthentication": []},
        ],
    }


def document(server_url: str | None = None) -> dict[str, Any]:
    """The document; with `server_url` (the app's origin, e.g. https://<app>.azurewebsites.net) as its server."""
    built = copy.deepcopy(_document())
    if server_url:
        built["servers"] = [{"url": server_url.rstrip("/")}]
    return built


def document_json(server_url: str | None = None) -> bytes:
    return orjson.dumps(document(server_url))
