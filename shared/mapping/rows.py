"""Turns segment rows into Klaviyo profiles, or into rejections that say which field and why."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from orjson import dumps

from shared.mapping.config import IDENTIFIERS, LOCATION_FIELDS, MAX_EXTERNAL_ID, PROFILE_FIELDS, FieldMapping
from shared.mapping.fingerprints import fingerprints
from shared.mapping.identifiers import attributes_key, identifier_text
from shared.mapping.normalize import normalize_email, normalize_phone, plain_email, quick_e164
from shared.privacy import mask_attributes, mask_email, mask_phone, mask_text

# A row as apply_values takes it: the strings of the mapped text columns, then each custom property's
# value (a string from CSV, any JSON value from JSON Lines). A tuple type cannot say which positions
# hold strings, hence Any.
RowValues = tuple[Any, ...]


class Profile(NamedTuple):
    """A valid row, ready for Klaviyo. Its `key` serves one profile at a time: a chunk's dedupe keys
    are fingerprinted all at once from identifier_text."""

    attributes: dict[str, object]

    @property
    def key(self) -> int:
        return attributes_key(self.attributes)

    @property
    def masked(self) -> str:
        return mask_attributes(self.attributes)


class Rejection(NamedTuple):
    """A row that cannot be sent: the field at fault, why, and that field's value masked (empty
    when the row has no value to show)."""

    field: str
    reason: str
    masked: str


class MappedRows(NamedTuple):
    """A chunk's valid profiles in row order, and its rejected rows."""

    numbers: np.ndarray  # int64 row numbers
    keys: np.ndarray  # int64 dedupe keys (fingerprints of `identifiers`)
    bodies: pa.BinaryArray  # each profile serialized as Klaviyo takes it, and a comma (see Batch)
    masked: Callable[[np.ndarray], list[str]]  # the masked identifiers of the profiles at these positions
    rejections: list[tuple[int, Rejection]]
    identifiers: pa.Array | None = None  # identifier_text of each profile (stable across processes)
    # Each profile's normalised email and phone number ("" where it has none), when the mapper is asked
    # for them (ProfileMapper.contacts: a run that subscribes).
    emails: pa.Array | None = None
    phones: pa.Array | None = None


