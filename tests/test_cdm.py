"""Dynamics 365 Customer Insights exports (Common Data Model folders) through the CLI and the blob trigger.

The layout follows "Export segments to Azure Blob Storage"
(https://learn.microsoft.com/dynamics365/customer-insights/data/export-azure-blob-storage):
`<container>/CustomerInsights_<instance id>/<export name>/<entity>/<yyyy>/<mm>/<dd>/<hhmm>/<entity>_<n>.csv`,
with the model.json of the exported entities at the export-name level. model.json follows
https://learn.microsoft.com/common-data-model/model-json: entities with their attributes and partitions
(absolute URLs), each partition's CsvFormatSettings (columnHeaders false, QuoteStyle.Csv,
CsvStyle.QuoteAlways, UTF-8). The CSV files quote every value (doubling quotes) and end lines with CRLF."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shared.cli import EXIT_OK, EXIT_USAGE, main
from tests.conftest import App
from tools.klaviyo_sim import KlaviyoSimulator

ROOT = "CustomerInsights_abcd1234-4312-11f4-93dc-24f72f43e7d5/KlaviyoExport"
ATTRIBUTES = ["CustomerId", "EmailAddress", "FirstName", "LastName"]
OLD_RUN, NEW_RUN = "2026/12/06/0930", "2026/12/07/0930"
# The segment to export (two partitions a run) and another exported table in the same folder.
CHURN = {
    OLD_RUN: [[["1", "left@example.com", "Left", "Early"]], [["2", "gone@example.com", "Gone", None]]],
    NEW_RUN: [
        [["3", "ann@example.com", "Ann, Jr.", 'O"Neil'], ["4", "zoe@example.com", "Zoë", "Ørsted"]],
        [["5", "eve@example.com", "Eve\r\nMarie", ""], ["6", "not-an-email", "No", "Body"]],
    ],
}
CONTACTS = {run: [[["9", "contact@example.com", "Con", "Tact"]]] for run in (OLD_RUN, NEW_RUN)}
NEWEST_MEMBERS = {
    ("ann@example.com", "Ann, Jr.", 'O"Neil'),
    ("zoe@example.com", "Zoë", "Ørsted"),
    ("eve@example.com", "Eve\r\nMarie", None),
}
MAPPING = {"email": "EmailAddress", "first_name": "FirstName", "last_name": "LastName"}


def partition_csv(rows: list[list[str | None]]) -> bytes:
    """QuoteAlways: every value quoted, quotes doubled; a null is left empty; CRLF line ends."""
    quoted = (",".join("" if v is None else '"' + v.replace('"', '""') + '"' for v in row) for row in rows)
    return "".join(line + "\r\n" for line in quoted).encode()


def partition_path(entity: str, run: str, n: int) -> str:
    return f"{ROOT}/{entity}/{run}/{entity}_{n}.csv"


def model_json(container: str, run: str, host: str = "devstoreaccount1.dfs.core.windows.net") -> bytes:
    """The model.json the export writes for `run`, listing that run's partitions of both entities."""
    settings = {
        "$type": "CsvFormatSettings",
        "columnHeaders": False,
        "delimiter": ",",
        "quoteStyle": "QuoteStyle.Csv",
        "csvStyle": "CsvStyle.QuoteAlways",
        "encoding": "UTF-8",
    }
    entities = []
    for entity, runs in (("ChurnProneCustomers", CHURN), ("Contacts", CONTACTS)):
        partitions = [
            {
                "name": f"{entity}_{n}",
                "refreshTime": "2026-12-07T09:30:00Z",
                "location": f"https://{host}/{container}/{partition_path(entity, run, n)}",
                "fileFormatSettings": settings,
            }
            for n in range(1, len(runs[run]) + 1)
        ]
        attributes = [{"name": a, "dataType": "string"} for a in ATTRIBUTES]
        entities.append({"$type": "LocalEntity", "name": entity, "attributes": attributes, "partitions": partitions})
    model = {"name": "KlaviyoExport", "version": "1.0", "modifiedTime": "2026-12-07T09:31:00Z", "entities": entities}
    return orjson.dumps(model, option=orjson.OPT_INDENT_2)


