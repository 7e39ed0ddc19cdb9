"""Mirror mode is right after any failure: whatever stopped a run (SIGKILL at any point, its segment
replaced mid-run, Klaviyo down, the time budget), the next mirror run on a smaller segment leaves the
list holding exactly that segment. Leavers are looked up on the list by their identifiers, so a run
that never saw its jobs finish still has its profiles removed once they leave."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from azure.storage.blob import ContainerClient

from shared.engine import Counts, ExportSpec, FileCheckpoints, run_export
from shared.engine.batching import Batch
from shared.engine.status import FAILED, INCOMPLETE, SUCCEEDED
from shared.klaviyo import KlaviyoClient
from shared.mapping import FieldMapping, fingerprints
from shared.mapping.rows import serialize_profile
from shared.sources import blob_segment
from shared.sync.register import LOG_PREFIX, REGISTER_NAME, SendingLog
from tests.conftest import API_KEY, member_emails
from tests.test_storage_faults import as_the_app_reads
from tests.test_sync import Sync, people
from tests.test_sync import sync as sync  # the fixture
from tools.klaviyo_sim import KlaviyoSimulator

MAPPING = FieldMapping({"email": "email"})


def emails(numbers: range | list[int]) -> set[str]:
    return {f"p{n}@example.com" for n in numbers}


def csv_of(numbers: range | list[int], note: str = "") -> bytes:
    if note:
        return ("email,note\n" + "".join(f"p{n}@example.com,{note}\n" for n in numbers)).encode()
    return ("email\n" + "".join(f"p{n}@example.com\n" for n in numbers)).encode()


def logs_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(LOG_PREFIX + "*")) if folder.exists() else []


def cli(segment: Path, list_id: str, state: Path, *extra: str) -> list[str]:
    command = [sys.executable, "-m", "shared.cli", "run", str(segment), "--list-id", list_id, "--mode", "mirror"]
    return [*command, "--state", str(state), "--no-progress", "--confirm-removals", *extra]


def environment(klaviyo: KlaviyoSimulator) -> dict[str, str]:
    return {**os.environ, "KLAVIYO_BASE_URL": klaviyo.url, "KLAVIYO_API_KEY": API_KEY}


def mirror_exactly(
    sync: Sync,
    klaviyo: KlaviyoSimulator,
    container: ContainerClient,
    list_id: str,
    export: str,
    smaller: range,
    on_list: set[str],
) -> None:
    """A mirror run of `export` (removals confirmed) on the segment `smaller` leaves the list holding
    exactly it, every other profile of `on_list` removed."""
    container.upload_blob(f"{export}-smaller.csv", csv_of(smaller))
    spec = ExportSpec(export, list_id, MAPPING, mode="mirror", confirm_removals=True)
    after = run_export(blob_segment(container, f"{export}-smaller.csv"), spec, sync.client, sync_state=sync.state)
    assert after.status == SUCCEEDED, after.error
    assert member_emails(klaviyo, list_id) == emails(smaller)
    assert after.counts.removed == len(on_list - emails(smaller))


# -- SIGKILL at random points -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_at_random_points_the_next_mirror_run_leaves_the_list_equal_to_the_segment(
    klaviyo, list_id, tmp_path, seed
):
    """Each round starts a mirror run on a segment and kills it at a random point (while it sends, waits
    for its jobs, or removes); a last run on a smaller segment must leave exactly that segment."""
    rng = random.Random(seed)
    klaviyo.configure(processing_seconds=0.3)  # jobs still importing when the run is killed
    state = tmp_path / "state"
    segments = [range(0, 40_000), range(5_000, 45_000), range(10_000, 40_000)]
    kills = 0
    for number, members in enumerate(segments):
        path = tmp_path / f"segment-{number}.csv"
        path.write_bytes(csv_of(members))
        process = subprocess.Popen(
            cli(path, list_id, state), env=environment(klaviyo), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        target = klaviyo.stats["jobs_created"] + rng.randint(1, 4)
        while process.poll() is None and klaviyo.stats["jobs_created"] < target:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.5))
        killed = process.poll() is None
        if killed:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2, "the runs finished before they could be killed: make them longer"
    if killed:
        assert logs_in(state), "a killed run leaves the log of what it was sending"

    final = tmp_path / "final.csv"
    wanted = list(range(12_000, 30_000)) + list(range(60_000, 60_500))
    final.write_bytes(csv_of(wanted))
    done = subprocess.run(cli(final, list_id, state), env=environment(klaviyo), capture_output=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    klaviyo.wait_for_jobs()
    assert member_emails(klaviyo, list_id) == emails(wanted)
    assert not logs_in(state), "the run folded every log into the register"
    assert (state / REGISTER_NAME).exists()


# -- the segment replaced mid-run ----------------------------------------------------------------------------
def test_a_run_whose_segment_was_replaced_mid_run_leaves_no_leaver_on_the_list_next_run(
    sync, azurite, container, klaviyo, list_id
):
    """Issue 19's defect 2: the failed run's jobs were never checked, so none of their profiles reached
    the state; the next run on a smaller segment must still take them off."""
    klaviyo.configure(slow_rate=1.0, slow_seconds=0.3)  # Klaviyo answers slowly: no job is seen finished
    wide = "x" * 200  # 80,000 rows of about 220 bytes: several 8 MB download ranges
    container.upload_blob("segment.csv", csv_of(range(80_000), wide))
    replaced: list[bool] = []

    def replace(counts: Counts) -> None:  # while the first range is being sent
        if counts.rows_read >= 20_000 and not replaced:
            replaced.append(True)
            container.upload_blob("segment.csv", csv_of(range(80_000, 90_000)), overwrite=True)

    spec = ExportSpec("replaced", list_id, MAPPING, mode="mirror")
    app_container = as_the_app_reads(azurite, container)
    failed = run_export(
        blob_segment(app_container, "segment.csv"), spec, sync.client, progress=replace, sync_state=sync.state
    )
    assert failed.status == FAILED and "changed while it was being read" in (failed.error or "")
    assert failed.counts.sent >= 10_000 and failed.counts.accepted < failed.counts.sent
    klaviyo.configure(slow_rate=0.0)
    klaviyo.wait_for_jobs()
    before = member_emails(klaviyo, list_id)
    assert len(before) == failed.counts.sent

    mirror_exactly(sync, klaviyo, container, list_id, "replaced", range(3_000, 9_000), before)


# -- Klaviyo down ----------------------------------------------------------------------------------------------
def test_a_run_failed_by_klaviyo_being_down_is_followed_by_an_exact_mirror_run(
    sync, klaviyo, list_id, tmp_path, container
):
    """Klaviyo goes down after the first jobs: the run fails without seeing any job finish."""
    klaviyo.configure(processing_seconds=0.5)
    impatient = KlaviyoClient(API_KEY, klaviyo.url, timeout=(2.0, 5.0), max_retries=1)

    down: list[bool] = []

    def outage(counts: Counts) -> None:  # Klaviyo goes down once the first job is in
        if counts.sent and not down:
            down.append(True)
            klaviyo.configure(error_rate=1.0)

    container.upload_blob("big.csv", csv_of(range(0, 30_000)))
    spec = ExportSpec("down", list_id, MAPPING, mode="mirror")
    report = run_export(blob_segment(container, "big.csv"), spec, impatient, progress=outage, sync_state=sync.state)
    assert report.status == FAILED and report.counts.sent > 0 and report.counts.accepted == 0
    klaviyo.configure(error_rate=0.0, processing_seconds=0.02)
    klaviyo.wait_for_jobs()
    on_list = member_emails(klaviyo, list_id)
    assert on_list and not sync.state.load(), "Klaviyo took profiles the state never heard of"

    mirror_exactly(sync, klaviyo, container, list_id, "down", range(0, 1_000), on_list)


# -- the time budget ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("resumed", [False, True])
def test_a_run_stopped_by_its_time_budget_then_a_smaller_segment_leaves_the_list_exact(
    sync, klaviyo, list_id, tmp_path, resumed
):
    """The run checkpoints after its first batch; it is resumed to its end, or abandoned (its export
    edited, a new run started) before the smaller segment's run."""
    checkpoint = FileCheckpoints(tmp_path / "checkpoint.json")
    everyone = people(*range(60_000))
    first = sync.run(everyone, checkpoints=checkpoint, mode="mirror", deadline=time.monotonic())
    assert first.status == INCOMPLETE and first.counts.sent > 0 and first.counts.accepted < first.counts.sent
    if resumed:
        while first.status == INCOMPLETE:
            first = sync.run(everyone, checkpoints=checkpoint, mode="mirror", run_id=first.run_id, resume=True)
        assert first.status == SUCCEEDED
    klaviyo.wait_for_jobs()
    smaller = people(*range(3_000, 5_000))
    after = sync.run(smaller, mode="mirror", confirm_removals=True)
    assert after.status == SUCCEEDED, after.error
    assert member_emails(klaviyo, list_id) == set(smaller)


