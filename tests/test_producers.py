"""Segments as real producers write them (Spark/Databricks, Azure Data Factory, Adobe Experience Platform),
exported with the command line and through the app's blob trigger: exactly the expected list members.

Each fixture is written by a small writer that follows the producer's documented CSV defaults (header or
not, quoting, escaping, empty and null values, line ends, file names); the URL of the page is beside it."""

from __future__ import annotations

import csv
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from shared.cli import EXIT_OK, main
from tests.conftest import App
from tools.klaviyo_sim import KlaviyoSimulator

Person = dict[str, str | None]
# People with the values that break naive readers: commas, quotes, embedded LF and CRLF, non-ASCII
# names, an empty and a null value; one invalid email (rejected) and one repeated (a duplicate).
PEOPLE: list[Person] = [
    {"id": "1", "email": "ann@example.com", "first": "Ann", "last": "O'Neil", "city": "Portland, OR"},
    {"id": "2", "email": "bob@example.com", "first": 'Bob "Bobby"', "last": "Smith", "city": '12" Street'},
    {"id": "3", "email": "chloe@example.fr", "first": "Chloé", "last": "Brontë", "city": "Zürich"},
    {"id": "4", "email": "dmitri@example.com", "first": "Дмитрий", "last": "Иванов", "city": "Москва"},
    {"id": "5", "email": "eve@example.com", "first": "Eve\nMarie", "last": "Adams", "city": "Leeds"},
    {"id": "6", "email": "frank@example.com", "first": "Frank", "last": "", "city": "Oslo"},
    {"id": "7", "email": "grace@example.com", "first": "Grace", "last": None, "city": None},
    {"id": "8", "email": "hiro@example.jp", "first": "博", "last": "山田", "city": "東京"},
    {"id": "9", "email": "ines@example.com", "first": "Inés", "last": "Line1\r\nLine2", "city": '"Quoted"'},
    {"id": "10", "email": "not-an-email", "first": "Nobody", "last": "X", "city": "Nowhere"},
    {"id": "11", "email": "ann@example.com", "first": "Ann again", "last": "Dup", "city": "Portland"},
]
COLUMNS = ("id", "email", "first", "last", "city")
VALID = PEOPLE[:9]
MAPPING = {"email": "email", "first_name": "first", "last_name": "last", "properties": {"city": "city"}}


def expected_members() -> set[tuple]:
    return {(p["email"], p["first"] or None, p["last"] or None, p["city"] or None) for p in VALID}


def members(klaviyo: KlaviyoSimulator, list_id: str) -> set[tuple]:
    return {
        (m["email"], m.get("first_name"), m.get("last_name"), (m.get("properties") or {}).get("city"))
        for m in klaviyo.list_members(list_id)
    }


def spark_csv(rows: list[Person], columns: tuple[str, ...], header: bool = False) -> bytes:
    """Spark's CSV writer with its default options (https://spark.apache.org/docs/latest/sql-data-sources-csv.html):
    header false; quote `"`; escape `\\` for a quote inside a quoted value (escapeQuotes true quotes every
    value holding one); a value holding the separator or a line break quoted; emptyValue `""` and
    nullValue empty on write; lineSep `\\n`."""

    def value(v: str | None) -> str:
        if v is None:
            return ""
        if v == "":
            return '""'
        if any(c in v for c in ',"\n\r'):
            return '"' + v.replace('"', '\\"') + '"'
        return v

    lines = [",".join(columns)] if header else []
    lines += [",".join(value(row[c]) for c in columns) for row in rows]
    return "".join(line + "\n" for line in lines).encode()


def adf_csv(rows: list[Person], columns: tuple[str, ...]) -> bytes:
    """Azure Data Factory's copy activity to DelimitedText with the dataset defaults
    (https://learn.microsoft.com/azure/data-factory/format-delimited-text): firstRowAsHeader false,
    columnDelimiter `,`, quoteChar `"`, escapeChar `\\`, nullValue empty string, rowDelimiter `\\r\\n` on
    write by the copy activity."""

    def value(v: str | None) -> str:
        if not v:
            return ""
        if any(c in v for c in ',"\n\r'):
            return '"' + v.replace('"', '\\"') + '"'
        return v

    return "".join(",".join(value(row[c]) for c in columns) + "\r\n" for row in rows).encode()


# Experience Platform names columns by their XDM paths (the mapping step's target fields).
XDM = {"id": "identityMap.crmId", "email": "personalEmail.address", "first": "person.name.firstName"}
XDM |= {"last": "person.name.lastName", "city": "homeAddress.city"}


