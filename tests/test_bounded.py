"""Everything the app stores is bounded (issue 18, defects 4 and 5): a failure reason quoting a huge
header, request bodies too large for a table entity, principals with odd claims. Each would have
left a run stuck in `running` or answered an empty 500."""

from __future__ import annotations

from tests.conftest import App
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