# -- leavers the list no longer holds, leavers known by external id, the safety stop ----------------------
def test_a_leaver_taken_off_by_hand_is_no_error_and_one_known_by_external_id_is_removed(
    container, client, klaviyo, list_id, tmp_path
):
    mapping = FieldMapping({"email": "email", "external_id": "id"})
    sync_state = Sync(container, client, list_id, tmp_path / "state").state

    def run(rows: list[tuple[str, str]], **options: object):
        body = "id,email\n" + "".join(f"{i},{e}\n" for i, e in rows)
        container.upload_blob("s.csv", body.encode(), overwrite=True)
        spec = ExportSpec("ext", list_id, mapping, mode="mirror", **options)
        return run_export(blob_segment(container, "s.csv"), spec, client, sync_state=sync_state)

    everyone = [(f"C-{n}", f"p{n}@example.com") for n in range(8)] + [("C-ext", "")]
    assert run(everyone).status == SUCCEEDED
    assert len(klaviyo.list_members(list_id)) == 9
    # By hand: p1 is taken off the list; then p1, p2 and the external-id-only profile leave.
    ids = {a.get("email"): pid for pid, a in client.list_member_ids(list_id)}
    client.remove_from_list(list_id, [ids["p1@example.com"]])
    stays = [row for row in everyone if row[0] not in ("C-1", "C-2", "C-ext")]
    after = run(stays, confirm_removals=True)
    assert after.status == SUCCEEDED, after.error
    assert after.counts.removed == 2, "p2 and the profile known by its external id; p1 was not on the list"
    assert member_emails(klaviyo, list_id) == {e for _, e in stays}
    assert len(klaviyo.list_members(list_id)) == len(stays)
    calls = klaviyo.stats["requests_by_endpoint"]
    assert calls.get("GET /api/profile-bulk-import-jobs/{id}/profiles", 0) == 0, "no job's profiles are read"


