"""Column-wise mapping of plain CSV rows (an Arrow table): the profiles ProfileMapper makes row by
row, byte for byte, for a fraction of the time.

A row takes the column-wise path when each identifier it has passes the mapper's own fast checks
(the everyday email, E.164 phone, external id within its length), written here as RE2 patterns
over whole columns. Every other row is mapped by ProfileMapper itself, so each outcome and reason
is the row-by-row one."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shared.mapping import (
    _LENGTHS,
    _SPECIAL_USE_TLDS,
    MAX_EXTERNAL_ID,
    MappedRows,
    Profile,
    ProfileMapper,
    Rejection,
    identifier_text,
    mask_identifier_text,
    serialize_profile,
)

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# A subset of mapping._plain_email: dot-atom local part, labels of letters, digits and inner hyphens.
FAST_EMAIL = rf"^{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)+[a-z]{{2,63}}$"
NOT_FAST_EMAIL = r"--|^[^@]{65,}@|\.(?:" + "|".join(sorted(_SPECIAL_USE_TLDS)) + r")$"


def _e164_pattern() -> str:
    """mapping._quick_e164 as one pattern: calling codes are a prefix code, so the alternation
    picks the same code the function does."""
    branches = [r"1[2-9][0-9]{2}[2-9][0-9]{6}"]
    for code, lengths in sorted(_LENGTHS.items()):
        fitting = sorted(n for n in lengths if 7 <= len(code) + n <= 15)
        if code != "1" and fitting:
            branches.append(code + "(?:" + "|".join(f"[0-9]{{{n}}}" for n in fitting) + ")")
    return r"^\+(?:" + "|".join(branches) + ")$"


FAST_E164 = _e164_pattern()
_NULL = pa.scalar(None, pa.string())
_EMPTY = pa.scalar("", pa.string())
_ZERO = pa.scalar(0, pa.int32())


def _s(text: str) -> pa.Scalar:
    # Arrow scalars, not Python strings: converting a Python argument costs an import attempt per call.
    return pa.scalar(text, pa.string())


def _key_hash(text: str) -> int:
    return hash(text)


class ColumnarMapper:
    """Maps Arrow tables of CSV strings with a ProfileMapper's rules."""

    def __init__(self, mapper: ProfileMapper) -> None:
        self.mapper = mapper
        self._email, self._phone, self._external = mapper.identifier_columns

    def map(self, table: pa.Table, numbers: np.ndarray) -> MappedRows:
        rows = table.num_rows
        trimmed: dict[str, pa.Array] = {}

        def text(column: str) -> pa.Array:
            if column not in trimmed:
                trimmed[column] = pc.utf8_trim_whitespace(table.column(column).combine_chunks())
            return trimmed[column]

        fast = np.ones(rows, dtype=bool)
        has_identifier = np.zeros(rows, dtype=bool)
        lowered: pa.Array | None = None
        identifiers: list[pa.Array] = []  # in precedence order, null where empty
        if self._email:
            email = pc.ascii_lower(text(self._email))
            empty = _empty(email)
            ok = pc.and_(
                pc.match_substring_regex(email, FAST_EMAIL),
                pc.invert(pc.match_substring_regex(email, NOT_FAST_EMAIL)),
            )
            ok = pc.and_(ok, pc.less_equal(pc.binary_length(email), pa.scalar(254, pa.int32())))
            fast &= empty | _np(ok)
            has_identifier |= ~empty
            identifiers.append(pc.if_else(pa.array(empty), _NULL, email))
            lowered = email
        if self._phone:
            phone = text(self._phone)
            empty = _empty(phone)
            fast &= empty | _np(pc.match_substring_regex(phone, FAST_E164))
            has_identifier |= ~empty
            identifiers.append(pc.if_else(pa.array(empty), _NULL, phone))
        if self._external:
            external = text(self._external)
            empty = _empty(external)
            fast &= empty | _np(pc.less_equal(pc.utf8_length(external), pa.scalar(MAX_EXTERNAL_ID, pa.int32())))
            has_identifier |= ~empty
            prefixed = pc.binary_join_element_wise(_s("x:"), external, _EMPTY)
            identifiers.append(pc.if_else(pa.array(empty), _NULL, prefixed))
        fast &= has_identifier

        fast_rows = np.flatnonzero(fast)
        selected = pa.array(fast)
        idents: list[str] = pc.coalesce(*identifiers).filter(selected).to_pylist()
        bodies = self._bodies(table, text, lowered).filter(selected)
        keys = np.fromiter(map(_key_hash, idents), dtype=np.int64, count=len(idents))
        valid_rows = fast_rows

        rejections: list[tuple[int, Rejection]] = []
        slow_rows = np.flatnonzero(~fast)
        if len(slow_rows):
            more_rows, more_bodies, more_keys, more_idents = [], [], [], []
            picked = [table.column(c).take(slow_rows).to_pylist() for c in self.mapper.columns]
            for row, values in zip(slow_rows.tolist(), zip(*picked, strict=True), strict=True):
                mapped = self.mapper.apply_values(values)
                if type(mapped) is Profile:
                    more_rows.append(row)
                    more_bodies.append(serialize_profile(mapped.attributes) + b",")
                    more_keys.append(mapped.key)
                    more_idents.append(identifier_text(mapped.attributes))
                else:
                    rejections.append((int(numbers[row]), mapped))
            if more_rows:
                order = np.argsort(np.concatenate([fast_rows, more_rows]), kind="stable")
                valid_rows = np.concatenate([fast_rows, more_rows])[order]
                keys = np.concatenate([keys, np.array(more_keys, dtype=np.int64)])[order]
                bodies = pa.concat_arrays([bodies, pa.array(more_bodies, pa.binary())]).take(pa.array(order))
                idents += more_idents
                idents = [idents[i] for i in order.tolist()]
        return MappedRows(
            numbers[valid_rows].tolist(), keys, bodies, lambda i: mask_identifier_text(idents[i]), rejections
        )

    def _bodies(self, table: pa.Table, text: Callable[[str], pa.Array], email: pa.Array | None) -> pa.Array:
        """Every row serialized as ProfileMapper and orjson would (right for the fast rows only)."""
        mapper = self.mapper
        parts = [
            _fragment(name, email if name == "email" and email is not None else text(column))
            for name, column in mapper.text_fields
        ]
        location = [_fragment(name, text(column)) for name, column in mapper.location_fields]
        if location:
            parts.append(_group("location", location))
        properties = [_fragment(name, table.column(column).combine_chunks()) for name, column in mapper.property_fields]
        if properties:
            parts.append(_group("properties", properties))
        joined = pc.binary_join_element_wise(*parts, _EMPTY)
        return pc.binary_join_element_wise(
            _s('{"type":"profile","attributes":{'), pc.utf8_slice_codeunits(joined, 1), _s("}},"), _EMPTY
        ).cast(pa.binary())


