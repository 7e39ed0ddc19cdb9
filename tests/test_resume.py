"""Runs that stop (killed, or out of time) go on from their checkpoint: no row lost, no accepted
batch sent again (beyond those in flight at a crash), exact counts."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from shared.engine import ExportSpec
from tests.conftest import API_KEY, member_emails
from tools.klaviyo_sim import KlaviyoSimulator
from tools.segment_gen import Expected, write_segment

ROWS = 200_000
IN_FLIGHT = ExportSpec("x", "y", None).max_in_flight  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def segment(tmp_path_factory) -> tuple[Path, Expected]:
    path = tmp_path_factory.mktemp("resume") / "segment.csv"
    return path, write_segment(path, ROWS, seed=11)


def command(segment: Path, list_id: str, checkpoint: Path, report: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "shared.cli",
        "run",
        str(segment),
        "--list-id",
        list_id,
        "--map",
        "phone_number=phone",
        "--checkpoint",
        str(checkpoint),
        "--report",
        str(report),
        "--no-progress",
        *extra,
    ]


def environment(klaviyo: KlaviyoSimulator) -> dict[str, str]:
    return {**os.environ, "KLAVIYO_BASE_URL": klaviyo.url, "KLAVIYO_API_KEY": API_KEY}


def assert_exact(report_path: Path, expected: Expected, klaviyo: KlaviyoSimulator, list_id: str) -> dict:
    report = orjson.loads(report_path.read_bytes())
    counts = report["counts"]
    assert counts["rows_read"] == expected.rows
    assert counts["sent"] + counts["rejected"] + counts["duplicates"] == expected.rows
    assert (counts["rejected"], counts["duplicates"]) == (expected.invalid, expected.duplicates)
    assert counts["accepted"] == counts["sent"] == expected.valid
    klaviyo.wait_for_jobs()
    assert member_emails(klaviyo, list_id) == expected.valid_emails
    rejects = Path(report["rejects_file"]).read_text().splitlines()[1:]
    assert len(rejects) == expected.invalid + expected.duplicates, "each row not sent is listed once"
    return report


def test_killed_at_random_points_the_run_resumes_and_ends_exact(segment, klaviyo, list_id, tmp_path):
    path, expected = segment
    checkpoint, report = tmp_path / "run.checkpoint", tmp_path / "report.json"
    rng = random.Random(2026)
    kills = 0
    for _ in range(4):
        process = subprocess.Popen(
            command(path, list_id, checkpoint, report),
            env=environment(klaviyo),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # A random point of the run: after a few more jobs reached Klaviyo, plus a random instant.
        target = klaviyo.stats["jobs_created"] + rng.randint(1, 3)
        while process.poll() is None and klaviyo.stats["jobs_created"] < target:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2, "the run finished before it could be killed: make it longer"
    assert checkpoint.exists()
    final = subprocess.run(
        command(path, list_id, checkpoint, report),
        env=environment(klaviyo),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert final.returncode == 0, final.stderr[-2000:]
    done = assert_exact(report, expected, klaviyo, list_id)
    resent = klaviyo.stats["jobs_created"] - len(done["job_ids"])
    assert 0 <= resent <= kills * IN_FLIGHT, f"{resent} batches sent twice after {kills} kills"
    assert not checkpoint.exists(), "a finished run removes its checkpoint"


def test_a_run_out_of_time_goes_on_in_the_next_invocation(klaviyo, list_id, tmp_path):
    path = tmp_path / "segment.csv"
    expected = write_segment(path, 60_000, seed=12)
    checkpoint, report = tmp_path / "run.checkpoint", tmp_path / "report.json"
    invocations = 0
    while True:
        invocations += 1
        done = subprocess.run(
            command(path, list_id, checkpoint, report, "--time-budget", "0.01"),
            env=environment(klaviyo),
            capture_output=True,
            text=True,
            timeout=240,
        )
        if done.returncode != 3:
            break
        assert invocations < 30
    assert done.returncode == 0, done.stderr[-2000:]
    assert invocations >= 3
    report_data = assert_exact(report, expected, klaviyo, list_id)
    assert klaviyo.stats["jobs_created"] == len(report_data["job_ids"]), "nothing was sent twice"
