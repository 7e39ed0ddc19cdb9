"""The CSV fast path (Arrow-parsed blocks) reads every file exactly as the csv module does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.sources import CsvDialect, SegmentError, TableChunk, csv_blocks, local_segment

HEADER = "id,email,phone\n"
COLUMNS = ("id", "email", "phone")
# The dialects both readers must read alike: a header row and doubled quotes (the default); Spark's and
# Data Factory's defaults (no header, quotes escaped with a backslash); and the two mixed.
DIALECTS = {
    "header": CsvDialect(),
    "header-escape": CsvDialect(escape="\\"),
    "no-header": CsvDialect(header=False, columns=COLUMNS),
    "no-header-escape": CsvDialect(header=False, columns=COLUMNS, escape="\\"),
}


def read(path: Path, fast: bool, dialect: CsvDialect | None = None) -> tuple[list[object], str | None]:
    source = local_segment(path, dialect=dialect)
    source.fast = fast
    try:
        return list(source.rows()), None
    except SegmentError as exc:
        return [], str(exc)


def both_readers(
    data: bytes, name: str = "s.csv", dialect: CsvDialect | None = None
) -> tuple[tuple[list[object], str | None], ...]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        return read(path, True, dialect), read(path, False, dialect)


def with_header(dialect: CsvDialect, body: bytes) -> bytes:
    return HEADER.encode() + body if dialect.header else body


def table_rows(path: Path) -> int:
    return sum(len(c.numbers) for c in local_segment(path).chunks() if isinstance(c, TableChunk))


pieces = st.sampled_from(
    ["a", "b@x.io", "+12065550100", ",", ",", '"', '""', "\n", "\r\n", "\r", " ", "é", "\t", ";", "\x00", "\xa0"]
    + ["\\", '\\"', "\\\\"]
)
raw_bytes = st.sampled_from([b"\xff", b"\xc3", b"\xef\xbb\xbf"])


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    body=st.lists(st.one_of(pieces.map(str.encode), raw_bytes), max_size=60),
    block=st.sampled_from([8, 16, 64, 4096]),
    dialect=st.sampled_from(list(DIALECTS.values())),
)
def test_any_bytes_read_alike_by_both_readers(
    body: list[bytes], block: int, dialect: CsvDialect, monkeypatch_block: None
) -> None:
    csv_blocks.BLOCK_BYTES = block
    fast, slow = both_readers(with_header(dialect, b"".join(body)), dialect=dialect)
    assert fast == slow


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.text(alphabet="ab1 ,\"'é\\\n", max_size=6),
            st.text(alphabet="xy@.", max_size=6),
            st.text(alphabet="+0123 ", max_size=6),
        ),
        max_size=40,
    ),
    quote_all=st.booleans(),
    block=st.sampled_from([16, 128, 4096]),
    dialect=st.sampled_from(list(DIALECTS.values())),
)
def test_quoted_csv_reads_alike(
    rows: list[tuple[str, str, str]], quote_all: bool, block: int, dialect: CsvDialect, monkeypatch_block: None
) -> None:
    import csv
    import io

    out = io.StringIO(newline="")
    # Written as the dialect says: quotes doubled, or escaped with a backslash (doublequote off).
    options = {"escapechar": dialect.escape, "doublequote": False} if dialect.escape else {}
    writer = csv.writer(out, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL, **options)
    if dialect.header:
        writer.writerow(COLUMNS)
    writer.writerows(rows)
    csv_blocks.BLOCK_BYTES = block
    fast, slow = both_readers(out.getvalue().encode(), dialect=dialect)
    assert fast == slow
    assert [r.fields for r in fast[0]] == [dict(zip(COLUMNS, row, strict=True)) for row in rows]


@pytest.fixture
def monkeypatch_block() -> object:
    saved = csv_blocks.BLOCK_BYTES
    yield None
    csv_blocks.BLOCK_BYTES = saved


def test_plain_rows_are_read_by_arrow_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text(HEADER + "".join(f"{i},u{i}@x.io,+1206555{i:04d}\n" for i in range(1000)), encoding="utf-8")
    rows = list(local_segment(path).rows())
    assert table_rows(path) == 1000
    assert [r.number for r in rows] == list(range(2, 1002))
    assert rows[-1].fields == {"id": "999", "email": "u999@x.io", "phone": "+12065550999"}


def test_a_bad_block_does_not_slow_the_rest(tmp_path: Path, monkeypatch_block: None) -> None:
    # One undecodable row and one ragged row early on: only their blocks go to the csv module.
    csv_blocks.BLOCK_BYTES = 4096
    lines = [f"{i},u{i}@x.io,+1206555{i:04d}\n".encode() for i in range(5000)]
    lines[10] = b"10,\xff@x.io,+12065550010\n"
    lines[20] = b"20,only-two\n"
    path = tmp_path / "s.csv"
    path.write_bytes(HEADER.encode() + b"".join(lines))
    rows = list(local_segment(path).rows())
    assert [(r.number, r.error) for r in rows if r.error] == [
        (12, "row holds bytes that are not valid UTF-8"),
        (22, "row has 2 fields but the header has 3"),
    ]
    assert len(rows) == 5000
    assert table_rows(path) > 4500


def test_a_huge_field_reads_alike_by_both_readers() -> None:
    lines = [f"{i},u{i}@x.io,+1206555{i:04d}\n".encode() for i in range(50)]
    lines[5] = b"5," + b"a" * 200_000 + b"@x.io,+12065550005\n"
    fast, slow = both_readers(HEADER.encode() + b"".join(lines))
    assert fast == slow and len(fast[0]) == 50


def test_backslash_escaped_rows_stay_on_the_fast_path(tmp_path: Path) -> None:
    # Spark's default output (no header, quotes escaped with a backslash) must not fall back to the csv module.
    path = tmp_path / "part-00000.csv"
    path.write_text("".join(f'{i},u{i}@x.io,"say \\"hi\\" {i}"\n' for i in range(1000)), encoding="utf-8")
    dialect = CsvDialect(header=False, columns=("id", "email", "note"), escape="\\")
    source = local_segment(path, dialect=dialect)
    assert sum(len(c.numbers) for c in source.chunks() if isinstance(c, TableChunk)) == 1000
    rows = list(source.rows())
    assert [r.number for r in rows] == list(range(1, 1001))
    assert rows[-1].fields == {"id": "999", "email": "u999@x.io", "note": 'say "hi" 999'}


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_backslash_escaped_quotes_without_an_escape_say_to_set_it(tmp_path: Path, fast: bool) -> None:
    path = tmp_path / "s.csv"
    path.write_text(HEADER + '1,a@x.io,"+1 \\"206\\""\n2,b@x.io,"\\""\n3,c@x.io,+12065550100\n', encoding="utf-8")
    rows, error = read(path, fast)
    assert error is None
    assert [(r.number, r.error) for r in rows if r.error] == [  # type: ignore[attr-defined]
        (2, "looks backslash-escaped: set escape"),
        (3, "looks backslash-escaped: set escape"),
    ]
    assert [r.number for r in rows if not r.error] == [4]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "line",
    ['1,"a"b,c', '1,a"b,c', '1,"a""b",c', '1,"",""', '"1","a,b","c"', '1,"a"",b",c', '1,"""a",c', '1,b,"c'],
)
@pytest.mark.parametrize("dialect", DIALECTS.values(), ids=DIALECTS.keys())
def test_quotes_in_every_place_read_alike(line: str, dialect: CsvDialect, monkeypatch_block: None) -> None:
    # Plain rows around one line whose quotes open, close or double in every place a field allows.
    rows = [f"{i},u{i}@x.io,+1206555{i:04d}" for i in range(40)]
    for ending in ("\n", "\r\n"):
        # In the middle, and last with no line end after it.
        for data in (ending.join([*rows[:20], line, *rows[20:]]) + ending, ending.join([*rows, line])):
            fast, slow = both_readers(with_header(dialect, data.encode()), dialect=dialect)
            assert fast == slow


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_a_ragged_row_without_a_header_names_the_columns_count(tmp_path: Path, fast: bool) -> None:
    path = tmp_path / "part-00000.csv"
    path.write_text("1,a@x.io,+12065550100\n2,b@x.io\n", encoding="utf-8")
    rows, error = read(path, fast, DIALECTS["no-header"])
    assert error is None
    assert [(r.number, r.error) for r in rows] == [  # type: ignore[attr-defined]
        (1, None),
        (2, "row has 2 fields but 3 columns are named"),
    ]