def _np(mask: pa.Array) -> np.ndarray:
    return mask.to_numpy(zero_copy_only=False)


def _empty(values: pa.Array) -> np.ndarray:
    return _np(pc.equal(pc.binary_length(values), _ZERO))


def _escaped(values: pa.Array) -> pa.Array:
    """JSON string escaping as orjson does it. Plain blocks hold no control character but TAB
    (inside quotes, in a tab-separated file)."""
    data = values.buffers()[2]
    raw = data.to_pybytes() if data is not None else b""
    for char, escape in (("\\", "\\\\"), ('"', '\\"'), ("\t", "\\t")):
        if raw.find(char.encode()) >= 0:
            values = pc.replace_substring(values, char, escape)
    return values


def _fragment(name: str, values: pa.Array) -> pa.Array:
    """`,"name":"value"` where the value is not empty, else ``."""
    key = orjson.dumps(name).decode()
    fragment = pc.binary_join_element_wise(_s(f",{key}:" + '"'), _escaped(values), _s('"'), _EMPTY)
    empty = pc.equal(pc.binary_length(values), _ZERO)
    if not pc.any(empty).as_py():
        return fragment
    return pc.if_else(empty, _EMPTY, fragment)


def _group(name: str, fragments: list[pa.Array]) -> pa.Array:
    """`,"name":{...}` holding the group's non-empty fields, or `` when all are empty."""
    inner = pc.binary_join_element_wise(*fragments, _EMPTY)
    group = pc.binary_join_element_wise(_s(f',"{name}":' + "{"), pc.utf8_slice_codeunits(inner, 1), _s("}"), _EMPTY)
    return pc.if_else(pc.equal(pc.binary_length(inner), _ZERO), _EMPTY, group)