def aep_csv(rows: list[Person]) -> bytes:
    """Adobe Experience Platform's cloud storage destinations, CSV with the default file formatting
    (https://experienceleague.adobe.com/en/docs/experience-platform/destinations/destination-sdk/functionality/destination-server/file-formatting):
    header true, quote `"`, escape `\\`, quoteAll false, nullValue and emptyValue both written `""`, columns
    named by XDM path such as `personalEmail.address`."""

    def value(v: str | None) -> str:
        if not v:
            return '""'
        if any(c in v for c in ',"\n\r'):
            return '"' + v.replace('"', '\\"') + '"'
        return v

    lines = [",".join(XDM[c] for c in COLUMNS)]
    lines += [",".join(value(row[c]) for c in COLUMNS) for row in rows]
    return "".join(line + "\n" for line in lines).encode()


def spark_folder(put: Callable[[str, bytes], None], folder: str) -> None:
    """A Spark output folder (two tasks): part-0000N-<uuid>-c000.csv files, their hidden .crc checksums,
    and _SUCCESS (empty) written last when the job commits."""
    job = uuid.UUID(int=17)
    halves = [PEOPLE[:6], PEOPLE[6:]]
    for n, rows in enumerate(halves):
        name = f"part-{n:05d}-{job}-c000.csv"
        put(f"{folder}/{name}", spark_csv(rows, COLUMNS))
        put(f"{folder}/.{name}.crc", b"crc\x00\x00\x00\x00\x12\x34\x56\x78")
    put(f"{folder}/._SUCCESS.crc", b"crc\x00\x00\x00\x00\x00\x00\x00\x00")
    put(f"{folder}/_SUCCESS", b"")


def write_local(root: Path) -> Callable[[str, bytes], None]:
    def put(name: str, data: bytes) -> None:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return put


# -- the command line ---------------------------------------------------------------------------------
def run_cli(segment: Path, list_id: str, tmp_path: Path, *options: str, names: dict[str, str] | None = None) -> dict:
    """Runs `klaviyo-export run` on the segment with MAPPING's columns (renamed by `names`); the report,
    with its rejects as (file name, row, outcome, reason)."""
    names = names or {c: c for c in COLUMNS}
    maps = [f"first_name={names['first']}", f"last_name={names['last']}", f"properties.city={names['city']}"]
    report = tmp_path / "out" / "report.json"
    argv = ["run", str(segment), "--list-id", list_id, "--email-field", names["email"], "--report", str(report)]
    code = main([*argv, *[a for m in maps for a in ("--map", m)], "--no-progress", *options])
    assert code == EXIT_OK
    result = orjson.loads(report.read_bytes())
    with open(result["rejects_file"], newline="", encoding="utf-8") as f:
        lines = list(csv.DictReader(f))
    result["rejects"] = [(Path(r["source"]).name, int(r["row"]), r["outcome"], r["reason"]) for r in lines]
    return result


def test_a_spark_folder_exports_through_the_cli(env, tmp_path, klaviyo, list_id):
    spark_folder(write_local(tmp_path / "lake"), "vip")
    report = run_cli(
        tmp_path / "lake" / "vip", list_id, tmp_path, "--no-header", "--columns", ",".join(COLUMNS), "--escape", "\\"
    )
    assert members(klaviyo, list_id) == expected_members()
    part1 = f"part-00001-{uuid.UUID(int=17)}-c000.csv"
    assert report["rejects"] == [
        (part1, 5, "rejected", "email is not valid: An email address must have an @-sign."),  # line 4 is Inés'
        (part1, 6, "duplicate", "same identifier as an earlier row; the first row was kept"),
    ]


def test_a_spark_folder_without_the_escape_setting_says_to_set_it(env, tmp_path, klaviyo, list_id):
    spark_folder(write_local(tmp_path / "lake"), "vip")
    report = run_cli(tmp_path / "lake" / "vip", list_id, tmp_path, "--no-header", "--columns", ",".join(COLUMNS))
    part0, part1 = (f"part-0000{n}-{uuid.UUID(int=17)}-c000.csv" for n in (0, 1))
    assert report["rejects"] == [
        (part0, 2, "rejected", "looks backslash-escaped: set escape"),  # Bob "Bobby"
        (part1, 3, "rejected", "looks backslash-escaped: set escape"),  # Inés: "Quoted" (the record's 2nd line)
        (part1, 4, "rejected", "looks backslash-escaped: set escape"),  # that line, read again as a row
        (part1, 5, "rejected", "email is not valid: An email address must have an @-sign."),
        (part1, 6, "duplicate", "same identifier as an earlier row; the first row was kept"),
    ]
    assert ("ann@example.com", "Ann", "O'Neil", "Portland, OR") in members(klaviyo, list_id)