def test_the_safety_stop_holds_leavers_of_a_killed_run_until_confirmed(sync, klaviyo, list_id, tmp_path):
    sync.run(people(*range(10)), mode="mirror")
    # A run that was killed after sending 10 more: only its log knows them.
    texts = pa.array(sorted(people(*range(10, 20))), pa.string())
    SendingLog(sync.state, "killed").append(fingerprints(texts), texts)
    sync.client.create_import_job(_body(list_id, texts.to_pylist()))
    klaviyo.wait_for_jobs()
    assert len(member_emails(klaviyo, list_id)) == 20
    stopped = sync.run(people(*range(10)), mode="mirror")
    assert stopped.status == FAILED and "10 of 20" in (stopped.error or "") and stopped.counts.removed == 0
    assert len(member_emails(klaviyo, list_id)) == 20
    confirmed = sync.run(people(*range(10)), mode="mirror", confirm_removals=True)
    assert confirmed.status == SUCCEEDED and confirmed.counts.removed == 10
    assert member_emails(klaviyo, list_id) == set(people(*range(10)))


def _body(list_id: str, addresses: list[str]) -> bytes:
    batch = Batch()
    for i, address in enumerate(addresses):
        batch.add(serialize_profile({"email": address}), 0, i)
    return bytes(batch.body(list_id))


