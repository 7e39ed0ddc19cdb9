"""Bad input, end to end through the engine: each kind of damage gets its documented outcome (a row
rejected with its number and the rest sent, or a clear run-level error), memory stays bounded, and
whatever bytes come in, every row is accounted for as sent, rejected or duplicate."""

from __future__ import annotations

import csv
import gzip
import io
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.engine import ConfigurationError, ExportSpec, RejectsFile, RunReport, run_export
from shared.engine.status import COMPLETED_WITH_REJECTS, FAILED, SUCCEEDED
from shared.mapping import FieldMapping
from shared.sources import csv_blocks, local_segment
from shared.sources.checked_stream import MAX_LINE_BYTES
from tests.conftest import Exporter, member_emails
from tools.klaviyo_sim import KlaviyoSimulator

EMAIL_NAME = FieldMapping({"email": "email", "first_name": "name"})
EMAIL_PHONE = FieldMapping({"email": "email", "phone_number": "phone"})


def rejected(exporter: Exporter) -> dict[int, str]:
    return {int(line[1]): line[5] for line in exporter.rejects_rows if line[3] == "rejected"}


def assert_accounted(report: RunReport, rows: int) -> None:
    c = report.counts
    assert c.rows_read == rows
    assert c.sent + c.rejected + c.duplicates + c.not_sent == rows
    assert c.accepted + c.failed == c.sent


# -- a row is rejected with its number, the rest goes on ----------------------------------------------------

ROW_CASES = [
    pytest.param(
        b"email,name\na@example.com,Ann\nb@example.com,B\xe9atrice\nc@example.com,Cy\n",
        {3: "row holds bytes that are not valid UTF-8"},
        {"a", "c"},
        id="undecodable-bytes",
    ),
    pytest.param(
        b"email,name\na@example.com,An\x00n\nb@example.com,Bob\nc@example.com,Cy\n",
        {2: "row holds a NUL byte"},
        {"b", "c"},
        id="nul-byte",
    ),
    pytest.param(
        b"email,name\na@example.com\nb@example.com,Bob,extra\nc@example.com,Cy\n\n",
        {2: "row has 1 fields but the header has 2", 3: "row has 3 fields but the header has 2"},
        {"c"},
        id="ragged-rows",
    ),
    pytest.param(
        b'email,name\na@example.com,"Ann\nb@example.com,Bob\nc@example.com,Cy\n',
        {
            2: "a quoted field is never closed (an unbalanced quote); the record ran on to line 4, so the lines"
            " after this one are read again as rows"
        },
        {"b", "c"},
        id="unterminated-quote",
    ),
    pytest.param(
        b'email,name\na@example.com,"Ann\nb@example.com,Bob\nc@example.com,"Cy"x\nd@example.com,Dee\n',
        {
            2: "a closing quote is followed by more text (an unbalanced quote); the record ran on to line 4, so the"
            " lines after this one are read again as rows",
            4: "a closing quote is followed by more text (an unbalanced quote)",
        },
        {"b", "d"},
        id="stray-quotes",
    ),
    pytest.param(
        b"email,name\na@example.com," + b"x" * 200_000 + b"\nb@example.com,Bob\nc@example.com,Cy\n",
        {2: "a field is longer than 131,072 characters"},
        {"b", "c"},
        id="field-over-131072-characters",
    ),
    pytest.param(
        b"email,name\na@example.com," + b"x" * (5 * 1024 * 1024) + b"\r\nb@example.com,Bob\r\nc@example.com,Cy\r\n",
        {2: f"the line is longer than {MAX_LINE_BYTES:,} bytes; the rest of it was skipped"},
        {"b", "c"},
        id="line-of-5-MB",
    ),
    pytest.param(
        b"\n\r\nemail,name\na@example.com,Ann\nb@example.com,Bob\n",
        {},
        {"a", "b"},
        id="blank-lines-before-the-header",
    ),
]


