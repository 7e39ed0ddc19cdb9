"""Access, table-driven: every HTTP route against every kind of caller (no function key, no principal,
a forged one, each role, a contributor on an admins-only connection), names with path tricks, and
malformed or oversized bodies. Each gets the status the README documents and a clear message."""

from __future__ import annotations

import base64
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import orjson
import pytest
from azure.core.exceptions import ResourceExistsError

import function_app
from shared.control import ADMIN, encode_principal, use_services
from shared.control.auth import CONTRIBUTOR
from shared.control.store import new_run_id, utc_now
from shared.engine import RunReport
from tests.conftest import AUTH_SETTINGS, SECRET, App, build_app
from tools.azurite import Azurite
from tools.functions_host import FUNCTIONS
from tools.keyvault_sim import LocalKeyVault
from tools.klaviyo_sim import KlaviyoSimulator, SimulatorConfig

ADMIN_P = {"x-ms-client-principal": encode_principal("ada@contoso.example", ADMIN)}
CONTRIB_P = {"x-ms-client-principal": encode_principal("cole@contoso.example", CONTRIBUTOR)}
READER_P = {"x-ms-client-principal": encode_principal("nina@contoso.example", "Reader")}
MALFORMED_P = {"x-ms-client-principal": base64.b64encode(b"{not json").decode()}
NO_P = {"x-other": "1"}


@dataclass
class World:
    app: App
    runs: dict[str, str]  # export name -> the id of a run of it


@pytest.fixture(scope="module")
def world(azurite: Azurite, vault: LocalKeyVault) -> Iterator[World]:
    with KlaviyoSimulator(SimulatorConfig(processing_seconds=0.02)) as klaviyo:
        app = build_app(azurite, klaviyo, vault)
        list_id = klaviyo.create_list("Access")
        app.put_connection("main", usable_by="contributors")
        app.put_connection("admins-only", usable_by="admins")
        app.put_connection("spare", usable_by="admins")
        app.put_export("open", list_id, {"blob": "o.csv"})
        app.put_export("closed", list_id, {"blob": "c.csv"}, connection="admins-only")
        app.put_export("spare", list_id, {"blob": "s.csv"})
        app.upload("o.csv", b"email,first_name\nann@example.com,Ann\n")
        runs = {}
        for name in ("open", "closed"):
            runs[name] = app.http("export_runs", "POST", f"exports/{name}/runs", name=name)[1]["run_id"]
            _with_report(app, name, runs[name])
        yield World(app, runs)
        use_services(None)


def _with_report(app: App, export: str, run_id: str) -> None:
    """The run's report.json and rejects.csv where a run leaves them (the report downloads read them)."""
    container = app.services.settings.reports_container
    with contextlib.suppress(ResourceExistsError):
        app.services.blobs.create_container(container)
    report = RunReport(run_id, export, "AbC123", f"{app.segments}/o.csv", "etag", utc_now(), status="succeeded")
    for name, data in (("report.json", report.to_json()), ("rejects.csv", b"source,row\n")):
        app.services.blobs.get_blob_client(container, f"{export}/{run_id}/{name}").upload_blob(data, overwrite=True)
    app.services.store.update_run(run_id, {"report_path": f"{container}/{export}/{run_id}/report.json"})


@pytest.fixture
def app(world: World, monkeypatch) -> App:
    for name in AUTH_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    use_services(world.app.services)
    return world.app


CONNECTION_BODY = {"display_name": "Main", "secret_name": SECRET, "usable_by": "contributors", "privacy_consent": True}


def export_body(app: App) -> dict[str, Any]:
    return {"connection": "main", "list_id": "AbC123", "segment": {"container": app.segments, "blob": "o.csv"}}


def body_of(kind: str, app: App) -> dict[str, Any]:
    if kind == "connection":
        return CONNECTION_BODY
    if kind == "columns":
        return {"segment": {"container": app.segments, "blob": "o.csv"}}
    return export_body(app)


