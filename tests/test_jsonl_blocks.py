"""The JSON Lines fast path (blocks of flat objects parsed by Arrow, mapped column-wise) maps every
file exactly as the line reader does, and no input can take the process down."""

from __future__ import annotations

import itertools
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pytest import MonkeyPatch

from shared.mapping import ColumnarMapper, FieldMapping, ProfileMapper
from shared.sources import SegmentError, TableChunk, csv_reader, jsonl_blocks, jsonl_reader, local_segment, streams

MAPPING = FieldMapping({"email": "email", "phone_number": "phone", "first_name": "name"}, {"tier": "tier"})


def outcomes(path: Path, fast: bool) -> tuple[list[tuple[int, object]], int, str | None]:
    """(row number, profile bytes or rejection reason) of every row, and how many rows came as tables."""
    mapper = ProfileMapper(MAPPING)
    columnar = ColumnarMapper(mapper)
    source = local_segment(path)
    source.fast = fast
    found: list[tuple[int, object]] = []
    tables = 0
    try:
        for chunk in source.chunks(columns=mapper.columns):
            found += [(n, reason) for n, reason in chunk.errors]
            if isinstance(chunk, TableChunk):
                tables += len(chunk.numbers)
                mapped = columnar.map(chunk.table, chunk.numbers)
            else:
                mapped = mapper.map_records(chunk.columns, chunk.numbers, chunk.records)
            found += list(zip(mapped.numbers.tolist(), mapped.bodies.to_pylist(), strict=True))
            found += [(n, (r.field, r.reason, r.masked)) for n, r in mapped.rejections]
    except SegmentError as exc:
        return [], tables, str(exc)
    return sorted(found, key=lambda item: item[0]), tables, None


def both(data: bytes) -> tuple[tuple[list[tuple[int, object]], str | None], ...]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.jsonl"
        path.write_bytes(data)
        fast, _, fast_error = outcomes(path, fast=True)
        slow, _, slow_error = outcomes(path, fast=False)
        return (fast, fast_error), (slow, slow_error)


values = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, width=16),
    st.booleans(),
    st.sampled_from(["a@example.com", " B@Example.COM ", "bad@", "+12065550100", "(206) 555-0100", "", " "]),
    st.sampled_from(["a@example.com", "+12065550100", "Ann", "gold"]),
    st.text(alphabet=st.sampled_from(list('ab "\\\t\u2028\u3000\xa0\x85é\x01\x0b\x1f\x7f')), max_size=5),
    st.lists(st.integers(0, 2), max_size=2),
    st.dictionaries(st.just("k"), st.none(), max_size=1),
)
keys = st.sampled_from(["email", "phone", "name", "tier", "other", "null", "n,u"])
objects = st.dictionaries(keys, values, max_size=5).map(lambda d: orjson.dumps(d))
# Lines other than plain objects: among them the ones Arrow's JSON reader crashed on (`null` first in
# a block) or read as rows (a later `null`), and lines that form one value only when joined.
BLANK_OR_BROKEN = [b"", b"  ", b"\t", b"{", b"}", b"\xff", b"\xef\xbb\xbf{}", b'{"email":"\\ud800"}']
# Flat objects but for bytes that are not UTF-8 (a stray byte, a character cut short).
NOT_UTF8 = [b'{"email":"a\xff@b.co"}', b'{"name":"\xc3"}', b'{"tier":"\xe2\x82"}']
NOT_OBJECTS = [b"null", b" null ", b"1", b"true", b'"text"', b"[1]", b"[null]"]
ONE_VALUE_ONLY_JOINED = [b"{},{}", b'{"email":"a@b.co"} x', b'{"email":[1', b"2]}", b'{"email":"a@b.', b'co"}']
ODD_BUT_READ = [b'{"email":"a@b.co","email":"c@d.co"}', b'{"email":"a@b.co"}\r', b' {"email":"b@c.co"} ']
damaged = st.sampled_from(BLANK_OR_BROKEN + NOT_UTF8 + NOT_OBJECTS + ONE_VALUE_ONLY_JOINED + ODD_BUT_READ)
lines = st.one_of(objects, objects, damaged)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(lines, max_size=25),
    ending=st.sampled_from([b"\n", b"", b"\r\n"]),
    block=st.sampled_from([16, 64]),
    piece=st.sampled_from([7, 50, 1 << 20]),
)
def test_any_json_lines_map_alike_by_both_readers(rows: list[bytes], ending: bytes, block: int, piece: int) -> None:
    saved = csv_reader.BLOCK_BYTES, jsonl_reader.JSONL_BLOCK_BYTES, jsonl_reader.JSONL_PIECE_BYTES
    csv_reader.BLOCK_BYTES = jsonl_reader.JSONL_BLOCK_BYTES = block
    jsonl_reader.JSONL_PIECE_BYTES = piece
    try:
        fast, slow = both(ending.join(rows) + (ending if rows else b""))
    finally:
        csv_reader.BLOCK_BYTES, jsonl_reader.JSONL_BLOCK_BYTES, jsonl_reader.JSONL_PIECE_BYTES = saved
    assert fast == slow