@pytest.mark.parametrize(("data", "reasons", "sent"), ROW_CASES)
def test_a_damaged_row_is_rejected_with_its_number_and_the_rest_is_sent(
    exporter: Exporter,
    klaviyo: KlaviyoSimulator,
    list_id: str,
    data: bytes,
    reasons: dict[int, str],
    sent: set[str],
) -> None:
    report = exporter.run(exporter.upload("damaged.csv", data), EMAIL_NAME)
    assert rejected(exporter) == reasons
    assert member_emails(klaviyo, list_id) == {f"{name}@example.com" for name in sent}
    assert report.status == (COMPLETED_WITH_REJECTS if reasons else SUCCEEDED)
    assert_accounted(report, len(sent) + len(reasons))


# -- the file as a whole: a clear run-level outcome -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        pytest.param("empty.csv", b"", "the file is empty: no header row", id="0-bytes"),
        pytest.param("empty.jsonl", b"", None, id="0-bytes-jsonl"),
        pytest.param("blank.csv", b"\n\n\r\n", "the file is empty: no header row", id="only-blank-lines"),
        pytest.param(
            "dup.csv", b"email,name,Email,name\na,b,c,d\n", "names a column twice: name", id="duplicate-columns"
        ),
        pytest.param(
            "utf16.csv", "email,name\na@example.com,Ann\n".encode("utf-16-le"), "NUL bytes", id="utf-16-no-bom"
        ),
        pytest.param("utf16bom.csv", "email\n".encode("utf-16"), "not valid UTF-8", id="utf-16-with-bom"),
        pytest.param("header.csv", b"email,name\r\n", None, id="header-only"),
    ],
)
def test_a_file_that_holds_no_rows_is_refused_before_anything_is_sent_or_sends_nothing(
    exporter: Exporter, klaviyo: KlaviyoSimulator, name: str, data: bytes, message: str | None
) -> None:
    if message is None:
        report = exporter.run(exporter.upload(name, data))
        assert report.status == SUCCEEDED and report.counts.rows_read == 0
    else:
        with pytest.raises(ConfigurationError, match=message) as info:
            exporter.run(exporter.upload(name, data))
        assert name in str(info.value)
    assert klaviyo.stats["jobs_created"] == 0