# Every HTTP route and method: (function, method, path, route params, body).
ROUTES = {
    "list-connections": ("connections", "GET", "connections", {}, None),
    "get-connection": ("connections", "GET", "connections/main", {"name": "main"}, None),
    "put-connection": ("connections", "PUT", "connections/main", {"name": "main"}, "connection"),
    "delete-connection": ("connections", "DELETE", "connections/spare", {"name": "spare"}, None),
    "list-exports": ("exports", "GET", "exports", {}, None),
    "get-export": ("exports", "GET", "exports/open", {"name": "open"}, None),
    "put-export": ("exports", "PUT", "exports/open", {"name": "open"}, "export"),
    "delete-export": ("exports", "DELETE", "exports/spare", {"name": "spare"}, None),
    "list-runs": ("export_runs", "GET", "exports/open/runs", {"name": "open"}, None),
    "start-run": ("export_runs", "POST", "exports/open/runs", {"name": "open"}, None),
    "run-status": ("run_status", "GET", "runs/{open}", {"run_id": "{open}"}, None),
    "cancel-run": ("cancel_run", "POST", "runs/{open_fresh}/cancel", {"run_id": "{open_fresh}"}, None),
    "segment-columns": ("segment_columns", "POST", "segment-columns", {}, "columns"),
    "run-report": ("run_report", "GET", "runs/{open}/report.json", {"run_id": "{open}"}, None),
    "run-rejects": ("run_rejects", "GET", "runs/{open}/rejects.csv", {"run_id": "{open}"}, None),
}
# The same routes on the export whose connection is for admins only.
CLOSED_ROUTES = {
    "get-export": ("exports", "GET", "exports/closed", {"name": "closed"}, None),
    "list-runs": ("export_runs", "GET", "exports/closed/runs", {"name": "closed"}, None),
    "start-run": ("export_runs", "POST", "exports/closed/runs", {"name": "closed"}, None),
    "run-status": ("run_status", "GET", "runs/{closed}", {"run_id": "{closed}"}, None),
    "cancel-run": ("cancel_run", "POST", "runs/{closed_fresh}/cancel", {"run_id": "{closed_fresh}"}, None),
    "run-report": ("run_report", "GET", "runs/{closed}/report.json", {"run_id": "{closed}"}, None),
    "run-rejects": ("run_rejects", "GET", "runs/{closed}/rejects.csv", {"run_id": "{closed}"}, None),
}

NO_CALLER = "no authenticated caller: sign in through App Service Authentication"
MALFORMED = "the x-ms-client-principal header is malformed"
NO_EASY_AUTH = "App Service Authentication is not enabled, so the caller's identity cannot be trusted"
BYPASS_IN_AZURE = "LOCAL_AUTH_BYPASS_ROLE is set but the app runs in Azure: refused"
IN_AZURE = {"WEBSITE_INSTANCE_ID": "0a1b2c", "WEBSITE_SITE_NAME": "klaviyo-export"}
ADMIN_OK = {
    "list-connections": 200,
    "get-connection": 200,
    "put-connection": 200,
    "delete-connection": 204,
    "list-exports": 200,
    "get-export": 200,
    "put-export": 200,
    "delete-export": 204,
    "list-runs": 200,
    "start-run": 202,
    "run-status": 200,
    "cancel-run": 200,
    "segment-columns": 200,
    "run-report": 200,
    "run-rejects": 200,
}
CONTRIBUTOR_OK = {
    "list-exports": 200,
    "get-export": 200,
    "list-runs": 200,
    "start-run": 202,
    "run-status": 200,
    "cancel-run": 200,
    "run-report": 200,
    "run-rejects": 200,
}
CONTRIBUTOR_STATUS = {r: CONTRIBUTOR_OK.get(r, 403) for r in ROUTES}