def write_runs(put, container: str, runs: tuple[str, ...] = (OLD_RUN, NEW_RUN)) -> None:
    """Both runs' partitions of both entities, then the model.json of the last run (written last)."""
    for run in runs:
        for entity, data in (("ChurnProneCustomers", CHURN), ("Contacts", CONTACTS)):
            for n, rows in enumerate(data[run], start=1):
                put(partition_path(entity, run, n), partition_csv(rows))
    put(f"{ROOT}/model.json", model_json(container, runs[-1]))


def members(klaviyo: KlaviyoSimulator, list_id: str) -> set[tuple]:
    return {(m["email"], m.get("first_name"), m.get("last_name")) for m in klaviyo.list_members(list_id)}


# -- the command line ---------------------------------------------------------------------------------
def local_put(root: Path):
    def put(name: str, data: bytes) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return put


def cli(segment: str, list_id: str, *options: str, report: Path | None = None) -> int:
    maps = [a for field, column in MAPPING.items() if field != "email" for a in ("--map", f"{field}={column}")]
    argv = ["run", segment, "--list-id", list_id, "--email-field", MAPPING["email"], *maps, "--no-progress"]
    return main([*argv, *options, *(["--report", str(report)] if report else [])])


@pytest.mark.parametrize(
    "options",
    [["--format", "cdm", "--entity", "ChurnProneCustomers"], ["--entity", "ChurnProneCustomers"]],
    ids=["format-cdm", "auto"],
)
def test_a_local_cdm_folder_exports_only_the_newest_run_of_the_entity(env, tmp_path, klaviyo, list_id, options):
    write_runs(local_put(tmp_path), "segments")
    report_path = tmp_path / "out" / "report.json"
    assert cli(str(tmp_path / ROOT), list_id, *options, report=report_path) == EXIT_OK
    assert members(klaviyo, list_id) == NEWEST_MEMBERS
    report = orjson.loads(report_path.read_bytes())
    assert report["metadata"] == str(tmp_path / ROOT / "model.json")
    assert report["parts"] == [str(tmp_path / partition_path("ChurnProneCustomers", NEW_RUN, n)) for n in (1, 2)]
    rejects = Path(report["rejects_file"]).read_text(encoding="utf-8").splitlines()[1:]
    [reject] = rejects  # row 3: Eve's row spans lines 1 and 2
    assert reject.endswith(
        "ChurnProneCustomers_2.csv,3,n***,rejected,email,email is not valid: An email address must have an @-sign."
    )


def test_a_cdm_folder_in_blob_storage_exports_through_the_cli(env, container, klaviyo, list_id, tmp_path):
    write_runs(lambda name, data: container.upload_blob(name, data, overwrite=True), container.container_name)
    report_path = tmp_path / "report.json"
    code = cli(f"{container.container_name}/{ROOT}/", list_id, "--entity", "ChurnProneCustomers", report=report_path)
    assert code == EXIT_OK
    assert members(klaviyo, list_id) == NEWEST_MEMBERS
    etag = container.get_blob_client(f"{ROOT}/model.json").get_blob_properties().etag
    report = orjson.loads(report_path.read_bytes())
    assert report["metadata"] == f"{container.container_name}/{ROOT}/model.json (etag {etag})"
    assert report["parts"] == [partition_path("ChurnProneCustomers", NEW_RUN, n) for n in (1, 2)]


@pytest.mark.parametrize(
    ("model", "entity", "message"),
    [
        pytest.param(b'{"name": "x", "entities": [', "ChurnProneCustomers", "model.json: not JSON", id="not-json"),
        pytest.param(
            None,
            "Segments",
            "model.json: no entity 'Segments' (entities: ChurnProneCustomers, Contacts)",
            id="no-entity",
        ),
        pytest.param(
            None,
            None,
            "model.json: name the entity to export (entities: ChurnProneCustomers, Contacts)",
            id="entity-not-named",
        ),
    ],
)
def test_a_bad_model_json_fails_naming_the_file_before_sending(
    env, tmp_path, klaviyo, list_id, capsys, model, entity, message
):
    write_runs(local_put(tmp_path), "segments")
    if model is not None:
        (tmp_path / ROOT / "model.json").write_bytes(model)
    options = ["--format", "cdm", *(["--entity", entity] if entity else [])]
    assert cli(str(tmp_path / ROOT), list_id, *options) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert klaviyo.stats["jobs_created"] == 0


