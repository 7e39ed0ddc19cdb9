"""Subscribing consenting rows to marketing (an export's `subscribe` option), through the command line
and the Functions app, against the simulator's strict bulk subscription endpoints: who ends up
subscribed, confirming or never subscribed, what the report and rejects file say, and the scope check."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.cli import EXIT_OK, EXIT_USAGE, main
from shared.mapping import SubscribeOptions
from tests.conftest import SECRET, App, member_emails
from tools.klaviyo_sim import KlaviyoSimulator

SUBSCRIBE_ENDPOINT = "POST /api/profile-subscription-bulk-create-jobs"
NO_SUBSCRIPTIONS_SCOPE = ["lists:read", "lists:write", "profiles:read", "profiles:write"]
# ann and bo say yes, cy says no, di says nothing; bo has no phone; eve says yes with no identifier but
# an external id (imported, not subscribable).
SEGMENT = (
    "email,phone,external,consent,consented_at\n"
    "ann@example.com,+15005550006,,Yes,2024-03-01T10:00:00Z\n"
    "bo@example.com,,,  TRUE ,2024-03-02\n"
    "cy@example.com,+15005550007,,no,2024-03-03\n"
    "di@example.com,,,,\n"
    ",,ext-9,y,2024-03-04\n"
)
MAPPING = ["--map", "phone_number=phone", "--map", "external_id=external"]


def write(tmp_path: Path, text: str, name: str = "segment.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(tmp_path: Path, list_id: str, *args: str, segment: str = SEGMENT) -> tuple[int, dict[str, Any], list]:
    report_path = tmp_path / "report.json"
    code = main(
        ["run", str(write(tmp_path, segment)), "--list-id", list_id, "--no-progress", "--report", str(report_path)]
        + (MAPPING if segment == SEGMENT else [])
        + list(args)
    )
    if not report_path.exists():
        return code, {}, []
    report = orjson.loads(report_path.read_bytes())
    rejects = list(csv.DictReader(io.StringIO(Path(report["rejects_file"]).read_text())))
    return code, report, rejects


def status(klaviyo: KlaviyoSimulator, who: str, key: str = "email.marketing") -> str:
    consent = klaviyo.consent_of(who)
    assert consent is not None, "the profile exists"
    return consent.status(key)


def subscribing(consent: str = "consent", at: str | None = None, channels: str = "email") -> list[str]:
    """The command line's flags subscribing `channels` by the consent column (and consented-at column `at`)."""
    return ["--subscribe", channels, "--consent-column", consent] + (["--consented-at-column", at] if at else [])


def subscribe_calls(klaviyo: KlaviyoSimulator) -> int:
    return klaviyo.stats["requests_by_endpoint"].get(SUBSCRIBE_ENDPOINT, 0)


# -- the command line ----------------------------------------------------------------------------------
def test_cli_subscribes_only_consenting_rows_on_the_channels_they_can_take(env, tmp_path, klaviyo, list_id, capsys):
    code, report, rejects = run_cli(tmp_path, list_id, *subscribing(channels="email,sms"))
    assert code == EXIT_OK
    # Every row is imported into the list, consenting or not.
    assert member_emails(klaviyo, list_id) == {"ann@example.com", "bo@example.com", "cy@example.com", "di@example.com"}
    # Yes (any case, trimmed) is subscribed; no and an empty value never are.
    assert klaviyo.subscribed(list_id, "email") == {"ann@example.com", "bo@example.com"}
    assert klaviyo.subscribed(list_id, "sms") == {"+15005550006"}
    assert status(klaviyo, "cy@example.com") == "NEVER_SUBSCRIBED"
    assert status(klaviyo, "di@example.com") == "NEVER_SUBSCRIBED"
    assert status(klaviyo, "+15005550007", "sms.marketing") == "NEVER_SUBSCRIBED"
    counts = report["counts"]
    assert (counts["subscribed"], counts["not_subscribed"], counts["no_consent"]) == (2, 1, 2)
    assert counts["accepted"] == 5
    lines = [(r["row"], r["outcome"], r["field"], r["reason"]) for r in rejects]
    assert lines == [
        ("3", "not_subscribed", "phone_number", "no phone number for SMS; subscribed to email only"),
        ("6", "not_subscribed", "email", "no email address for email, no phone number for SMS"),
    ]
    assert all("@" not in r["identifier"] or "***" in r["identifier"] for r in rejects), "identifiers are masked"
    assert report["status"] == "completed_with_rejects"
    out = capsys.readouterr().out
    assert "subscribed  2 consenting rows subscribed" in out and "no consent  2 rows without a yes" in out


