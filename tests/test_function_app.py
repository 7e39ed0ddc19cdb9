"""The Functions app through its user functions, with real azure.functions objects, against Azurite,
the Klaviyo simulator and the local Key Vault."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import orjson
import pytest
from azure.functions.timer import TimerRequest

from shared import telemetry
from shared.settings import RUNS_QUEUE
from shared.storage import queue_client
from tests.api_contract import documented_exchanges
from tests.conftest import ADMIN_HEADERS, API_KEY, CONTRIB_HEADERS, NOBODY_HEADERS, App, member_emails
from tools.functions_host import FUNCTIONS, InvocationContext
from tools.klaviyo_sim import KlaviyoSimulator


def csv(*emails: str) -> bytes:
    return ("email,first_name\n" + "".join(f"{e},N\n" for e in emails)).encode()


# -- indexing -----------------------------------------------------------------------------------------
def test_the_app_indexes_every_function_with_its_bindings():
    triggers = {name: f.get_trigger() for name, f in FUNCTIONS.items()}
    assert set(FUNCTIONS) == {
        "connections",
        "exports",
        "export_runs",
        "run_status",
        "cancel_run",
        "openapi_document",
        "segment_columns",
        "run_report",
        "run_rejects",
        "console",
        "scheduled_exports",
        "run_export",
        "poisoned_run",
        "segment_dropped",
    }
    http = {
        name: (t.route, sorted(str(m) for m in t.methods), str(t.auth_level))
        for name, t in triggers.items()
        if t.type == "httpTrigger"
    }
    assert http == {
        "connections": ("connections/{name?}", ["DELETE", "GET", "PUT"], "ANONYMOUS"),
        "exports": ("exports/{name?}", ["DELETE", "GET", "PUT"], "ANONYMOUS"),
        "export_runs": ("exports/{name}/runs", ["GET", "POST"], "ANONYMOUS"),
        "run_status": ("runs/{run_id}", ["GET"], "ANONYMOUS"),
        "cancel_run": ("runs/{run_id}/cancel", ["POST"], "ANONYMOUS"),
        "openapi_document": ("openapi.json", ["GET"], "ANONYMOUS"),
        "segment_columns": ("segment-columns", ["POST"], "ANONYMOUS"),
        "run_report": ("runs/{run_id}/report.json", ["GET"], "ANONYMOUS"),
        "run_rejects": ("runs/{run_id}/rejects.csv", ["GET"], "ANONYMOUS"),
        "console": ("console/{asset?}", ["GET"], "ANONYMOUS"),
    }
    timer = triggers["scheduled_exports"]
    assert (timer.type, timer.schedule, timer.run_on_startup) == ("timerTrigger", "%EXPORT_SCHEDULE%", False)
    assert (triggers["run_export"].queue_name, triggers["run_export"].connection) == (RUNS_QUEUE, "AzureWebJobsStorage")
    assert triggers["poisoned_run"].queue_name == f"{RUNS_QUEUE}-poison"
    blob = triggers["segment_dropped"]
    assert (blob.type, blob.path, blob.connection, str(blob.source)) == (
        "blobTrigger",
        "%SEGMENTS_CONTAINER%/{name}",
        "SegmentsStorage",
        "EventGrid",
    )


# -- the whole flow -------------------------------------------------------------------------------------
def test_configure_run_on_demand_and_find_the_segment_in_the_list(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("VIP")
    assert app.put_connection()[0] == 201
    app.upload("vip.csv", csv("a@example.com", "b@example.com", "bad-email"))
    status, export, _ = app.put_export("vip", list_id, {"blob": "vip.csv"})
    assert status == 201 and export["enabled"] is True
    assert klaviyo.stats["jobs_created"] == 0, "saving an export does not run it"

    status, run, response = app.http("export_runs", "POST", "exports/vip/runs", name="vip")
    assert status == 202 and run["status"] == "queued"
    assert response.headers["Location"] == f"http://localhost:7071/api/runs/{run['run_id']}"

    assert app.drain_queue() == 1
    status, finished, _ = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
    assert status == 200 and finished["status"] == "completed_with_rejects"
    assert finished["counts"] == {
        "rows_read": 3,
        "sent": 2,
        "accepted": 2,
        "failed": 0,
        "rejected": 1,
        "duplicates": 0,
        "not_sent": 0,
        "unchanged": 0,
        "added": 2,
        "updated": 0,
        "removed": 0,
        "subscribed": 0,
        "not_subscribed": 0,
        "no_consent": 0,
        "unsubscribed": 0,
    }
    assert finished["report"]["counts"]["accepted"] == 2
    assert member_emails(klaviyo, list_id) == {"a@example.com", "b@example.com"}
    assert API_KEY not in orjson.dumps(finished).decode()

    _, history, _ = app.http("export_runs", "GET", "exports/vip/runs", name="vip")
    assert [r["run_id"] for r in history["runs"]] == [run["run_id"]]


def test_a_repeated_queue_message_does_not_run_twice(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("L")
    app.put_connection()
    app.upload("s.csv", csv("a@example.com"))
    app.put_export("s", list_id, {"blob": "s.csv"})
    _, run, _ = app.http("export_runs", "POST", "exports/s/runs", name="s")
    message = orjson.dumps({"run_id": run["run_id"]})
    for _ in range(2):
        app.functions["run_export"](func.QueueMessage(id="m", body=message), InvocationContext("run_export"))
    assert klaviyo.stats["jobs_created"] == 1


def test_queue_messages_are_base64_as_the_queue_trigger_expects(app: App, klaviyo: KlaviyoSimulator):
    import base64

    app.put_connection()
    app.upload("s.csv", csv("a@example.com"))
    app.put_export("s", klaviyo.create_list("L"), {"blob": "s.csv"})
    _, run, _ = app.http("export_runs", "POST", "exports/s/runs", name="s")
    raw = queue_client(app.services.settings.storage, RUNS_QUEUE)
    [message] = raw.peek_messages()
    assert orjson.loads(base64.b64decode(message.content)) == {"run_id": run["run_id"], "export_name": "s"}


def test_a_dropped_blob_runs_the_matching_export_once(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Drops")
    app.put_connection()
    app.put_export("drops", list_id, {"blob": "daily/drop.csv"})
    app.upload("daily/drop.csv", csv("x@example.com", "y@example.com"))
    blob = app.services.blobs.get_blob_client(app.segments, "daily/drop.csv")
    app.functions["segment_dropped"](blob)
    app.functions["segment_dropped"](blob)  # the blob trigger may fire twice for one upload
    unmatched = app.services.blobs.get_blob_client(app.segments, "other/file.csv")
    unmatched.upload_blob(csv("z@example.com"))
    app.functions["segment_dropped"](unmatched)
    assert app.drain_queue() == 1
    assert member_emails(klaviyo, list_id) == {"x@example.com", "y@example.com"}


def test_a_folder_segment_runs_when_its_marker_arrives_and_reads_all_parts(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Folder")
    app.put_connection()
    app.put_export("cdp", list_id, {"prefix": "cdp/vip", "mode": "folder"})
    app.upload("cdp/vip/2026-11-25/part-0001.csv", csv("p1@example.com"))
    app.functions["segment_dropped"](
        app.services.blobs.get_blob_client(app.segments, "cdp/vip/2026-11-25/part-0001.csv")
    )
    assert app.drain_queue() == 0, "a part alone does not start a run"
    app.upload("cdp/vip/2026-11-25/part-0002.csv", csv("p2@example.com"))
    app.upload("cdp/vip/2026-11-25/model.json", b"{}")
    app.functions["segment_dropped"](app.services.blobs.get_blob_client(app.segments, "cdp/vip/2026-11-25/model.json"))
    assert app.drain_queue() == 1
    assert member_emails(klaviyo, list_id) == {"p1@example.com", "p2@example.com"}


def test_the_timer_runs_only_enabled_and_changed_exports(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Timer")
    app.put_connection()
    app.upload("on.csv", csv("on@example.com"))
    app.upload("off.csv", csv("off@example.com"))
    app.put_export("on", list_id, {"blob": "on.csv"})
    app.put_export("off", list_id, {"blob": "off.csv"}, enabled=False)
    app.functions["scheduled_exports"](TimerRequest())
    assert app.drain_queue() == 1
    assert member_emails(klaviyo, list_id) == {"on@example.com"}

    app.functions["scheduled_exports"](TimerRequest())
    assert app.drain_queue() == 0, "an unchanged segment is not sent again"
    _, history, _ = app.http("export_runs", "GET", "exports/on/runs", name="on")
    assert history["runs"][0]["status"] == "skipped" and "unchanged" in history["runs"][0]["reason"]

    app.upload("on.csv", csv("on@example.com", "new@example.com"))
    app.functions["scheduled_exports"](TimerRequest())
    assert app.drain_queue() == 1
    assert member_emails(klaviyo, list_id) == {"on@example.com", "new@example.com"}


def test_a_mirror_export_syncs_through_the_timer_and_the_run_api(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Mirror")
    app.put_connection()
    everyone = [f"p{n}@example.com" for n in range(10)]
    app.upload("m.csv", csv(*everyone))
    status, export, _ = app.put_export("m", list_id, {"blob": "m.csv"}, sync_mode="mirror", max_removal_share=0.3)
    assert status == 201 and (export["sync_mode"], export["max_removal_share"], export["full"]) == (
        "mirror",
        0.3,
        False,
    )
    app.functions["scheduled_exports"](TimerRequest())
    assert app.drain_queue() == 1
    assert member_emails(klaviyo, list_id) == set(everyone)

    # Two leave, one joins: the timer's delta run sends one profile and removes two.
    app.upload("m.csv", csv(*everyone[2:], "new@example.com"))
    app.functions["scheduled_exports"](TimerRequest())
    assert app.drain_queue() == 1
    _, history, _ = app.http("export_runs", "GET", "exports/m/runs", name="m")
    counts = history["runs"][0]["counts"]
    assert (counts["sent"], counts["unchanged"], counts["removed"]) == (1, 8, 2)
    assert member_emails(klaviyo, list_id) == {*everyone[2:], "new@example.com"}

    # A truncated segment: the safety stop fails the run and removes nothing ...
    app.upload("m.csv", csv("p5@example.com"))
    app.functions["scheduled_exports"](TimerRequest())
    app.drain_queue()
    _, history, _ = app.http("export_runs", "GET", "exports/m/runs", name="m")
    assert history["runs"][0]["status"] == "failed" and "confirm_removals" in history["runs"][0]["reason"]
    assert len(member_emails(klaviyo, list_id)) == 9
    # ... until a run is started with the override; full sends the one profile again.
    body = {"confirm_removals": True, "full": True}
    status, run, _ = app.http("export_runs", "POST", "exports/m/runs", body, name="m")
    assert status == 202 and run["confirm_removals"] is True and run["full"] is True
    app.drain_queue()
    _, done, _ = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
    assert done["status"] == "succeeded" and done["counts"]["removed"] == 8 and done["counts"]["sent"] == 1
    assert member_emails(klaviyo, list_id) == {"p5@example.com"}
    assert app.http("export_runs", "POST", "exports/m/runs", {"fulll": True}, name="m")[0] == 400


def test_deleting_an_export_stops_its_queued_run_and_keeps_past_runs(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Del")
    app.put_connection()
    app.upload("d.csv", csv("d@example.com"))
    app.put_export("d", list_id, {"blob": "d.csv"})
    _, first, _ = app.http("export_runs", "POST", "exports/d/runs", name="d")
    app.drain_queue()
    _, second, _ = app.http("export_runs", "POST", "exports/d/runs", name="d")
    assert app.http("exports", "DELETE", "exports/d", name="d")[0] == 204
    app.drain_queue()
    _, stopped, _ = app.http("run_status", "GET", f"runs/{second['run_id']}", run_id=second["run_id"])
    assert stopped["status"] == "skipped" and "deleted" in stopped["reason"]
    _, kept, _ = app.http("run_status", "GET", f"runs/{first['run_id']}", run_id=first["run_id"])
    assert kept["status"] == "succeeded" and kept["report"]["counts"]["accepted"] == 1
    assert klaviyo.stats["jobs_created"] == 1


# -- refusals ----------------------------------------------------------------------------------------------
def test_a_connection_without_consent_cannot_be_used(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("NoConsent")
    _, connection, _ = app.put_connection(privacy_consent=False)
    assert connection["privacy_consent"] is None
    app.upload("n.csv", csv("n@example.com"))
    app.put_export("n", list_id, {"blob": "n.csv"})
    _, run, _ = app.http("export_runs", "POST", "exports/n/runs", name="n")
    app.drain_queue()
    _, refused, _ = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
    assert refused["status"] == "failed" and "no recorded privacy consent" in refused["reason"]
    assert klaviyo.stats["requests"] == 0, "nothing was sent"


def test_consent_records_who_agreed_and_when(app: App):
    _, connection, _ = app.put_connection()
    assert connection["privacy_consent"]["agreed_by"] == "ada@contoso.example"
    assert connection["privacy_consent"]["agreed_at"]


def test_a_missing_secret_fails_the_run_naming_the_secret(app: App, klaviyo: KlaviyoSimulator):
    app.put_connection(secret_name="no-such-secret")
    app.upload("m.csv", csv("m@example.com"))
    app.put_export("m", klaviyo.create_list("M"), {"blob": "m.csv"})
    _, run, _ = app.http("export_runs", "POST", "exports/m/runs", name="m")
    app.drain_queue()
    _, failed, _ = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
    assert failed["status"] == "failed" and "'no-such-secret'" in failed["reason"] and "not found" in failed["reason"]
    assert klaviyo.stats["requests"] == 0


@pytest.mark.parametrize(
    ("headers", "function", "method", "path", "route", "status"),
    [
        pytest.param(CONTRIB_HEADERS, "connections", "GET", "connections", {}, 403, id="contributor-lists-connections"),
        pytest.param(
            CONTRIB_HEADERS, "exports", "PUT", "exports/x", {"name": "x"}, 403, id="contributor-writes-export"
        ),
        pytest.param(NOBODY_HEADERS, "exports", "GET", "exports", {}, 403, id="no-role-lists-exports"),
        pytest.param({}, "exports", "GET", "exports", {}, 401, id="no-principal"),
        pytest.param(ADMIN_HEADERS, "exports", "GET", "exports/..", {"name": ".."}, 400, id="dotdot-name"),
        pytest.param(ADMIN_HEADERS, "connections", "GET", "connections/a%2Fb", {"name": "a/b"}, 400, id="slash-name"),
    ],
)
def test_access_is_by_role(app: App, headers, function, method, path, route, status):
    code, body, _ = app.http(function, method, path, {}, headers=headers or {"x-other": "1"}, **route)
    assert code == status and body["error"]


def test_a_contributor_only_uses_connections_open_to_contributors(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("C")
    app.put_connection("main", usable_by="contributors")
    app.put_connection("admins-only", usable_by="admins")
    app.upload("c.csv", csv("c@example.com"))
    app.put_export("open", list_id, {"blob": "c.csv"})
    app.put_export("closed", list_id, {"blob": "c.csv"}, connection="admins-only")
    _, listing, _ = app.http("exports", "GET", "exports", headers=CONTRIB_HEADERS)
    assert [e["name"] for e in listing["exports"]] == ["open"]
    assert app.http("export_runs", "POST", "exports/closed/runs", headers=CONTRIB_HEADERS, name="closed")[0] == 403
    status, run, _ = app.http("export_runs", "POST", "exports/open/runs", headers=CONTRIB_HEADERS, name="open")
    assert status == 202
    assert (
        app.http("run_status", "GET", f"runs/{run['run_id']}", headers=CONTRIB_HEADERS, run_id=run["run_id"])[0] == 200
    )


def test_validation_errors_name_the_field(app: App):
    app.put_connection()
    status, body, _ = app.http(
        "exports",
        "PUT",
        "exports/bad",
        {
            "connection": "main",
            "list_id": "has space",
            "segment": {"container": "s", "blob": "../etc/passwd"},
            "mapping": {"emial": "email"},
        },
        name="bad",
    )
    assert status == 400
    fields = {p["field"] for p in body["problems"]}
    assert fields == {"list_id", "segment.container", "segment.blob", "mapping"}


def test_malformed_and_oversized_bodies(app: App):
    assert app.http("connections", "PUT", "connections/x", raw=b"{not json", name="x")[0] == 400
    assert app.http("connections", "PUT", "connections/x", raw=b"[1]", name="x")[0] == 400
    assert app.http("connections", "PUT", "connections/x", raw=b" " * 70_000, name="x")[0] == 413


def test_deleting_a_connection_in_use_is_refused_naming_the_exports(app: App, klaviyo: KlaviyoSimulator):
    app.put_connection()
    app.put_export("uses-main", klaviyo.create_list("U"), {"blob": "u.csv"})
    status, body, _ = app.http("connections", "DELETE", "connections/main", name="main")
    assert status == 409 and "uses-main" in body["error"]


def test_responses_never_hold_the_api_key(app: App, klaviyo: KlaviyoSimulator):
    _, connection, _ = app.put_connection()
    _, listing, _ = app.http("connections", "GET", "connections")
    assert API_KEY not in orjson.dumps([connection, listing]).decode()


@pytest.mark.parametrize(
    ("env", "status"),
    [
        pytest.param({"WEBSITE_INSTANCE_ID": "abc"}, 500, id="azure-without-easy-auth"),
        pytest.param(
            {"WEBSITE_INSTANCE_ID": "abc", "LOCAL_AUTH_BYPASS_ROLE": "Admin", "WEBSITE_AUTH_ENABLED": "True"},
            500,
            id="bypass-in-azure",
        ),
        pytest.param({"LOCAL_AUTH_BYPASS_ROLE": "Admin"}, 200, id="bypass-locally"),
    ],
)
def test_forged_principals_and_the_local_bypass(app: App, monkeypatch, env, status):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, body, _ = app.http("exports", "GET", "exports", headers=ADMIN_HEADERS)
    assert code == status, body


def test_routes_resolve_through_the_route_templates(app: App, klaviyo: KlaviyoSimulator):
    app.put_connection()
    app.upload("r.csv", csv("r@example.com"))
    app.put_export("routed", klaviyo.create_list("R"), {"blob": "r.csv"})
    run = orjson.loads(app.host.http("POST", "exports/routed/runs", headers=ADMIN_HEADERS).get_body())
    assert app.host.http("GET", f"runs/{run['run_id']}", headers=ADMIN_HEADERS).status_code == 200
    assert app.host.http("GET", "exports", headers=ADMIN_HEADERS).status_code == 200
    assert app.host.http("GET", "exports/a%2Fb", headers=ADMIN_HEADERS).status_code == 400
    assert app.host.http("PATCH", "exports/routed", headers=ADMIN_HEADERS).status_code == 405
    assert app.host.http("GET", "openapi.json").status_code == 200, "served without a caller"


def test_a_run_longer_than_its_time_budget_continues_in_new_queue_messages(app: App, klaviyo: KlaviyoSimulator):
    from dataclasses import replace

    from tools.segment_gen import Expected, encode, generate_rows

    app.services.settings = replace(app.services.settings, run_time_budget=0.0)
    list_id = klaviyo.create_list("Long")
    app.put_connection()
    expected = Expected()
    app.upload("long.csv", b"".join(encode(generate_rows(60_000, seed=5, expected=expected))))
    app.put_export("long", list_id, {"blob": "long.csv"}, mapping={"email": "email", "phone_number": "phone"})
    _, run, _ = app.http("export_runs", "POST", "exports/long/runs", name="long")
    assert app.drain_queue() >= 3, "each invocation sends a batch, checkpoints and queues the rest"
    _, done, _ = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
    assert done["status"] == "completed_with_rejects" and done["continuations"] >= 2
    assert done["counts"]["rows_read"] == 60_000 and done["counts"]["accepted"] == expected.valid
    assert member_emails(klaviyo, list_id) == expected.valid_emails
    assert klaviyo.stats["jobs_created"] == done["jobs"], "no batch was sent twice"


# -- the OpenAPI document -----------------------------------------------------------------------------------
def test_each_operation_gives_every_status_its_openapi_document_lists_and_no_other(
    app: App, klaviyo: KlaviyoSimulator, monkeypatch
):
    """Drives every operation to every response the document declares; App.http checks each body and
    header against the document's schemas, so a response it does not declare fails at once."""
    list_id = klaviyo.create_list("Contract")
    assert app.put_connection()[0] == 201
    assert app.put_connection()[0] == 200
    app.upload("c.csv", csv("a@example.com", "bad-email"))
    assert app.put_export("vip", list_id, {"blob": "c.csv"})[0] == 201
    assert app.put_export("vip", list_id, {"blob": "c.csv"}, run_always=True)[0] == 200
    status, run, _ = app.http("export_runs", "POST", "exports/vip/runs", name="vip")
    assert status == 202
    run_id = run["run_id"]
    assert app.http("run_status", "GET", f"runs/{run_id}", run_id=run_id)[1]["status"] == "queued"
    app.drain_queue()
    assert app.http("run_status", "GET", f"runs/{run_id}", run_id=run_id)[1]["report"]["counts"]["rejected"] == 1

    operations = [  # (function, method, path, route params) of each documented operation
        ("connections", "GET", "connections", {}),
        ("connections", "GET", "connections/main", {"name": "main"}),
        ("connections", "PUT", "connections/main", {"name": "main"}),
        ("connections", "DELETE", "connections/main", {"name": "main"}),
        ("exports", "GET", "exports", {}),
        ("exports", "GET", "exports/vip", {"name": "vip"}),
        ("exports", "PUT", "exports/vip", {"name": "vip"}),
        ("exports", "DELETE", "exports/vip", {"name": "vip"}),
        ("export_runs", "GET", "exports/vip/runs", {"name": "vip"}),
        ("export_runs", "POST", "exports/vip/runs", {"name": "vip"}),
        ("run_status", "GET", f"runs/{run_id}", {"run_id": run_id}),
        ("cancel_run", "POST", f"runs/{run_id}/cancel", {"run_id": run_id}),
        ("segment_columns", "POST", "segment-columns", {}),
        ("run_report", "GET", f"runs/{run_id}/report.json", {"run_id": run_id}),
        ("run_rejects", "GET", f"runs/{run_id}/rejects.csv", {"run_id": run_id}),
        ("console", "GET", "console", {}),
        ("console", "GET", "console/console.js", {"asset": "console.js"}),
    ]
    for function, method, path, params in operations:
        assert app.http(function, method, path, headers={"x-other": "1"}, **params)[0] == 401
        assert app.http(function, method, path, headers=NOBODY_HEADERS, **params)[0] == 403
        bad = {k: ("bad!id" if k == "run_id" else "..") for k in params}
        if bad and function != "console":
            assert app.http(function, method, path, **bad)[0] == 400
    with monkeypatch.context() as azure:
        azure.setenv("WEBSITE_INSTANCE_ID", "in-azure-without-easy-auth")
        for function, method, path, params in operations:
            assert app.http(function, method, path, **params)[0] == 500

    columns = {"segment": {"container": app.segments, "blob": "c.csv"}}
    assert app.http("segment_columns", "POST", "segment-columns", columns)[1]["columns"] == ["email", "first_name"]
    assert app.http("segment_columns", "POST", "segment-columns", {"segment": {"container": app.segments}})[0] == 400
    assert app.http("segment_columns", "POST", "segment-columns", raw=b"{" + b" " * 70_000)[0] == 413
    assert app.http("segment_columns", "POST", "segment-columns", columns, headers=CONTRIB_HEADERS)[0] == 403
    for function, path in (("run_report", "report.json"), ("run_rejects", "rejects.csv")):
        got = app.http(function, "GET", f"runs/{run_id}/{path}", run_id=run_id)
        assert got[0] == 200 and got[2].headers["Content-Disposition"].endswith(f'-{path}"')
        assert app.http(function, "GET", f"runs/0000-none/{path}", run_id="0000-none")[0] == 404
    assert app.http("console", "GET", "console/nope.js", asset="nope.js")[0] == 404
    for function, name in (("connections", "main"), ("exports", "vip")):
        assert app.http(function, "PUT", f"{function}/{name}", {"unknown": 1}, name=name)[0] == 400
        assert app.http(function, "PUT", f"{function}/{name}", raw=b"{" + b" " * 70_000, name=name)[0] == 413
    for function, method, path, params in [
        ("connections", "GET", "connections/none", {"name": "none"}),
        ("connections", "DELETE", "connections/none", {"name": "none"}),
        ("exports", "GET", "exports/none", {"name": "none"}),
        ("exports", "DELETE", "exports/none", {"name": "none"}),
        ("export_runs", "GET", "exports/none/runs", {"name": "none"}),
        ("export_runs", "POST", "exports/none/runs", {"name": "none"}),
        ("run_status", "GET", "runs/0000-none", {"run_id": "0000-none"}),
        ("cancel_run", "POST", "runs/0000-none/cancel", {"run_id": "0000-none"}),
    ]:
        assert app.http(function, method, path, **params)[0] == 404
    assert app.http("cancel_run", "POST", f"runs/{run_id}/cancel", run_id=run_id)[0] == 409  # it has ended
    queued = app.http("export_runs", "POST", "exports/vip/runs", name="vip")[1]["run_id"]
    assert app.http("cancel_run", "POST", f"runs/{queued}/cancel", run_id=queued)[0] == 200
    # A run a worker holds (its record as the executor leaves it): asked to stop, it answers 202.
    running = app.http("export_runs", "POST", "exports/vip/runs", name="vip")[1]["run_id"]
    app.services.store.update_run(running, {"status": "running", "heartbeat": time.time(), "attempts": 1})
    assert app.http("cancel_run", "POST", f"runs/{running}/cancel", run_id=running)[0] == 202
    assert app.http("connections", "DELETE", "connections/main", name="main")[0] == 409
    for function, method, path, params in operations:
        if method == "GET":
            assert app.http(function, method, path, **params)[0] == 200
    assert app.http("exports", "DELETE", "exports/vip", name="vip")[0] == 204
    assert app.http("connections", "DELETE", "connections/main", name="main")[0] == 204
    assert app.http("openapi_document", "GET", "openapi.json", headers={"x-other": "1"})[0] == 200

    assert app.exchanges == documented_exchanges()