# (caller, environment, routes, expected status by route, message of a refusal)
CALLERS = [
    ("no-principal", NO_P, {}, ROUTES, dict.fromkeys(ROUTES, 401), NO_CALLER),
    ("malformed-principal", MALFORMED_P, {}, ROUTES, dict.fromkeys(ROUTES, 401), MALFORMED),
    ("forged-admin-in-azure-without-easy-auth", ADMIN_P, IN_AZURE, ROUTES, dict.fromkeys(ROUTES, 500), NO_EASY_AUTH),
    (
        "bypass-setting-in-azure",
        NO_P,
        {**IN_AZURE, "WEBSITE_AUTH_ENABLED": "true", "LOCAL_AUTH_BYPASS_ROLE": ADMIN},
        ROUTES,
        dict.fromkeys(ROUTES, 500),
        BYPASS_IN_AZURE,
    ),
    ("no-app-role", READER_P, {}, ROUTES, dict.fromkeys(ROUTES, 403), "needs the Admin"),
    ("contributor", CONTRIB_P, {}, ROUTES, CONTRIBUTOR_STATUS, "needs the Admin role"),
    (
        "contributor-on-admins-only-connection",
        CONTRIB_P,
        {},
        CLOSED_ROUTES,
        dict.fromkeys(CLOSED_ROUTES, 403),
        {
            "get-export": "export 'closed' uses a connection reserved for admins",
            "list-runs": "export 'closed' uses a connection reserved for admins",
            "start-run": "export 'closed' uses a connection reserved for admins",
            "run-status": "this run belongs to an export you cannot use",
            "cancel-run": "this run belongs to an export you cannot use",
            "run-report": "this run belongs to an export you cannot use",
            "run-rejects": "this run belongs to an export you cannot use",
        },
    ),
    ("admin-on-admins-only-connection", ADMIN_P, {}, CLOSED_ROUTES, {r: ADMIN_OK[r] for r in CLOSED_ROUTES}, ""),
    ("admin", ADMIN_P, {}, ROUTES, ADMIN_OK, ""),
    ("admin-in-azure-with-easy-auth", ADMIN_P, {**IN_AZURE, "WEBSITE_AUTH_ENABLED": "true"}, ROUTES, ADMIN_OK, ""),
    (
        "local-bypass-contributor",
        NO_P,
        {"LOCAL_AUTH_BYPASS_ROLE": CONTRIBUTOR},
        ROUTES,
        CONTRIBUTOR_STATUS,
        "needs the Admin role",
    ),
]
CASES = [
    pytest.param(
        headers,
        env,
        routes[route],
        expected[route],
        message.get(route, "") if isinstance(message, dict) else message,
        id=f"{caller}/{route}",
    )
    for caller, headers, env, routes, expected, message in CALLERS
    for route in routes
]


def queued_run(app: App, export: str) -> str:
    """A run of the export recorded as queued (as a trigger leaves it), to be cancelled."""
    run_id = new_run_id()
    run = {"run_id": run_id, "export_name": export, "trigger": "http", "status": "queued", "requested_by": "t"}
    app.services.store.create_run({**run, "created_at": utc_now(), "attempts": 0})
    return run_id


def call(world: World, route: tuple, headers: dict[str, str], raw: bytes | None = None) -> tuple[int, Any]:
    function, method, path, params, body = route
    params = {k: v.format(**world.runs) for k, v in params.items()}
    data = None if body is None else body_of(body, world.app)
    path = path.format(**world.runs)
    if headers is NO_P and "LOCAL_AUTH_BYPASS_ROLE" in os.environ:
        # Local development without a principal: not an exchange the OpenAPI document describes.
        request = func.HttpRequest(
            method, f"http://localhost:7071/api/{path}", headers=headers, route_params=params, body=orjson.dumps(data)
        )
        response = world.app.functions[function](request)
        payload = response.get_body()
        if payload and response.mimetype.endswith("json"):
            return response.status_code, orjson.loads(payload)
        return response.status_code, payload or None
    status, payload, _ = world.app.http(function, method, path, data, headers, raw, **params)
    return status, payload