def test_historical_import_subscribes_at_once_on_a_double_opt_in_list(env, tmp_path, klaviyo):
    list_id = klaviyo.create_list("Double", opt_in_process="double_opt_in")
    code, report, _ = run_cli(tmp_path, list_id, *subscribing(at="consented_at"))
    assert code == EXIT_OK and report["counts"]["subscribed"] == 2
    assert klaviyo.subscribed(list_id, "email") == {"ann@example.com", "bo@example.com"}
    ann = klaviyo.consent_of("ann@example.com")
    assert ann is not None and ann.confirmations_sent == 0 and ann.pending == {}
    # The consent is recorded at the segment's consented_at, as a historical import.
    consent = ann.channels["email.marketing"]
    assert consent.timestamp == datetime(2024, 3, 1, 10, tzinfo=UTC).timestamp() and consent.historical_import
    bo = klaviyo.consent_of("bo@example.com")
    assert bo is not None and bo.channels["email.marketing"].timestamp == datetime(2024, 3, 2, tzinfo=UTC).timestamp()


def test_without_historical_import_a_double_opt_in_list_leaves_them_pending_confirmation(env, tmp_path, klaviyo):
    list_id = klaviyo.create_list("Double", opt_in_process="double_opt_in")
    code, report, _ = run_cli(tmp_path, list_id, *subscribing(), "--no-historical-import")
    assert code == EXIT_OK and report["counts"]["subscribed"] == 2
    assert klaviyo.subscribed(list_id, "email") == set(), "nobody is subscribed before confirming"
    ann = klaviyo.consent_of("ann@example.com")
    assert ann is not None and ann.pending == {list_id: ("email.marketing",)} and ann.confirmations_sent == 1
    assert status(klaviyo, "ann@example.com") == "NEVER_SUBSCRIBED"
    assert klaviyo.confirm("ann@example.com", list_id)
    assert klaviyo.subscribed(list_id, "email") == {"ann@example.com"}


def test_consented_at_in_the_future_or_unreadable_is_not_subscribed_but_imported(env, tmp_path, klaviyo, list_id):
    segment = (
        "email,consent,consented_at\n"
        "ann@example.com,yes,2024-03-01T10:00:00+02:00\n"
        "bo@example.com,yes,2999-01-01T00:00:00Z\n"
        "cy@example.com,yes,last tuesday\n"
        "di@example.com,yes,2024-13-01\n"
        "ed@example.com,yes,\n"
    )
    code, report, rejects = run_cli(tmp_path, list_id, *subscribing(at="consented_at"), segment=segment)
    assert code == EXIT_OK
    assert klaviyo.subscribed(list_id, "email") == {"ann@example.com"}
    assert len(member_emails(klaviyo, list_id)) == 5, "every row is still imported"
    assert [(r["row"], r["field"], r["reason"]) for r in rejects] == [
        ("3", "consented_at", "consented_at is in the future"),
        ("4", "consented_at", "consented_at is not an ISO 8601 date or date-time"),
        ("5", "consented_at", "consented_at is not an ISO 8601 date or date-time"),
        ("6", "consented_at", "consented_at is empty (a historical import needs it)"),
    ]
    assert report["counts"]["not_subscribed"] == 4
    assert "last tuesday" not in Path(report["rejects_file"]).read_text(), "values are not echoed"