# -- telemetry ----------------------------------------------------------------------------------------------
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def _personal_data_in(text: str, *values: str) -> list[str]:
    return EMAIL.findall(text) + [v for v in values if v in text]


def test_every_log_record_of_a_run_carries_its_run_id_and_export_name_and_no_personal_data(
    app: App, klaviyo: KlaviyoSimulator, caplog
):
    phone = "+14155550123"
    app.put_connection()
    rows = "".join(f"u{i}@example.com,{phone[:-2]}{i:02d}\n" for i in range(40)) + "bad-email,x\n"
    app.upload("logs.csv", f"email,phone\n{rows}".encode())
    app.put_export(
        "logs", klaviyo.create_list("Logs"), {"blob": "logs.csv"}, mapping={"email": "email", "phone_number": "phone"}
    )
    _, run, _ = app.http("export_runs", "POST", "exports/logs/runs", name="logs")
    [message] = app.host.queue.receive_messages(max_messages=1, visibility_timeout=600)

    caplog.set_level(logging.DEBUG)
    caplog.clear()
    app.functions["run_export"](
        func.QueueMessage(id="m", body=message.content.encode()), InvocationContext("run_export")
    )
    records = caplog.records

    assert any(r.name == "shared.control.executor" and "completed_with_rejects" in r.getMessage() for r in records)
    assert any(r.threadName.startswith("upload") for r in records), "the upload threads log too"
    untagged = [
        (r.name, r.threadName, r.getMessage()[:80]) for r in records if getattr(r, "run_id", None) != run["run_id"]
    ]
    assert not untagged
    assert {r.export_name for r in records} == {"logs"}
    text = "\n".join(r.getMessage() + repr(sorted(vars(r).items(), key=str)) for r in records)
    assert not _personal_data_in(text, API_KEY, phone[:-2], "ada@contoso.example")


