"""Faults from storage: the segment changed or deleted mid-run, Azurite stopped and started again
mid-run, a report that cannot be written. The run reads one version or fails clearly, loses
nothing, and never passes for a success it was not."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.cli import main as cli_main
from shared.engine import Counts, ExportSpec, RejectsFile, RunReport, run_export
from shared.engine.status import FAILED, SUCCEEDED
from shared.klaviyo import KlaviyoClient
from shared.mapping import FieldMapping
from shared.settings import StorageConnection
from shared.sources import blob_segment
from shared.storage import DOWNLOAD_RANGE_BYTES, blob_service
from tests.conftest import API_KEY, App, member_emails
from tools.azurite import Azurite
from tools.functions_host import LocalFunctionsHost
from tools.klaviyo_sim import KlaviyoSimulator
from tools.local_stack import LocalStack
from tools.segment_gen import Expected, encode, generate_values

CHUNK = 256 * 1024


def segment(count: int, seed: int, start: int = 0) -> tuple[bytes, Expected]:
    expected = Expected()
    data = b"".join(encode(generate_values(count, seed=seed, expected=expected, start=start, bad_rate=0)))
    return data, expected


def as_the_app_reads(azurite: Azurite, container: ContainerClient) -> ContainerClient:
    """The same container through the app's own blob client: it downloads in 8 MB ranges, each pinned
    to the etag the first one saw."""
    return blob_service(StorageConnection.from_string(azurite.connection_string)).get_container_client(
        container.container_name
    )


def run_with(
    container: ContainerClient, client: KlaviyoClient, list_id: str, strike: Callable[[Counts], None]
) -> RunReport:
    rejects = RejectsFile()
    report = run_export(
        blob_segment(container, "segment.csv"),
        ExportSpec("storage-faults", list_id, FieldMapping()),
        client,
        strike,
        rejects,
    )
    rejects.discard()
    return report


def once(action: Callable[[], object], after_rows: int = 1) -> Callable[[Counts], None]:
    done: list[bool] = []

    def strike(counts: Counts) -> None:
        if counts.rows_read >= after_rows and not done:
            done.append(True)
            action()

    return strike


def test_a_segment_overwritten_mid_run_within_one_download_is_read_as_it_was(
    azurite: Azurite, container: ContainerClient, client: KlaviyoClient, klaviyo: KlaviyoSimulator, list_id: str
) -> None:
    old, expected = segment(20_000, seed=1)  # about 2 MB: one range
    assert len(old) < DOWNLOAD_RANGE_BYTES
    new, _ = segment(20_000, seed=2, start=500_000)
    container.upload_blob("segment.csv", old)
    overwrite = once(lambda: container.upload_blob("segment.csv", new, overwrite=True))
    report = run_with(as_the_app_reads(azurite, container), client, list_id, overwrite)
    assert report.status == SUCCEEDED
    assert member_emails(klaviyo, list_id) == expected.valid_emails, "only the version the run started with"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param("overwrite", "the blob was deleted or changed while it was being read", id="overwritten"),
        # Each range is read on condition that the blob is unchanged: for a deleted blob that
        # condition fails (412) before anything says 404.
        pytest.param("delete", "the blob was deleted or changed while it was being read", id="deleted"),
    ],
)
def test_a_segment_changed_mid_download_fails_the_run_clearly_without_mixing_versions(
    azurite: Azurite,
    container: ContainerClient,
    client: KlaviyoClient,
    klaviyo: KlaviyoSimulator,
    list_id: str,
    change: str,
    message: str,
) -> None:
    old, expected = segment(120_000, seed=3)  # about 12 MB: two ranges
    assert DOWNLOAD_RANGE_BYTES < len(old) < 2 * DOWNLOAD_RANGE_BYTES
    new, _ = segment(120_000, seed=4, start=500_000)
    container.upload_blob("segment.csv", old)

    def act() -> None:
        if change == "overwrite":
            container.upload_blob("segment.csv", new, overwrite=True)
        else:
            container.delete_blob("segment.csv")

    report = run_with(as_the_app_reads(azurite, container), client, list_id, once(act, after_rows=40_000))
    assert report.status == FAILED
    assert report.error == f"segment.csv: {message}"
    c = report.counts
    assert 0 < c.rows_read < expected.rows
    assert c.sent > 0 and c.not_sent > 0
    assert c.sent + c.rejected + c.duplicates + c.not_sent == c.rows_read, "every row read is accounted for"
    klaviyo.wait_for_jobs()
    assert member_emails(klaviyo, list_id) <= expected.valid_emails, "nothing of the new version was sent"


# -- Azurite stopped and started again mid-run ------------------------------------------------------------


@pytest.mark.slow
def test_azurite_stopped_and_started_mid_run_the_run_retries_and_ends_exact() -> None:
    with LocalStack(processing_seconds=0.05) as stack:
        services = stack.services
        # Small download ranges, so that reading the segment spans the outage too.
        services.segments = BlobServiceClient.from_connection_string(
            stack.azurite.connection_string, max_single_get_size=CHUNK, max_chunk_get_size=CHUNK
        )
        host = LocalFunctionsHost(services)
        app = App(services, services.settings.segments_container)
        app.host, app.functions = host, host.user
        data, expected = segment(80_000, seed=5)
        app.upload("vip.csv", data)
        app.put_connection(secret_name="klaviyo-api-key")
        app.put_export("vip", stack.list_id, {"blob": "vip.csv"})
        status, run, _ = app.http("export_runs", "POST", "exports/vip/runs", name="vip")
        assert status == 202

        outage: dict[str, float] = {}

        def stop_and_start() -> None:
            while stack.klaviyo.stats["jobs_created"] < 2:
                time.sleep(0.05)
            stack.azurite.stop_process()
            outage["stopped"] = time.monotonic()
            time.sleep(3)
            stack.azurite.start()
            outage["started"] = time.monotonic()

        fault = threading.Thread(target=stop_and_start)
        fault.start()
        assert host.deliver_queue() == 1
        fault.join()
        assert outage["started"] - outage["stopped"] >= 3

        status, done, _ = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
        assert status == 200
        assert done["status"] == SUCCEEDED, done.get("reason")
        assert done["counts"]["rows_read"] == expected.rows and done["counts"]["accepted"] == expected.valid
        assert {k: done["report"]["counts"][k] for k in done["counts"]} == done["counts"]
        stack.klaviyo.wait_for_jobs()
        assert member_emails(stack.klaviyo, stack.list_id) == expected.valid_emails


# -- a report that cannot be written ------------------------------------------------------------------------


def test_a_run_whose_report_cannot_be_written_is_failed_not_succeeded(app: App, klaviyo: KlaviyoSimulator) -> None:
    list_id = klaviyo.create_list("R")
    app.put_connection()
    app.upload("r.csv", b"email\nr@example.com\n")
    app.put_export("r", list_id, {"blob": "r.csv"})
    _, run, _ = app.http("export_runs", "POST", "exports/r/runs", name="r")
    # Someone holds a lease on the report's blob: the app cannot write it.
    reports = app.services.blobs.get_container_client(app.services.settings.reports_container)
    reports.create_container()
    blocker = reports.upload_blob(f"r/{run['run_id']}/report.json", b"{}")
    blocker.acquire_lease(lease_duration=-1)

    assert app.drain_queue() == 1
    status, failed, _ = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
    assert status == 200
    assert failed["status"] == FAILED
    assert failed["reason"] == "the report could not be written to blob storage (HttpResponseError)"
    assert failed["counts"]["accepted"] == 1, "what was done is still recorded"
    assert "report" not in failed and "report_path" not in failed, "no stale report is shown for it"
    _, export, _ = app.http("exports", "GET", "exports/r", name="r")
    assert export["last_success_run"] is None, "a failed run does not count as the last success"


def test_the_command_line_fails_when_its_report_cannot_be_written(
    tmp_path: Path, klaviyo: KlaviyoSimulator, list_id: str, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("KLAVIYO_BASE_URL", klaviyo.url)
    monkeypatch.setenv("KLAVIYO_API_KEY", API_KEY)
    segment_path = tmp_path / "s.csv"
    segment_path.write_bytes(b"email\ns@example.com\n")
    (tmp_path / "not-a-folder").write_text("a file")
    report = tmp_path / "not-a-folder" / "report.json"
    code = cli_main(["run", str(segment_path), "--list-id", list_id, "--report", str(report), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[0].endswith(": failed")
    assert f"the report could not be written to {report}" in out