class ProfileMapper:
    """Applies a FieldMapping to rows: validates, normalizes and builds Klaviyo attributes.

    Hot path: `for_columns(header)` returns a function over a CSV row's list of values that reads
    only the mapped positions; `map(dict)` serves JSON Lines rows; ColumnarMapper hands
    `apply_values` the rows its column-wise checks leave out."""

    def __init__(self, mapping: FieldMapping, contacts: bool = False) -> None:
        self.mapping = mapping
        self.contacts = contacts  # whether MappedRows carry each profile's email and phone (to subscribe)
        self._region = mapping.default_region.upper()
        fields = mapping.fields
        # Every mapped input, in a fixed order: identifiers, plain fields, location, properties.
        self._ids = [(f, fields.get(f)) for f in IDENTIFIERS]
        email, phone, external = (c for _, c in self._ids)
        self._id_columns = (email, phone, external)
        self._plain = [(f, c) for f, c in fields.items() if f in PROFILE_FIELDS and f not in IDENTIFIERS]
        self._location = [(f, c) for f, c in fields.items() if f in LOCATION_FIELDS]
        self._properties = [(name, column) for column, name in mapping.properties.items()]
        texts = [c for _, c in self._ids if c] + [c for _, c in self._plain + self._location]
        self._text_count = len(texts)
        self._columns = texts + [c for _, c in self._properties]
        self._plain_names = [f for f, _ in self._plain]
        self._location_names = [f for f, _ in self._location]
        self._property_names = [name for name, _ in self._properties]
        # Where each value lies in the tuple apply_values takes: each identifier's (None when it is
        # not mapped; the mapped ones come first), then where each group of fields starts or ends.
        mapped_ids = [f for f, c in self._ids if c]
        self._id_positions = tuple(mapped_ids.index(f) if c else None for f, c in self._ids)
        self._plain_start = len(mapped_ids)
        self._plain_end = self._plain_start + len(self._plain)
        self._location_end = self._plain_end + len(self._location)
        self._missing_identifier = " and ".join(mapped_ids)
        self._first_identifier = mapped_ids[0]

    def for_columns(self, header: list[str]) -> Callable[[list[str]], Profile | Rejection]:
        positions = [header.index(c) for c in self._columns]
        pick = operator.itemgetter(*positions) if len(positions) > 1 else (lambda row: (row[positions[0]],))
        apply = self.apply_values

        def map_values(values: list[str]) -> Profile | Rejection:
            return apply(pick(values))

        return map_values

    def map_records(
        self, columns: list[str] | None, numbers: list[int], records: list[list[str]] | list[Mapping[str, object]]
    ) -> MappedRows:
        """Maps CSV records (lists of values under `columns`) or JSON Lines records (dicts)."""
        apply = self.for_columns(columns) if columns is not None else self.map
        profiles: list[dict[str, object]] = []
        valid: list[int] = []
        rejections: list[tuple[int, Rejection]] = []
        for number, record in zip(numbers, records, strict=True):
            mapped = apply(record)  # type: ignore[arg-type]  # lists meet for_columns' function, dicts map
            if isinstance(mapped, Profile):
                profiles.append(mapped.attributes)
                valid.append(number)
            else:
                rejections.append((number, mapped))
        bodies = pa.array([serialize_profile(attributes) + b"," for attributes in profiles], pa.binary())
        identifiers = pa.array([identifier_text(attributes) for attributes in profiles], pa.string())
        emails = phones = None
        if self.contacts:
            emails = pa.array([attributes.get("email", "") for attributes in profiles], pa.string())
            phones = pa.array([attributes.get("phone_number", "") for attributes in profiles], pa.string())
        return MappedRows(
            np.array(valid, dtype=np.int64),
            fingerprints(identifiers),
            bodies,
            lambda at: [mask_attributes(profiles[i]) for i in at.tolist()],
            rejections,
            identifiers,
            emails,
            phones,
        )

    def map(self, row: Mapping[str, object]) -> Profile | Rejection:
        """Maps one JSON Lines row (the values of the mapped fields must be text, numbers or null)."""
        try:
            texts = [_text(row.get(c), c) for c in self._columns[: self._text_count]]
            return self.apply_values((*texts, *(row.get(c) for _, c in self._properties)))
        except _NotText as exc:
            return Rejection(exc.field, f"{exc.field} is a JSON {exc.kind}, not text", "")

    @property
    def columns(self) -> list[str]:
        """The input columns `apply_values` takes, in its order."""
        return list(self._columns)

    @property
    def identifier_columns(self) -> tuple[str | None, str | None, str | None]:
        """The email, phone number and external id columns (None where not mapped)."""
        return self._id_columns

    @property
    def text_fields(self) -> list[tuple[str, str]]:
        """(field, column) of the top-level text attributes, in the order a profile holds them."""
        return [(f, c) for f, c in self._ids if c] + self._plain

    @property
    def location_fields(self) -> list[tuple[str, str]]:
        return list(self._location)

    @property
    def property_fields(self) -> list[tuple[str, str]]:
        return list(self._properties)

    def apply_values(self, values: RowValues) -> Profile | Rejection:
        """Maps one row given as the values of `columns`, in that order."""
        attributes: dict[str, object] = {}
        rejection = self._put_identifiers(values, attributes)
        if rejection is not None:
            return rejection
        if not attributes:
            return Rejection(self._first_identifier, f"no identifier: {self._missing_identifier} empty", "")
        plain_end, location_end = self._plain_end, self._location_end
        for name, value in zip(self._plain_names, values[self._plain_start : plain_end], strict=True):
            value = value.strip()
            if value:
                attributes[name] = value
        if location_end > plain_end:
            location = {}
            for name, value in zip(self._location_names, values[plain_end:location_end], strict=True):
                value = value.strip()
                if value:
                    location[name] = value
            if location:
                attributes["location"] = location
        if self._property_names:
            properties = {}
            for name, value in zip(self._property_names, values[location_end:], strict=True):
                if value is not None and value != "":
                    properties[name] = value
            if properties:
                attributes["properties"] = properties
        return Profile(attributes)

    def _put_identifiers(self, values: RowValues, attributes: dict[str, object]) -> Rejection | None:
        """Puts the row's identifiers into `attributes`, checked and normalised (the values of the
        mapped identifier columns come first); returns the rejection when one of them is wrong."""
        email_at, phone_at, external_at = self._id_positions
        if email_at is not None:
            raw = values[email_at].strip()
            if raw:
                email = raw.lower()
                if not plain_email(email):
                    try:
                        email = normalize_email(raw)
                    except ValueError as exc:
                        return Rejection("email", f"email is not valid: {exc}", mask_email(raw))
                attributes["email"] = email
        if phone_at is not None:
            raw = values[phone_at].strip()
            if raw:
                if not quick_e164(raw):
                    try:
                        raw = normalize_phone(raw, self._region)
                    except ValueError as exc:
                        return Rejection("phone_number", f"phone_number cannot be made E.164: {exc}", mask_phone(raw))
                attributes["phone_number"] = raw
        if external_at is not None:
            raw = values[external_at].strip()
            if raw:
                if len(raw) > MAX_EXTERNAL_ID:
                    reason = f"external_id is longer than {MAX_EXTERNAL_ID} characters"
                    return Rejection("external_id", reason, mask_text(raw))
                attributes["external_id"] = raw
        return None


def serialize_profile(attributes: Mapping[str, object]) -> bytes:
    """A profile as Klaviyo's bulk import takes it."""
    return dumps({"type": "profile", "attributes": attributes})


class _NotText(Exception):
    """A JSON Lines row holds a value of another type where a text field is mapped."""

    def __init__(self, field: str, kind: str) -> None:
        self.field, self.kind = field, kind


def _text(value: object, column: str = "") -> str:
    """A JSON value as the text a CSV column would hold (trimmed, numbers written out, null empty)."""
    if isinstance(value, str):
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _NotText(column, type(value).__name__)
