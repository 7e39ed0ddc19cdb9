"""Producers' metadata is never read as data, in any mode; newest mode reads the newest complete set."""

from __future__ import annotations

import pytest

from shared.sources import is_data_part, local_segment
from tests.conftest import App, Exporter, member_emails
from tools.klaviyo_sim import KlaviyoSimulator


def csv(*emails: str) -> bytes:
    return ("email\n" + "".join(f"{e}\n" for e in emails)).encode()


# What Delta tables (https://github.com/delta-io/delta/blob/master/PROTOCOL.md), Common Data Model folders,
# Spark and Hadoop (_SUCCESS, _committed_*, _started_*, hidden .crc checksums) write beside the data.
METADATA = {
    "_delta_log/00000000000000000000.json": b'{"commitInfo": {"email": "log@example.com"}}\n',
    "_delta_log/00000000000000000000.crc": b'{"tableSizeBytes": 1}',
    "_delta_log/_last_checkpoint": b'{"version": 0}',
    "model.json": b'{"name": "cdm", "entities": []}',
    "Contacts.cdm.json": b'{"jsonSchemaSemanticVersion": "1.0.0"}',
    "default.manifest.cdm.json": b'{"manifestName": "default"}',
    "part-00000.csv.crc": b"crc\x00",
    ".part-00000.csv.crc": b"crc\x00",
    "_SUCCESS": b"",
    "_committed_2931": b'{"added": ["part-00000.csv"]}',
    "_started_2931": b"",
    "empty.csv": b"",
}


@pytest.mark.parametrize("name", sorted(METADATA))
def test_metadata_names_and_empty_files_are_not_data_parts(name: str):
    assert not is_data_part(f"segments/vip/{name}", len(METADATA[name]) or 0)


def test_a_folder_segment_reads_only_its_data_parts(exporter: Exporter, klaviyo: KlaviyoSimulator):
    for name, data in METADATA.items():
        exporter.upload(f"lake/vip/{name}", data)
    exporter.upload("lake/vip/part-00000.csv", csv("a@example.com"))
    exporter.upload("lake/vip/part-00001.csv", csv("b@example.com"))
    report = exporter.run("lake/vip/")
    assert report.counts.rows_read == 2 and exporter.rejects_rows == []
    assert member_emails(klaviyo, exporter.list_id) == {"a@example.com", "b@example.com"}


def test_a_local_folder_reads_only_its_data_parts(tmp_path):
    for name, data in METADATA.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    (tmp_path / "part-00000.csv").write_bytes(csv("a@example.com"))
    rows = list(local_segment(tmp_path).rows())
    assert [(r.source.rsplit("/", 1)[-1], r.fields) for r in rows] == [("part-00000.csv", {"email": "a@example.com"})]


def test_newest_mode_reads_every_part_of_the_newest_run_and_no_metadata(app: App, klaviyo: KlaviyoSimulator):
    list_id = klaviyo.create_list("Newest")
    app.put_connection()
    app.put_export("runs", list_id, {"prefix": "lake/vip/", "mode": "newest"})
    app.upload("lake/vip/run=2026-12-06/part-00000.csv", csv("old@example.com"))
    app.upload("lake/vip/run=2026-12-06/_SUCCESS", b"")
    app.upload("lake/vip/run=2026-12-07/part-00000.csv", csv("a@example.com"))
    app.upload("lake/vip/run=2026-12-07/part-00001.csv", csv("b@example.com"))
    app.upload("lake/vip/run=2026-12-07/part-00002.csv", csv("c@example.com"))
    for name, data in METADATA.items():  # metadata landing after the parts is not the newest data
        app.upload(f"lake/vip/run=2026-12-07/{name}", data)
    app.functions["segment_dropped"](
        app.services.blobs.get_blob_client(app.segments, "lake/vip/run=2026-12-07/part-00002.csv")
    )
    assert app.drain_queue() == 1
    assert member_emails(klaviyo, list_id) == {"a@example.com", "b@example.com", "c@example.com"}
    [run] = app.services.store.runs_of("runs")
    assert run["source_version"].count(",") == 2  # the three parts' etags
