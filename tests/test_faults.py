"""Faults from Klaviyo (injected by the simulator): the run still ends exact, and says what it retried
and what failed; a bad key, a missing scope or a deleted list stops it at once, without retrying."""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.engine import ConfigurationError, Counts, ExportSpec, RejectsFile, RunReport, run_export
from shared.engine.status import COMPLETED_WITH_REJECTS, FAILED
from shared.klaviyo import KlaviyoClient
from shared.mapping import FieldMapping
from shared.sources import local_segment
from tests.conftest import API_KEY, member_emails
from tools.klaviyo_sim import KlaviyoSimulator
from tools.segment_gen import COLUMNS, Expected, encode, generate_values

MAPPING = FieldMapping({"email": "email", "phone_number": "phone"})


def write_rows(path: Path, count: int, seed: int) -> tuple[Expected, dict[int, str]]:
    """A generated segment, its ground truth, and each row's email by row number."""
    expected = Expected()
    rows = list(generate_values(count, seed=seed, expected=expected))
    path.write_bytes(b"".join(encode(rows)))
    email = COLUMNS.index("email")
    return expected, {number: row[email] for number, row in enumerate(rows, start=2)}


def export(
    path: Path, client: KlaviyoClient, list_id: str, progress: Callable[[Counts], None] | None = None
) -> tuple[RunReport, list[list[str]]]:
    rejects = RejectsFile()
    report = run_export(
        local_segment(path), ExportSpec("faults", list_id, MAPPING, poll_interval=0.2), client, progress, rejects
    )
    lines = list(csv.reader(rejects.read_bytes().decode().splitlines()))[1:]
    rejects.discard()
    return report, lines


def assert_accounted(report: RunReport, rows: int) -> None:
    c = report.counts
    assert c.rows_read == rows
    assert c.sent + c.rejected + c.duplicates == rows
    assert c.accepted + c.failed == c.sent


@pytest.mark.slow
def test_200000_rows_under_every_fault_at_once_end_exact_and_the_report_says_what_happened(
    klaviyo: KlaviyoSimulator, list_id: str, tmp_path: Path
) -> None:
    expected, email_of_row = write_rows(tmp_path / "segment.csv", 200_000, seed=21)
    klaviyo.configure(
        error_rate=0.1,  # one request in ten answers 5xx
        throttle_storm_every=5.0,  # 429 storms with Retry-After, 1.5 s every 5 s
        throttle_storm_seconds=1.5,
        reset_rate=0.08,  # connections dropped mid-request
        slow_rate=0.08,  # answers slower than the client waits (read timeout 1 s)
        slow_seconds=1.5,
        profile_failure_rate=0.002,  # jobs that end with some profiles failed
        seed=5,
    )
    client = KlaviyoClient(API_KEY, klaviyo.url, timeout=(2.0, 1.0))
    report, rejects = export(tmp_path / "segment.csv", client, list_id)
    client.close()

    assert report.status == COMPLETED_WITH_REJECTS, report.error
    assert_accounted(report, expected.rows)
    assert (report.counts.rejected, report.counts.duplicates) == (expected.invalid, expected.duplicates)
    assert report.counts.sent == expected.valid
    # What was retried, by cause: every kind of fault injected shows up.
    faults = klaviyo.stats["faults"]
    assert {"error", "storm", "reset", "slow"} <= set(faults), faults
    retried = report.retries
    assert sum(v for k, v in retried.items() if k.startswith("retried_5")) >= 1, retried
    assert retried.get("retried_429", 0) >= 1 and retried.get("retried_connection_lost", 0) >= 1, retried
    assert retried.get("retried_timeout", 0) >= 1, retried
    # What failed: each profile Klaviyo could not import is listed against its row, and counted.
    failed_rows = [int(line[1]) for line in rejects if line[3] == "failed"]
    assert len(failed_rows) == report.counts.failed > 0
    assert all("Klaviyo could not import the profile" in line[5] for line in rejects if line[3] == "failed")
    assert report.reasons["failed"] == {
        "Klaviyo could not import the profile: Profile could not be processed.": report.counts.failed
    }
    failed_emails = {email_of_row[n] for n in failed_rows}
    klaviyo.configure(error_rate=0, throttle_storm_every=0, reset_rate=0, slow_rate=0, profile_failure_rate=0)
    assert klaviyo.wait_for_jobs()
    reader = KlaviyoClient(API_KEY, klaviyo.url)
    failed_in_jobs = {e["original_payload"]["email"] for job in report.job_ids for e in reader.import_errors(job)}
    reader.close()
    assert failed_emails == failed_in_jobs, "every failure inside a job is attributed to its own row"
    # The list holds every valid row but those failed (a job re-sent after a timeout may have
    # imported one of them after all), and nothing else.
    members = member_emails(klaviyo, list_id)
    assert expected.valid_emails - failed_emails <= members <= expected.valid_emails