def test_a_truncated_gzip_fails_the_run_naming_the_file_and_accounts_for_what_was_read(tmp_path: Path) -> None:
    rows = [f"t{i}@example.com" for i in range(400_000)]
    data = gzip.compress(("email\n" + "\n".join(rows) + "\n").encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(data[: len(data) * 2 // 3])
    report = run_export(local_segment(path), ExportSpec("cut", "L", FieldMapping(), dry_run=True), None)
    assert report.status == FAILED
    assert report.error and report.error.startswith(f"{path}: compressed data is damaged or truncated")
    c = report.counts
    assert 0 < c.rows_read < len(rows)
    assert c.sent + c.rejected + c.duplicates + c.not_sent == c.rows_read
    assert c.not_sent > 0, "the rows read but not yet sent are counted as such"


@pytest.mark.parametrize("name", ["bomb.csv.gz", "bomb.jsonl.gz"])
def test_a_gzip_expanding_past_the_limit_fails_the_run(tmp_path: Path, name: str) -> None:
    # That it is refused without holding the expanded data is shown for the readers in test_segments.
    line = b'{"email": "a@example.com"}\n' if "jsonl" in name else b"a@example.com\n"
    path = tmp_path / name
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(b"" if "jsonl" in name else b"email\n")
        for _ in range(16):
            out.write(line * (1024 * 1024 // len(line)))  # 16 MB once expanded
    source = local_segment(path)
    source.max_uncompressed_bytes = 2 * 1024 * 1024
    report = run_export(source, ExportSpec("bomb", "L", FieldMapping(), dry_run=True), None)
    assert report.status == FAILED
    assert report.error == f"{path}: expands past the limit of 2,097,152 uncompressed bytes; refused"
    assert report.counts.rows_read <= 2 * 1024 * 1024 // len(line)


@pytest.mark.parametrize(
    ("name", "outcome"),
    [
        pytest.param("nonl.csv", "the header row", id="csv"),
        pytest.param("nonl.jsonl", "line is longer than 1,000,000 bytes", id="jsonl"),
    ],
)
def test_a_file_without_line_breaks_is_not_read_whole_into_memory(tmp_path: Path, name: str, outcome: str) -> None:
    path = tmp_path / name
    with path.open("wb") as out:  # 64 MB on one line
        out.write(b'{"email": "a@example.com", "note": "' if "jsonl" in name else b"email,note")
        for _ in range(64):
            out.write(b"," * (1024 * 1024) if "csv" in name else b"y" * (1024 * 1024))
    tracemalloc.start()
    try:
        try:
            report = run_export(local_segment(path), ExportSpec("nonl", "L", FieldMapping(), dry_run=True), None)
            assert report.reasons.get("rejected") == {outcome: 1}
        except ConfigurationError as exc:
            assert outcome in str(exc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, "the line is cut, not held whole (64 MB, and a list of its fields)"


def test_json_lines_that_are_not_objects_are_rejected_with_their_line_numbers(
    exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str
) -> None:
    lines = [
        b'{"email": "a@example.com"}',
        b'["b@example.com"]',
        b'"c@example.com"',
        b"42",
        b"null",
        b"true",
        b'{"email": "d@example.com"',
        b'{"email": ["e@example.com"]}',
        b'{"email": "f@ex\xffample.com"}',
        b"",
        b'{"email": "g@example.com", "nested": {"ok": [1, 2]}}',
    ]
    report = exporter.run(exporter.upload("s.jsonl", b"\n".join(lines) + b"\n"))
    assert rejected(exporter) == {
        2: "line is a JSON list, not an object",
        3: "line is a JSON str, not an object",
        4: "line is a JSON int, not an object",
        5: "line is a JSON NoneType, not an object",
        6: "line is a JSON bool, not an object",
        7: "line is not valid JSON",
        8: "email is a JSON list, not text",
        9: "line is not valid UTF-8",
    }
    assert_accounted(report, 10)
    assert member_emails(klaviyo, list_id) == {"a@example.com", "g@example.com"}


def test_emails_with_spaces_unicode_domains_and_quotes(exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str):
    rows = [
        "  padded@example.com  ",  # 2 trimmed: sent
        "inner space@example.com",  # 3 rejected
        "user@bücher.de",  # 4 sent in its ASCII form
        "ünïcode@example.com",  # 5 rejected: Klaviyo takes no SMTPUTF8 local part
        "o'brien@example.com",  # 6 an apostrophe is allowed
        '"quoted local"@example.com',  # 7 rejected
        "tab\t@example.com",  # 8 rejected
        "USER@BÜCHER.DE",  # 9 the same address as row 4: duplicate
        "label@ex\u0660\u0661.com",  # 10 rejected, without quoting the label
    ]
    data = io.StringIO()
    writer = csv.writer(data)
    writer.writerow(["email"])
    writer.writerows([r] for r in rows)
    report = exporter.run(exporter.upload("emails.csv", data.getvalue().encode()))
    assert_accounted(report, len(rows))
    assert member_emails(klaviyo, list_id) == {"padded@example.com", "user@xn--bcher-kva.de", "o'brien@example.com"}
    reasons = rejected(exporter)
    assert set(reasons) == {3, 5, 7, 8, 10}
    assert all(r.startswith("email is not valid: ") for r in reasons.values())
    assert "\u0660" not in reasons[10] and "label" not in reasons[10]
    assert report.counts.duplicates == 1


def test_phone_numbers_that_cannot_be_made_e164_are_rejected(
    exporter: Exporter, klaviyo: KlaviyoSimulator, list_id: str
) -> None:
    rows = [
        ("a@example.com", "(212) 555-0101"),  # 2 national form, default region US: sent
        ("b@example.com", "+44 20 7946 0958"),  # 3 sent
        ("c@example.com", "555-0123"),  # 4 no area code
        ("d@example.com", "+999 123 456"),  # 5 no such country
        ("e@example.com", "call me"),  # 6 words
        ("f@example.com", "1" * 30),  # 7 too long
        ("g@example.com", ""),  # 8 no phone: sent by email
    ]
    data = "email,phone\n" + "".join(f"{e},{p}\n" for e, p in rows)
    report = exporter.run(exporter.upload("phones.csv", data.encode()), EMAIL_PHONE)
    assert_accounted(report, len(rows))
    assert set(rejected(exporter)) == {4, 5, 6, 7}
    assert all(r.startswith("phone_number cannot be made E.164") for r in rejected(exporter).values())
    masked = {int(line[1]): line[2] for line in exporter.rejects_rows}
    assert masked[4] == "+***23" and masked[7] == "+***11", "only the last two digits are shown"
    members = {m["email"]: m.get("phone_number") for m in klaviyo.list_members(list_id)}
    assert members == {"a@example.com": "+12125550101", "b@example.com": "+442079460958", "g@example.com": None}


# -- properties: whatever comes in, every row is accounted for ---------------------------------------------------


def dry_run(path: Path, mapping: FieldMapping, fast: bool = True) -> tuple[RunReport | None, list[list[str]]]:
    rejects = RejectsFile()
    source = local_segment(path)
    source.fast = fast
    try:
        report = run_export(source, ExportSpec("fuzz", "L", mapping, dry_run=True), None, rejects=rejects)
    except ConfigurationError:
        rejects.discard()
        return None, []
    lines = list(csv.reader(io.StringIO(rejects.read_bytes().decode())))[1:]
    rejects.discard()
    return report, lines


def assert_every_row_accounted(report: RunReport, lines: list[list[str]]) -> None:
    assert report.error is None or not report.error.startswith("unexpected"), report.error
    c = report.counts
    assert c.sent + c.rejected + c.duplicates + c.not_sent == c.rows_read
    assert len(lines) == c.rejected + c.duplicates, "each row not sent is listed once"
    numbers = [int(line[1]) for line in lines]
    assert len(numbers) == len(set(numbers)), "no row is listed twice"


# A row of a CSV file with two columns (email, name), and what must become of it.
GOOD, BAD, BLANK = "good", "bad", "blank"
CSV_ROWS = st.one_of(
    st.tuples(st.integers(0, 30).map(lambda i: f"u{i}@example.com,Ann"), st.just(GOOD)),
    st.tuples(st.integers(0, 30).map(lambda i: f'u{i}@example.com,"Lee, Ann"'), st.just(GOOD)),
    st.tuples(st.integers(0, 30).map(lambda i: f'u{i}@example.com,"two\nlines"'), st.just(GOOD)),
    st.tuples(st.integers(0, 30).map(lambda i: f'u{i}@example.com,"say ""hi"""'), st.just(GOOD)),
    st.tuples(st.sampled_from(["not-an-email,Bob", "x@@example.com,Bob", ",Nobody"]), st.just(BAD)),
    st.tuples(st.sampled_from(["a@example.com", "a@example.com,x,y", "a,b,c,d"]), st.just(BAD)),
    st.tuples(st.sampled_from(['v@example.com,"Ann', 'v@example.com,"An"n', 'v@example.com,""x']), st.just(BAD)),
    st.tuples(st.sampled_from(["w@example.com,B\udcffob", "w@example.com,B\x00ob"]), st.just(BAD)),
    st.tuples(st.just(""), st.just(BLANK)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(CSV_ROWS, max_size=30),
    ending=st.sampled_from(["\n", "\r\n", "\r"]),
    compress=st.booleans(),
    fast=st.booleans(),
    block=st.sampled_from([16, 64, 4096]),
)
def test_any_mix_of_good_and_damaged_csv_rows_is_accounted_for_row_by_row(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, str]],
    ending: str,
    compress: bool,
    fast: bool,
    block: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(csv_blocks, "BLOCK_BYTES", block)  # small blocks: cuts fall between the rows
    if ending == "\r":  # a bare CR ends a line, also the one inside a quoted field
        rows = [(text.replace("\n", "\r"), kind) for text, kind in rows]
    text = ending.join(["email,name", *(r for r, _ in rows)]) + ending
    data = text.encode("utf-8", errors="surrogateescape")
    name = "s.csv.gz" if compress else "s.csv"
    path = tmp_path_factory.mktemp("rows") / name
    path.write_bytes(gzip.compress(data) if compress else data)
    report, lines = dry_run(path, EMAIL_NAME, fast)
    assert report is not None
    assert_every_row_accounted(report, lines)
    seen: set[str] = set()
    sent = duplicates = rejected_rows = 0
    for row, kind in rows:
        if kind == GOOD:
            email = row.split(",", 1)[0]
            duplicates += email in seen
            sent += email not in seen
            seen.add(email)
        rejected_rows += kind == BAD
    c = report.counts
    expected_rows = sum(kind != BLANK for _, kind in rows)
    assert (c.sent, c.duplicates, c.rejected) == (sent, duplicates, rejected_rows)
    assert c.rows_read == expected_rows


JSON_LINES = st.one_of(
    st.integers(0, 30).map(lambda i: (f'{{"email": "u{i}@example.com", "n": [1, {{"x": null}}]}}', GOOD)),
    st.sampled_from(['["a"]', "1", "null", '"text"', '{"email": "x"', "{", '{"email": ["a@example.com"]}']).map(
        lambda t: (t, BAD)
    ),
    st.sampled_from(['{"email": "bad@@example.com"}', '{"email": "w\udcff@example.com"}']).map(lambda t: (t, BAD)),
    st.sampled_from(["", "   ", "\t"]).map(lambda t: (t, BLANK)),
)


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(JSON_LINES, max_size=30), crlf=st.booleans())
def test_any_mix_of_good_and_damaged_json_lines_is_accounted_for_line_by_line(
    tmp_path_factory: pytest.TempPathFactory, lines: list[tuple[str, str]], crlf: bool
) -> None:
    data = ("\r\n" if crlf else "\n").join(t for t, _ in lines).encode("utf-8", errors="surrogateescape") + b"\n"
    path = tmp_path_factory.mktemp("lines") / "s.jsonl"
    path.write_bytes(data)
    report, rejects = dry_run(path, FieldMapping())
    assert report is not None
    assert_every_row_accounted(report, rejects)
    emails = [t for t, kind in lines if kind == GOOD]
    assert report.counts.sent == len(set(emails))
    assert report.counts.duplicates == len(emails) - len(set(emails))
    assert report.counts.rejected == sum(kind == BAD for _, kind in lines)


ANY_PIECES = st.one_of(
    st.sampled_from([b",", b";", b'"', b"\n", b"\r\n", b"\r", b"\xff", b"\x00", b"@", b"email", b"a@b.co", b"{", b"}"]),
    st.binary(max_size=8),
)


@settings(max_examples=200, deadline=None)
@given(
    body=st.lists(ANY_PIECES, max_size=40).map(b"".join),
    name=st.sampled_from(["s.csv", "s.jsonl", "s.csv.gz", "s.jsonl.gz"]),
    compress=st.booleans(),
)
def test_whatever_bytes_come_in_the_run_accounts_for_every_row_and_raises_nothing_unexpected(
    tmp_path_factory: pytest.TempPathFactory, body: bytes, name: str, compress: bool
) -> None:
    data = (b"email,phone\n" if name.startswith("s.csv") else b"") + body
    path = tmp_path_factory.mktemp("bytes") / name
    path.write_bytes(gzip.compress(data) if compress and name.endswith(".gz") else data)
    # Only ConfigurationError (a problem found before anything was sent) may leave the run.
    report, lines = dry_run(path, FieldMapping())
    if report is not None:
        assert_every_row_accounted(report, lines)
        assert report.status in (SUCCEEDED, COMPLETED_WITH_REJECTS, FAILED)
        if report.status == FAILED:
            assert report.error and str(path) in report.error