@pytest.fixture
def metric_reader() -> Iterator[Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.use_meter_provider(provider)
    yield reader
    telemetry.use_meter_provider(None)
    provider.shutdown()


def _points(reader: Any, name: str) -> dict[tuple[str, str, str], Any]:
    """The metric's data points by (export_name, status, trigger)."""
    data = reader.get_metrics_data()
    return {
        (p.attributes["export_name"], p.attributes["status"], p.attributes["trigger"]): p
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for p in metric.data.data_points
    }


def test_run_metrics_count_runs_by_outcome_and_time_them(app: App, klaviyo: KlaviyoSimulator, metric_reader):
    list_id = klaviyo.create_list("Metrics")
    app.put_connection()
    app.put_connection("nokey", secret_name="no-such-secret")
    app.upload("m.csv", csv("m1@example.com", "m2@example.com"))
    app.put_export("ok", list_id, {"blob": "m.csv"})
    app.put_export("broken", list_id, {"blob": "m.csv"}, connection="nokey")
    _, ok, _ = app.http("export_runs", "POST", "exports/ok/runs", name="ok")
    app.http("export_runs", "POST", "exports/broken/runs", name="broken")
    started = time.time()
    assert app.drain_queue() == 2
    elapsed = time.time() - started
    app.put_export("broken", list_id, {"blob": "m.csv"}, connection="nokey", enabled=False)
    app.functions["scheduled_exports"](TimerRequest())  # ok's segment is unchanged: skipped, never started

    runs = _points(metric_reader, telemetry.RUNS_METRIC)
    assert {key: p.value for key, p in runs.items()} == {
        ("ok", "succeeded", "http"): 1,
        ("broken", "failed", "http"): 1,
        ("ok", "skipped", "timer"): 1,
    }
    durations = _points(metric_reader, telemetry.RUN_DURATION_METRIC)
    assert set(durations) == {("ok", "succeeded", "http"), ("broken", "failed", "http")}
    assert all(p.count == 1 and 0 <= p.sum <= elapsed for p in durations.values())
    _, finished, _ = app.http("run_status", "GET", f"runs/{ok['run_id']}", run_id=ok["run_id"])
    assert durations["ok", "succeeded", "http"].sum >= finished["duration_seconds"] - 0.01, "it spans the export"
    exported = metric_reader.get_metrics_data().to_json()
    assert not _personal_data_in(exported, API_KEY, "ada@contoso.example")
