"""A sync run that fails mid-way (its segment replaced while it runs) reports counts that hold
together: it never says it added or updated more profiles than Klaviyo accepted, nor accepted more
than it sent."""

from __future__ import annotations

import threading
import time

import orjson
import pytest

from shared.cli import EXIT_FAILED, main
from shared.engine import FileCheckpoints
from shared.sync.state import STATE_NAME, SyncState
from tests.test_sync import Sync, people


def rows(first: int, count: int) -> bytes:
    return ("email\n" + "".join(f"person{n}@example.com\n" for n in range(first, first + count))).encode()


@pytest.mark.parametrize("mode", ["add", "mirror"])
def test_a_sync_run_whose_segment_is_replaced_mid_run_reports_added_within_accepted(
    env, container, klaviyo, list_id, tmp_path, mode
):
    # Two parts, each pinned to the etag it had when listed. Klaviyo answers slowly, so the run is
    # still sending the first part (and looking at its jobs) when the second is replaced: reading it fails.
    klaviyo.configure(slow_rate=1.0, slow_seconds=0.3)
    container.upload_blob("segment/part-1.csv", rows(0, 150_000))
    container.upload_blob("segment/part-2.csv", rows(150_000, 10_000))
    report_path = tmp_path / "report.json"
    argv = ["run", f"{container.container_name}/segment", "--list-id", list_id, "--mode", mode]
    argv += ["--state", str(tmp_path / "state"), "--report", str(report_path), "--no-progress"]
    codes: list[int] = []
    run = threading.Thread(target=lambda: codes.append(main(argv)))
    run.start()
    deadline = time.monotonic() + 60
    while klaviyo.stats["jobs_created"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    container.upload_blob("segment/part-2.csv", rows(150_000, 10_001), overwrite=True)
    run.join(120)
    assert codes == [EXIT_FAILED]
    report = orjson.loads(report_path.read_bytes())
    counts = report["counts"]
    assert report["status"] == "failed" and "part-2.csv" in report["error"]
    assert counts["sent"] > 0
    assert counts["sent"] >= counts["accepted"] + counts["failed"]
    assert counts["added"] + counts["updated"] <= counts["accepted"], counts
    assert counts["rows_read"] == (
        counts["sent"] + counts["rejected"] + counts["duplicates"] + counts["not_sent"] + counts["unchanged"]
    )


def test_a_resumed_run_counts_the_added_profiles_of_jobs_an_earlier_invocation_saw_finish(
    container, client, list_id, tmp_path
):
    # The first invocation's jobs all finished, then it crashed before saving the sync state: its
    # successor replays every batch and job from the checkpoint, sending nothing, and counts what
    # the jobs added from it.
    sync = Sync(container, client, list_id, tmp_path / "state")
    sync.state.save(SyncState(list_id))
    before = (tmp_path / "state" / STATE_NAME).read_bytes()
    checkpoint = FileCheckpoints(tmp_path / "checkpoint.json")
    first = sync.run(people(*range(12_000)), checkpoints=checkpoint)
    assert first.counts.accepted == first.counts.added == 12_000
    (tmp_path / "state" / STATE_NAME).write_bytes(before)
    resumed = sync.run(people(*range(12_000)), checkpoints=checkpoint, run_id=first.run_id, resume=True)
    assert sorted(resumed.job_ids) == sorted(first.job_ids), "nothing sent again"
    assert resumed.counts.accepted == resumed.counts.added == 12_000