def test_a_missing_partition_fails_before_anything_is_sent(env, container, klaviyo, list_id, capsys):
    write_runs(lambda name, data: container.upload_blob(name, data, overwrite=True), container.container_name)
    container.delete_blob(partition_path("ChurnProneCustomers", NEW_RUN, 2))
    code = cli(f"{container.container_name}/{ROOT}/", list_id, "--format", "cdm", "--entity", "ChurnProneCustomers")
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and f"{container.container_name}/{ROOT}/model.json: listed partition(s) missing" in err
    assert partition_path("ChurnProneCustomers", NEW_RUN, 2) in err
    assert klaviyo.stats["jobs_created"] == 0


def test_a_partition_outside_the_container_is_refused(env, container, klaviyo, list_id, capsys):
    write_runs(lambda name, data: container.upload_blob(name, data, overwrite=True), "another-container")
    code = cli(f"{container.container_name}/{ROOT}/", list_id, "--format", "cdm", "--entity", "ChurnProneCustomers")
    assert code == EXIT_USAGE
    assert "partition 'ChurnProneCustomers_1' lies outside" in capsys.readouterr().err
    assert klaviyo.stats["jobs_created"] == 0


# -- the app's blob trigger ----------------------------------------------------------------------------
def test_model_json_landing_runs_the_export_of_that_folder_with_the_newest_partitions(app: App, klaviyo):
    list_id = klaviyo.create_list("Churn")
    app.put_connection()
    status, body, _ = app.put_export(
        "churn",
        list_id,
        {"prefix": ROOT, "mode": "folder"},
        format="cdm",
        entity="ChurnProneCustomers",
        mapping=MAPPING,
    )
    assert status == 201 and body["entity"] == "ChurnProneCustomers"
    model = app.services.blobs.get_blob_client(app.segments, f"{ROOT}/model.json")
    write_runs(app.upload, app.segments, (OLD_RUN,))
    app.functions["segment_dropped"](
        app.services.blobs.get_blob_client(app.segments, partition_path("ChurnProneCustomers", OLD_RUN, 1))
    )
    assert app.drain_queue() == 0, "a partition alone does not start a run"
    app.functions["segment_dropped"](model)
    assert app.drain_queue() == 1
    assert members(klaviyo, list_id) == {("left@example.com", "Left", "Early"), ("gone@example.com", "Gone", None)}

    write_runs(app.upload, app.segments, (NEW_RUN,))  # the next export run overwrites model.json
    app.functions["segment_dropped"](model)
    assert app.drain_queue() == 1
    newest = app.services.store.runs_of("churn")[0]
    status, run, _ = app.http("run_status", "GET", f"runs/{newest['run_id']}", run_id=newest["run_id"])
    report = run["report"]
    etag = model.get_blob_properties().etag
    assert report["metadata"] == f"{app.segments}/{ROOT}/model.json (etag {etag})"
    assert report["parts"] == [partition_path("ChurnProneCustomers", NEW_RUN, n) for n in (1, 2)]
    assert members(klaviyo, list_id) >= NEWEST_MEMBERS
    assert report["counts"]["rows_read"] == 4


def test_a_folder_mode_export_finds_the_cdm_folder_by_its_model_json(app: App, klaviyo):
    # format auto: the folder's model.json lists entities, so only its partitions are read, not every CSV below.
    list_id = klaviyo.create_list("Auto")
    app.put_connection()
    app.put_export("auto", list_id, {"prefix": ROOT, "mode": "folder"}, entity="ChurnProneCustomers", mapping=MAPPING)
    write_runs(app.upload, app.segments)
    app.functions["segment_dropped"](app.services.blobs.get_blob_client(app.segments, f"{ROOT}/model.json"))
    assert app.drain_queue() == 1
    assert members(klaviyo, list_id) == NEWEST_MEMBERS


def test_cdm_exports_are_validated(app: App, klaviyo):
    list_id = klaviyo.create_list("Bad")
    app.put_connection()
    status, body, _ = app.put_export("bad", list_id, {"prefix": ROOT, "mode": "newest"}, format="cdm")
    assert status == 400 and "format 'cdm' reads a folder" in body["problems"][0]["reason"]


def test_csv_options_are_refused_for_a_cdm_folder(env, tmp_path, klaviyo, list_id, capsys):
    write_runs(local_put(tmp_path), "segments")
    assert cli(str(tmp_path / ROOT), list_id, "--entity", "ChurnProneCustomers", "--escape", "\\") == EXIT_USAGE
    assert "model.json gives the CSV dialect; leave out the CSV options" in capsys.readouterr().err
    assert klaviyo.stats["jobs_created"] == 0
