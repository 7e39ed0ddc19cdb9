"""The CSV fast path (Arrow-parsed blocks) reads every file exactly as the csv module does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.sources import SegmentError, TableChunk, csv_blocks, local_segment

HEADER = "id,email,phone\n"


def read(path: Path, fast: bool) -> tuple[list[object], str | None]:
    source = local_segment(path)
    source.fast = fast
    try:
        return list(source.rows()), None
    except SegmentError as exc:
        return [], str(exc)


def both_readers(data: bytes, name: str = "s.csv") -> tuple[tuple[list[object], str | None], ...]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        return read(path, fast=True), read(path, fast=False)


def table_rows(path: Path) -> int:
    return sum(len(c.numbers) for c in local_segment(path).chunks() if isinstance(c, TableChunk))


pieces = st.sampled_from(
    ["a", "b@x.io", "+12065550100", ",", ",", '"', '""', "\n", "\r\n", "\r", " ", "é", "\t", ";", "\x00", "\xa0"]
)
raw_bytes = st.sampled_from([b"\xff", b"\xc3", b"\xef\xbb\xbf"])


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    body=st.lists(st.one_of(pieces.map(str.encode), raw_bytes), max_size=60),
    block=st.sampled_from([8, 16, 64, 4096]),
)
def test_any_bytes_read_alike_by_both_readers(body: list[bytes], block: int, monkeypatch_block: None) -> None:
    csv_blocks.BLOCK_BYTES = block
    fast, slow = both_readers(HEADER.encode() + b"".join(body))
    assert fast == slow


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.tuples(
            st.text(alphabet="ab1 ,\"'é", max_size=6),
            st.text(alphabet="xy@.", max_size=6),
            st.text(alphabet="+0123 ", max_size=6),
        ),
        max_size=40,
    ),
    quote_all=st.booleans(),
    block=st.sampled_from([16, 128, 4096]),
)
def test_quoted_csv_reads_alike(
    rows: list[tuple[str, str, str]], quote_all: bool, block: int, monkeypatch_block: None
) -> None:
    import csv
    import io

    out = io.StringIO(newline="")
    csv.writer(out, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL).writerows([("id", "email", "phone")])
    csv.writer(out, quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL).writerows(rows)
    csv_blocks.BLOCK_BYTES = block
    fast, slow = both_readers(out.getvalue().encode())
    assert fast == slow


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
