"""Runs stay correct while people change things (issue 18): consent withdrawn, an export edited or
deleted, a cancel request, two instances taking runs of one export at once, and a run's heartbeat
while it waits. Runs execute in worker processes of their own (tools/queue_worker), as on two
Azure instances sharing one storage account."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from shared.control.lease import STALE_AFTER_SECONDS, ExportLeases
from tests.conftest import App, member_emails
from tools.klaviyo_sim import KlaviyoSimulator
from tools.segment_gen import Expected, segment_chunks

ROOT = Path(__file__).resolve().parent.parent
# As the generated segments expect (a row with an invalid phone is rejected).
MAPPING = {"email": "email", "phone_number": "phone"}


def segment(rows: int, seed: int) -> tuple[bytes, Expected]:
    expected = Expected(valid_emails=set())
    return b"".join(segment_chunks("segment.csv", rows, seed, expected)), expected


@contextmanager
def workers(app: App, tmp_path: Path, count: int, upload_concurrency: int = 2) -> Iterator[list[subprocess.Popen[str]]]:
    """`count` worker processes on the app's storage: each one another instance of the app."""
    assert app.config is not None
    config = app.config.__class__(**{**app.config.__dict__, "upload_concurrency": upload_concurrency})
    path = config.save(tmp_path / "worker.json")
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tools.queue_worker", str(path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / f"worker-{n}.log").open("w"),
            text=True,
        )
        for n in range(count)
    ]
    try:
        for process in processes:
            assert process.stdout is not None and process.stdout.readline().strip() == "worker ready"
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def run_of(app: App, run_id: str) -> dict[str, Any]:
    return app.http("run_status", "GET", f"runs/{run_id}", run_id=run_id)[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start(app: App, export: str) -> str:
    status, run, _ = app.http("export_runs", "POST", f"exports/{export}/runs", name=export)
    assert status == 202
    return str(run["run_id"])


# -- a change while a run sends: it stops within 2 s --------------------------------------------------------
CHANGES: dict[str, tuple[Callable[[App, str], None], str]] = {
    "consent withdrawn": (
        lambda app, list_id: app.put_connection(privacy_consent=False),
        "the privacy consent of connection 'main' was withdrawn",
    ),
    "export deleted": (
        lambda app, list_id: app.http("exports", "DELETE", "exports/big", name="big"),
        "the export was deleted",
    ),
    "export edited": (
        lambda app, list_id: app.put_export("big", "ANOTHERLIST", {"blob": "big.csv"}, mapping=MAPPING),
        "the export was edited (its list, mapping, segment, connection or options changed)",
    ),
    "cancel requested": (lambda app, list_id: None, "cancelled on request"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_run_stops_sending_within_2_s_of_a_change_and_counts_what_it_did_not_send(
    change: str, app: App, klaviyo: KlaviyoSimulator, tmp_path: Path
):
    list_id = klaviyo.create_list("Big")
    app.put_connection()
    data, expected = segment(200_000, seed=18)
    app.upload("big.csv", data)
    app.put_export("big", list_id, {"blob": "big.csv"}, mapping=MAPPING)
    klaviyo.configure(slow_rate=1.0, slow_seconds=0.4)  # each call takes 0.4 s: 20 import jobs take seconds
    act, reason = CHANGES[change]
    with workers(app, tmp_path, 1):
        run_id = start(app, "big")
        wait_for(lambda: klaviyo.stats["jobs_created"] >= 2, 60, "the first import jobs")
        if change == "cancel requested":
            status, asked, _ = app.http("cancel_run", "POST", f"runs/{run_id}/cancel", run_id=run_id)
            assert status == 202 and asked["cancel_requested"] is True
        else:
            act(app, list_id)
        changed_at = time.monotonic()
        time.sleep(2.0)
        jobs_after_2_s = klaviyo.stats["jobs_created"]
        done = wait_for(lambda: (r := run_of(app, run_id))["status"] not in ("queued", "running") and r, 30, "the end")
        stopped_in = time.monotonic() - changed_at
    assert done["status"] == "cancelled" and done["reason"] == reason
    assert klaviyo.stats["jobs_created"] == jobs_after_2_s, "nothing was sent 2 s after the change"
    assert jobs_after_2_s < 20, "the run stopped before the end of the segment"
    counts = done["counts"]
    assert counts["not_sent"] > 0
    assert counts["rows_read"] == counts["sent"] + counts["rejected"] + counts["duplicates"] + counts["not_sent"]
    klaviyo.configure(slow_rate=0.0)
    klaviyo.wait_for_jobs()
    members = member_emails(klaviyo, list_id)
    assert len(members) == counts["sent"] and members <= (expected.valid_emails or set())
    assert stopped_in < 10


def test_a_queued_run_cancelled_never_runs(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Queued")
    app.put_connection()
    app.upload("q.csv", b"email\nq@example.com\n")
    app.put_export("q", list_id, {"blob": "q.csv"})
    run_id = start(app, "q")
    status, cancelled, _ = app.http("cancel_run", "POST", f"runs/{run_id}/cancel", run_id=run_id)
    assert status == 200 and cancelled["status"] == "cancelled"
    app.drain_queue()
    assert run_of(app, run_id)["status"] == "cancelled"
    assert klaviyo.stats["requests"] == 0
    assert app.http("cancel_run", "POST", f"runs/{run_id}/cancel", run_id=run_id)[0] == 409


# -- two instances: at most one executing run per export ----------------------------------------------------
def test_two_workers_never_execute_one_export_twice_at_once(app: App, klaviyo: KlaviyoSimulator, tmp_path: Path):
    list_id = klaviyo.create_list("Twice")
    app.put_connection()
    data, expected = segment(100_000, seed=19)
    app.upload("t.csv", data)
    app.put_export("t", list_id, {"blob": "t.csv"}, mapping=MAPPING)
    klaviyo.configure(processing_seconds=1.0)
    # Requests made while a run waits join it: POST twice answers with one run.
    first, again = start(app, "t"), start(app, "t")
    assert again == first
    with workers(app, tmp_path, 2):
        wait_for(lambda: run_of(app, first)["status"] == "running", 30, "the first run to start")
        second = start(app, "t")  # the first executes: this one waits behind it ...
        assert start(app, "t") == second  # ... and a further request joins it
        seen_running: set[tuple[str, ...]] = set()

        def both_done() -> bool:
            statuses = {run_id: run_of(app, run_id)["status"] for run_id in (first, second)}
            seen_running.add(tuple(sorted(r for r, s in statuses.items() if s == "running")))
            return all(s not in ("queued", "running") for s in statuses.values())

        wait_for(both_done, 120, "both runs to end")
    assert all(len(running) <= 1 for running in seen_running), "two runs of one export executed at once"
    runs = {run_id: run_of(app, run_id) for run_id in (first, second)}
    assert [runs[r]["status"] for r in (first, second)] == ["completed_with_rejects"] * 2
    assert runs[second]["started_at"] >= runs[first]["finished_at"]
    valid = len(expected.valid_emails or ())
    # The second sends only what changed since the first: nothing (its profiles are counted unchanged).
    assert (runs[first]["counts"]["sent"], runs[second]["counts"]["unchanged"]) == (valid, valid)
    assert klaviyo.stats["jobs_created"] == sum(r["jobs"] for r in runs.values()), "no run was executed twice"
    klaviyo.wait_for_jobs()
    assert member_emails(klaviyo, list_id) == expected.valid_emails


def test_an_export_lease_is_taken_over_only_once_stale(app: App):
    leases: ExportLeases = app.services.store.leases
    now = time.time()
    held = leases.take("e", "run-1", now=now)
    assert held is not None and leases.holder("e") == "run-1"
    assert leases.take("e", "run-2", now=now + 1) is None
    assert leases.take("e", "run-1", now=now + 1) is None, "a second delivery of the same run waits too"
    assert leases.renew(held) is not None
    taken = leases.take("e", "run-2", now=time.time() + STALE_AFTER_SECONDS + 1)
    assert taken is not None and leases.holder("e") == "run-2"
    assert leases.renew(held) is None, "the run whose lease was taken over learns it at its next renewal"
    leases.release("e", "run-1")
    assert leases.holder("e") == "run-2", "releasing a lease taken over leaves the new holder's"
    leases.release("e", "run-2")
    assert leases.holder("e") is None


# -- the heartbeat beats whatever the run is doing ---------------------------------------------------------
def test_the_heartbeat_and_phase_stay_fresh_while_the_run_waits_for_klaviyo(
    app: App, klaviyo: KlaviyoSimulator, tmp_path: Path
):
    list_id = klaviyo.create_list("Slow")
    app.put_connection()
    data, _ = segment(20_000, seed=20)
    app.upload("s.csv", data)
    app.put_export("s", list_id, {"blob": "s.csv"}, mapping=MAPPING)
    klaviyo.configure(processing_seconds=8.0)  # the import jobs take 8 s: the run waits for them
    with workers(app, tmp_path, 1):
        run_id = start(app, "s")
        wait_for(lambda: app.services.store.get_run(run_id).get("phase") == "waiting_for_jobs", 30, "the wait")
        ages = []
        for _ in range(5):
            record = app.services.store.get_run(run_id)
            ages.append(time.time() - float(record["heartbeat"]))
            assert record["phase"] == "waiting_for_jobs" and record["counts"]["sent"] > 0
            time.sleep(1.0)
        assert max(ages) < 4.0, f"heartbeat ages {ages}"
        done = wait_for(lambda: (r := run_of(app, run_id))["status"] not in ("queued", "running") and r, 60, "end")
    assert done["status"] == "completed_with_rejects" and done["counts"]["accepted"] == done["counts"]["sent"]


# -- an outcome that cannot be stored still ends the run -----------------------------------------------------
def test_a_run_whose_outcome_cannot_be_stored_still_ends_failed(app: App, klaviyo: KlaviyoSimulator, monkeypatch):
    from azure.core.exceptions import HttpResponseError

    list_id = klaviyo.create_list("Unstorable")
    app.put_connection()
    app.upload("u.csv", b"email\nu@example.com\n")
    app.put_export("u", list_id, {"blob": "u.csv"})
    run_id = start(app, "u")
    store = app.services.store
    write = store.update_run

    def refuse_the_outcome(run: str, changes: dict[str, Any], etag: str | None = None) -> bool:
        # As Table Storage answers a property it cannot store (say a value past its size limit).
        if changes.get("status") == "completed_with_rejects" or changes.get("status") == "succeeded":
            raise HttpResponseError(message="PropertyValueTooLarge")
        return write(run, changes, etag)

    monkeypatch.setattr(store, "update_run", refuse_the_outcome)
    app.drain_queue()
    monkeypatch.undo()
    done = run_of(app, run_id)
    assert done["status"] == "failed"
    assert done["reason"] == "the run's outcome could not be recorded (HttpResponseError); see the logs"


def test_a_storage_failure_in_an_api_call_is_a_json_500_naming_only_its_kind(app: App, monkeypatch):
    from azure.core.exceptions import ServiceRequestError

    def unreachable(name: str) -> None:
        raise ServiceRequestError("connection refused to 10.0.0.4 with secret=abc")

    monkeypatch.setattr(app.services.store, "get_export", unreachable)
    status, body, _ = app.http("exports", "GET", "exports/vip", name="vip")
    assert status == 500
    assert body == {"error": "the request failed unexpectedly (ServiceRequestError); the app's log has the details"}
