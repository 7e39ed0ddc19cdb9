"""The column-wise mapper gives exactly what ProfileMapper gives row by row: the same profiles,
byte for byte, the same keys, rejections and masked identifiers."""

from __future__ import annotations

import numpy as np
import phonenumbers
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.mapping import ColumnarMapper, FieldMapping, MappedRows, ProfileMapper
from shared.mapping.columnar_checks import fast_e164, fast_email
from shared.mapping.normalize import plain_email as _plain_email
from shared.mapping.normalize import possible_lengths
from shared.mapping.normalize import quick_e164 as _quick_e164

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
    masks = mapped.masked(np.arange(len(mapped.numbers)))
    return mapped.numbers.tolist(), mapped.keys.tolist(), mapped.bodies.to_pylist(), masks, mapped.rejections


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
    assert fast.numbers.tolist() == [2, 4] and [n for n, _ in fast.rejections] == [3, 5, 6]
    assert fast.bodies.to_pylist()[1] == (
        b'{"type":"profile","attributes":{"phone_number":"+12065550100",'
        b'"location":{"city":"Paris"},"properties":{"say \\"hi\\"":"x\\"y"}}},'
    )


@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.from_regex(r"\+[0-9]{5,17}", fullmatch=True), st.text("+0123456789 -()", max_size=17))))
def test_the_column_e164_check_is_the_row_check(values: list[str]) -> None:
    assert fast_e164(pa.array(values, pa.string())).tolist() == [_quick_e164(v) for v in values]


def test_calling_codes_are_a_prefix_code() -> None:
    # The column check relies on it to pick the same country code as mapping._quick_e164.
    codes = [str(code) for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE if possible_lengths(str(code))]
    assert not [(a, b) for a in codes for b in codes if a != b and b.startswith(a)]


email_parts = st.text("ab1.-@_+'xé\"", max_size=12)


@settings(max_examples=800, deadline=None)
@given(
    st.lists(
        st.one_of(
            emails.map(str.lower),
            email_parts,
            st.builds(
                "{}@{}.{}".format,
                email_parts,
                email_parts,
                st.sampled_from(
                    ["com", "test", "local", "c", "co1", "internal", "example", "onion", "localhost", "io"]
                ),
            ),
        )
    )
)
def test_the_column_email_check_accepts_only_what_the_row_check_accepts(values: list[str]) -> None:
    fast = fast_email(pa.array(values, pa.string())).tolist()
    assert [v for v, ok in zip(values, fast, strict=True) if ok and not _plain_email(v)] == []
    # A slice of a longer array (its bytes before and after belong to no row) is checked alike.
    padded = pa.array(["a--@b.test", *values, "@@x--.local"], pa.string()).slice(1, len(values))
    assert fast_email(padded).tolist() == fast


def test_the_column_email_check_takes_everyday_addresses() -> None:
    values = ["a@example.com", "bob.smith@shop.example.co.uk", "o'brien+x@mail-1.example.io", "a@b.test", "a--b@c.de"]
    assert fast_email(pa.array(values)).tolist() == [True, True, True, False, False]
