"""Column-wise mapping of plain CSV rows (an Arrow table): the profiles ProfileMapper makes row by
row, byte for byte, for a fraction of the time. A typed table (Parquet) may also hold int64, float64
and boolean columns: custom properties from them are JSON numbers and booleans, text fields their text.

A row takes the column-wise path when each identifier it has passes the mapper's own fast checks
(the everyday email, E.164 phone, external id within its length; see columnar_checks). Every other
row is mapped by ProfileMapper itself, so each outcome and reason is the row-by-row one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from shared.mapping.columnar_checks import fast_e164, fast_email
from shared.mapping.config import IDENTIFIERS, MAX_EXTERNAL_ID, FieldMapping
from shared.mapping.fingerprints import fingerprints
from shared.mapping.identifiers import identifier_text
from shared.mapping.rows import MappedRows, Profile, ProfileMapper, Rejection, serialize_profile
from shared.privacy import mask_identifier_text, short_name

_NULL = pa.scalar(None, pa.string())
_EMPTY = pa.scalar("", pa.string())
_ZERO = pa.scalar(0, pa.int32())
_QUOTE = pa.scalar('"', pa.string())


def _s(text: str) -> pa.Scalar:
    # Arrow scalars, not Python strings: converting a Python argument costs an import attempt per call.
    return pa.scalar(text, pa.string())


class ColumnsMapped(NamedTuple):
    """A table's fast rows mapped (row positions, profile bodies, identifiers), and the rows still to
    map one by one: their positions and their values (the mapper's columns; not the whole table,
    which is let go)."""

    numbers: np.ndarray
    fast_rows: np.ndarray
    slow_rows: np.ndarray
    slow_values: list[pa.Array]
    bodies: pa.Array
    identifier: pa.Array
    raw_values: tuple[int, ...] = ()  # positions in slow_values holding JSON text (typed properties)
    emails: pa.Array | None = None  # the fast rows' email and phone ("" where none), with ProfileMapper.contacts
    phones: pa.Array | None = None


class ColumnarMapper:
    """Maps Arrow tables of CSV strings with a ProfileMapper's rules."""

    def __init__(self, mapper: ProfileMapper) -> None:
        self.mapper = mapper
        self._email, self._phone, self._external = mapper.identifier_columns

    def map(self, table: pa.Table, numbers: np.ndarray) -> MappedRows:
        return self.complete(self.map_columns(table, numbers))

    def map_columns(self, table: pa.Table, numbers: np.ndarray) -> ColumnsMapped:
        """The column-wise part: every fast row mapped, the others only found (see complete)."""
        rows = table.num_rows
        table, typed = _as_text(table, self.mapper.columns)
        trimmed: dict[str, pa.Array] = {}

        def text(column: str) -> pa.Array:
            if column not in trimmed:
                trimmed[column] = pc.utf8_trim_whitespace(table.column(column).combine_chunks())
            return trimmed[column]

        fast = np.ones(rows, dtype=bool)
        has_identifier = np.zeros(rows, dtype=bool)
        lowered: pa.Array | None = None
        phone: pa.Array | None = None
        identifiers: list[pa.Array] = []  # in precedence order, null where empty
        if self._email:
            email = pc.ascii_lower(text(self._email))
            empty = _empty(email)
            fast &= empty | fast_email(email)
            has_identifier |= ~empty
            identifiers.append(pc.if_else(pa.array(empty), _NULL, email))
            lowered = email
        if self._phone:
            phone = text(self._phone)
            empty = _empty(phone)
            fast &= empty | fast_e164(phone)
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

        selected = pa.array(fast)
        identifier = pc.coalesce(*identifiers).filter(selected)
        bodies = self._bodies(table, text, lowered, typed).filter(selected)
        slow_rows = np.flatnonzero(~fast)
        columns = self.mapper.columns
        slow_values = [table.column(c).take(slow_rows) for c in columns] if len(slow_rows) else []
        first_property = len(columns) - len(self.mapper.property_fields)
        raw = tuple(at for at in range(first_property, len(columns)) if columns[at] in typed)
        contacts = (lowered, phone) if self.mapper.contacts else (None, None)
        emails, phones = (None if c is None else c.filter(selected) for c in contacts)
        fast_rows = np.flatnonzero(fast)
        return ColumnsMapped(numbers, fast_rows, slow_rows, slow_values, bodies, identifier, raw, emails, phones)

    def complete(self, part: ColumnsMapped) -> MappedRows:
        """The rows the fast checks left out, mapped row by row and put in their places. A second
        step, so that a thread other than the one running the column kernels can take it."""
        numbers, slow_rows = part.numbers, part.slow_rows
        valid_rows, bodies, identifier = part.fast_rows, part.bodies, part.identifier
        emails, phones = (
            _or_empty(v, len(valid_rows)) if self.mapper.contacts else None for v in (part.emails, part.phones)
        )
        rejections: list[tuple[int, Rejection]] = []
        if len(slow_rows):
            more_rows, more_bodies, more_idents, more_emails, more_phones = [], [], [], [], []
            picked = [values.to_pylist() for values in part.slow_values]
            for at in part.raw_values:  # typed properties: their JSON text as it is, as the fast rows have it
                picked[at] = [orjson.Fragment(value) if value else "" for value in picked[at]]
            for row, values in zip(slow_rows.tolist(), zip(*picked, strict=True), strict=True):
                mapped = self.mapper.apply_values(values)
                if isinstance(mapped, Profile):
                    more_rows.append(row)
                    more_bodies.append(serialize_profile(mapped.attributes) + b",")
                    more_idents.append(identifier_text(mapped.attributes))
                    more_emails.append(mapped.attributes.get("email", ""))
                    more_phones.append(mapped.attributes.get("phone_number", ""))
                else:
                    rejections.append((int(numbers[row]), mapped))
            if more_rows:
                order = np.argsort(np.concatenate([valid_rows, more_rows]), kind="stable")
                valid_rows = np.concatenate([valid_rows, more_rows])[order]
                taken = pa.array(order)
                bodies = pa.concat_arrays([bodies, pa.array(more_bodies, pa.binary())]).take(taken)
                identifier = pa.concat_arrays([identifier, pa.array(more_idents, pa.string())]).take(taken)
                if emails is not None and phones is not None:
                    emails = pa.concat_arrays([emails, pa.array(more_emails, pa.string())]).take(taken)
                    phones = pa.concat_arrays([phones, pa.array(more_phones, pa.string())]).take(taken)
        return MappedRows(
            numbers[valid_rows],
            fingerprints(identifier),
            bodies,
            lambda at: [mask_identifier_text(text) for text in identifier.take(pa.array(at)).to_pylist()],
            rejections,
            identifier,
            emails,
            phones,
        )

    def _bodies(
        self, table: pa.Table, text: Callable[[str], pa.Array], email: pa.Array | None, typed: frozenset[str]
    ) -> pa.Array:
        """Every row serialized as ProfileMapper and orjson would (right for the fast rows only); the
        properties from `typed` columns unquoted (their text is JSON already)."""
        mapper = self.mapper
        # One join of constant and column pieces; a field that is empty in some rows is one piece
        # that is empty there. Each field starts with a comma: the first one's is dropped.
        pieces: list[pa.Array | pa.Scalar] = [_s('{"type":"profile","attributes":{')]
        for name, column in mapper.text_fields:
            pieces += _field(name, email if name == "email" and email is not None else text(column))
        for group, fields in (("location", mapper.location_fields), ("properties", mapper.property_fields)):
            trim = group == "location"  # custom properties keep their spaces
            values = [
                (name, text(column) if trim else table.column(column).combine_chunks(), column in typed)
                for name, column in fields
            ]
            if values:
                pieces += _group(group, values)
        pieces.append(_s("}},"))
        first = _without_comma(pieces[1])
        if first is not None:
            pieces[1] = first
        joined = pc.binary_join_element_wise(*_merged(pieces), _EMPTY).cast(pa.binary())
        if first is not None:
            return joined
        return pc.binary_replace_slice(joined, start=_FIRST_COMMA, stop=_FIRST_COMMA + 1, replacement="")


