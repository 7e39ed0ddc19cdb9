"""Parquet files and Delta tables laid out as their producers write them, holding the same people: the
test data of test_parquet_delta.py.

- Adobe Experience Platform, Azure Blob destination, Parquet export: one file per audience and export,
  named `<destination>_<audience id>_<YYYYMMDDHHMMSS>.parquet`, XDM fields as struct columns
  (`personalEmail.address`, `person.name.firstName`, `mobilePhone.number`, `loyalty.points`) and the
  `identityMap` map column.
  https://experienceleague.adobe.com/en/docs/experience-platform/destinations/catalog/cloud-storage/azure-blob
  https://experienceleague.adobe.com/en/docs/experience-platform/destinations/ui/activate/activate-batch-profile-destinations
- Spark (Databricks, Synapse, Fabric notebooks) `df.write.parquet(path)`: a folder of
  `part-<n>-<uuid>-c000.snappy.parquet` files, a `_SUCCESS` marker and hidden `.crc` checksums.
  https://spark.apache.org/docs/latest/sql-data-sources-parquet.html
- Fabric Lakehouse (`Tables/<table>`) and Databricks tables: Delta tables, written here with delta-rs
  `write_deltalake` (the writer Fabric's Python notebooks document) in several commits, one deleting rows.
  https://learn.microsoft.com/en-us/fabric/data-engineering/lakehouse-and-delta-tables
  https://delta-io.github.io/delta-rs/usage/writing/
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

AEP_FILE = "Azure_Blob_Storage_6f0c1a52-3e8b-4c57-9d2a-1b2f6a7e9c10_20261207101500.parquet"

# email, first name, phone, loyalty points, lifetime value, vip, last purchase, note
PEOPLE: list[tuple[Any, ...]] = [
    (
        " Ann.Lee@Example.com",
        "Ann",
        None,
        120,
        1234.5,
        True,
        datetime(2026, 11, 30, 8, 15, tzinfo=UTC),
        'likes "quotes", commas',
    ),
    ("zoe@example.org", "Zoë", "", 0, None, False, None, "line one\r\nline two"),
    ("lukasz@example.pl", "Łukasz", None, None, 0.1, None, datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC), ""),
    ("watanabe@example.jp", "渡辺", None, 7, 99.99, True, None, None),
    (None, "NoMail", "+14155550101", 3, None, None, None, "phone only"),
    ("not-an-email", "Bad", None, 1, None, None, None, None),
    ("bob@example.com", "Bob", "(415) 555-0102", 42, 1e21, False, None, "back\\slash"),
    ("carol@example.com", "", None, None, None, None, None, None),
]
# What Klaviyo holds for each valid person: identifier -> (first name, properties).
EXPECTED: dict[str, tuple[str | None, dict[str, Any]]] = {
    "ann.lee@example.com": (
        "Ann",
        {
            "points": 120,
            "ltv": 1234.5,
            "vip": True,
            "last_purchase": "2026-11-30T08:15:00Z",
            "note": 'likes "quotes", commas',
        },
    ),
    "zoe@example.org": ("Zoë", {"points": 0, "vip": False, "note": "line one\r\nline two"}),
    "lukasz@example.pl": ("Łukasz", {"ltv": 0.1, "last_purchase": "2026-01-02T03:04:05.250000Z"}),
    "watanabe@example.jp": ("渡辺", {"points": 7, "ltv": 99.99, "vip": True}),
    "+14155550101": ("NoMail", {"points": 3, "note": "phone only"}),
    "bob@example.com": ("Bob", {"points": 42, "ltv": 1e21, "vip": False, "note": "back\\slash"}),
    "carol@example.com": (None, {}),
}
BAD_ROW = 6  # not-an-email, 1-based within its file
PROPERTIES = ["points", "ltv", "vip", "last_purchase", "note"]
FLAT_MAPPING = ["--email-field", "email", "--map", "first_name=first_name", "--map", "phone_number=phone"] + [
    arg for name in PROPERTIES for arg in ("--map", f"properties.{name}={name}")
]


def flat_table(people: list[tuple[Any, ...]]) -> pa.Table:
    """The people as a Spark or Delta table writes them: one column per field, Spark's types."""
    columns = list(zip(*people, strict=True)) if people else [[]] * 8
    return pa.table(
        {
            "email": pa.array(columns[0], pa.string()),
            "first_name": pa.array(columns[1], pa.string()),
            "phone": pa.array(columns[2], pa.string()),
            "points": pa.array(columns[3], pa.int64()),
            "ltv": pa.array(columns[4], pa.float64()),
            "vip": pa.array(columns[5], pa.bool_()),
            "last_purchase": pa.array(columns[6], pa.timestamp("us", "UTC")),
            "note": pa.array(columns[7], pa.string()),
        }
    )