def test_a_key_without_the_subscriptions_scope_stops_the_run_before_anything_is_sent(
    env, monkeypatch, tmp_path, klaviyo, list_id, capsys
):
    klaviyo.add_api_key("pk_import_only_key_0000000000", scopes=NO_SUBSCRIPTIONS_SCOPE)
    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_import_only_key_0000000000")
    code, _, _ = run_cli(tmp_path, list_id, *subscribing())
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "lacks the subscriptions:write scope" in err and "pk_import_only" not in err
    assert klaviyo.stats["jobs_created"] == 0 and klaviyo.list_members(list_id) == []
    assert klaviyo.consent_of("ann@example.com") is None
    # The same key imports fine without subscribe: the check is made only when subscribing.
    code, report, _ = run_cli(tmp_path, list_id)
    assert code == EXIT_OK and report["counts"]["accepted"] == 5


def test_the_scope_check_itself_subscribes_nobody(env, tmp_path, klaviyo, list_id):
    code, report, _ = run_cli(tmp_path, list_id, *subscribing())
    assert code == EXIT_OK
    # One call asks about the scope (refused for its empty body), one subscribes the 2 consenting rows.
    assert subscribe_calls(klaviyo) == 2
    assert klaviyo.stats["subscriptions"].get("profiles_subscribed") == 2


def test_a_dry_run_subscribes_nobody(env, tmp_path, klaviyo, list_id, capsys):
    code, report, _ = run_cli(tmp_path, list_id, *subscribing(), "--dry-run")
    assert code == EXIT_OK and report["counts"]["subscribed"] == 2
    assert "2 consenting rows would be subscribed" in capsys.readouterr().out
    assert subscribe_calls(klaviyo) == 0 and klaviyo.consent_of("ann@example.com") is None


def test_withdrawn_consent_is_unsubscribed_only_when_asked(env, tmp_path, klaviyo, list_id):
    yes = "email,consent\nann@example.com,yes\nbo@example.com,yes\n"
    assert run_cli(tmp_path, list_id, *subscribing(), segment=yes)[0] == 0
    assert klaviyo.subscribed(list_id, "email") == {"ann@example.com", "bo@example.com"}
    withdrawn = "email,consent\nann@example.com,no\nbo@example.com,\n"
    code, report, _ = run_cli(tmp_path, list_id, *subscribing(), segment=withdrawn)
    assert code == EXIT_OK and report["counts"]["unsubscribed"] == 0
    assert klaviyo.subscribed(list_id, "email") == {"ann@example.com", "bo@example.com"}, "never unsubscribed unasked"
    code, report, _ = run_cli(tmp_path, list_id, *subscribing(), "--unsubscribe-withdrawn", segment=withdrawn)
    assert code == EXIT_OK and report["counts"]["unsubscribed"] == 1
    # A no unsubscribes; an empty value is no answer, and changes nothing.
    assert status(klaviyo, "ann@example.com") == "UNSUBSCRIBED"
    assert status(klaviyo, "bo@example.com") == "SUBSCRIBED"