@settings(max_examples=500, deadline=None)
@given(
    text=st.lists(st.sampled_from([b"\n", b"x", b"yyyyyyy", b"z" * 40]), max_size=40).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=5),
    size=st.sampled_from([1, 8, 32]),
)
def test_blocks_cut_from_any_pieces_hold_every_byte_and_end_at_line_ends(
    text: bytes, cuts: list[int], size: int
) -> None:
    bounds = [0, *sorted(min(cut, len(text)) for cut in cuts), len(text)]
    blocks = list(streams.line_blocks((text[a:b] for a, b in itertools.pairwise(bounds)), size))
    assert b"".join(blocks) == text
    assert all(block.endswith(b"\n") for block in blocks[:-1])
    # Small enough: past half as much again only when the block is one line.
    assert all(len(block) <= size + size // 2 or block.count(b"\n") <= 1 for block in blocks)


# Pieces of flat lines and of near misses: what is accepted must be what orjson reads the same way.
PIECES = st.sampled_from(
    [b"{", b"}", b'"a"', b'"email"', b'"x y"', b'"\xc3\xa9"', b":", b",", b" ", b"null", b"nul", b"l", b"\n", b'"']
    + [b"1", b"true", b"[", b"]", b"\t", b"\r", b"\x00", b"\\", b"\xff", b'{"email":"a@b.co"}', b'"email":null', b"}{"]
)


@settings(max_examples=3000, deadline=None)
@given(pieces=st.lists(PIECES, max_size=30))
def test_a_block_taken_as_flat_objects_is_one_object_of_text_or_nulls_a_line_for_orjson(pieces: list[bytes]) -> None:
    block = b"".join(pieces)
    lines = jsonl_blocks.flat_object_lines(block)
    if lines is not None:
        parsed = [orjson.loads(line) for line in block.removesuffix(b"\n").split(b"\n")]
        assert len(parsed) == lines
        assert all(type(row) is dict and {type(v) for v in row.values()} <= {str, type(None)} for row in parsed)


def test_flat_objects_with_spaces_and_nulls_are_taken() -> None:
    block = b'{"email": "a@b.co", "x": null}\n {}\n{"phone":"+12065550100" ,"email" : null } \n{"a":"b"}'
    assert jsonl_blocks.flat_object_lines(block) == 4
    not_flat = [b'{"n": 1}\n', b"null\n", b'{"a":"b"}\n\n', b'{"a":"\\u00e9"}\n', b'{"a":"b"},\n', b"{,}\n"]
    for other in [*not_flat, b'{"a":"x\ny"}', b"{}\n "]:
        assert jsonl_blocks.flat_object_lines(other) is None, other


# Lines of one layout (a table export) and lines that break it in each way a layout can be broken.
LAYOUT_KEYS = ["email", "name", "n:{x}", "tier"]
layout_values = st.text(alphabet=st.sampled_from(list("ab :,{}é\u2028")), max_size=4)


@st.composite
def layout_lines(draw: st.DrawFn) -> tuple[bytes, str]:
    """A line, and how it differs from the layout ("none", or "spaces" around its separators)."""
    values = draw(st.lists(layout_values, min_size=4, max_size=4))
    pairs: list[tuple[str, object]] = list(zip(LAYOUT_KEYS, values, strict=True))
    change = draw(
        st.sampled_from(
            ["none"] * 8
            + ["null", "missing", "extra", "order", "swapped", "twice", "spaces", "number", "escape", "trailing"]
        )
    )
    if change == "null":
        at = draw(st.integers(0, 3))
        pairs[at] = (pairs[at][0], None)
    elif change == "missing":
        del pairs[draw(st.integers(0, 3))]
    elif change == "extra":
        pairs.insert(draw(st.integers(0, 4)), ("other", "v"))
    elif change == "order":
        pairs.reverse()
    elif change == "swapped":  # two keys of one length: only their bytes tell the lines apart
        pairs[0], pairs[2] = pairs[2], pairs[0]
    elif change == "twice":
        pairs.append(pairs[draw(st.integers(0, 3))])
    elif change == "number":
        pairs[1] = (pairs[1][0], 7)
    elif change == "escape":
        pairs[2] = (pairs[2][0], draw(st.sampled_from(['"', "\\", "\t", "\x01"])))
    colon, comma = (b" : ", b" , ") if change == "spaces" else (b":", b",")
    line = b"{" + comma.join(orjson.dumps(k) + colon + orjson.dumps(v) for k, v in pairs) + b"}"
    return line + (b"x" if change == "trailing" else b""), change


@settings(max_examples=1500, deadline=None)
@given(drawn=st.lists(layout_lines(), min_size=1, max_size=12), ending=st.sampled_from([b"\n", b""]))
def test_blocks_of_one_layout_are_cut_by_position_into_what_orjson_reads(
    drawn: list[tuple[bytes, str]], ending: bytes
) -> None:
    """A block whose lines share one layout (the same bytes but for the values' text) is cut by
    position; any block read as a table holds what orjson reads in each line (nulls and absent keys
    as ""), whichever check took it."""
    lines = [line for line, _ in drawn]
    block = b"\n".join(lines) + ending
    columns = ["tier", "email", "phone", "n:{x}"]
    blocks = jsonl_blocks.JsonBlocks(columns)
    table = blocks.table(block)
    if {change for _, change in drawn} in ({"none"}, {"spaces"}):
        assert table is not None and blocks._layouts  # the layout held: no generic check was needed
    if table is not None:
        rows = [orjson.loads(line) for line in lines]
        assert table.to_pydict() == {column: [row.get(column) or "" for row in rows] for column in columns}


def test_long_lines_are_left_to_the_line_reader(monkeypatch: MonkeyPatch) -> None:
    monkeypatch.setattr(jsonl_blocks, "MAX_PLAIN_LINE", 40)
    rows = [orjson.dumps({"email": f"u{i}@example.com", "name": "n" * (i * 8)}) for i in range(6)]
    (fast, fast_error), (slow, slow_error) = both(b"\n".join(rows) + b"\n")
    assert fast == slow and fast_error is slow_error is None and len(fast) == 6


def test_plain_json_lines_are_read_as_tables(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rows = [
        {"email": f"U{i}@x.io", "phone": f"+1206555{i:04d}", "name": "Ann", "tier": None, "n": f"{i}"}
        for i in range(500)
    ]
    path.write_bytes(b"\n".join(orjson.dumps(row).replace(b",", b", ") for row in rows) + b"\n")
    found, tables, error = outcomes(path, fast=True)
    assert error is None and tables == 500
    assert [n for n, _ in found] == list(range(1, 501))
    assert found[0][1] == (
        b'{"type":"profile","attributes":{"email":"u0@x.io","phone_number":"+12065550000","first_name":"Ann"}},'
    )  # a null is no value: no properties
    assert found == outcomes(path, fast=False)[0]


# Run in a child process: a fault in a parser kills the process, which no assertion can catch.
_FUZZ = """
import random, sys
from shared.sources.jsonl_blocks import JsonBlocks
pieces = [b'{"email":"a@b.co"}', b'{"email":null}', b'{"email":1}', b"null", b"true", b"[]", b"[null]", b"{", b"}",
          b'"', b",", b":", b"\\\\", b"\\xff", b"\\x00", b"\\r", b" ", b"\\n", b"\\n", b"\\n", b"\\\\u0000"]
rng = random.Random(int(sys.argv[1]))
blocks, tables = JsonBlocks(["email", "phone"]), 0
for _ in range(int(sys.argv[2])):
    block = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
    if rng.random() < 0.5:
        block = b"\\n".join(rng.choice(pieces[:8]) for _ in range(rng.randint(1, 12)))
    tables += blocks.table(block) is not None
print(tables)
"""


def test_thousands_of_damaged_blocks_never_kill_the_process() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FUZZ, "4", "20000"],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout) > 100  # some blocks were whole objects: the fast path itself was exercised