def aep_table() -> pa.Table:
    """The people as an AEP Parquet export: XDM field groups as structs, identities in a map."""
    rows = [
        {
            "personalEmail": {"address": email} if email is not None else None,
            "person": {"name": {"firstName": first, "lastName": "Test"}},
            "mobilePhone": {"number": phone},
            "loyalty": {"points": points, "tier": "gold" if vip else None},
            "identityMap": [("ECID", [{"id": str(n), "primary": True}])],
        }
        for n, (email, first, phone, points, _ltv, vip, _since, _note) in enumerate(PEOPLE)
    ]
    schema = pa.schema(
        [
            ("personalEmail", pa.struct([("address", pa.string())])),
            ("person", pa.struct([("name", pa.struct([("firstName", pa.string()), ("lastName", pa.string())]))])),
            ("mobilePhone", pa.struct([("number", pa.string())])),
            ("loyalty", pa.struct([("points", pa.int32()), ("tier", pa.string())])),
            (
                "identityMap",
                pa.map_(pa.string(), pa.list_(pa.struct([("id", pa.string()), ("primary", pa.bool_())]))),
            ),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


AEP_MAPPING = [
    "--email-field",
    "personalEmail.address",
    "--map",
    "first_name=person.name.firstName",
    "--map",
    "phone_number=mobilePhone.number",
    "--map",
    "properties.points=loyalty.points",
    "--map",
    "properties.tier=loyalty.tier",
]


def write_aep(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / AEP_FILE
    pq.write_table(aep_table(), path, compression="snappy")
    return path


def write_spark_folder(folder: Path) -> list[Path]:
    """Two part files (people split across them), `_SUCCESS` and hidden `.crc` files, as Spark writes."""
    folder.mkdir(parents=True, exist_ok=True)
    job = uuid.UUID(int=0x5A5A).hex
    job = f"{job[:8]}-{job[8:12]}-{job[12:16]}-{job[16:20]}-{job[20:]}"
    parts = []
    for n, people in enumerate((PEOPLE[:4], PEOPLE[4:])):
        path = folder / f"part-{n:05d}-{job}-c000.snappy.parquet"
        pq.write_table(flat_table(people), path, compression="snappy")
        (folder / f".{path.name}.crc").write_bytes(b"crc\x00\x01")
        parts.append(path)
    (folder / "_SUCCESS").write_bytes(b"")
    (folder / "._SUCCESS.crc").write_bytes(b"crc")
    return parts


# Delta: version 0 holds the first five people and two who leave, version 1 appends the rest, version 2
# deletes the two who left (their file is rewritten: the union of the folder's files still holds them).
LEFT = [
    ("left1@example.com", "Gone", None, 1, None, None, None, None),
    ("left2@example.com", "Gone", None, 2, None, None, None, None),
]


def write_delta(folder: Path) -> None:
    from deltalake import DeltaTable, write_deltalake

    write_deltalake(str(folder), flat_table(PEOPLE[:5] + LEFT))
    write_deltalake(str(folder), flat_table(PEOPLE[5:]), mode="append")
    DeltaTable(str(folder)).delete("first_name = 'Gone'")


def upload_folder(container: Any, folder: Path, prefix: str, log_last: bool = True) -> list[str]:
    """Uploads every file under the folder to `prefix`, the Delta log last (as a writer commits it)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if log_last:
        files.sort(key=lambda p: "_delta_log" in p.parts)
    names = []
    for path in files:
        name = prefix + path.relative_to(folder).as_posix()
        container.upload_blob(name, path.read_bytes(), overwrite=True)
        names.append(name)
    return names