def test_more_than_a_thousand_consenting_rows_go_in_calls_of_a_thousand(env, tmp_path, klaviyo, list_id):
    rows = "".join(f"p{i}@example.com,{'yes' if i % 5 else 'no'}\n" for i in range(3_000))
    code, report, _ = run_cli(tmp_path, list_id, *subscribing("c"), segment="email,c\n" + rows)
    assert code == EXIT_OK
    assert (report["counts"]["subscribed"], report["counts"]["no_consent"]) == (2_400, 600)
    assert len(klaviyo.subscribed(list_id, "email")) == 2_400
    assert subscribe_calls(klaviyo) == 1 + 3, "the scope check, then 1,000 + 1,000 + 400"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--subscribe", "email"], "--subscribe needs --consent-column", id="no-consent-column"),
        pytest.param(["--consent-column", "consent"], "go with --subscribe", id="no-subscribe"),
        pytest.param(["--subscribe", "fax", "--consent-column", "consent"], "--subscribe: give email, sms", id="fax"),
        pytest.param(
            ["--subscribe", "email", "--consent-column", "agreed"],
            "mapped column(s) missing from the header: agreed",
            id="missing-column",
        ),
        pytest.param(
            ["--subscribe", "sms", "--consent-column", "consent", "--consent-values", "yes,,1"],
            "--consent-values: give one or more non-empty texts",
            id="empty-value",
        ),
    ],
)
def test_bad_subscribe_options_exit_2_before_sending(env, tmp_path, klaviyo, list_id, capsys, args, message):
    code, _, _ = run_cli(tmp_path, list_id, *args)
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert klaviyo.stats["jobs_created"] == 0 and subscribe_calls(klaviyo) == 0


def test_jsonl_booleans_and_custom_consent_values(env, tmp_path, klaviyo, list_id):
    segment = (
        '{"email": "ann@example.com", "ok": true}\n'
        '{"email": "bo@example.com", "ok": false}\n'
        '{"email": "cy@example.com", "ok": "Oui"}\n'
        '{"email": "di@example.com"}\n'
    )
    path = write(tmp_path, segment, "segment.jsonl")
    code = main(
        ["run", str(path), "--list-id", list_id, "--no-progress", "--subscribe", "email", "--consent-column", "ok"]
        + ["--consent-values", "true,oui"]
    )
    assert code == EXIT_OK
    assert klaviyo.subscribed(list_id, "email") == {"ann@example.com", "cy@example.com"}


# -- the Functions app ---------------------------------------------------------------------------------
def export_run(app: App, name: str) -> dict[str, Any]:
    _, run, _ = app.http("export_runs", "POST", f"exports/{name}/runs", name=name)
    app.drain_queue()
    _, done, _ = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
    return done


