"""The column-wise mapper gives exactly what ProfileMapper gives row by row: the same profiles,
byte for byte, the same keys, rejections and masked identifiers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import columnar_mapping
from shared.columnar_mapping import ColumnarMapper
from shared.mapping import _LENGTHS, FieldMapping, MappedRows, ProfileMapper, _plain_email, _quick_e164

COLUMNS = ["email", "phone", "customer_id", "first", "city", "tier", "note"]
MAPPING = FieldMapping(
    {"email": "email", "phone_number": "phone", "external_id": "customer_id", "first_name": "first", "city": "city"},
    {"tier": "loyalty_tier", "note": 'say "hi"'},
)

emails = st.one_of(
    st.sampled_from(
        [
            "a@example.com",
            " Bob.Smith@Example.CO.uk ",
            "x--y@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a@-example.com",
            "a@ex-.ample.com",
            "a@example.test",
            "a@example.local",
            "josé@example.com",
            "a@bücher.de",
            '"quoted"@example.com',
            "a@example",
            "a@" + "b" * 64 + ".com",
            "a" * 65 + "@example.com",
            "a@xn--bcher-kva.de",
            "+tag@example.com",
            "",
            "   ",
            "\u00a0a@example.com\u2003",
            "A@EXAMPLE.COM",
            "o'brien@example.ie",
        ]
    ),
    st.from_regex(r"[a-zA-Z0-9.+_'-]{1,8}@[a-z0-9.-]{1,10}\.[a-zA-Z]{2,4}", fullmatch=True),
)
phones = st.one_of(
    st.sampled_from(["+12065550100", "+1 206 555 0100", "(206) 555-0100", "+447911123456", "+4479111234", "12", ""]),
    st.from_regex(r"\+[0-9]{6,16}", fullmatch=True),
)
texts = st.text(alphabet=st.sampled_from(list('ab "\\\té\u2028 \u00a0') + ["\x7f"]), max_size=6)
external_ids = st.one_of(texts, st.just("c" * 256), st.just(" " + "c" * 255))
rows = st.lists(st.tuples(emails, phones, external_ids, texts, texts, texts, texts), min_size=1, max_size=30)


def both(records: list[tuple[str, ...]]) -> tuple[MappedRows, MappedRows]:
    mapper = ProfileMapper(MAPPING)
    numbers = np.arange(2, 2 + len(records), dtype=np.int64)
    table = pa.table({c: pa.array([r[i] for r in records], pa.string()) for i, c in enumerate(COLUMNS)})
    fast = ColumnarMapper(mapper).map(table, numbers)
    slow = mapper.map_records(COLUMNS, numbers.tolist(), [list(r) for r in records])
    return fast, slow


def outcome(mapped: MappedRows) -> tuple[object, ...]:
    masks = [mapped.masked(i) for i in range(len(mapped.numbers))]
    return mapped.numbers, mapped.keys.tolist(), mapped.bodies.to_pylist(), masks, mapped.rejections


@settings(max_examples=300, deadline=None)
@given(records=rows)
def test_columnar_and_row_by_row_mapping_agree(records: list[tuple[str, ...]]) -> None:
    fast, slow = both(records)
    assert outcome(fast) == outcome(slow)


def test_every_outcome_is_covered() -> None:
    records = [
        ("A@Example.com", "+12065550100", "c1", "Ann", "", "gold", ""),
        ("bad@", "", "", "", "", "", ""),
        ("", "(206) 555-0100", "", "", "Paris", "", 'x"y'),
        ("", "", "", "", "", "", ""),
        ("", "", "c" * 300, "", "", "", ""),
    ]
    fast, slow = both(records)
    assert outcome(fast) == outcome(slow)
    assert fast.numbers == [2, 4] and [n for n, _ in fast.rejections] == [3, 5, 6]
    assert fast.bodies.to_pylist()[1] == (
        b'{"type":"profile","attributes":{"phone_number":"+12065550100",'
        b'"location":{"city":"Paris"},"properties":{"say \\"hi\\"":"x\\"y"}}},'
    )


@pytest.mark.parametrize("value", ["+12065550100", "+442079460000", "+4420794600", "+8613800138000", "+999123456"])
def test_the_e164_pattern_is_the_quick_check(value: str) -> None:
    table = pa.array([value])
    import pyarrow.compute as pc

    assert pc.match_substring_regex(table, columnar_mapping.FAST_E164)[0].as_py() == _quick_e164(value)


def test_calling_codes_are_a_prefix_code() -> None:
    # The E.164 pattern relies on it to pick the same country code as mapping._quick_e164.
    codes = list(_LENGTHS)
    assert not [(a, b) for a in codes for b in codes if a != b and b.startswith(a)]


@pytest.mark.parametrize("email", ["a@b.co", "a-b.c@d-e.fg", "x@localhost.test", "a@b", "a--b@c.de", "é@x.io"])
def test_the_fast_email_check_never_accepts_what_the_row_check_refuses(email: str) -> None:
    import pyarrow.compute as pc

    fast = pc.match_substring_regex(pa.array([email]), columnar_mapping.FAST_EMAIL)[0].as_py()
    fast = fast and not pc.match_substring_regex(pa.array([email]), columnar_mapping.NOT_FAST_EMAIL)[0].as_py()
    assert not fast or _plain_email(email)
