"""Trigger adapters: each function hands over to the engine in shared/ (no logic here)."""

from __future__ import annotations

import logging
import threading
from typing import cast

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_types
import orjson

from shared import telemetry
from shared.control import (
    api,
    console_api,
    execute_run,
    get_services,
    mark_poisoned,
    on_segment_blob,
    openapi,
    plan_scheduled_runs,
)
from shared.control.console_page import SECURITY_HEADERS, console_page
from shared.settings import RUNS_QUEUE, SEGMENTS_STORAGE_SETTING, STORAGE_SETTING

telemetry.configure()  # Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set; else nothing
# Anonymous at the host: a browser signed in through App Service Authentication has no function key, and a
# key must never be shipped to it. Every route identifies its caller in code (shared/control/auth.py): a
# principal with a role, which only App Service Authentication can set; in Azure without it, every request
# is refused (see the README's "Who may call the API").
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _origin(request: func.HttpRequest) -> str:
    return request.url.split("/api/", 1)[0]


def _http(request: func.HttpRequest, handler: api.Handler) -> func.HttpResponse:
    response = api.handle(
        get_services(),
        api.ApiRequest(
            request.method, dict(request.route_params), dict(request.headers), request.get_body(), _origin(request)
        ),
        handler,
    )
    return func.HttpResponse(
        response.json(), status_code=response.status, headers=response.headers, mimetype=response.content_type
    )


@app.route(route="connections/{name?}", methods=["GET", "PUT", "DELETE"])
def connections(req: func.HttpRequest) -> func.HttpResponse:
    return _http(req, api.connections)


@app.route(route="exports/{name?}", methods=["GET", "PUT", "DELETE"])
def exports(req: func.HttpRequest) -> func.HttpResponse:
    return _http(req, api.exports)


@app.route(route="exports/{name}/runs", methods=["GET", "POST"])
def export_runs(req: func.HttpRequest) -> func.HttpResponse:
    return _http(req, api.export_runs)


@app.route(route="runs/{run_id}", methods=["GET"])
def run_status(req: func.HttpRequest) -> func.HttpResponse:
    return _http(req, api.run_status)


@app.route(route="runs/{run_id}/cancel", methods=["POST"])
def cancel_run(req: func.HttpRequest) -> func.HttpResponse:
    return _http(req, api.cancel_run)


@app.route(route="segment-columns", methods=["POST"])
def segment_columns(req: func.HttpRequest) -> func.HttpResponse:
    return _http(req, console_api.segment_columns)


@app.route(route="runs/{run_id}/report.json", methods=["GET"])
def run_report(req: func.HttpRequest) -> func.HttpResponse:
    return _http(req, console_api.run_file("report"))


@app.route(route="runs/{run_id}/rejects.csv", methods=["GET"])
def run_rejects(req: func.HttpRequest) -> func.HttpResponse:
    return _http(req, console_api.run_file("rejects"))


# The browser console: a page and its two files, bundled in the package; it calls the API above.
@app.route(route="console/{asset?}", methods=["GET"])
def console(req: func.HttpRequest) -> func.HttpResponse:
    page = console_page(dict(req.headers), req.route_params.get("asset") or "")
    return func.HttpResponse(page.body, status_code=page.status, headers=SECURITY_HEADERS, mimetype=page.content_type)


# Anonymous in code too: the API's shape only (no data, no secret), readable by API Management and client generators.
@app.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(openapi.document_json(_origin(req)), mimetype="application/json")


@app.timer_trigger(arg_name="timer", schedule="%EXPORT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def scheduled_exports(timer: func.TimerRequest) -> None:
    plan_scheduled_runs(get_services())


@app.queue_trigger(arg_name="message", queue_name=RUNS_QUEUE, connection=STORAGE_SETTING)
def run_export(message: func.QueueMessage, context: func.Context) -> None:
    invocation_id = context.invocation_id
    # The SDK annotates thread_local_storage as the class threading.local; the worker hands over an instance,
    # whose invocation_id attribute it reads to tie log records from other threads to this invocation.
    thread_storage = cast(threading.local, context.thread_local_storage)

    def carry_invocation_id() -> None:  # log records from worker threads are dropped without it
        thread_storage.invocation_id = invocation_id

    execute_run(get_services(), orjson.loads(message.get_body()), carry_invocation_id)


@app.queue_trigger(arg_name="message", queue_name=f"{RUNS_QUEUE}-poison", connection=STORAGE_SETTING)
def poisoned_run(message: func.QueueMessage) -> None:
    logging.getLogger(__name__).error("run message moved to the poison queue after repeated failures")
    mark_poisoned(get_services(), orjson.loads(message.get_body()))


# Streams nothing itself: the SDK-typed binding hands over a client, not the blob's bytes.
@app.blob_trigger(
    arg_name="segment",
    path="%SEGMENTS_CONTAINER%/{name}",
    connection=SEGMENTS_STORAGE_SETTING,
    source=func.BlobSource.EVENT_GRID,
)
def segment_dropped(segment: blob_types.BlobClient) -> None:
    on_segment_blob(get_services(), segment.container_name, segment.blob_name)