def test_app_export_with_subscribe_subscribes_consenting_rows(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Newsletter", opt_in_process="double_opt_in")
    app.put_connection()
    app.upload("consent.csv", SEGMENT.encode())
    subscribe = {"channels": ["sms", "email"], "consent_column": "consent", "consented_at_column": "consented_at"}
    mapping = {"email": "email", "phone_number": "phone", "external_id": "external"}
    status_code, saved, _ = app.put_export(
        "news", list_id, {"blob": "consent.csv"}, mapping=mapping, subscribe=subscribe
    )
    assert status_code == 201
    assert saved["subscribe"] == {
        "channels": ["sms", "email"],
        "consent_column": "consent",
        "consent_values": ["true", "yes", "1", "y"],
        "consented_at_column": "consented_at",
        "historical_import": True,
        "unsubscribe_withdrawn": False,
    }
    done = export_run(app, "news")
    assert done["status"] == "completed_with_rejects"
    counts = done["counts"]
    assert (counts["subscribed"], counts["not_subscribed"], counts["no_consent"]) == (2, 1, 2)
    assert klaviyo.subscribed(list_id, "email") == {"ann@example.com", "bo@example.com"}
    assert klaviyo.subscribed(list_id, "sms") == {"+15005550006"}
    assert status(klaviyo, "cy@example.com") == "NEVER_SUBSCRIBED"


def test_app_run_without_historical_import_leaves_profiles_pending(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Double", opt_in_process="double_opt_in")
    app.put_connection()
    app.upload("c.csv", b"email,consent\nann@example.com,yes\nbo@example.com,no\n")
    subscribe = {"channels": ["email"], "consent_column": "consent", "historical_import": False}
    assert app.put_export("dbl", list_id, {"blob": "c.csv"}, subscribe=subscribe)[0] == 201
    done = export_run(app, "dbl")
    assert done["status"] == "succeeded" and done["counts"]["subscribed"] == 1
    ann = klaviyo.consent_of("ann@example.com")
    assert ann is not None and ann.pending == {list_id: ("email.marketing",)}
    assert klaviyo.subscribed(list_id, "email") == set()


def test_app_run_with_a_key_lacking_the_scope_fails_with_a_clear_reason(app: App, klaviyo: KlaviyoSimulator, vault):
    list_id = klaviyo.create_list("Scoped")
    vault.set_secret("klaviyo-import-only", "pk_import_only_app_0000000000")
    klaviyo.add_api_key("pk_import_only_app_0000000000", scopes=NO_SUBSCRIPTIONS_SCOPE)
    app.put_connection("limited", secret_name="klaviyo-import-only")
    app.upload("c.csv", b"email,consent\nann@example.com,yes\n")
    subscribe = {"channels": ["email"], "consent_column": "consent"}
    assert app.put_export("scoped", list_id, {"blob": "c.csv"}, connection="limited", subscribe=subscribe)[0] == 201
    done = export_run(app, "scoped")
    assert done["status"] == "failed"
    assert "lacks the subscriptions:write scope" in done["reason"]
    assert klaviyo.list_members(list_id) == [] and klaviyo.consent_of("ann@example.com") is None
    assert SECRET not in done["reason"]


@pytest.mark.parametrize(
    ("subscribe", "field"),
    [
        pytest.param({"channels": [], "consent_column": "c"}, "subscribe.channels", id="no-channel"),
        pytest.param({"channels": ["fax-secret"], "consent_column": "c"}, "subscribe.channels.0", id="fax"),
        pytest.param({"channels": ["email"], "consent_column": "  "}, "subscribe.consent_column", id="blank-column"),
        pytest.param({"channels": ["email"]}, "subscribe.consent_column", id="no-column"),
        pytest.param(
            {"channels": ["email"], "consent_column": "c", "consent_values": ["yes", ""]},
            "subscribe.consent_values.1",
            id="empty-value",
        ),
        pytest.param({"channels": ["email", "email"], "consent_column": "c"}, "subscribe", id="twice"),
        pytest.param({"channels": ["email"], "consent_column": "c", "opt_out": 1}, "subscribe.opt_out", id="unknown"),
    ],
)
def test_app_refuses_a_bad_subscribe_option_naming_the_field(app: App, klaviyo, subscribe, field):
    app.put_connection()
    status_code, body, _ = app.put_export("bad", "L1", {"blob": "c.csv"}, subscribe=subscribe)
    assert status_code == 400
    assert field in {p["field"] for p in body["problems"]}
    assert "secret" not in orjson.dumps(body).decode(), "the submitted value is not echoed"


def test_changing_subscribe_changes_the_export_definition():
    from shared.control.definition import definition_fingerprint

    export = {"connection": "main", "list_id": "L1", "mapping": {"email": "email"}}
    before = definition_fingerprint(export)
    assert definition_fingerprint({**export, "subscribe": None}) == before, "exports saved before keep theirs"
    subscribed = {**export, "subscribe": {"channels": ["email"], "consent_column": "c"}}
    assert definition_fingerprint(subscribed) != before
    other = {**export, "subscribe": {"channels": ["sms"], "consent_column": "c"}}
    assert definition_fingerprint(other) != definition_fingerprint(subscribed)


def test_a_run_out_of_time_subscribes_each_consenting_row_once_across_invocations(env, tmp_path, klaviyo):
    from tools.segment_gen import write_segment

    path = tmp_path / "big.csv"
    write_segment(path, 60_000, seed=12)
    options = ["--map", "phone_number=phone", "--subscribe", "email,sms", "--consent-column", "loyalty_tier"]
    options += ["--consent-values", "gold,platinum", "--no-progress"]
    # A reference run in one go, on a list of its own.
    reference_list = klaviyo.create_list("Reference")
    reference_report = tmp_path / "reference.json"
    assert main(["run", str(path), "--list-id", reference_list, "--report", str(reference_report), *options]) == 0
    reference = orjson.loads(reference_report.read_bytes())["counts"]
    calls_in_one_go = subscribe_calls(klaviyo)
    # The same run with a time budget so short that each invocation sends a batch and stops.
    list_id = klaviyo.create_list("Budgeted")
    checkpoint, report_path = tmp_path / "run.checkpoint", tmp_path / "report.json"
    invocations = 0
    while True:
        invocations += 1
        code = main(
            ["run", str(path), "--list-id", list_id, "--report", str(report_path), *options]
            + ["--checkpoint", str(checkpoint), "--time-budget", "0.01"]
        )
        if code != 3:
            break
        assert invocations < 40
    assert code == EXIT_OK and invocations >= 3
    counts = orjson.loads(report_path.read_bytes())["counts"]
    for name in ("subscribed", "not_subscribed", "no_consent", "accepted"):
        assert counts[name] == reference[name], name
    assert klaviyo.subscribed(list_id, "email") == klaviyo.subscribed(reference_list, "email")
    assert klaviyo.subscribed(list_id, "sms") == klaviyo.subscribed(reference_list, "sms")
    # Each invocation checks the scope once; calls cut short by the budget may be made again, but
    # rows an earlier invocation had subscribed are not.
    budgeted_calls = subscribe_calls(klaviyo) - calls_in_one_go - invocations
    assert budgeted_calls <= (calls_in_one_go - 1) * 2


class CancelAfterFirstCall:
    """A run's watch that cancels it once Klaviyo has had one subscribe call (after the scope check)."""

    def __init__(self, klaviyo: KlaviyoSimulator) -> None:
        self.klaviyo = klaviyo

    def phase(self, phase: object) -> None:
        pass

    def stop_reason(self) -> str | None:
        return "cancelled by its owner" if subscribe_calls(self.klaviyo) >= 2 else None


def test_a_cancelled_run_stops_subscribing(exporter, klaviyo, list_id):
    rows = "".join(f"p{i}@example.com,yes\n" for i in range(30_000))
    exporter.upload("consent.csv", ("email,c\n" + rows).encode())
    options = SubscribeOptions(("email",), "c")
    report = exporter.run("consent.csv", subscribe=options, watch=CancelAfterFirstCall(klaviyo))
    assert report.status == "cancelled"
    subscribed = klaviyo.subscribed(list_id, "email")
    # The calls already on their way when it was cancelled (one per sending thread) are all that go out.
    assert 1_000 <= report.counts.subscribed == len(subscribed) <= 3_000
    assert subscribe_calls(klaviyo) <= 1 + 3
    stopped = [row for row in exporter.rejects_rows if row[3] == "not_subscribed"]
    assert stopped and all(row[5] == "the run stopped before this row was subscribed" for row in stopped)
    assert report.counts.not_subscribed == len(stopped)


def test_the_row_by_row_path_subscribes_exactly_as_the_column_wise_one(tmp_path, client, klaviyo):
    """The same segment read as Arrow tables (column kernels) and with the csv module (row by row,
    as files the fast reader cannot take are): the same profiles subscribed, at the same times,
    and the same rejects file."""
    from shared.engine import ExportSpec, RejectsFile, run_export
    from shared.mapping import FieldMapping
    from shared.sources import local_segment

    segment = write(
        tmp_path,
        "email,phone,external,consent,at\n"
        "Ann@Example.com,(206) 555-0100,,YES,2024-03-01T10:00:00+02:00\n"  # normalised on the slow path
        "bo@example.com,+12065550101,,y ,2024-03-02 08:30\n"
        " CY@Example.com,,,1,2024-03-03\n"
        "di@example.com,+12065550103,,no,2024-03-04\n"
        ",+12065550104,,true,2024-03-05T00:00:00Z\n"
        ",,ext-1,yes,2024-03-06\n"
        "ed@example.com,,,yes,2999-01-01\n"
        "fay@example.com,,,yes,someday\n",
    )
    mapping = FieldMapping({"email": "email", "phone_number": "phone", "external_id": "external"})
    options = SubscribeOptions(("email", "sms"), "consent", consented_at_column="at")
    outcomes = []
    for fast in (True, False):
        list_id = klaviyo.create_list(f"fast={fast}")
        source = local_segment(segment)
        source.fast = fast
        rejects = RejectsFile()
        report = run_export(source, ExportSpec("paths", list_id, mapping, subscribe=options), client, rejects=rejects)
        lines = rejects.read_bytes().decode().splitlines()
        rejects.discard()
        times = {
            who: klaviyo.consent_of(who).channels["email.marketing"].timestamp  # type: ignore[union-attr]
            for who in klaviyo.subscribed(list_id, "email")
        }
        outcomes.append((report.counts.subscribed, lines, times, klaviyo.subscribed(list_id, "sms")))
    assert outcomes[0] == outcomes[1]
    subscribed, lines, times, phones = outcomes[0]
    assert times == {
        "ann@example.com": datetime(2024, 3, 1, 8, tzinfo=UTC).timestamp(),
        "bo@example.com": datetime(2024, 3, 2, 8, 30, tzinfo=UTC).timestamp(),
        "cy@example.com": datetime(2024, 3, 3, tzinfo=UTC).timestamp(),
    }
    assert phones == {"+12065550100", "+12065550101", "+12065550104"}
    assert subscribed == 4 and len(lines) == 1 + 5


def test_calls_beyond_the_memory_bound_wait_in_a_spool_file_and_come_back_whole():
    import threading

    import numpy as np
    import pyarrow as pa

    from shared.engine.callqueue import Call, CallQueue
    from shared.mapping import Subscribers

    def call(number: int, timed: bool) -> Call:
        emails = pa.array([f"p{number}-{i}@example.com" for i in range(3)])
        phones = pa.array(["+12065550100", "", "+12065550102"])
        when = pa.array(["2024-03-01T00:00:00+00:00"] * 3) if timed else None
        return Call(Subscribers(np.arange(3), emails, phones, when), np.arange(3) + 10 * number, number)

    queue = CallQueue(held=2)
    sent = [call(n, timed=n % 2 == 0) for n in range(7)]
    for item in sent:
        queue.put(item)
    assert queue._path is not None and Path(queue._path).stat().st_size > 0, "5 of 7 calls are spooled"
    got: list[Call] = []
    reader = threading.Thread(target=lambda: got.extend(iter(queue.get, None)))
    reader.start()
    queue.close()
    reader.join(5)
    assert [c.number for c in got] == list(range(7))
    for before, after in zip(sent, got, strict=True):
        assert after.rows.tolist() == before.rows.tolist()
        assert after.profiles.email.to_pylist() == before.profiles.email.to_pylist()
        assert after.profiles.phone.to_pylist() == before.profiles.phone.to_pylist()
        times = before.profiles.consented_at
        assert (after.profiles.consented_at is None) == (times is None)
    spool = queue._path
    queue.discard()
    assert not Path(spool).exists()


def test_withdrawn_consents_go_on_across_invocations_without_a_call_twice(env, tmp_path, klaviyo, list_id):
    rows = "".join(f"p{i}@example.com,{'no' if i % 80 == 0 else 'yes'}\n" for i in range(25_000))
    path = write(tmp_path, "email,c\n" + rows)
    checkpoint, report_path = tmp_path / "run.checkpoint", tmp_path / "report.json"
    args = ["run", str(path), "--list-id", list_id, "--no-progress", "--report", str(report_path)]
    args += [*subscribing("c"), "--unsubscribe-withdrawn"]
    args += ["--checkpoint", str(checkpoint), "--time-budget", "0.01"]
    invocations = 0
    while (code := main(args)) == 3:
        invocations += 1
        assert invocations < 40
    assert code == EXIT_OK and invocations >= 3
    counts = orjson.loads(report_path.read_bytes())["counts"]
    assert (counts["subscribed"], counts["unsubscribed"], counts["no_consent"]) == (24_687, 313, 313)
    assert (
        status(klaviyo, "p0@example.com") == "UNSUBSCRIBED" and status(klaviyo, "p24960@example.com") == "UNSUBSCRIBED"
    )
    assert len(klaviyo.subscribed(list_id, "email")) == 24_687
    assert klaviyo.stats["requests_by_endpoint"]["POST /api/profile-subscription-bulk-delete-jobs"] == 4


def test_a_delta_run_subscribes_only_new_and_changed_consent_so_an_unsubscribe_in_klaviyo_stands(
    env, tmp_path, klaviyo, list_id
):
    state = tmp_path / "state"
    state.mkdir()
    options = [*subscribing("c"), "--state", str(state)]
    first = "email,c\nann@example.com,yes\nbo@example.com,no\ncy@example.com,yes\n"
    code, report, _ = run_cli(tmp_path, list_id, *options, segment=first)
    assert code == EXIT_OK and report["counts"]["subscribed"] == 2
    # Ann unsubscribes through a link in an email; the segment still says yes, Bo now says yes.
    klaviyo.suppress("ann@example.com", "UNSUBSCRIBE")
    assert status(klaviyo, "ann@example.com") == "UNSUBSCRIBED"
    second = "email,c\nann@example.com,yes\nbo@example.com,yes\ncy@example.com,yes\n"
    code, report, _ = run_cli(tmp_path, list_id, *options, segment=second)
    assert code == EXIT_OK
    counts = report["counts"]
    assert (counts["subscribed"], counts["unchanged"], counts["sent"]) == (1, 2, 1)
    assert status(klaviyo, "ann@example.com") == "UNSUBSCRIBED", "an unchanged row is not subscribed again"
    assert klaviyo.subscribed(list_id, "email") == {"bo@example.com", "cy@example.com"}


def test_profiles_klaviyo_refuses_are_reported_and_the_rest_of_the_call_subscribed(env, tmp_path, klaviyo, list_id):
    # Klaviyo's clock says it is June 2024: a consent dated 2025 is in the future there (not here).
    import time

    behind = time.time() - datetime(2024, 6, 1, tzinfo=UTC).timestamp()
    klaviyo.state.clock = lambda: time.time() - behind
    segment = (
        "email,c,at\nann@example.com,yes,2024-03-01\nbo@example.com,yes,2025-01-01\ncy@example.com,yes,2024-05-01\n"
    )
    code, report, rejects = run_cli(tmp_path, list_id, *subscribing("c", at="at"), segment=segment)
    assert code == EXIT_OK
    assert klaviyo.subscribed(list_id, "email") == {"ann@example.com", "cy@example.com"}
    assert (report["counts"]["subscribed"], report["counts"]["not_subscribed"]) == (2, 1)
    assert [(r["row"], r["outcome"]) for r in rejects] == [("3", "not_subscribed")]
    assert rejects[0]["reason"] == "Klaviyo refused the subscription: consented_at must be in the past."


def test_subscribing_without_a_sync_state_warns_that_unsubscribes_would_be_lifted(env, tmp_path, list_id, caplog):
    with caplog.at_level("WARNING", logger="shared.cli_subscribe"):
        code, report, _ = run_cli(tmp_path, list_id, *subscribing())
    assert code in (0, 1) and report["counts"]["subscribed"] > 0
    assert any("--subscribe without --state" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="shared.cli_subscribe"):
        run_cli(tmp_path, list_id, *subscribing(), "--state", str(tmp_path / "s"))
    assert not any("--subscribe without --state" in r.getMessage() for r in caplog.records)