# -- fatal answers: at once, with a clear reason, and no retry loop ---------------------------------------


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        pytest.param("bad-key", r"rejected the API key \(401", id="401-bad-key"),
        pytest.param("no-scope", r"lacks a required scope \(403", id="403-missing-scope"),
        pytest.param("no-list", r"not found in this Klaviyo account \(404\)", id="404-list-deleted"),
    ],
)
def test_a_fatal_answer_before_sending_fails_with_one_request(
    klaviyo: KlaviyoSimulator, list_id: str, tmp_path: Path, fault: str, message: str
) -> None:
    write_rows(tmp_path / "s.csv", 100, seed=1)
    key = API_KEY
    if fault == "bad-key":
        key = "pk_not_a_known_key"
    elif fault == "no-scope":
        klaviyo.add_api_key(key := "pk_profiles_only", scopes=["profiles:read", "profiles:write"])
    else:
        klaviyo.delete_list(list_id)
    client = KlaviyoClient(key, klaviyo.url)
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=message):
        export(tmp_path / "s.csv", client, list_id)
    assert time.monotonic() - started < 2
    assert klaviyo.stats["requests"] == 1, "a fatal answer is not retried"
    assert klaviyo.stats["jobs_created"] == 0


def _revoke_key(klaviyo: KlaviyoSimulator, list_id: str) -> None:
    klaviyo.remove_api_key(API_KEY)


def _drop_scopes(klaviyo: KlaviyoSimulator, list_id: str) -> None:
    klaviyo.add_api_key(API_KEY, scopes=["profiles:read", "lists:read"])


def _delete_list(klaviyo: KlaviyoSimulator, list_id: str) -> None:
    klaviyo.delete_list(list_id)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        pytest.param(_revoke_key, r"rejected the API key \(401", id="401-key-revoked"),
        pytest.param(_drop_scopes, r"lacks a required scope \(403", id="403-scope-removed"),
        pytest.param(_delete_list, r"list \w+: not found in this Klaviyo account \(404\)", id="404-list-deleted"),
    ],
)
def test_a_fatal_answer_mid_run_stops_it_at_once_without_a_retry_loop(
    klaviyo: KlaviyoSimulator, list_id: str, tmp_path: Path, fault, message: str
) -> None:
    expected, _ = write_rows(tmp_path / "s.csv", 120_000, seed=2)
    client = KlaviyoClient(API_KEY, klaviyo.url)
    at_fault: dict[str, float] = {}

    def strike(counts: Counts) -> None:
        if counts.sent >= 20_000 and not at_fault:
            fault(klaviyo, list_id)
            at_fault.update(requests=klaviyo.stats["requests"], time=time.monotonic())

    report, _ = export(tmp_path / "s.csv", client, list_id, strike)
    client.close()
    assert at_fault, "the fault was never injected"
    assert report.status == FAILED
    assert re.search(message, report.error or ""), report.error
    after = klaviyo.stats["requests"] - at_fault["requests"]
    in_flight = ExportSpec("x", "y", MAPPING).max_in_flight
    # Only uploads already on the wire may still go out (and, for a refused job, one look at the list).
    assert after <= in_flight, f"{after} requests after the fault: queued uploads went out, or a retry loop"
    assert time.monotonic() - at_fault["time"] < 10
    assert report.counts.sent < expected.valid, "the run stopped; it did not send the rest"
