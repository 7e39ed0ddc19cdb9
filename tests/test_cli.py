"""The klaviyo-export command: exit codes, the printed summary, the --report files."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shared.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from tests.conftest import member_emails


def write(tmp_path: Path, text: str, name: str = "segment.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_local_file_runs_and_writes_the_report(env, tmp_path, klaviyo, list_id, capsys):
    segment = write(tmp_path, "Email,Tier\nann@example.com,gold\nnope,silver\n")
    report_path = tmp_path / "out" / "report.json"
    code = main(
        [
            "run",
            str(segment),
            "--list-id",
            list_id,
            "--email-field",
            "Email",
            "--map",
            "properties.tier=Tier",
            "--report",
            str(report_path),
            "--no-progress",
        ]
    )
    assert code == EXIT_OK
    report = orjson.loads(report_path.read_bytes())
    assert report["counts"]["accepted"] == 1 and report["counts"]["rejected"] == 1
    rejects = Path(report["rejects_file"]).read_text()
    assert ",3," in rejects and "nope" not in rejects
    out = capsys.readouterr().out
    assert "rejected    1 invalid rows" in out and "ann@example.com" not in out
    assert member_emails(klaviyo, list_id) == {"ann@example.com"}


def test_blob_segment_and_report_saved_to_blob_storage(env, blob_service, container, klaviyo, list_id, capsys):
    container.upload_blob("in/seg.jsonl", b'{"email": "b@example.com"}\n')
    code = main(["run", f"{container.container_name}/in/seg.jsonl", "--list-id", list_id, "--no-progress"])
    assert code == EXIT_OK
    reports = [b.name for b in blob_service.get_container_client("reports").list_blobs(name_starts_with="cli/")]
    assert any(n.endswith("/report.json") for n in reports) and any(n.endswith("/rejects.csv") for n in reports)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--email-field", "mail"], "mapped column(s) missing from the header: mail", id="missing-column"),
        pytest.param(["--map", "nickname=Email"], "unknown profile field(s) nickname", id="unknown-field"),
        pytest.param(["--list-id", "NoSuchList"], "not found", id="unknown-list"),
    ],
)
def test_configuration_errors_exit_2_before_sending(env, tmp_path, klaviyo, list_id, capsys, args, message):
    segment = write(tmp_path, "email\nann@example.com\n")
    code = main(["run", str(segment), "--list-id", list_id, "--no-progress", *args])
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert klaviyo.stats["jobs_created"] == 0


def test_a_bad_key_exits_2_and_never_prints_the_key(env, monkeypatch, tmp_path, list_id, capsys):
    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_wrong_key_000000000000000")
    code = main(["run", str(write(tmp_path, "email\na@example.com\n")), "--list-id", list_id, "--no-progress"])
    captured = capsys.readouterr()
    assert code == EXIT_USAGE and "401" in captured.err
    assert "pk_wrong_key" not in captured.err + captured.out


def test_a_key_without_import_scopes_fails_the_run_with_exit_1(env, monkeypatch, tmp_path, klaviyo, list_id, capsys):
    # Read scopes pass the up-front check; the first import job is refused (403): the run fails at once.
    klaviyo.add_api_key("pk_read_only_key_000000000000", scopes=["lists:read", "profiles:read"])
    monkeypatch.setenv("KLAVIYO_API_KEY", "pk_read_only_key_000000000000")
    code = main(["run", str(write(tmp_path, "email\na@example.com\n")), "--list-id", list_id, "--no-progress"])
    out = capsys.readouterr().out
    assert code == EXIT_FAILED
    assert "failed" in out and "lacks a required scope" in out
    assert klaviyo.list_members(list_id) == []


def test_dry_run_sends_nothing(env, tmp_path, klaviyo, list_id, capsys):
    code = main(
        [
            "run",
            str(write(tmp_path, "email\na@example.com\nb@example.com\n")),
            "--list-id",
            list_id,
            "--dry-run",
            "--no-progress",
        ]
    )
    assert code == EXIT_OK and klaviyo.stats["requests"] == 0
    assert "dry run: nothing sent" in capsys.readouterr().out
