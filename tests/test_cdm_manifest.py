"""CDM folders governed by a manifest (`<name>.manifest.cdm.json`), through the CLI and the blob trigger.

The layout follows "Common Data Model metadata: Introducing manifest"
(https://learn.microsoft.com/common-data-model/cdm-manifest): the folder holds default.manifest.cdm.json, whose
`entities` declare each LocalEntity by `entityPath` (`Customer.cdm.json/Customer`) and list its
`dataPartitions`, each `location` relative to the manifest and its CSV described by the trait
`is.partition.format.CSV` (arguments columnHeaders, delimiter, quoteStyle, csvStyle, encoding). The entity
document follows "Entity definition" (https://learn.microsoft.com/common-data-model/creating-schemas):
`definitions[].hasAttributes` name the columns in order. A folder holding a *.manifest.cdm.json is a CDM
folder ("Use the Common Data Model to optimize Azure Data Lake Storage Gen2",
https://learn.microsoft.com/common-data-model/data-lake). `dataPartitionPatterns` (rootLocation and a
globPattern or regularExpression) add the files they match. The partitions are headerless, quote every value
(doubling quotes) and end lines with CRLF."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shared.cli import EXIT_OK, EXIT_USAGE
from tests.conftest import App
from tests.test_cdm import MAPPING, NEWEST_MEMBERS, cli, local_put, members, partition_csv

ROOT = "lake/KlaviyoSegments"
MANIFEST = "default.manifest.cdm.json"
ATTRIBUTES = ["CustomerId", "EmailAddress", "FirstName", "LastName"]
CUSTOMER = [
    [["3", "ann@example.com", "Ann, Jr.", 'O"Neil'], ["4", "zoe@example.com", "Zoë", "Ørsted"]],
    [["5", "eve@example.com", "Eve\r\nMarie", ""], ["6", "not-an-email", "No", "Body"]],
]
CONTACT = [[["9", "contact@example.com", "Con", "Tact"]]]
# A file of an earlier run left in the entity's folder: the manifest no longer lists it.
STALE = [["1", "left@example.com", "Left", "Early"]]


def csv_trait() -> dict:
    arguments = {
        "columnHeaders": "false",
        "delimiter": ",",
        "quoteStyle": "QuoteStyle.Csv",
        "csvStyle": "CsvStyle.QuoteAlways",
        "encoding": "UTF-8",
    }
    return {
        "traitReference": "is.partition.format.CSV",
        "arguments": [{"name": k, "value": v} for k, v in arguments.items()],
    }


def entity_document(entity: str) -> bytes:
    definition = {
        "entityName": entity,
        "hasAttributes": [{"name": a, "dataFormat": "String"} for a in ATTRIBUTES],
    }
    document = {
        "jsonSchemaSemanticVersion": "1.0.0",
        "imports": [{"corpusPath": "cdm:/foundations.cdm.json"}],
        "definitions": [definition],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


def manifest(**changes: object) -> bytes:
    entities = []
    for entity, parts in (("Customer", CUSTOMER), ("Contact", CONTACT)):
        partitions = [
            {"name": f"{entity}_{n}", "location": f"{entity}/{entity}_{n}.csv", "exhibitsTraits": [csv_trait()]}
            for n in range(1, len(parts) + 1)
        ]
        declaration = {
            "type": "LocalEntity",
            "entityName": entity,
            "entityPath": f"{entity}.cdm.json/{entity}",
            "lastFileModifiedTime": "2026-12-07T09:30:00Z",
            "dataPartitions": partitions,
        }
        entities.append({**declaration, **changes.get(entity, {})})  # type: ignore[dict-item]
    document = {
        "jsonSchemaSemanticVersion": "1.0.0",
        "imports": [{"corpusPath": "cdm:/foundations.cdm.json"}],
        "manifestName": "default",
        "entities": entities,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2)


def write_folder(put, manifest_data: bytes | None = None) -> None:
    """Entity documents and partitions first, the manifest last (it lands when the folder is complete)."""
    put(f"{ROOT}/Customer/Customer_0.csv", partition_csv(STALE))
    for entity, parts in (("Customer", CUSTOMER), ("Contact", CONTACT)):
        put(f"{ROOT}/{entity}.cdm.json", entity_document(entity))
        for n, rows in enumerate(parts, start=1):
            put(f"{ROOT}/{entity}/{entity}_{n}.csv", partition_csv(rows))
    put(f"{ROOT}/{MANIFEST}", manifest_data or manifest())


def parts_of(entity: str = "Customer") -> list[str]:
    return [f"{ROOT}/{entity}/{entity}_{n}.csv" for n in (1, 2)]


# -- the command line ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("segment", "options"),
    [
        (ROOT, ["--format", "cdm", "--entity", "Customer"]),
        (ROOT, ["--entity", "Customer"]),
        (f"{ROOT}/{MANIFEST}", ["--entity", "Customer"]),
    ],
    ids=["format-cdm", "auto", "the-manifest-named"],
)
def test_a_local_manifest_folder_exports_exactly_the_listed_partitions(
    env, tmp_path, klaviyo, list_id, segment, options
):
    write_folder(local_put(tmp_path))
    report_path = tmp_path / "out" / "report.json"
    assert cli(str(tmp_path / segment), list_id, *options, report=report_path) == EXIT_OK
    assert members(klaviyo, list_id) == NEWEST_MEMBERS
    report = orjson.loads(report_path.read_bytes())
    assert report["metadata"] == str(tmp_path / ROOT / MANIFEST)
    assert report["parts"] == [str(tmp_path / p) for p in parts_of()]
    [reject] = Path(report["rejects_file"]).read_text(encoding="utf-8").splitlines()[1:]
    assert reject.endswith(
        "Customer_2.csv,3,n***,rejected,email,email is not valid: An email address must have an @-sign."
    )


def test_a_manifest_folder_in_blob_storage_exports_through_the_cli(env, container, klaviyo, list_id, tmp_path):
    write_folder(lambda name, data: container.upload_blob(name, data, overwrite=True))
    report_path = tmp_path / "report.json"
    assert cli(f"{container.container_name}/{ROOT}/", list_id, "--entity", "Customer", report=report_path) == EXIT_OK
    assert members(klaviyo, list_id) == NEWEST_MEMBERS
    etag = container.get_blob_client(f"{ROOT}/{MANIFEST}").get_blob_properties().etag
    report = orjson.loads(report_path.read_bytes())
    assert report["metadata"] == f"{container.container_name}/{ROOT}/{MANIFEST} (etag {etag})"
    assert report["parts"] == parts_of()


def _without_document(root: Path) -> None:
    (root / ROOT / "Customer.cdm.json").unlink()


def _without_partition(root: Path) -> None:
    (root / parts_of()[1]).unlink()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            lambda root: (root / ROOT / MANIFEST).write_bytes(b'{"entities": ['),
            f"{MANIFEST}: not JSON",
            id="manifest-not-json",
        ),
        pytest.param(
            _without_document, "Customer.cdm.json: not found (the entity document", id="entity-document-missing"
        ),
        pytest.param(_without_partition, f"{MANIFEST}: listed partition missing: ", id="partition-missing"),
        pytest.param(
            lambda root: (root / ROOT / MANIFEST).write_bytes(
                manifest(Customer={"dataPartitions": [{"location": "../elsewhere.csv"}]})
            ),
            "partition 'elsewhere.csv' lies outside the folder",
            id="partition-outside",
        ),
        pytest.param(
            lambda root: (root / ROOT / MANIFEST).write_bytes(
                manifest(Customer={"dataPartitions": [], "dataPartitionPatterns": [{"rootLocation": "../lake"}]})
            ),
            "pattern '' has no rootLocation inside the folder",
            id="pattern-outside",
        ),
        pytest.param(
            lambda root: (root / ROOT / MANIFEST).write_bytes(
                manifest(Customer={"dataPartitions": [], "dataPartitionPatterns": [{"rootLocation": "Customer"}]})
            ),
            "pattern '' has no globPattern or regularExpression",
            id="pattern-without-glob",
        ),
    ],
)
def test_a_bad_manifest_folder_fails_naming_the_file_before_sending(
    env, tmp_path, klaviyo, list_id, capsys, change, message
):
    write_folder(local_put(tmp_path))
    change(tmp_path)
    assert cli(str(tmp_path / ROOT), list_id, "--format", "cdm", "--entity", "Customer") == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err
    if "missing: " in message:
        assert str(tmp_path / parts_of()[1]) in err
    assert klaviyo.stats["jobs_created"] == 0


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"regularExpression": "/Customer_[1-9]\\.csv$"}, [1, 2]),
        ({"globPattern": "/*.csv"}, [0, 1, 2]),
        ({"globPattern": "**.csv"}, [0, 1, 2]),
    ],
    ids=["regular-expression", "glob", "glob-any-folder"],
)
def test_data_partition_patterns_read_the_matching_files_in_name_order(
    env, container, klaviyo, list_id, tmp_path, pattern, expected
):
    declared = {"name": "CustomerFiles", "rootLocation": "Customer", "exhibitsTraits": [csv_trait()], **pattern}
    changed = manifest(Customer={"dataPartitions": [], "dataPartitionPatterns": [declared]})
    write_folder(lambda name, data: container.upload_blob(name, data, overwrite=True), changed)
    report_path = tmp_path / "report.json"
    assert cli(f"{container.container_name}/{ROOT}/", list_id, "--entity", "Customer", report=report_path) == EXIT_OK
    stale = {("left@example.com", "Left", "Early")} if 0 in expected else set()
    assert members(klaviyo, list_id) == NEWEST_MEMBERS | stale
    assert orjson.loads(report_path.read_bytes())["parts"] == [f"{ROOT}/Customer/Customer_{n}.csv" for n in expected]


def test_a_missing_blob_partition_fails_before_anything_is_sent(env, container, klaviyo, list_id, capsys):
    write_folder(lambda name, data: container.upload_blob(name, data, overwrite=True))
    container.delete_blob(parts_of()[1])
    code = cli(f"{container.container_name}/{ROOT}/", list_id, "--entity", "Customer")
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert f"{container.container_name}/{ROOT}/{MANIFEST}: listed partition(s) missing: {parts_of()[1]}" in err
    assert klaviyo.stats["jobs_created"] == 0


# -- the app's blob trigger ----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["cdm", "auto"])
def test_the_manifest_landing_runs_the_export_with_exactly_its_partitions(app: App, klaviyo, fmt):
    list_id = klaviyo.create_list("Customers")
    app.put_connection()
    segment = {"prefix": ROOT, "mode": "folder", "marker": MANIFEST}
    status, body, _ = app.put_export("customers", list_id, segment, format=fmt, entity="Customer", mapping=MAPPING)
    assert status == 201, body
    write_folder(app.upload)
    blob = app.services.blobs.get_blob_client
    app.functions["segment_dropped"](blob(app.segments, parts_of()[0]))
    app.functions["segment_dropped"](blob(app.segments, f"{ROOT}/Customer.cdm.json"))
    assert app.drain_queue() == 0, "a partition or an entity document alone does not start a run"
    manifest_blob = blob(app.segments, f"{ROOT}/{MANIFEST}")
    app.functions["segment_dropped"](manifest_blob)
    assert app.drain_queue() == 1
    assert members(klaviyo, list_id) == NEWEST_MEMBERS
    [run] = app.services.store.runs_of("customers")
    status, run, _ = app.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
    etag = manifest_blob.get_blob_properties().etag
    assert run["report"]["metadata"] == f"{app.segments}/{ROOT}/{MANIFEST} (etag {etag})"
    assert run["report"]["parts"] == parts_of()

    # The producer overwrites the manifest listing one partition only: the next run reads just that one.
    one = manifest(
        Customer={"dataPartitions": [{"location": "Customer/Customer_1.csv", "exhibitsTraits": [csv_trait()]}]}
    )
    app.upload(f"{ROOT}/{MANIFEST}", one)
    app.functions["segment_dropped"](manifest_blob)
    assert app.drain_queue() == 1
    newest = app.services.store.runs_of("customers")[0]
    status, run, _ = app.http("run_status", "GET", f"runs/{newest['run_id']}", run_id=newest["run_id"])
    assert run["report"]["parts"] == parts_of()[:1]
    assert run["report"]["counts"]["rows_read"] == 2


def test_cdm_export_with_a_manifest_named_as_its_blob_is_accepted(app: App, klaviyo):
    list_id = klaviyo.create_list("Named")
    app.put_connection()
    segment = {"blob": f"{ROOT}/{MANIFEST}", "mode": "blob"}
    status, body, _ = app.put_export("named", list_id, segment, format="cdm", entity="Customer", mapping=MAPPING)
    assert status == 201, body
    write_folder(app.upload)
    app.functions["segment_dropped"](app.services.blobs.get_blob_client(app.segments, f"{ROOT}/{MANIFEST}"))
    assert app.drain_queue() == 1
    assert members(klaviyo, list_id) == NEWEST_MEMBERS


def test_a_local_partition_pattern_reads_the_matching_files(env, tmp_path, klaviyo, list_id):
    declared = {"rootLocation": "Customer", "globPattern": "/Customer_?.csv", "exhibitsTraits": [csv_trait()]}
    write_folder(local_put(tmp_path), manifest(Customer={"dataPartitions": [], "dataPartitionPatterns": [declared]}))
    report_path = tmp_path / "out" / "report.json"
    assert cli(str(tmp_path / ROOT), list_id, "--entity", "Customer", report=report_path) == EXIT_OK
    assert members(klaviyo, list_id) == NEWEST_MEMBERS | {("left@example.com", "Left", "Early")}
    parts = orjson.loads(report_path.read_bytes())["parts"]
    assert parts == [str(tmp_path / ROOT / "Customer" / f"Customer_{n}.csv") for n in (0, 1, 2)]


def test_adapter_path_locations_resolve_from_the_container_root(env, container, klaviyo, list_id, tmp_path, capsys):
    # A corpus path with a storage adapter's namespace
    # (https://learn.microsoft.com/common-data-model/1.0om/api-reference/storage/storage): with the adls
    # adapter's root at the container, the path names the blob; a path outside the folder is refused.
    partitions = [{"location": f"adls:/{p}", "exhibitsTraits": [csv_trait()]} for p in parts_of()] + [
        {"location": "adls:/elsewhere/Customer_9.csv", "exhibitsTraits": [csv_trait()]}
    ]
    write_folder(
        lambda name, data: container.upload_blob(name, data, overwrite=True),
        manifest(Customer={"dataPartitions": partitions[:2]}),
    )
    report_path = tmp_path / "report.json"
    assert cli(f"{container.container_name}/{ROOT}/", list_id, "--entity", "Customer", report=report_path) == EXIT_OK
    assert members(klaviyo, list_id) == NEWEST_MEMBERS
    assert orjson.loads(report_path.read_bytes())["parts"] == parts_of()

    container.upload_blob(f"{ROOT}/{MANIFEST}", manifest(Customer={"dataPartitions": partitions}), overwrite=True)
    assert cli(f"{container.container_name}/{ROOT}/", list_id, "--entity", "Customer") == EXIT_USAGE
    assert "partition 'Customer_9.csv' lies outside" in capsys.readouterr().err
