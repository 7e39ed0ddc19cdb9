"""Secrets and personal data: full exports through the app (succeeding and failing ones) and the
command line; neither an API key nor any input email, phone number or name appears in a log record,
a report, a rejects file, a run record or an HTTP response. Only masked forms do."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.cli import main as cli_main
from shared.mapping import FieldMapping, ProfileMapper
from shared.mapping.normalize import normalize_email, normalize_phone
from shared.mapping.rows import Rejection
from shared.privacy import mask_email, redact
from tests.conftest import API_KEY, SECRET, App
from tools.keyvault_sim import LocalKeyVault
from tools.klaviyo_sim import KlaviyoSimulator
from tools.segment_gen import Expected, generate_rows

BAD_KEY = "pk_leaked_if_you_can_read_this_9f8e7d"
# (email, phone, first name): valid, padded, IDN, invalid in several ways, duplicate, phone only.
PEOPLE = [
    ("zelda.quixote@example.com", "(212) 555-0142", "Zeldarine"),
    ("  Yannick.Obrecht@Example.org ", "+44 20 7946 0958", "Yannickou"),
    ("xavier.pemberton@bücher.de", "", "Xavieronne"),
    ("wilhelmina vantreight@example.com", "", "Wilhelmintha"),
    ("velvet.orsolya@ex\u0660\u0661.com", "", "Velvetina"),
    ('"ulysses mcgee"@example.com', "", "Ulyssandro"),
    ("tamsin.heathcote@example.com", "555-0123", "Tamsinella"),
    ("ZELDA.QUIXOTE@EXAMPLE.COM", "", "Zeldarine"),
    ("", "+1 (646) 555-0199", "Sorchalynn"),
    ("rasmus.ottoline@example.net", "+999 123 456", "Rasmussino"),
    ("quentin.abernathy@", "", "Quentinus"),
]


def segment_bytes(extra: int = 3000) -> tuple[bytes, list[dict[str, str]]]:
    rows = [{"email": e, "phone": p, "first_name": n} for e, p, n in PEOPLE]
    rows += [
        {"email": r["email"], "phone": r["phone"], "first_name": r["first_name"]}
        for r in generate_rows(extra, seed=31, expected=Expected())
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, ["email", "phone", "first_name"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode(), rows


def forbidden(rows: list[dict[str, str]]) -> set[str]:
    """Every form an input email or phone number (or one of the distinctive names) could take; only
    strings long enough to be found by chance nowhere else (not "12" or "a@b")."""
    found: set[str] = {BAD_KEY, API_KEY}
    for row in rows:
        email, phone = row["email"].strip(), row["phone"].strip()
        if len(email) >= 6:
            found |= {email, email.lower()}
            with contextlib.suppress(ValueError):
                found.add(normalize_email(email))
        digits = "".join(c for c in phone if c.isdigit())
        if len(digits) >= 7:
            found |= {phone, digits}
            with contextlib.suppress(ValueError):
                found.add(normalize_phone(phone, "US"))
    found |= {name for _, _, name in PEOPLE}
    return found


class Recorder:
    """Every HTTP response body the app gives, as text."""

    def __init__(self, app: App) -> None:
        self.app, self.bodies = app, []

    def http(self, *args, **kwargs):
        status, body, response = self.app.http(*args, **kwargs)
        self.bodies.append(response.get_body().decode())
        for key, value in response.headers.items():
            self.bodies.append(f"{key}: {value}")
        return status, body, response


def every_blob(app: App, container: str) -> Iterator[str]:
    client = app.services.blobs.get_container_client(container)
    for blob in client.list_blobs():
        yield blob.name + "\n" + client.download_blob(blob.name).readall().decode("utf-8", "replace")


@pytest.mark.slow
def test_no_key_email_phone_or_name_leaves_the_app_in_logs_reports_rejects_or_responses(
    app: App, klaviyo: KlaviyoSimulator, vault: LocalKeyVault, caplog, capsys, monkeypatch, tmp_path
) -> None:
    caplog.set_level(logging.DEBUG)
    api = Recorder(app)
    data, rows = segment_bytes()
    headerless = data.split(b"\n", 1)[1]
    app.upload("people.csv", data)
    app.upload("no-header.csv", headerless)
    vault.set_secret("klaviyo-wrong", BAD_KEY)
    mapping = {"email": "email", "phone_number": "phone", "first_name": "first_name"}
    api.http(
        "connections",
        "PUT",
        "connections/main",
        {"display_name": "Main", "secret_name": SECRET, "usable_by": "contributors", "privacy_consent": True},
        name="main",
    )
    api.http(
        "connections",
        "PUT",
        "connections/wrong",
        {"display_name": "Wrong key", "secret_name": "klaviyo-wrong", "privacy_consent": True},
        name="wrong",
    )
    gone = klaviyo.create_list("Gone")
    exports = {
        "people": ("main", klaviyo.create_list("People"), "people.csv"),
        "wrong-key": ("wrong", klaviyo.create_list("W"), "people.csv"),
        "list-gone": ("main", gone, "people.csv"),
        "no-header": ("main", klaviyo.create_list("H"), "no-header.csv"),
    }
    for name, (connection, list_id, blob) in exports.items():
        body = {
            "connection": connection,
            "list_id": list_id,
            "segment": {"container": app.segments, "blob": blob},
            "mapping": mapping,
        }
        assert api.http("exports", "PUT", f"exports/{name}", body, name=name)[0] == 201
    klaviyo.delete_list(gone)
    klaviyo.configure(profile_failure_rate=0.2)  # some profiles fail inside Klaviyo's jobs
    runs = {name: api.http("export_runs", "POST", f"exports/{name}/runs", name=name)[1] for name in exports}
    assert app.drain_queue() == len(exports)

    outcomes = {}
    for name, run in runs.items():
        _, done, _ = api.http("run_status", "GET", f"runs/{run['run_id']}", run_id=run["run_id"])
        outcomes[name] = done["status"]
        api.http("export_runs", "GET", f"exports/{name}/runs", name=name)
    api.http("exports", "GET", "exports")
    api.http("connections", "GET", "connections")
    assert outcomes == {
        "people": "completed_with_rejects",
        "wrong-key": "failed",
        "list-gone": "failed",
        "no-header": "failed",
    }

    # The command line too, with a good key and a bad one.
    local = tmp_path / "people.csv"
    local.write_bytes(data)
    monkeypatch.setenv("KLAVIYO_BASE_URL", klaviyo.url)
    report_path = tmp_path / "out" / "report.json"
    for key in (API_KEY, BAD_KEY):
        monkeypatch.setenv("KLAVIYO_API_KEY", key)
        args = ["run", str(local), "--list-id", exports["people"][1], "--map", "phone_number=phone"]
        cli_main([*args, "--map", "first_name=first_name", "--report", str(report_path), "--no-progress"])
    printed = capsys.readouterr()

    texts = {
        "logs": "\n".join(logging.Formatter().format(r) for r in caplog.records if not r.name.startswith("tools")),
        "responses": "\n".join(api.bodies),
        "reports": "\n".join(every_blob(app, app.services.settings.reports_container)),
        "cli": "\n".join(
            [printed.out, printed.err, report_path.read_text(), report_path.with_name("report.rejects.csv").read_text()]
        ),
        "run records": orjson.dumps([app.services.store.runs_of(name) for name in exports]).decode(),
    }
    assert "rejects.csv" in texts["reports"] and "***@" in texts["reports"], "the reports were read"
    assert len(caplog.records) > 50, "the logs were captured"
    secrets = forbidden(rows)
    for where, text in texts.items():
        leaked = sorted(s for s in secrets if s in text)
        assert not leaked, f"{where} holds {leaked[:5]}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("Invalid email 'zelda.q@example.com'.", "Invalid email 'z***@e***'.", id="quoted-email"),
        pytest.param("+12125550142 belongs to profile 01ABC.", "+***42 belongs to profile 01ABC.", id="e164-phone"),
        pytest.param("<ann@example.com> and bob@x.org", "<a***@e***> and b***@x***", id="two-emails"),
        pytest.param("revision 2026-07-15 is retired", "revision 2026-07-15 is retired", id="a-date-is-kept"),
        pytest.param("A job holds at most 10,000 profiles.", "A job holds at most 10,000 profiles.", id="counts"),
    ],
)
def test_klaviyo_texts_are_redacted_before_they_reach_a_report(text: str, expected: str) -> None:
    assert redact(text) == expected


# A label no English reason holds: at least two digits among letters (also non-ASCII ones).
LABEL = st.from_regex(r"\A[a-zà-ÿ\u0660-\u0669_.-]{0,4}[0-9][a-zà-ÿ\u0660-\u0669_ -]{0,4}[0-9][a-z-]{0,3}\Z")


@settings(max_examples=300, deadline=None)
@given(local=LABEL, labels=st.lists(LABEL, min_size=1, max_size=3), tld=st.sampled_from(["com", "c0m", "x--y", ""]))
def test_an_email_rejection_never_quotes_a_part_of_the_address(local: str, labels: list[str], tld: str) -> None:
    address = f"{local}@{'.'.join(labels)}" + (f".{tld}" if tld else "")
    result = ProfileMapper(FieldMapping()).map({"email": address})
    if isinstance(result, Rejection):
        parts = [local, *labels, address.split("@", 1)[1]]
        assert not [p for p in parts if len(p.strip()) >= 2 and p.strip() in result.reason], result.reason
        assert result.masked == mask_email(address.strip())
