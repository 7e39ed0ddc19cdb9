"""Everything the app stores is bounded (issue 18, defects 4 and 5): a failure reason quoting a huge
header, request bodies too large for a table entity, principals with odd claims. Each would have
left a run stuck in `running` or answered an empty 500."""

from __future__ import annotations

import base64

import orjson
import pytest

from shared.control.bounded import bounded_text, utf16_units
from tests.conftest import ADMIN_HEADERS, App
from tools.klaviyo_sim import KlaviyoSimulator


def _run_to_the_end(app: App, export: str) -> dict:
    _, run, _ = app.http("export_runs", "POST", f"exports/{export}/runs", name=export)
    app.drain_queue()
    status, finished, _ = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
    assert status == 200
    return finished


def test_a_40000_character_column_name_fails_the_run_with_a_bounded_reason(app: App, klaviyo: KlaviyoSimulator):
    app.put_connection()
    app.upload("wide.csv", b"email_address," + b"c" * 40_000 + b"\na@example.com,x\n")
    app.put_export("wide", klaviyo.create_list("Wide"), {"blob": "wide.csv"})
    run = _run_to_the_end(app, "wide")
    assert run["status"] == "failed", run
    assert "wide.csv" in run["reason"] and "email_address" in run["reason"]
    assert "(40,000 characters)" in run["reason"] and len(run["reason"]) < 1_000
    assert klaviyo.stats["jobs_created"] == 0


def test_a_file_of_100000_byte_order_marks_fails_the_run_with_a_bounded_reason(app: App, klaviyo: KlaviyoSimulator):
    app.put_connection()
    app.upload("boms.csv", b"\xef\xbb\xbf" * 100_000)
    app.put_export("boms", klaviyo.create_list("Boms"), {"blob": "boms.csv"})
    run = _run_to_the_end(app, "boms")
    assert run["status"] == "failed", run
    assert "boms.csv" in run["reason"] and len(run["reason"]) < 1_000
    assert klaviyo.stats["jobs_created"] == 0


def test_the_store_cuts_every_string_of_a_run_record(app: App):
    store = app.services.store
    store.create_run({"run_id": "0000-bounded", "export_name": "x", "status": "queued", "requested_by": "r" * 50_000})
    changes = {"status": "failed", "reason": "why " * 25_000, "source_version": "v" * 70_000}
    assert store.update_run("0000-bounded", changes)
    run = store.get_run("0000-bounded")
    assert run["status"] == "failed"
    assert len(run["reason"]) == 2_000 and run["reason"].startswith("why why")
    assert run["reason"].endswith(" …(cut: 100,000 characters in all)")
    assert len(run["source_version"]) == len(run["requested_by"]) == 8_000
    assert run["requested_by"].endswith("…(cut: 50,000 characters in all)")


@pytest.mark.parametrize(
    "text", ["x" * 40_000, "\U0001f600" * 40_000, "a\U0001f600" * 20_000], ids=["ascii", "emoji", "mixed"]
)
def test_a_cut_text_fits_its_limit_as_table_storage_counts_it(text: str):
    cut = bounded_text(text, 2_000)
    assert utf16_units(cut) <= 2_000 and cut.endswith(f"…(cut: {len(text):,} characters in all)")
    assert text.startswith(cut[: cut.index(" …(cut")])
    assert bounded_text("short", 2_000) == "short"


# -- request bodies that cannot be stored (defect 5) ------------------------------------------------------
def _export_body(app: App, list_id: str, **fields: object) -> dict:
    return {"connection": "main", "list_id": list_id, "segment": {"container": app.segments, "blob": "b.csv"}, **fields}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        pytest.param(
            {"mapping": {"email": "Email", "properties": {f"c{i}": f"p{i}" for i in range(3_000)}}},
            {"field": "mapping", "reason": "too large to store: 45,834 characters as JSON, at most 32,000"},
            id="3000-mapping-properties",
        ),
        pytest.param(
            {"csv": {"header": False, "columns": [f"column-{i:04d}-" + "x" * 30 for i in range(1_000)]}},
            {"field": "csv", "reason": "too large to store: 45,072 characters as JSON, at most 32,000"},
            id="1000-long-csv-columns",
        ),
    ],
)
def test_an_export_that_cannot_be_stored_is_a_400_naming_the_field_and_the_limit(
    app: App, klaviyo: KlaviyoSimulator, fields: dict, problem: dict
):
    app.put_connection()
    raw = orjson.dumps(_export_body(app, klaviyo.create_list("Big"), **fields))
    assert 40_000 < len(raw) < 64 * 1024, "under the API's body limit"
    status, payload, _ = app.http("exports", "PUT", "exports/big", raw=raw, name="big")
    assert status == 400, payload
    assert payload["problems"] == [problem]
    assert "p2999" not in orjson.dumps(payload).decode() and "column-0999" not in orjson.dumps(payload).decode()
    assert app.http("exports", "GET", "exports/big", name="big")[0] == 404


