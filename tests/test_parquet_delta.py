"""Parquet files and Delta tables as their producers write them (see columnar_fixtures for each layout and
the documentation page it follows), exported through the command line and through the app's blob trigger:
the exact profiles on the Klaviyo list, rows reported as (file, row within the file), and bad input
refused before anything is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from shared.cli import EXIT_OK, EXIT_USAGE, main
from tests.columnar_fixtures import (
    AEP_FILE,
    AEP_MAPPING,
    BAD_ROW,
    EXPECTED,
    FLAT_MAPPING,
    PEOPLE,
    flat_table,
    upload_folder,
    write_aep,
    write_delta,
    write_spark_folder,
)
from tests.conftest import App
from tools.klaviyo_sim import KlaviyoSimulator


def members(klaviyo: KlaviyoSimulator, list_id: str) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """Each list member by email (phone number when it has none): its first name and properties."""
    return {
        m["email"] or m["phone_number"]: (m.get("first_name"), m["properties"]) for m in klaviyo.list_members(list_id)
    }


def run_cli(segment: str, list_id: str, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "report" / "report.json"
    code = main(["run", segment, "--list-id", list_id, "--no-progress", "--report", str(report), *args])
    return code, orjson.loads(report.read_bytes()) if report.exists() else {}


def rejected_rows(report: dict[str, Any]) -> list[str]:
    return Path(report["rejects_file"]).read_text(encoding="utf-8").splitlines()[1:]


# -- Parquet ----------------------------------------------------------------------------------------------
def test_an_aep_parquet_export_maps_xdm_struct_fields_by_dotted_path(env, tmp_path, klaviyo, list_id):
    path = write_aep(tmp_path / "aep")
    code, report = run_cli(str(path), list_id, tmp_path, *AEP_MAPPING)
    assert code == EXIT_OK, report
    tiers = {"ann.lee@example.com", "watanabe@example.jp"}  # vip: loyalty tier gold
    expected = {
        who: (
            first,
            {
                k: v
                for k, v in {"points": props.get("points"), "tier": "gold" if who in tiers else None}.items()
                if v is not None
            },
        )
        for who, (first, props) in EXPECTED.items()
    }
    assert members(klaviyo, list_id) == expected
    [line] = rejected_rows(report)
    assert line.startswith(f"{path},{BAD_ROW},") and "email is not valid" in line and "not-an-email" not in line


def test_a_spark_parquet_folder_in_blob_storage_sends_typed_properties(env, tmp_path, container, klaviyo, list_id):
    write_spark_folder(tmp_path / "spark")
    upload_folder(container, tmp_path / "spark", "exports/vip/")
    code, report = run_cli(f"{container.container_name}/exports/vip", list_id, tmp_path, *FLAT_MAPPING)
    assert code == EXIT_OK, report
    assert members(klaviyo, list_id) == EXPECTED
    assert report["counts"]["rows_read"] == len(PEOPLE), "_SUCCESS and .crc files are not data"
    # the bad row is the second of the second part file
    [line] = rejected_rows(report)
    second_part = sorted(b.name for b in container.list_blobs("exports/vip/part-"))[1]
    assert line.startswith(f"{second_part},{BAD_ROW - 4},")


def test_a_truncated_parquet_file_fails_naming_it_and_sends_nothing(env, tmp_path, klaviyo, list_id, capsys):
    parts = write_spark_folder(tmp_path / "spark")
    data = parts[1].read_bytes()
    parts[1].write_bytes(data[: len(data) // 2])
    code, _ = run_cli(str(tmp_path / "spark"), list_id, tmp_path, *FLAT_MAPPING)
    assert code == EXIT_USAGE
    error = capsys.readouterr().err
    assert parts[1].name in error and "not a readable Parquet file" in error
    assert klaviyo.stats["jobs_created"] == 0


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        pytest.param(
            ["--map", "properties.ids=identityMap"],
            "column 'identityMap' is map<string, list<",
            id="map-column-as-property",
        ),
        pytest.param(
            ["--map", "properties.loyalty=loyalty"],
            "column 'loyalty' is struct<points: int32, tier: string>: custom property 'loyalty'",
            id="struct-as-property",
        ),
        pytest.param(
            ["--email-field", "loyalty.points"],
            "column 'loyalty.points' is number, not text: email must be a string column",
            id="number-as-email",
        ),
    ],
)
def test_a_column_type_the_mapping_cannot_take_fails_before_sending(
    env, tmp_path, klaviyo, list_id, capsys, mapping, message
):
    path = write_aep(tmp_path / "aep")
    code, _ = run_cli(str(path), list_id, tmp_path, *AEP_MAPPING, *mapping)
    assert code == EXIT_USAGE
    error = capsys.readouterr().err
    assert message in error and AEP_FILE in error
    assert klaviyo.stats["jobs_created"] == 0


def test_a_dropped_parquet_file_runs_its_export(app: App, klaviyo: KlaviyoSimulator, tmp_path):
    list_id = klaviyo.create_list("AEP")
    app.put_connection()
    blob = f"aep/{AEP_FILE}"
    app.put_export("aep", list_id, {"prefix": "aep/", "mode": "newest"}, mapping=_mapping(AEP_MAPPING))
    app.upload(blob, write_aep(tmp_path).read_bytes())
    app.functions["segment_dropped"](app.services.blobs.get_blob_client(app.segments, blob))
    assert app.drain_queue() == 1
    assert set(members(klaviyo, list_id)) == set(EXPECTED)


# -- Delta ------------------------------------------------------------------------------------------------
def test_a_delta_table_is_read_at_its_latest_version_or_the_one_asked(env, tmp_path, klaviyo, list_id):
    table = tmp_path / "Tables" / "customers"
    write_delta(table)
    union = [email for path in table.glob("*.parquet") for email in pq.read_table(path).column("email").to_pylist()]
    assert "left1@example.com" in union, "the folder's files still hold the deleted rows"

    code, report = run_cli(str(table), list_id, tmp_path, *FLAT_MAPPING, "--dry-run")
    assert code == EXIT_OK and report["source_version"] == "delta v2"
    assert report["counts"]["rows_read"] == len(PEOPLE) and report["counts"]["rejected"] == 1

    code, report = run_cli(str(table), list_id, tmp_path, *FLAT_MAPPING, "--version", "1", "--dry-run")
    assert code == EXIT_OK and report["source_version"] == "delta v1"
    assert report["counts"]["rows_read"] == len(PEOPLE) + 2, "version 1 still holds the two who left"

    code, report = run_cli(str(table), list_id, tmp_path, *FLAT_MAPPING)
    assert code == EXIT_OK
    assert members(klaviyo, list_id) == EXPECTED


def test_a_delta_table_with_column_mapping_is_refused_with_the_reason(env, tmp_path, klaviyo, list_id, capsys):
    from deltalake import write_deltalake

    table = tmp_path / "mapped"
    write_deltalake(str(table), flat_table(PEOPLE), configuration={"delta.columnMapping.mode": "name"})
    code, _ = run_cli(str(table), list_id, tmp_path, *FLAT_MAPPING)
    assert code == EXIT_USAGE
    assert "uses column mapping (mode name)" in capsys.readouterr().err
    assert klaviyo.stats["jobs_created"] == 0


def test_a_new_delta_commit_runs_the_export_at_that_version(app: App, klaviyo: KlaviyoSimulator, tmp_path):
    from deltalake import write_deltalake

    list_id = klaviyo.create_list("Lakehouse")
    app.put_connection()
    prefix = "contoso.Lakehouse/Tables/customers/"
    # mirror: the list ends each run holding the version read (version 2 removes the two who left)
    segment = {"prefix": prefix, "mode": "folder"}
    app.put_export("lake", list_id, segment, mapping=_mapping(FLAT_MAPPING), sync_mode="mirror", max_removal_share=0.5)
    table = tmp_path / "customers"
    write_delta(table)
    container = app.services.blobs.get_container_client(app.segments)
    names = upload_folder(container, table, prefix)
    for name in names[:-1]:  # every blob of the table lands; only a commit of the log starts a run
        app.functions["segment_dropped"](container.get_blob_client(name))
    # Commits landing while their run waits to start join it: one run, at the newest version.
    assert app.drain_queue() == 1
    _, history, _ = app.http("export_runs", "GET", "exports/lake/runs", name="lake")
    assert [run["source_version"].split(" (")[0] for run in history["runs"]] == ["delta v1"]
    app.functions["segment_dropped"](container.get_blob_client(names[-1]))
    assert app.drain_queue() == 1, "a commit after the run ended: a run of its own"
    assert members(klaviyo, list_id) == EXPECTED
    _, history, _ = app.http("export_runs", "GET", "exports/lake/runs", name="lake")
    versions = [run["source_version"].split(" (")[0] for run in history["runs"]]
    assert versions == ["delta v2", "delta v1"], "newest first"

    write_deltalake(
        str(table), flat_table([("dave@example.com", "Dave", None, 5, None, None, None, None)]), mode="append"
    )
    new = [n for n in upload_folder(container, table, prefix) if n not in names]
    commit = next(n for n in new if n.endswith("00000000000000000003.json"))
    app.functions["segment_dropped"](container.get_blob_client(commit))
    app.functions["segment_dropped"](container.get_blob_client(commit))  # delivered twice: runs once
    assert app.drain_queue() == 1
    assert set(members(klaviyo, list_id)) == set(EXPECTED) | {"dave@example.com"}


def _mapping(args: list[str]) -> dict[str, Any]:
    """The export's mapping for the same columns as the command-line options."""
    mapping: dict[str, Any] = {"properties": {}}
    for option, value in zip(args[::2], args[1::2], strict=True):
        field, column = ("email", value) if option == "--email-field" else value.split("=", 1)
        if field.startswith("properties."):
            mapping["properties"][column] = field.removeprefix("properties.")
        else:
            mapping[field] = column
    return mapping


def test_an_export_names_a_delta_version_only_for_a_table_folder(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Pinned")
    app.put_connection()
    status, body, _ = app.put_export("csv", list_id, {"blob": "a.csv"}, version=3)
    assert status == 400 and "'version' is for a Delta table" in orjson.dumps(body).decode()
    status, body, _ = app.put_export("lake", list_id, {"prefix": "Tables/customers", "mode": "folder"}, version=3)
    assert status == 201 and body["version"] == 3 and body["format"] == "auto"