@pytest.mark.parametrize(("headers", "env", "route", "status", "message"), CASES)
def test_every_route_answers_every_caller_with_the_documented_status(
    app: App, world: World, monkeypatch, headers, env, route, status, message
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if route[1] == "DELETE" and status == 204:  # a fresh one to delete each time
        name = route[3]["name"]
        if route[0] == "connections":
            app.put_connection(name, usable_by="admins")
        else:
            app.put_export(name, "AbC123", {"blob": "s.csv"})
    if route[0] == "cancel_run":  # a fresh queued run to cancel each time
        export = "closed" if "closed" in route[2] else "open"
        world.runs[f"{export}_fresh"] = queued_run(app, export)
    got, body = call(world, route, headers)
    assert got == status, body
    if status >= 400:
        assert body["error"] and message in body["error"], body
    elif route[2] == "exports" and route[1] == "GET":
        names = {e["name"] for e in body["exports"]}
        assert "open" in names and ("closed" in names) == (headers is ADMIN_P), "contributors see their exports only"


# The one route anyone may read (the API's shape, no data: see the README's OpenAPI section), and the
# console's page, which answers with pages rather than JSON (checked on its own below).
ANONYMOUS = {"openapi_document"}
PAGES = {"console"}
HTTP_FUNCTIONS = sorted(n for n, f in FUNCTIONS.items() if f.get_trigger().type == "httpTrigger")


@pytest.mark.parametrize("function", HTTP_FUNCTIONS)
def test_every_http_route_is_anonymous_at_the_host_so_a_browser_needs_no_key(function: str) -> None:
    # A browser signed in through App Service Authentication has no function key (and none may be shipped
    # to it): the host lets every request through, and the app identifies the caller in code (the tests
    # above and below). Core Tools cannot run here, so this checks what the host is told.
    assert str(FUNCTIONS[function].get_trigger().auth_level) == "ANONYMOUS"
    assert function_app.app.auth_level == func.AuthLevel.ANONYMOUS


def test_every_http_route_is_in_the_access_table() -> None:
    assert {function for function, *_ in ROUTES.values()} | ANONYMOUS | PAGES == set(HTTP_FUNCTIONS)


EASY_AUTH_ON = {**IN_AZURE, "WEBSITE_AUTH_ENABLED": "true"}
KEY_ONLY = {"x-functions-key": "a-valid-looking-function-key"}
CONSOLE_ROUTES = {
    "console-page": ("console", "GET", "console", {}, None),
    "console-script": ("console", "GET", "console/console.js", {"asset": "console.js"}, None),
}
# In Azure, whatever the caller sends, only a principal with a role gets anything but a refusal.
UNSIGNED = [("no-principal", NO_P, 401), ("function-key-only", KEY_ONLY, 401), ("malformed", MALFORMED_P, 401)]
UNSIGNED += [("signed-in-without-a-role", READER_P, 403)]


def call_page(world: World, route: tuple, headers: dict[str, str]) -> tuple[int, bytes]:
    function, method, path, params, _ = route
    request = func.HttpRequest(
        method, f"https://kse.azurewebsites.net/api/{path}", headers=headers, route_params=params, body=b""
    )
    response = world.app.functions[function](request)
    return response.status_code, response.get_body()


@pytest.mark.parametrize(("caller", "headers", "status"), [pytest.param(*u, id=u[0]) for u in UNSIGNED])
@pytest.mark.parametrize("route", [*ROUTES, *CONSOLE_ROUTES])
def test_in_azure_nothing_is_reachable_without_a_signed_in_principal_with_a_role(
    app: App, world: World, monkeypatch, route: str, caller: str, headers: dict[str, str], status: int
) -> None:
    for key, value in EASY_AUTH_ON.items():
        monkeypatch.setenv(key, value)
    if route in CONSOLE_ROUTES:
        got, body = call_page(world, CONSOLE_ROUTES[route], headers)
        assert got == status and b"<script" not in body, "a refusal is a short page, not the console"
    else:
        if route.startswith("cancel"):
            world.runs["open_fresh"] = queued_run(app, "open")
        got, body = call(world, ROUTES[route], headers)
        assert got == status and body["error"], body
    if got == 401 and route == "console-page":
        assert b"/.auth/login/aad" in body, "the page offers to sign in"


@pytest.mark.parametrize(("caller", "headers", "env"), [(c, h, e) for c, h, e, r, *_ in CALLERS if r is ROUTES])
def test_the_console_answers_every_caller_as_the_api_does(app: App, world: World, monkeypatch, caller, headers, env):
    """The page is served to exactly those who may list exports, with their role; the others get a page saying why."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    expected = next(statuses["list-exports"] for c, _, _, _, statuses, _ in CALLERS if c == caller)
    got, body = call_page(world, CONSOLE_ROUTES["console-page"], headers)
    assert got == expected, body
    if got == 200:
        role = "Admin" if "admin" in caller else "Contributor"
        assert f'data-role="{role}"'.encode() in body and b'src="/api/console/console.js"' in body
    assert call_page(world, CONSOLE_ROUTES["console-script"], headers)[0] == expected


@pytest.mark.parametrize(("caller", "headers", "env"), [(c, h, e) for c, h, e, *_ in CALLERS])
def test_the_openapi_document_is_served_to_any_caller(app: App, monkeypatch, caller: str, headers, env) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    status, document, _ = app.http("openapi_document", "GET", "openapi.json", headers=headers)
    assert status == 200 and document["openapi"].startswith("3.1")


# -- names with path tricks ---------------------------------------------------------------------------------

BAD_NAMES = ["..", ".", "a/b", "../main", "Main", "a_b", "-a", "a--b", "a.b", "x" * 64, "%2e%2e", "a b"]
NAMED_ROUTES = [r for r, (_, _, _, params, _) in ROUTES.items() if "name" in params]
NAME_RULE = "name: must be lowercase letters, digits and single dashes (at most 63)"


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("route", NAMED_ROUTES)
def test_names_with_path_tricks_are_400_on_every_named_route(app: App, world: World, route: str, name: str) -> None:
    function, method, path, _, body = ROUTES[route]
    status, payload = call(world, (function, method, path, {"name": name}, body), ADMIN_P)
    assert status == 400 and payload == {"error": NAME_RULE}


@pytest.mark.parametrize("run_id", ["..", "a/b", "../x", "x" * 65, "a b", "%2F"])
def test_run_ids_with_path_tricks_are_400(app: App, run_id: str) -> None:
    status, payload, _ = app.http("run_status", "GET", "runs/x", None, ADMIN_P, run_id=run_id)
    assert status == 400 and payload == {"error": "run_id: not a run id"}


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        pytest.param("exports/%2e%2e", 400, NAME_RULE, id="encoded-dotdot"),
        pytest.param("exports/a%2Fb", 400, NAME_RULE, id="encoded-slash"),
        pytest.param("connections/a%2fb", 400, NAME_RULE, id="encoded-slash-lowercase"),
        pytest.param("exports/..%2Fmain/runs", 400, NAME_RULE, id="encoded-slash-before-runs"),
        pytest.param("runs/..%2F..%2Fconnections", 400, "run_id: not a run id", id="encoded-run-id"),
        pytest.param("runs/0123456789abcdef0123456789abcdef", 404, "no run 0123456789abcdef", id="unknown-run"),
        pytest.param("exports/nope", 404, "no export named 'nope'", id="unknown-export"),
        pytest.param("exports/open/runs/extra", 404, "no such route", id="no-such-route"),
    ],
)
def test_encoded_path_tricks_through_the_host_routing(app: App, path: str, status: int, message: str) -> None:
    response = app.host.http("GET", path, headers=ADMIN_P)
    assert response.status_code == status
    assert message in orjson.loads(response.get_body())["error"]


# -- bodies ----------------------------------------------------------------------------------------------------

NESTED = b"[" * 20_000 + b"]" * 20_000


@pytest.mark.parametrize("route", ["put-connection", "put-export"])
@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        pytest.param(b"{not json", 400, "the request body is not valid JSON", id="malformed"),
        pytest.param(b"", 400, "the request body is not valid JSON", id="empty"),
        pytest.param(b'{"a": 1', 400, "the request body is not valid JSON", id="truncated"),
        pytest.param(b"\xff\xfe{}", 400, "the request body is not valid JSON", id="not-utf8"),
        pytest.param(NESTED, 400, "the request body is not valid JSON", id="nested-20000-deep"),
        pytest.param(b"[1, 2]", 400, "the request body must be a JSON object", id="an-array"),
        pytest.param(b'"text"', 400, "the request body must be a JSON object", id="a-string"),
        pytest.param(b" " * 70_000 + b"{}", 413, "the request body is larger than 65,536 bytes", id="over-64-KB"),
        pytest.param(
            b'{"display_name": "' + b"x" * 70_000 + b'"}', 413, "larger than 65,536 bytes", id="over-64-KB-valid-json"
        ),
    ],
)
def test_malformed_or_oversized_bodies_get_a_clear_error(
    app: App, world: World, route: str, raw: bytes, status: int, message: str
) -> None:
    got, payload = call(world, ROUTES[route], ADMIN_P, raw=raw)
    assert got == status and message in payload["error"], payload


@pytest.mark.parametrize(
    ("route", "body", "problems"),
    [
        pytest.param("put-connection", {"display_name": "x"}, {"secret_name"}, id="connection-missing-field"),
        pytest.param(
            "put-connection",
            {"display_name": "x", "secret_name": "s", "usable_by": "everyone", "extra": 1},
            {"usable_by", "extra"},
            id="connection-bad-and-unknown-fields",
        ),
        pytest.param(
            "put-export",
            {"connection": "main", "list_id": ["x"], "segment": {"container": "segments", "blob": "/etc/passwd"}},
            {"list_id", "segment.blob"},
            id="export-wrong-type-and-absolute-path",
        ),
    ],
)
def test_invalid_bodies_name_each_field_without_echoing_it(
    app: App, world: World, route: str, body: dict[str, Any], problems: set[str]
) -> None:
    got, payload = call(world, ROUTES[route], ADMIN_P, raw=orjson.dumps(body))
    assert got == 400 and payload["error"].endswith("is not valid")
    assert {p["field"] for p in payload["problems"]} == problems
    assert "/etc/passwd" not in orjson.dumps(payload).decode()