# -- the Functions app: the state in blob storage -------------------------------------------------------------
def test_the_app_folds_every_invocations_log_and_mirrors_exactly(app, klaviyo):
    """A mirror run split by its time budget into several invocations, each logging to an append blob
    of its own; the run's end folds them into the register, and the next run removes those who left."""
    from dataclasses import replace

    app.services.settings = replace(app.services.settings, run_time_budget=0.0)
    list_id = klaviyo.create_list("Mirror by lookup")
    app.put_connection()
    app.upload("m.csv", csv_of(range(25_000)))
    app.put_export("m", list_id, {"blob": "m.csv"}, mapping={"email": "email"}, sync_mode="mirror")
    _, run, _ = app.http("export_runs", "POST", "exports/m/runs", name="m")
    assert app.drain_queue() >= 2, "the run went on in a new queue message"
    assert member_emails(klaviyo, list_id) == emails(range(25_000))
    reports = app.services.blobs.get_container_client(app.services.settings.reports_container)
    names = [b.name for b in reports.list_blobs(name_starts_with="m/sync/")]
    assert [n.rsplit("/", 1)[1] for n in names] == [REGISTER_NAME, "sync-state.npz"], names

    app.services.settings = replace(app.services.settings, run_time_budget=540.0)
    app.upload("m.csv", csv_of(range(1_000, 25_000)))
    _, run, _ = app.http("export_runs", "POST", "exports/m/runs", name="m")
    app.drain_queue()
    _, done, _ = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
    assert done["status"] == "succeeded" and done["counts"]["removed"] == 1_000
    assert member_emails(klaviyo, list_id) == emails(range(1_000, 25_000))


def test_an_add_state_switched_to_mirror_filters_alike_in_every_invocation_of_a_run(sync, klaviyo, list_id, tmp_path):
    """A state kept in add mode has no identifiers: the first mirror run sends every profile again to
    record them. Split by its time budget, each invocation must form the same batches (its own log
    does not count as the register), so no batch is sent twice."""
    everyone = people(*range(30_000))
    assert sync.run(everyone).status == SUCCEEDED
    jobs_before = klaviyo.stats["jobs_created"]
    checkpoint = FileCheckpoints(tmp_path / "checkpoint.json")
    run = sync.run(everyone, checkpoints=checkpoint, mode="mirror", deadline=time.monotonic())
    invocations = 1
    while run.status == INCOMPLETE:
        invocations += 1
        run = sync.run(everyone, checkpoints=checkpoint, mode="mirror", run_id=run.run_id, resume=True)
    assert invocations >= 2 and run.status == SUCCEEDED, run.error
    assert run.counts.sent == run.counts.updated == 30_000
    assert klaviyo.stats["jobs_created"] - jobs_before == len(run.job_ids), "no batch was sent twice"
    after = sync.run(people(*range(1_000, 30_000)), mode="mirror")
    assert after.status == SUCCEEDED and after.counts.sent == 0 and after.counts.removed == 1_000
    assert member_emails(klaviyo, list_id) == set(people(*range(1_000, 30_000)))


def test_a_stop_while_waiting_for_earlier_import_jobs_stops_before_any_removal(client, klaviyo, list_id):
    from shared.sync.lookup import RemovalStopped, settle_import_jobs
    from tests.test_klaviyo_client import body_for

    klaviyo.configure(processing_seconds=6.0)  # a job an earlier run left, still importing
    client.create_import_job(body_for(list_id, "left@example.com"))
    asked = time.monotonic()
    with pytest.raises(RemovalStopped, match="cancelled on request"):
        settle_import_jobs(client, 60.0, lambda: "cancelled on request" if time.monotonic() - asked > 0.5 else None)
    assert time.monotonic() - asked < 5.0, "the wait ends with the stop, not with the job"
