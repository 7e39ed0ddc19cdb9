"""End to end through the engine: a segment blob in Azurite -> the simulated Klaviyo list."""

from __future__ import annotations

import gzip

import pytest

from shared.engine import ConfigurationError
from shared.engine.status import COMPLETED_WITH_REJECTS, FAILED, SUCCEEDED
from shared.mapping import FieldMapping
from tests.conftest import Exporter, member_emails
from tools.klaviyo_sim import KlaviyoSimulator
from tools.segment_gen import Expected, encode, generate_rows


def csv_bytes(*lines: str, newline: str = "\n", bom: bool = False) -> bytes:
    return (b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode() + newline.encode()


def assert_accounted(report, rows: int) -> None:
    c = report.counts
    assert c.rows_read == rows
    assert c.sent + c.rejected + c.duplicates == rows
    assert c.accepted + c.failed == c.sent


def test_bom_crlf_and_quoted_fields_reach_the_list(exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str):
    data = csv_bytes(
        "email,first_name,note",
        'ann@example.com,Ann,"likes ""quotes"", commas"',
        'bob@example.com,"Bob\r\nJr",plain',
        newline="\r\n",
        bom=True,
    )
    report = exporter.run(
        exporter.upload("bom.csv", data), FieldMapping({"email": "email", "first_name": "first_name"}, {"note": "note"})
    )
    assert report.status == SUCCEEDED
    assert_accounted(report, 2)
    members = {m["email"]: m for m in klaviyo.list_members(list_id)}
    assert set(members) == {"ann@example.com", "bob@example.com"}
    assert members["ann@example.com"]["properties"]["note"] == 'likes "quotes", commas'
    assert members["bob@example.com"]["first_name"] == "Bob\r\nJr"


def test_duplicates_differing_in_case_and_spaces_keep_the_first_row(
    exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str
):
    data = csv_bytes(
        "email,first_name",
        "Ann@Example.com,First",
        "  ann@example.COM ,Second",
        "ANN@EXAMPLE.COM,Third",
        "bob@example.com,Bob",
    )
    report = exporter.run(
        exporter.upload("dups.csv", data), FieldMapping({"email": "email", "first_name": "first_name"})
    )
    assert report.counts.duplicates == 2
    assert_accounted(report, 4)
    members = {m["email"]: m for m in klaviyo.list_members(list_id)}
    assert set(members) == {"ann@example.com", "bob@example.com"}
    assert members["ann@example.com"]["first_name"] == "First"
    assert sorted(r[1] for r in exporter.rejects_rows if r[3] == "duplicate") == ["3", "4"]


def test_invalid_and_empty_emails_are_rejected_with_row_and_reason(
    exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str
):
    data = csv_bytes(
        "email,name", "good@example.com,A", "not-an-email,B", ",C", "bob@,D", "x@@example.com,E", "ok2@example.org,F"
    )
    report = exporter.run(exporter.upload("bad.csv", data))
    assert report.status == COMPLETED_WITH_REJECTS
    assert_accounted(report, 6)
    assert report.counts.rejected == 4
    assert member_emails(klaviyo, list_id) == {"good@example.com", "ok2@example.org"}
    rejected = {int(r[1]): r for r in exporter.rejects_rows}
    assert set(rejected) == {3, 4, 5, 6}
    assert "no identifier" in rejected[4][5]
    assert all("not-an-email" not in ",".join(r) for r in exporter.rejects_rows), "rejects must mask identifiers"


def test_json_lines_with_a_malformed_line(exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str):
    data = b'{"email": "a@example.com", "tier": "gold"}\n{"email": "b@exa\n[1, 2]\n{"email": "c@example.com"}\n'
    report = exporter.run(exporter.upload("people.jsonl", data), FieldMapping({"email": "email"}, {"tier": "tier"}))
    assert_accounted(report, 4)
    assert member_emails(klaviyo, list_id) == {"a@example.com", "c@example.com"}
    reasons = {int(r[1]): r[5] for r in exporter.rejects_rows}
    assert reasons == {2: "line is not valid JSON", 3: "line is a JSON list, not an object"}


def test_gzipped_segment(exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str):
    data = gzip.compress(csv_bytes("email", *(f"p{i}@example.com" for i in range(300))))
    report = exporter.run(exporter.upload("part.csv.gz", data))
    assert report.status == SUCCEEDED
    assert len(member_emails(klaviyo, list_id)) == 300


def test_25000_rows_go_through_several_jobs(exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str):
    expected = Expected()
    data = b"".join(encode(generate_rows(25_000, seed=3, expected=expected)))
    mapping = FieldMapping({"email": "email", "phone_number": "phone", "external_id": "customer_id"})
    report = exporter.run(exporter.upload("big.csv", data), mapping)
    assert_accounted(report, 25_000)
    assert len(report.job_ids) >= 3
    assert report.counts.duplicates == expected.duplicates
    assert report.counts.rejected == expected.invalid
    assert member_emails(klaviyo, list_id) == expected.valid_emails


def test_folder_segment_reads_parts_in_order_as_one(exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str):
    exporter.upload("cdp/2026/part-00002.csv", csv_bytes("email", "c@example.com", "a@example.com"))
    exporter.upload("cdp/2026/part-00001.csv", csv_bytes("email", "a@example.com", "b@example.com"))
    exporter.upload("cdp/2026/model.json", b'{"name": "segment"}')
    report = exporter.run("cdp/2026/")
    assert_accounted(report, 4)
    assert report.counts.duplicates == 1
    dup = next(r for r in exporter.rejects_rows if r[3] == "duplicate")
    assert dup[0] == "cdp/2026/part-00002.csv" and dup[1] == "3"
    assert member_emails(klaviyo, list_id) == {"a@example.com", "b@example.com", "c@example.com"}


def test_header_only_sends_nothing_and_succeeds(exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str):
    report = exporter.run(exporter.upload("empty.csv", b"email,first_name\r\n"))
    assert report.status == SUCCEEDED
    assert report.counts.rows_read == 0 and report.job_ids == []
    assert klaviyo.list_members(list_id) == []


def test_missing_email_column_fails_before_anything_is_sent(
    exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str
):
    with pytest.raises(ConfigurationError, match=r"missing\.csv: mapped column\(s\) missing from the header: email"):
        exporter.run(exporter.upload("missing.csv", csv_bytes("mail,name", "a@example.com,A")))
    assert klaviyo.stats["jobs_created"] == 0
    assert klaviyo.list_members(list_id) == []


def test_large_custom_properties_split_jobs_by_payload_size(
    exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str
):
    blob = "x" * 60_000  # 120 profiles x 60 KB = 7.2 MB: more than one 5 MB job
    data = csv_bytes("email,notes", *(f"big{i}@example.com,{blob}" for i in range(120)))
    report = exporter.run(exporter.upload("large.csv", data), FieldMapping({"email": "email"}, {"notes": "notes"}))
    assert report.status == SUCCEEDED
    assert len(report.job_ids) >= 2
    assert len(member_emails(klaviyo, list_id)) == 120


def test_a_profile_over_100kb_is_rejected_not_sent(exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str):
    data = csv_bytes("email,notes", "small@example.com,hi", f"huge@example.com,{'y' * 120_000}")
    report = exporter.run(exporter.upload("huge.csv", data), FieldMapping({"email": "email"}, {"notes": "notes"}))
    assert_accounted(report, 2)
    assert member_emails(klaviyo, list_id) == {"small@example.com"}
    assert "Klaviyo allows 100,000" in exporter.rejects_rows[0][5]


def test_injected_5xx_and_429_still_end_with_the_right_list(
    exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str
):
    expected = Expected()
    data = b"".join(encode(generate_rows(12_000, seed=9, expected=expected)))
    klaviyo.configure(error_rate=0.2, throttle_storm_every=2.0, throttle_storm_seconds=0.5)
    report = exporter.run(exporter.upload("flaky.csv", data), FieldMapping({"email": "email", "phone_number": "phone"}))
    assert report.status in (SUCCEEDED, COMPLETED_WITH_REJECTS)
    assert_accounted(report, 12_000)
    assert member_emails(klaviyo, list_id) == expected.valid_emails
    assert any(k.startswith("retried_5") for k in report.retries) or any("429" in k for k in report.retries)


def test_unknown_list_fails_before_sending(exporter: Exporter, klaviyo: KlaviyoSimulator):
    exporter.list_id = "NoSuch"
    with pytest.raises(ConfigurationError, match="list NoSuch: not found"):
        exporter.run(exporter.upload("a.csv", csv_bytes("email", "a@example.com")))
    assert klaviyo.stats["jobs_created"] == 0


def test_failed_report_when_blob_changes_mid_run(exporter: Exporter, container, klaviyo: KlaviyoSimulator):
    from shared.engine import ExportSpec, run_export
    from shared.sources import blob_segment

    exporter.upload("moving.csv", csv_bytes("email", "a@example.com"))
    source = blob_segment(container, "moving.csv")
    exporter.upload("moving.csv", csv_bytes("email", "b@example.com"))
    report = run_export(source, ExportSpec("t", exporter.list_id, FieldMapping()), exporter.client)
    assert report.status == FAILED
    assert "changed while it was being read" in (report.error or "")


def test_profiles_failing_inside_a_job_are_reported_against_their_rows(
    exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str
):
    # Klaviyo fails a profile whose email and phone already belong to two different profiles.
    seed = csv_bytes("email,phone", "first@example.com,", "second@example.com,+12125550101")
    exporter.run(exporter.upload("seed.csv", seed), FieldMapping({"email": "email", "phone_number": "phone"}))
    data = csv_bytes("email,phone", "fresh@example.com,", "first@example.com,+12125550101")
    report = exporter.run(
        exporter.upload("conflict.csv", data), FieldMapping({"email": "email", "phone_number": "phone"})
    )
    assert report.status == COMPLETED_WITH_REJECTS
    assert (report.counts.sent, report.counts.accepted, report.counts.failed) == (2, 1, 1)
    [failed] = [r for r in exporter.rejects_rows if r[3] == "failed"]
    assert failed[0] == "conflict.csv" and failed[1] == "3" and failed[2] == "f***@e***"


def test_profiles_klaviyo_refuses_are_taken_out_and_the_rest_resent(client, klaviyo: KlaviyoSimulator, list_id: str):
    # Our validation keeps such profiles out; this drives the splitter directly with ones Klaviyo refuses.
    from shared.engine import ExportSpec, RejectsFile, RunReport
    from shared.engine.batching import Batch
    from shared.engine.exporter import ExportRun
    from shared.mapping.identifiers import identifier_key
    from shared.mapping.rows import serialize_profile
    from shared.sources import local_segment

    emails = ["ok1@example.com", "bad@@example.com", "ok2@example.com", "also bad@example.com", "ok3@example.com"]
    batch = Batch()
    for row, email in enumerate(emails, start=2):
        batch.add(serialize_profile({"email": email}), identifier_key("email", email), row)
    rejects = RejectsFile()
    source = local_segment(__file__)
    report = RunReport("r", "t", list_id, "seg.csv", "", started_at="")
    run = ExportRun(source, ExportSpec("t", list_id, FieldMapping()), client, report, rejects)
    run.uploader.upload(batch)
    run.jobs.wait_for_all()
    rows = rejects.read_bytes().decode().splitlines()[1:]
    assert sorted(r.split(",")[1] for r in rows) == ["3", "5"]
    assert all("Klaviyo refused the profile" in r for r in rows)
    assert (report.counts.sent, report.counts.rejected, report.counts.accepted) == (3, 2, 3)
    assert member_emails(klaviyo, list_id) == {"ok1@example.com", "ok2@example.com", "ok3@example.com"}
    rejects.discard()