def test_a_data_factory_file_exports_through_the_cli(env, tmp_path, klaviyo, list_id):
    path = tmp_path / "adf" / "customers.csv"
    path.parent.mkdir()
    path.write_bytes(adf_csv(PEOPLE, COLUMNS))
    report = run_cli(path, list_id, tmp_path, "--no-header", "--columns", ",".join(COLUMNS), "--escape", "\\")
    assert members(klaviyo, list_id) == expected_members()
    assert report["rejects"] == [  # Eve's and Inés' records span two lines each
        ("customers.csv", 12, "rejected", "email is not valid: An email address must have an @-sign."),
        ("customers.csv", 13, "duplicate", "same identifier as an earlier row; the first row was kept"),
    ]


def test_an_experience_platform_file_exports_through_the_cli(env, tmp_path, klaviyo, list_id):
    path = tmp_path / "aep" / f"Azure_Blob_Storage_{uuid.UUID(int=3)}_20261207_101500.csv"
    path.parent.mkdir()
    path.write_bytes(aep_csv(PEOPLE))
    report = run_cli(path, list_id, tmp_path, "--escape", "\\", names=XDM)
    assert members(klaviyo, list_id) == expected_members()
    assert [r[1:3] for r in report["rejects"]] == [(13, "rejected"), (14, "duplicate")]  # after the header


# -- the app's blob trigger ----------------------------------------------------------------------------
def trigger(app: App, blob: str) -> None:
    app.functions["segment_dropped"](app.services.blobs.get_blob_client(app.segments, blob))


def test_a_spark_folder_runs_when_spark_writes_success(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Spark")
    app.put_connection()
    dialect = {"header": False, "columns": list(COLUMNS), "escape": "\\"}
    status, body, _ = app.put_export(
        "spark", list_id, {"prefix": "lake/vip", "mode": "folder", "marker": "_SUCCESS"}, csv=dialect, mapping=MAPPING
    )
    assert status == 201 and body["csv"] == {**dialect, "quote": '"', "delimiter": None}
    spark_folder(app.upload, "lake/vip/run=2026-12-07")
    for name in ("part-00000", "part-00001"):
        trigger(app, f"lake/vip/run=2026-12-07/{name}-{uuid.UUID(int=17)}-c000.csv")
    assert app.drain_queue() == 0, "a part alone does not start a run"
    trigger(app, "lake/vip/run=2026-12-07/_SUCCESS")
    assert app.drain_queue() == 1
    assert members(klaviyo, list_id) == expected_members()


def test_a_data_factory_file_runs_when_it_lands(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("ADF")
    app.put_connection()
    dialect = {"header": False, "columns": list(COLUMNS), "escape": "\\"}
    app.put_export("adf", list_id, {"blob": "adf/customers/customers.csv"}, csv=dialect, mapping=MAPPING)
    app.upload("adf/customers/customers.csv", adf_csv(PEOPLE, COLUMNS))
    trigger(app, "adf/customers/customers.csv")
    assert app.drain_queue() == 1
    assert members(klaviyo, list_id) == expected_members()


def test_the_newest_experience_platform_file_runs_when_it_lands(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("AEP")
    app.put_connection()
    mapping = {"email": XDM["email"], "first_name": XDM["first"], "last_name": XDM["last"]}
    mapping["properties"] = {XDM["city"]: "city"}
    app.put_export("aep", list_id, {"prefix": "aep/", "mode": "newest"}, csv={"escape": "\\"}, mapping=mapping)
    audience = uuid.UUID(int=3)
    app.upload(f"aep/Azure_Blob_Storage_{audience}_20261206_101500.csv", aep_csv(PEOPLE[:2]))
    app.upload(f"aep/Azure_Blob_Storage_{audience}_20261207_101500.csv", aep_csv(PEOPLE))
    trigger(app, f"aep/Azure_Blob_Storage_{audience}_20261207_101500.csv")
    assert app.drain_queue() == 1
    assert members(klaviyo, list_id) == expected_members()


def test_csv_options_are_validated_naming_the_field(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Bad")
    app.put_connection()
    cases = [
        ({"header": False}, "without a header row the columns must be named"),
        ({"header": False, "columns": ["a", "a"]}, "a column is named twice: a"),
        ({"escape": "ab"}, "the escape must be one printable ASCII character"),
    ]
    for dialect, reason in cases:
        status, body, _ = app.put_export("bad", list_id, {"blob": "x.csv"}, csv=dialect)
        assert status == 400 and body["problems"] == [{"field": "csv", "reason": reason}], body
