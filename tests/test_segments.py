"""Unit tests for shared.sources: streaming CSV / JSON Lines readers over local files (no network)."""

from __future__ import annotations

import gzip
import io
import itertools
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.sources import CsvDialect, SegmentError, SegmentSource, local_segment
from shared.sources.checked_stream import CheckedStream
from shared.sources.chunks import SegmentRow
from shared.sources.jsonl_reader import MAX_FIELD_CHARS
from shared.sources.parts import detect_format
from shared.sources.streams import ChunkStream

BOM = b"\xef\xbb\xbf"


def write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def read(path: Path, **kwargs: object) -> list[SegmentRow]:
    return list(local_segment(path, **kwargs).rows())  # type: ignore[arg-type]


def good(rows: list[SegmentRow]) -> list[tuple[int, dict[str, object]]]:
    assert all(r.error is None for r in rows), [r for r in rows if r.error]
    return [(r.number, r.fields) for r in rows]  # type: ignore[misc]


def bad(rows: list[SegmentRow]) -> list[tuple[int, str]]:
    return [(r.number, r.error) for r in rows if r.error is not None]


class MemoryPart:
    """A segment part held in memory that remembers every stream it handed out."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.version, self.size, self._data = name, None, len(data), data
        self.streams: list[io.BytesIO] = []

    def open(self) -> io.BytesIO:
        stream = io.BytesIO(self._data)
        self.streams.append(stream)
        return stream


# --------------------------------------------------------------------------------------------- encodings

PLAIN_CSV = b"email,name\na@example.com,Ann\nb@example.com,Bob\n"
EXPECTED_PLAIN = [(2, {"email": "a@example.com", "name": "Ann"}), (3, {"email": "b@example.com", "name": "Bob"})]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(PLAIN_CSV.replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(BOM + PLAIN_CSV, id="bom-lf"),
        pytest.param(BOM + PLAIN_CSV.replace(b"\n", b"\r\n"), id="bom-crlf"),
        pytest.param(PLAIN_CSV.replace(b"\n", b"\r"), id="bare-cr"),
        pytest.param(PLAIN_CSV.rstrip(b"\n"), id="no-final-newline"),
    ],
)
def test_crlf_and_bom_are_read_like_plain_lf(tmp_path: Path, data: bytes) -> None:
    assert good(read(write(tmp_path, "plain.csv", PLAIN_CSV))) == EXPECTED_PLAIN
    path = write(tmp_path, "variant.csv", data)
    assert good(read(path)) == EXPECTED_PLAIN
    assert local_segment(path).headers() == {str(path): ["email", "name"]}


def test_bom_is_not_part_of_a_quoted_first_column_name(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", BOM + b'"email";"name"\r\n"a@example.com";"Ann"\r\n')
    assert local_segment(path).headers() == {str(path): ["email", "name"]}
    assert good(read(path)) == [(2, {"email": "a@example.com", "name": "Ann"})]


def test_utf8_text_is_decoded(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", BOM + "email,name\na@example.com,Zoë Ørsted 東京\n".encode())
    assert good(read(path)) == [(2, {"email": "a@example.com", "name": "Zoë Ørsted 東京"})]


def test_header_names_are_trimmed_but_values_are_kept_as_written(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", b" email , name \n a@example.com , Ann \n")
    assert local_segment(path).headers() == {str(path): ["email", "name"]}
    assert good(read(path)) == [(2, {"email": " a@example.com ", "name": " Ann "})]


# --------------------------------------------------------------------------------------------- quoting


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"], ids=["comma", "semicolon", "tab", "pipe"])
def test_quoted_fields_hold_delimiters_quotes_and_newlines_and_rows_number_from_their_first_line(
    tmp_path: Path, delimiter: str
) -> None:
    d = delimiter
    text = (
        f"email{d}note\r\n"  # line 1
        f'a@example.com{d}"one{d} two"\r\n'  # line 2
        f'b@example.com{d}"say ""hi""\r\nsecond line"\r\n'  # lines 3-4
        f'c@example.com{d}"x\n\ny{d}z"\r\n'  # lines 5-7
        f"d@example.com{d}plain\r\n"  # line 8
    )
    rows = read(write(tmp_path, "q.csv", text.encode()))
    assert good(rows) == [
        (2, {"email": "a@example.com", "note": f"one{d} two"}),
        (3, {"email": "b@example.com", "note": 'say "hi"\r\nsecond line'}),
        (5, {"email": "c@example.com", "note": f"x\n\ny{d}z"}),
        (8, {"email": "d@example.com", "note": "plain"}),
    ]


def test_row_numbers_stay_right_across_read_buffer_boundaries(tmp_path: Path) -> None:
    lines, expected, line = [b"email,note"], [], 2
    for i in range(4000):
        if i % 7 == 0:
            lines.append(b'e%d@example.com,"two\r\nlines %s"' % (i, b"x" * (i % 53)))
            expected.append((line, f"e{i}@example.com"))
            line += 2
        else:
            lines.append(b"e%d@example.com,%s" % (i, b"y" * (i % 41)))
            expected.append((line, f"e{i}@example.com"))
            line += 1
    path = write(tmp_path, "big.csv", b"\r\n".join(lines) + b"\r\n")
    rows = read(path)
    assert [(n, f["email"]) for n, f in good(rows)] == expected
    assert not any(str(r.fields["note"]).endswith("\r") for r in rows)  # type: ignore[index]


# --------------------------------------------------------------------------------------------- delimiters


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"], ids=["comma", "semicolon", "tab", "pipe"])
def test_delimiter_is_sniffed_from_the_header(tmp_path: Path, delimiter: str) -> None:
    others = "".join(c for c in ",;|" if c != delimiter)  # other candidates appear in values only
    text = delimiter.join(["email", "first", "last"]) + "\n" + delimiter.join(["a@example.com", others, "x"]) + "\n"
    rows = read(write(tmp_path, "d.csv", text.encode()))
    assert good(rows) == [(2, {"email": "a@example.com", "first": others, "last": "x"})]


def test_sniffing_ignores_delimiters_inside_quoted_header_names(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b'"last, first, middle";email\n"Doe, Jane, Q";j@example.com\n')
    assert local_segment(path).headers() == {str(path): ["last, first, middle", "email"]}
    assert good(read(path)) == [(2, {"last, first, middle": "Doe, Jane, Q", "email": "j@example.com"})]


def test_single_column_file_reads_with_the_comma_default(tmp_path: Path) -> None:
    assert good(read(write(tmp_path, "d.csv", b"email\na@example.com\n"))) == [(2, {"email": "a@example.com"})]


@pytest.mark.parametrize(
    ("delimiter", "expected"),
    [
        pytest.param(";", {"a": "1", "b,c": "2,3"}, id="semicolon-where-sniffing-would-pick-comma"),
        pytest.param(",", {"a;b": "1;2", "c": "3"}, id="comma"),
        pytest.param("|", {"a;b,c": "1;2,3"}, id="pipe-absent-one-column"),
    ],
)
def test_explicit_delimiter_overrides_sniffing(tmp_path: Path, delimiter: str, expected: dict[str, str]) -> None:
    path = write(tmp_path, "d.csv", b"a;b,c\n1;2,3\n")
    assert good(read(path, dialect=CsvDialect(delimiter=delimiter))) == [(2, expected)]


@pytest.mark.parametrize("delimiter", ["\\t", "ab", '"', "\n"], ids=["escaped-tab", "two-chars", "quote", "newline"])
def test_unusable_explicit_delimiter_is_a_segment_error(tmp_path: Path, delimiter: str) -> None:
    path = write(tmp_path, "d.csv", b"a\tb\n1\t2\n")
    with pytest.raises(SegmentError, match="delimiter") as excinfo:
        read(path, dialect=CsvDialect(delimiter=delimiter))
    assert str(path) in str(excinfo.value)
    with pytest.raises(SegmentError, match="delimiter"):
        local_segment(path, dialect=CsvDialect(delimiter=delimiter)).headers()


# --------------------------------------------------------------------------------------------- JSON Lines


def test_jsonl_rows_carry_line_numbers_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    data = (
        b'{"email": "a@example.com", "n": 1}\n\n   \r\n{"email": "b@example.com", "tags": ["x"], "o": {"k": null}}\r\n'
    )
    rows = read(write(tmp_path, "s.jsonl", data))
    assert good(rows) == [
        (1, {"email": "a@example.com", "n": 1}),
        (4, {"email": "b@example.com", "tags": ["x"], "o": {"k": None}}),
    ]


def test_jsonl_bom_on_the_first_line_is_ignored(tmp_path: Path) -> None:
    rows = read(write(tmp_path, "s.jsonl", BOM + b'{"email": "a@example.com"}\n'))
    assert good(rows) == [(1, {"email": "a@example.com"})]


def test_jsonl_bad_lines_are_rejected_with_their_line_numbers_and_the_rest_is_read(tmp_path: Path) -> None:
    data = (
        b"\n".join(
            [
                b'{"email": "a@example.com"}',  # 1
                b'{"email": "b@example.com"',  # 2 malformed
                b'["c@example.com"]',  # 3 list
                b'"d@example.com"',  # 4 string
                b"42",  # 5 number
                b"null",  # 6
                b'{"email": "\xff@example.com"}',  # 7 not UTF-8
                b"",  # 8 blank
                b'{"email": "e@example.com"}',  # 9
            ]
        )
        + b"\n"
    )
    rows = read(write(tmp_path, "s.jsonl", data))
    assert [(r.number, r.fields) for r in rows if r.error is None] == [
        (1, {"email": "a@example.com"}),
        (9, {"email": "e@example.com"}),
    ]
    errors = dict(bad(rows))
    assert sorted(errors) == [2, 3, 4, 5, 6, 7]
    assert "not valid JSON" in errors[2]
    assert "list" in errors[3] and "not an object" in errors[3]
    assert "str" in errors[4] and "not an object" in errors[4]
    assert "int" in errors[5]
    assert "not an object" in errors[6]
    assert "UTF-8" in errors[7]


def test_jsonl_line_past_the_length_limit_is_rejected_and_the_rest_is_read(tmp_path: Path) -> None:
    huge = b'{"email": "a@example.com", "note": "' + b"x" * MAX_FIELD_CHARS + b'"}'
    rows = read(write(tmp_path, "s.jsonl", huge + b'\n{"email": "b@example.com"}\n'))
    assert bad(rows) == [(1, f"line is longer than {MAX_FIELD_CHARS:,} bytes")]
    assert [(r.number, r.fields) for r in rows if r.error is None] == [(2, {"email": "b@example.com"})]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        pytest.param("s.ndjson", None, id="ndjson"),
        pytest.param("s.json", None, id="json"),
        pytest.param("export", "jsonl", id="no-suffix-format-given"),
        pytest.param("s.txt", "jsonl", id="format-given-overrides-suffix"),
    ],
)
def test_jsonl_is_read_for_its_suffixes_or_when_given(tmp_path: Path, name: str, fmt: str | None) -> None:
    rows = read(write(tmp_path, name, b'{"email": "a@example.com"}\n'), fmt=fmt)
    assert good(rows) == [(1, {"email": "a@example.com"})]


# --------------------------------------------------------------------------------------------- gzip


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        pytest.param("s.csv.gz", BOM + PLAIN_CSV.replace(b"\n", b"\r\n"), EXPECTED_PLAIN, id="csv-gz"),
        pytest.param("S.CSV.GZ", PLAIN_CSV, EXPECTED_PLAIN, id="upper-case-suffix"),
        pytest.param(
            "s.jsonl.gz",
            b'{"email": "a@example.com"}\n\n{"email": "b@example.com"}\n',
            [(1, {"email": "a@example.com"}), (3, {"email": "b@example.com"})],
            id="jsonl-gz",
        ),
    ],
)
def test_gzipped_files_are_read_like_plain_ones(tmp_path: Path, name: str, data: bytes, expected: list) -> None:
    path = write(tmp_path, name, gzip.compress(data))
    assert good(read(path)) == expected


def test_multi_member_gzip_is_read_whole(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv.gz", gzip.compress(b"email\na@example.com\n") + gzip.compress(b"b@example.com\n"))
    assert good(read(path)) == [(2, {"email": "a@example.com"}), (3, {"email": "b@example.com"})]


@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param("s.csv.gz", b"email\n" + b"a@example.com\n" * 20000, id="csv"),
        pytest.param("s.jsonl.gz", b'{"email": "a@example.com"}\n' * 20000, id="jsonl"),
    ],
)
def test_truncated_gzip_is_a_segment_error_naming_the_file(tmp_path: Path, name: str, data: bytes) -> None:
    path = write(tmp_path, name, gzip.compress(data)[:-40])
    with pytest.raises(SegmentError, match="damaged or truncated") as excinfo:
        read(path)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize("name", ["s.csv.gz", "s.jsonl.gz"])
def test_file_that_is_not_gzip_but_named_gz_is_a_segment_error(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, b"email\na@example.com\n")
    with pytest.raises(SegmentError) as excinfo:
        read(path)
    assert str(path) in str(excinfo.value)


def _write_bomb(path: Path, header: bytes, line: bytes, megabytes: int) -> None:
    chunk = line * (1024 * 1024 // len(line))
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(header)
        for _ in range(megabytes):
            out.write(chunk)


@pytest.mark.parametrize(
    ("name", "header", "line"),
    [
        pytest.param("bomb.csv.gz", b"email,name\n", b"a@example.com,Ann\n", id="csv"),
        pytest.param("bomb.jsonl.gz", b"", b'{"email": "a@example.com"}\n', id="jsonl"),
        pytest.param("bomb.jsonl.gz", b"", b"\0" * 64, id="one-endless-line"),
    ],
)
def test_gzip_expanding_past_the_limit_is_refused_without_reading_it_all(
    tmp_path: Path, name: str, header: bytes, line: bytes
) -> None:
    path = tmp_path / name
    _write_bomb(path, header, line, megabytes=64)
    source = local_segment(path)
    source.max_uncompressed_bytes = 256 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(SegmentError, match="limit") as excinfo:
            for _ in source.rows():
                pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(excinfo.value)
    assert peak < 16 * 1024 * 1024  # the file expands to 64 MB


def test_gzip_expanding_to_exactly_the_limit_is_read(tmp_path: Path) -> None:
    data = b"email\n" + b"a@example.com\n" * 100
    source = local_segment(write(tmp_path, "s.csv.gz", gzip.compress(data)))
    source.max_uncompressed_bytes = len(data)
    assert len(good(list(source.rows()))) == 100


@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param("s.csv.gz", gzip.compress(PLAIN_CSV), id="csv-gz"),
        pytest.param("s.jsonl.gz", gzip.compress(b'{"a": 1}\n'), id="jsonl-gz"),
        pytest.param("s.csv", PLAIN_CSV, id="csv"),
    ],
)
def test_every_opened_file_is_closed_after_reading(name: str, data: bytes) -> None:
    part = MemoryPart(name, data)
    source = SegmentSource("memory", [part])
    source.headers()
    list(source.rows())
    assert part.streams and all(s.closed for s in part.streams)


def test_truncated_gzip_file_is_closed_after_the_error() -> None:
    part = MemoryPart("s.csv.gz", gzip.compress(b"email\n" + b"a@example.com\n" * 20000)[:-40])
    with pytest.raises(SegmentError):
        list(SegmentSource("memory", [part]).rows())
    assert part.streams and all(s.closed for s in part.streams)


# --------------------------------------------------------------------------------------------- folders


def test_folder_parts_are_read_in_name_order_as_one_segment(tmp_path: Path) -> None:
    folder = tmp_path / "segment"
    folder.mkdir()
    write(folder, "part-00002.csv", b"email;name\nc@example.com;Cy\n")
    write(folder, "part-00000.csv", b"email,name\na@example.com,Ann\n\nb@example.com,Bob\n")
    write(folder, "part-00001.csv.gz", gzip.compress(b"name\tEmail\nDee\td@example.com\n"))
    write(folder, "model.json", b'{"name": "segment", "entities": []}')
    write(folder, "_SUCCESS", b"")
    write(folder, ".part-00000.csv.crc", b"\x00\x01")
    (folder / "nested").mkdir()
    write(folder / "nested", "part-99999.csv", b"email\nz@example.com\n")

    source = local_segment(folder)
    rows = list(source.rows())
    assert [(Path(r.source).name, r.number, r.fields) for r in rows] == [
        ("part-00000.csv", 2, {"email": "a@example.com", "name": "Ann"}),
        ("part-00000.csv", 4, {"email": "b@example.com", "name": "Bob"}),
        ("part-00001.csv.gz", 2, {"name": "Dee", "Email": "d@example.com"}),
        ("part-00002.csv", 2, {"email": "c@example.com", "name": "Cy"}),
    ]
    assert source.headers() == {
        str(folder / "part-00000.csv"): ["email", "name"],
        str(folder / "part-00001.csv.gz"): ["name", "Email"],
        str(folder / "part-00002.csv"): ["email", "name"],
    }


def test_folder_of_jsonl_parts_has_no_headers(tmp_path: Path) -> None:
    folder = tmp_path / "segment"
    folder.mkdir()
    write(folder, "part-1.jsonl", b'{"email": "b@example.com"}\n')
    write(folder, "part-0.jsonl.gz", gzip.compress(b'{"email": "a@example.com"}\n'))
    source = local_segment(folder)
    assert source.headers() == {}
    assert [r.fields for r in source.rows()] == [{"email": "a@example.com"}, {"email": "b@example.com"}]


def test_folder_without_data_files_is_a_segment_error(tmp_path: Path) -> None:
    write(tmp_path, "model.json", b"{}")
    write(tmp_path, "_SUCCESS", b"")
    with pytest.raises(SegmentError, match="no data files") as excinfo:
        local_segment(tmp_path)
    assert str(tmp_path) in str(excinfo.value)


def test_missing_path_is_a_segment_error(tmp_path: Path) -> None:
    with pytest.raises(SegmentError, match="no such file"):
        local_segment(tmp_path / "nope.csv")


# --------------------------------------------------------------------------------------------- headers and shapes


@pytest.mark.parametrize(
    ("name", "data"),
    [
        pytest.param("empty.csv", b"", id="csv"),
        pytest.param("empty.csv.gz", b"", id="csv-gz-0-bytes"),
        pytest.param("empty2.csv.gz", gzip.compress(b""), id="csv-gz-of-nothing"),
        pytest.param("bom.csv", BOM, id="bom-only"),
    ],
)
def test_empty_file_is_a_segment_error_naming_the_file(tmp_path: Path, name: str, data: bytes) -> None:
    path = write(tmp_path, name, data)
    with pytest.raises(SegmentError, match="empty") as excinfo:
        read(path)
    assert str(path) in str(excinfo.value)
    with pytest.raises(SegmentError, match="empty"):
        local_segment(path).headers()


@pytest.mark.parametrize(
    "data", [b"email,name\n", b"email,name", b"email,name\r\n\r\n"], ids=["lf", "no-newline", "blank-after"]
)
def test_header_only_file_has_no_rows(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, "h.csv", data)
    assert read(path) == []
    assert local_segment(path).headers() == {str(path): ["email", "name"]}


@pytest.mark.parametrize(
    "header",
    [b"email,name,email", b"email, email", b"Email;name;Email"],
    ids=["exact", "same-after-trimming", "semicolon"],
)
def test_duplicate_header_names_are_a_segment_error(tmp_path: Path, header: bytes) -> None:
    path = write(tmp_path, "dup.csv", header + b"\na,b,c\n")
    for action in (read, lambda p: local_segment(p).headers()):
        with pytest.raises(SegmentError, match="twice") as excinfo:
            action(path)
        assert str(path) in str(excinfo.value)


def test_ragged_rows_are_rejected_with_their_row_number_and_field_counts(tmp_path: Path) -> None:
    data = b"email,first,last\na@example.com\nb@example.com,B,C,extra\n\nc@example.com,C,D\n"
    rows = read(write(tmp_path, "r.csv", data))
    assert [(r.number, r.fields) for r in rows if r.error is None] == [
        (5, {"email": "c@example.com", "first": "C", "last": "D"})
    ]
    errors = bad(rows)
    assert [n for n, _ in errors] == [2, 3]
    assert "1 field" in errors[0][1] and "header has 3" in errors[0][1]
    assert "4 field" in errors[1][1] and "header has 3" in errors[1][1]


def test_blank_lines_between_csv_rows_are_skipped_but_counted(tmp_path: Path) -> None:
    rows = read(write(tmp_path, "b.csv", b"email,name\n\n\na@example.com,Ann\r\n\r\nb@example.com,Bob\n\n"))
    assert good(rows) == [
        (4, {"email": "a@example.com", "name": "Ann"}),
        (6, {"email": "b@example.com", "name": "Bob"}),
    ]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_undecodable_bytes_reject_only_their_row(tmp_path: Path, compressed: bool) -> None:
    data = (
        b"email,name\n"
        b"a@example.com,Ann\n"  # 2
        b"b@example.com,B\xe9atrice\n"  # 3 latin-1
        b'c@example.com,"multi\n\xff"\n'  # 4-5, bad byte on the second line
        b"d@example.com,Dee\n"  # 6
    )
    name = "u.csv.gz" if compressed else "u.csv"
    rows = read(write(tmp_path, name, gzip.compress(data) if compressed else data))
    assert [(r.number, r.fields) for r in rows if r.error is None] == [
        (2, {"email": "a@example.com", "name": "Ann"}),
        (6, {"email": "d@example.com", "name": "Dee"}),
    ]
    assert [(n, "UTF-8" in e) for n, e in bad(rows)] == [(3, True), (4, True)]


def test_undecodable_bytes_in_the_header_are_a_segment_error(tmp_path: Path) -> None:
    path = write(tmp_path, "u.csv", b"\xff\xfee\x00m\x00\na,b\n")
    with pytest.raises(SegmentError, match="UTF-8") as excinfo:
        read(path)
    assert str(path) in str(excinfo.value)


# --------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("a.csv", "csv"),
        ("a.CSV", "csv"),
        ("a.tsv", "csv"),
        ("a.txt.gz", "csv"),
        ("dir/a.csv.gz", "csv"),
        ("a.jsonl", "jsonl"),
        ("a.ndjson.gz", "jsonl"),
        ("a.JSON", "jsonl"),
        ("part-00000-5a5a-c000.snappy.parquet", "parquet"),
    ],
)
def test_format_is_detected_from_the_name(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


@pytest.mark.parametrize("name", ["part-00000", "a.avro", "a.gz", "a.csv.zip"])
def test_unknown_format_is_a_segment_error_naming_the_file(name: str) -> None:
    with pytest.raises(SegmentError, match="format") as excinfo:
        detect_format(name)
    assert name in str(excinfo.value)


# --------------------------------------------------------------------------------------------- properties

CSV_PIECES = st.one_of(
    st.sampled_from(
        [
            b",",
            b";",
            b"\t",
            b"|",
            b'"',
            b'""',
            b"\n",
            b"\r\n",
            b"\r",
            BOM,
            b"\xff",
            b"\xc3",
            b"\x00",
            b"email",
            b"name",
            b" ",
        ]
    ),
    st.binary(max_size=6),
    st.text(max_size=6).map(str.encode),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.lists(CSV_PIECES, max_size=40).map(b"".join),
    name=st.sampled_from(["s.csv", "s.csv.gz", "s.jsonl", "s.jsonl.gz"]),
    compress=st.booleans(),
    delimiter=st.sampled_from([None, ",", ";", "\t", "|"]),
)
def test_reading_any_bytes_raises_only_segment_error_and_every_row_has_fields_or_an_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, name: str, compress: bool, delimiter: str | None
) -> None:
    payload = gzip.compress(data) if compress and name.endswith(".gz") else data
    path = write(tmp_path_factory.mktemp("fuzz"), name, payload)
    try:
        source = local_segment(path, dialect=CsvDialect(delimiter=delimiter))
        source.headers()
        for row in source.rows():
            assert (row.fields is None) != (row.error is None), row
            assert row.source == str(path)
            assert row.number >= 1
            if row.fields is not None:
                assert isinstance(row.fields, dict)
    except SegmentError as exc:
        assert str(path) in str(exc)


class Pieces(io.RawIOBase):
    """A stream that hands out its bytes in the given pieces, one a read."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = [piece for piece in pieces if piece]

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._pieces:
            return 0
        piece = self._pieces.pop(0)
        if len(piece) > len(target):  # a read hands out at most what fits; the rest comes next
            piece, rest = piece[: len(target)], piece[len(target) :]
            self._pieces.insert(0, rest)
        target[: len(piece)] = piece
        return len(piece)