_FIRST_COMMA = len('{"type":"profile","attributes":{')


def _or_empty(values: pa.Array | None, count: int) -> pa.Array:
    """The values, or `count` empty strings for an identifier that is not mapped."""
    return values if values is not None else pa.repeat(_EMPTY, count)


def _without_comma(piece: pa.Array | pa.Scalar) -> pa.Scalar | None:
    """A field's or group's opening piece without its comma when it is a constant (the field is in
    every row); None when it is a column (its comma is there only in some rows, and is cut after)."""
    if isinstance(piece, pa.Scalar) and piece.as_py().startswith(","):
        return _s(piece.as_py()[1:])
    return None


def _merged(pieces: list[pa.Array | pa.Scalar]) -> list[pa.Array | pa.Scalar]:
    """Neighbouring constants made one: Arrow's join costs about as much a constant as a column."""
    merged: list[pa.Array | pa.Scalar] = []
    for piece in pieces:
        if merged and isinstance(piece, pa.Scalar) and isinstance(merged[-1], pa.Scalar):
            merged[-1] = _s(merged[-1].as_py() + piece.as_py())
        else:
            merged.append(piece)
    return merged


def _np(mask: pa.Array) -> np.ndarray:
    return mask.to_numpy(zero_copy_only=False)


def _empty(values: pa.Array) -> np.ndarray:
    return _np(pc.equal(pc.binary_length(values), _ZERO))


