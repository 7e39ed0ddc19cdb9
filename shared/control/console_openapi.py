"""The OpenAPI entries of the calls added for the browser console (openapi.py merges them into its document,
handing over its own builders so both parts describe operations the same way)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Builder = Callable[..., dict[str, Any]]
_ADMIN = "Admin"
_READERS = "Admin or Contributor (only runs of exports whose connection is usable by contributors)"


def _download(operation: Builder, error: Builder, run_id: list[dict[str, Any]], name: str, media: str) -> Any:
    return {
        "parameters": run_id,
        "get": operation(
            f"download{name.split('.')[0].title()}",
            f"Download the run's {name} (as an attachment)",
            _READERS,
            {
                "200": {
                    "description": f"{name}, as the run wrote it",
                    "headers": {"Content-Disposition": {"schema": {"type": "string"}, "required": True}},
                    "content": {media: {"schema": {"type": "object"}} if media.endswith("json") else {}},
                },
                "400": error("not a run id"),
                "403": error("the run belongs to an export the caller may not use"),
                "404": error(f"no such run, the run has no report yet, or its {name} is gone"),
            },
        ),
    }


def _console_page(description: str, asset: bool) -> dict[str, Any]:
    html: dict[str, Any] = {"text/html": {}}  # a page, not JSON: no schema
    responses = {
        "200": {"description": description, "content": html if not asset else {"text/javascript": {}, "text/css": {}}},
        "401": {"description": "no authenticated caller: a page with a sign-in link", "content": html},
        "403": {"description": "the caller has neither app role", "content": html},
        "500": {"description": "unsafe configuration (as for every operation)", "content": html},
    }
    if asset:
        responses["404"] = {"description": "the console has no such file", "content": {"text/plain": {}}}
    operation: dict[str, Any] = {
        "operationId": "getConsoleFile" if asset else "getConsole",
        "summary": description,
        "description": "Roles: Admin or Contributor. A page for browsers, not an API call: its refusals are HTML.",
        "responses": responses,
    }
    if asset:
        parameter = {"name": "asset", "in": "path", "required": True, "schema": {"enum": ["console.js", "console.css"]}}
        return {"parameters": [parameter], "get": operation}
    return {"get": operation}


def console_paths(operation: Builder, json: Builder, error: Builder, run_id: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "/api/segment-columns": {
            "post": operation(
                "segmentColumns",
                "The column names of a segment, from its header rows or its files' schemas (never a row's values), "
                "described as an export describes it: for choosing the mapping before the export is saved",
                _ADMIN,
                {
                    "200": json("SegmentColumns", "the columns"),
                    "400": error("the body is not valid, or the segment cannot be read: `problems` names `segment`"),
                    "403": error("the caller is not an Admin"),
                    "413": error("the body is larger than 65,536 bytes"),
                },
                body="ColumnsIn",
            )
        },
        "/api/runs/{run_id}/report.json": _download(operation, error, run_id, "report.json", "application/json"),
        "/api/runs/{run_id}/rejects.csv": _download(operation, error, run_id, "rejects.csv", "text/csv"),
        "/api/console": _console_page("the console's page", asset=False),
        "/api/console/{asset}": _console_page("the console's script or style", asset=True),
    }
