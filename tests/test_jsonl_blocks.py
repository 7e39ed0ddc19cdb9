"""The JSON Lines fast path (Arrow-parsed blocks) maps every file exactly as the line reader does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import segments
from shared.columnar_mapping import ColumnarMapper
from shared.csv_blocks import TableChunk
from shared.mapping import FieldMapping, ProfileMapper
from shared.segments import SegmentError, local_segment

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
    st.sampled_from(["a@example.com", " B@Example.COM ", "bad@", "+12065550100", "(206) 555-0100", "", " "]),
    st.text(alphabet=st.sampled_from(list('ab "\\\t\u2028é\x01\x7f')), max_size=5),
    st.lists(st.integers(0, 2), max_size=2),
)
keys = st.sampled_from(["email", "phone", "name", "tier", "other"])
objects = st.dictionaries(keys, values, max_size=5).map(lambda d: orjson.dumps(d))
lines = st.one_of(
    objects,
    objects,
    st.sampled_from([b"", b"  ", b"[1]", b"{", b'{"email":"a@b.co","email":"c@d.co"}', b"\xff", b"\xef\xbb\xbf{}"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(lines, max_size=25), ending=st.sampled_from([b"\n", b"", b"\r\n"]), block=st.sampled_from([16, 64])
)
def test_any_json_lines_map_alike_by_both_readers(rows: list[bytes], ending: bytes, block: int) -> None:
    saved = segments.BLOCK_BYTES
    segments.BLOCK_BYTES = block
    try:
        fast, slow = both(ending.join(rows) + (ending if rows else b""))
    finally:
        segments.BLOCK_BYTES = saved
    assert fast == slow


def test_plain_json_lines_are_read_by_arrow(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rows = [
        {"email": f"U{i}@x.io", "phone": f"+1206555{i:04d}", "name": "Ann", "tier": "gold", "n": i} for i in range(500)
    ]
    path.write_bytes(b"\n".join(map(orjson.dumps, rows)) + b"\n")
    found, tables, error = outcomes(path, fast=True)
    assert error is None and tables == 500
    assert [n for n, _ in found] == list(range(1, 501))
    assert found[0][1] == (
        b'{"type":"profile","attributes":{"email":"u0@x.io","phone_number":"+12065550000","first_name":"Ann",'
        b'"properties":{"tier":"gold"}}},'
    )
    assert np.array_equal([n for n, _ in found], [n for n, _ in outcomes(path, fast=False)[0]])