def _escaped(values: pa.Array) -> pa.Array:
    """JSON string escaping as orjson does it. Plain CSV and JSON Lines blocks hold no control
    character but TAB (inside quotes, in a tab-separated file); Parquet strings may hold any."""
    data = values.buffers()[2]
    raw = data.to_pybytes() if data is not None else b""
    for char, escape in (("\\", "\\\\"), ('"', '\\"'), ("\t", "\\t")):
        if raw.find(char.encode()) >= 0:
            values = pc.replace_substring(values, char, escape)
    octets = np.frombuffer(raw, dtype=np.uint8)
    controls = octets < 0x20
    if np.count_nonzero(controls) > raw.count(b"\t"):  # one pass; the rest only when some are there
        for code in np.unique(octets[controls]).tolist():
            if code != 9:
                values = pc.replace_substring(values, chr(code), _CONTROL_ESCAPES.get(code, f"\\u{code:04x}"))
    return values


# The control characters orjson writes short (the others as \u00XX).
_CONTROL_ESCAPES = {8: "\\b", 10: "\\n", 12: "\\f", 13: "\\r"}


def _field(name: str, values: pa.Array, raw: bool = False) -> list[pa.Array | pa.Scalar]:
    """Join pieces for `,"name":"value"` (`,"name":value` when `raw`: JSON text): the key, the value
    and a quote when no row is empty, else one piece that is empty in the rows where the value is."""
    key = _s(f",{orjson.dumps(name).decode()}:" + ("" if raw else '"'))
    escaped, close = (values, _EMPTY) if raw else (_escaped(values), _QUOTE)
    empty = pc.equal(pc.binary_length(values), _ZERO)
    if not pc.any(empty).as_py():
        return [key, escaped, close] if not raw else [key, escaped]
    return [pc.if_else(empty, _EMPTY, pc.binary_join_element_wise(key, escaped, close, _EMPTY))]


def _group(name: str, fields: list[tuple[str, pa.Array, bool]]) -> list[pa.Array | pa.Scalar]:
    """Join pieces for `,"name":{...}` holding the group's non-empty fields, or for nothing in rows
    where all are empty."""
    parts = [_field(field, values, raw) for field, values, raw in fields]
    first_key = _without_comma(parts[0][0])
    if first_key is not None:  # its first field is in every row, so the group is: its pieces join the body's
        parts[0][0] = first_key
        return [_s(f',"{name}":' + "{"), *(piece for part in parts for piece in part), _s("}")]
    inner = pc.binary_join_element_wise(*_merged([piece for part in parts for piece in part]), _EMPTY)
    group = pc.binary_join_element_wise(_s(f',"{name}":' + "{"), pc.utf8_slice_codeunits(inner, 1), _s("}"), _EMPTY)
    return [pc.if_else(pc.equal(pc.binary_length(inner), _ZERO), _EMPTY, group)]


def _as_text(table: pa.Table, columns: list[str]) -> tuple[pa.Table, frozenset[str]]:
    """The table with its mapped number and boolean columns as their JSON text ("" for null), and
    those columns' names. A table of strings (CSV, JSON Lines) is returned as it is."""
    typed = [c for c in dict.fromkeys(columns) if not pa.types.is_string(table.schema.field(c).type)]
    for column in typed:
        values = table.column(column).cast(pa.string())
        table = table.set_column(table.schema.get_field_index(column), column, values.fill_null(_EMPTY))
    return table, frozenset(typed)


_MAPPABLE_KINDS = ("text", "number", "boolean", "date")


def column_type_problem(mapping: FieldMapping, part: str, kinds: Mapping[str, str]) -> str | None:
    """Why the mapped columns of a typed part (kinds as the reader names them, or the column's type
    where it cannot be mapped) cannot be mapped, or None: identifiers must be text; lists, maps,
    structs and binary map to nothing."""
    for name, column in mapping.fields.items():
        kind = kinds.get(column)
        if kind is None:
            continue  # a missing column is reported with the header check
        if name in IDENTIFIERS and kind != "text":
            return f"{part}: column {short_name(column)!r} is {kind}, not text: {name} must be a string column"
        if kind not in _MAPPABLE_KINDS:
            return f"{part}: column {short_name(column)!r} is {kind}: {name} takes text, numbers, booleans or dates"
    for column, prop in mapping.properties.items():
        kind = kinds.get(column)
        if kind is not None and kind not in _MAPPABLE_KINDS:
            return (
                f"{part}: column {short_name(column)!r} is {kind}: custom property {short_name(prop)!r} takes text, "
                "numbers, booleans or dates (map a field of a struct by its dotted path)"
            )
    return None