def test_an_export_with_1000_mapping_properties_is_stored(app: App, klaviyo: KlaviyoSimulator):
    app.put_connection()
    mapping = {"email": "Email", "properties": {f"column{i:04d}": f"property{i:04d}" for i in range(1_000)}}
    status, stored, _ = app.put_export("wide", klaviyo.create_list("Wide"), {"blob": "w.csv"}, mapping=mapping)
    assert status == 201, stored
    assert app.http("exports", "GET", "exports/wide", name="wide")[1]["mapping"]["properties"] == mapping["properties"]


# -- principals whose claims cannot be stored (defect 5) ----------------------------------------------------
def _principal(name: object, role: object = "Admin") -> dict[str, str]:
    """An x-ms-client-principal header as App Service Authentication writes it, with the claims given."""
    claims = [{"typ": "name", "val": name}, {"typ": "roles", "val": role}]
    document = {"auth_typ": "aad", "name_typ": "name", "role_typ": "roles", "claims": claims}
    return {"x-ms-client-principal": base64.b64encode(orjson.dumps(document)).decode()}


CLAIM_RULE = "the x-ms-client-principal header is malformed: a name or role claim is not text of at most 256 characters"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(_principal({"first": "Ada"}), id="name-an-object"),
        pytest.param(_principal(12345), id="name-a-number"),
        pytest.param(_principal("a" * 40_000), id="name-40000-characters"),
        pytest.param(_principal("ada@contoso.example", "Admin" + "n" * 300), id="role-300-characters"),
    ],
)
def test_a_principal_whose_claims_are_not_short_text_is_refused_and_nothing_is_stored(
    app: App, klaviyo: KlaviyoSimulator, headers: dict[str, str]
):
    body = {"display_name": "Main", "secret_name": "klaviyo-api-key", "privacy_consent": True}
    status, payload, _ = app.http("connections", "PUT", "connections/main", body, headers=headers, name="main")
    assert (status, payload) == (401, {"error": CLAIM_RULE})
    assert app.http("connections", "GET", "connections/main", headers=ADMIN_HEADERS, name="main")[0] == 404
    app.put_connection()
    app.put_export("p", klaviyo.create_list("P"), {"blob": "p.csv"})
    status, payload, _ = app.http("export_runs", "POST", "exports/p/runs", headers=headers, name="p")
    assert (status, payload) == (401, {"error": CLAIM_RULE})
    assert app.http("export_runs", "GET", "exports/p/runs", name="p")[1]["runs"] == []


def test_a_name_of_256_characters_is_stored_as_text(app: App):
    name = "n" * 255 + "@"
    status, connection, _ = app.http(
        "connections",
        "PUT",
        "connections/main",
        {"display_name": "Main", "secret_name": "klaviyo-api-key", "privacy_consent": True},
        headers=_principal(name),
        name="main",
    )
    assert status == 201
    assert connection["updated_by"] == name and connection["privacy_consent"]["agreed_by"] == name
    assert app.http("connections", "GET", "connections/main", name="main")[1]["updated_by"] == name


# -- validation errors never echo submitted values (defect 7) -----------------------------------------------
# orjson writes at most 254 levels: the body is written with a placeholder, then the value put in its place.
NESTED_900 = "<a list nested 900 levels deep>"


def _raw(body: dict) -> bytes:
    return orjson.dumps(body).replace(orjson.dumps(NESTED_900), b"[" * 900 + b"]" * 900)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        pytest.param(
            {"mapping": {"email": "Email", "properties": {"Tier": NESTED_900}}},
            {
                "field": "mapping",
                "reason": "properties.Tier: invalid property name (text of 1 to 255 characters, no control characters)",
            },
            id="property-name-nested-900-deep",
        ),
        pytest.param(
            {"mapping": {"email": "Email", "default_region": NESTED_900}},
            {"field": "mapping", "reason": "default_region: must be an ISO 3166 region code (text, such as US)"},
            id="region-nested-900-deep",
        ),
        pytest.param(
            {"mapping": {"email": "Email", "default_region": "Z" * 30_000}},
            {"field": "mapping", "reason": "default_region: not a known ISO 3166 region code (such as US, GB or DE)"},
            id="region-30000-characters",
        ),
        pytest.param(
            {"k" * 40_000: 1},
            {"field": "k" * 64 + "…(40,000 characters)", "reason": "unknown field"},
            id="unknown-field-named-with-40000-characters",
        ),
    ],
)
def test_validation_problems_name_the_field_and_the_rule_never_the_value(
    app: App, klaviyo: KlaviyoSimulator, fields: dict, problem: dict
):
    app.put_connection()
    raw = _raw(_export_body(app, klaviyo.create_list("Echo"), **fields))
    status, payload, _ = app.http("exports", "PUT", "exports/echo", raw=raw, name="echo")
    assert status == 400 and payload["problems"] == [problem], payload
    text = orjson.dumps(payload).decode()
    assert "[[" not in text and "ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ" not in text
    assert len(text) < 1_000