@settings(max_examples=500, deadline=None)
@given(
    data=st.lists(
        st.one_of(st.text(max_size=4).map(str.encode), st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\x80"])),
        max_size=10,
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_bytes_read_in_any_pieces_are_found_not_utf8_exactly_when_they_are_not(data: bytes, cuts: list[int]) -> None:
    """The reader notes bytes that are not UTF-8 (their rows are then checked one by one) however
    the reads cut the stream, a character cut between two reads included."""
    bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    reader = CheckedStream(Pieces([data[a:b] for a, b in itertools.pairwise(bounds)]), "pieces.csv")
    while reader.readinto(bytearray(64)):
        pass
    try:
        data.decode("utf-8")
        expected = False
    except UnicodeDecodeError:
        expected = True
    assert reader.undecodable is expected


@settings(max_examples=300, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=20), max_size=6),
    reads=st.lists(st.tuples(st.booleans(), st.integers(min_value=0, max_value=25)), min_size=1, max_size=40),
)
def test_a_download_read_in_any_sizes_gives_its_bytes_in_order_and_whole_ranges_uncopied(
    chunks: list[bytes], reads: list[tuple[bool, int]]
) -> None:
    stream = ChunkStream(iter(chunks))
    got = []
    for into, size in reads * 3:
        if into:
            target = bytearray(size)
            count = stream.readinto(target)
            assert count <= size
            got.append(bytes(target[:count]))
        else:
            data = stream.read(size)
            assert len(data) <= size
            got.append(data)
    got.append(stream.read())
    assert b"".join(got) == b"".join(chunks)
    whole = ChunkStream(iter(chunks))
    assert all(whole.read(64) is chunk for chunk in chunks), "a range read whole is the downloaded object"
