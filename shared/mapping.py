"""Field mapping and validation: turns a segment row into a Klaviyo profile, or a reason it can't be."""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import phonenumbers
import pyarrow as pa
from email_validator import EmailNotValidError, validate_email
from orjson import dumps

from shared.fingerprints import fingerprints, text_fingerprints

IDENTIFIERS = ("email", "phone_number", "external_id")
PROFILE_FIELDS = (*IDENTIFIERS, "first_name", "last_name", "organization", "title", "locale")
LOCATION_FIELDS = (
    "address1",
    "address2",
    "city",
    "region",
    "country",
    "zip",
    "timezone",
    "latitude",
    "longitude",
    "ip",
)
STANDARD_FIELDS = PROFILE_FIELDS + LOCATION_FIELDS
MAX_EXTERNAL_ID = 255
_PROPERTY_NAME = re.compile(r"^[^\x00-\x1f]{1,255}$")
# A strict subset of what email-validator accepts, so the common case skips its slower checks: at most
# 254 characters, and no label with "--" in 3rd-4th place (RFC 5891 reserves those; "xn--" is Punycode,
# which only email-validator can check).
# A cheap shape check; _plain_email adds the rules the shape cannot say. Together they accept a
# strict subset of what email-validator accepts, so the common case skips its slower checks.
_EMAIL_SHAPE = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[a-z0-9.-]{1,252}\.[a-z]{2,63}").fullmatch
_SPECIAL_USE_TLDS = {"arpa", "invalid", "local", "localhost", "onion", "test", "example", "internal"}


class MappingError(ValueError):
    """The mapping itself is wrong (a run-level configuration error)."""


@dataclass(frozen=True)
class FieldMapping:
    """Which input column feeds which Klaviyo profile field, and which become custom properties."""

    fields: dict[str, str] = field(default_factory=lambda: {"email": "email"})
    properties: dict[str, str] = field(default_factory=dict)  # column -> property name
    default_region: str = "US"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.fields) - set(STANDARD_FIELDS))
        if unknown:
            raise MappingError(f"unknown profile field(s) {', '.join(unknown)}; known: {', '.join(STANDARD_FIELDS)}")
        for name, column in self.fields.items():
            if not isinstance(column, str) or not column.strip():
                raise MappingError(f"field {name!r}: the column name is empty")
        if not any(self.fields.get(i) for i in IDENTIFIERS):
            raise MappingError("map at least one identifier column: email, phone_number or external_id")
        for column, prop in self.properties.items():
            if not column.strip():
                raise MappingError(f"custom property {prop!r}: the column name is empty")
            if not isinstance(prop, str) or not _PROPERTY_NAME.fullmatch(prop):
                raise MappingError(f"custom property for column {column!r}: invalid property name {prop!r}")
        if phonenumbers.country_code_for_region(self.default_region.upper()) == 0:
            raise MappingError(f"default_region {self.default_region!r} is not a known ISO 3166 region code")

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> FieldMapping:
        """Builds a mapping from its JSON form: {"email": "Email", ..., "properties": {...}}."""
        fields = {k: v for k, v in data.items() if k not in ("properties", "default_region")}
        properties = data.get("properties") or {}
        if not isinstance(properties, dict):
            raise MappingError("properties must be an object of column -> property name")
        region = data.get("default_region") or "US"
        if any(not isinstance(v, str) for v in fields.values()):
            raise MappingError("every mapped field must name a column (a string)")
        return cls(dict(fields), dict(properties), str(region))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        return {**self.fields, "properties": dict(self.properties), "default_region": self.default_region}

    @property
    def columns(self) -> set[str]:
        return set(self.fields.values()) | set(self.properties)

    def missing_columns(self, header: list[str]) -> list[str]:
        return sorted(self.columns - set(header))


class Profile(NamedTuple):
    """A valid row ready for Klaviyo (its dedupe key is computed a chunk at a time, from
    identifier_text)."""

    attributes: dict[str, object]

    @property
    def key(self) -> int:
        return attributes_key(self.attributes)

    @property
    def masked(self) -> str:
        return mask_attributes(self.attributes)


class Rejection(NamedTuple):
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


def mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    if not domain:
        return f"{local[:1]}***"
    return f"{local[:1]}***@{domain[:1]}***"


def mask_text(value: str) -> str:
    value = str(value)
    if len(value) <= 4:
        return "***"
    return f"{value[:2]}***{value[-2:]}"


def mask_phone(phone: str) -> str:
    digits = re.sub(r"\D", "", phone)
    return f"+***{digits[-2:]}" if len(digits) >= 4 else "***"


def _plain_email(email: str) -> bool:
    """True for the everyday address (dot-atom local part, plain ASCII domain, real TLD)."""
    if not _EMAIL_SHAPE(email) or ".." in email or "--" in email or len(email) > 254:
        return False
    local, _, domain = email.partition("@")
    if local[0] == "." or local[-1] == "." or domain[0] in ".-" or ".-" in domain or "-." in domain:
        return False
    if len(domain) > 63 and max(len(label) for label in domain.split(".")) > 63:
        return False
    return domain[domain.rfind(".") + 1 :] not in _SPECIAL_USE_TLDS


def normalize_email(raw: str) -> str:
    """Trimmed, lowercased and syntax-checked (no DNS); raises ValueError with the reason."""
    email, reason = _email_outcome(raw)
    if reason:
        raise ValueError(reason)
    return email


def normalize_phone(raw: str, region: str) -> str:
    """E.164 form, using `region` for numbers without a country code; raises ValueError."""
    phone, reason = _phone_outcome(raw, region)
    if reason:
        raise ValueError(reason)
    return phone


def _check_email(raw: str) -> tuple[str, str]:
    """(the address, "") or ("", why it is not one)."""
    email = raw.strip().lower()
    if _plain_email(email):
        return email, ""
    try:
        checked = validate_email(email, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        return "", _generic_reason(str(exc))
    return (checked.ascii_email or checked.normalized).lower(), ""


def _check_phone(raw: str, region: str) -> tuple[str, str]:
    """(the E.164 number, "") or ("", why it cannot be one)."""
    value = raw.strip()
    if not value:
        return "", "empty"
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return "", "not a phone number"
    if not phonenumbers.is_valid_number(parsed):
        return "", f"not a valid phone number for its country (default region {region})"
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), ""


# The full checks cost 20-50 µs a value, and the values that need them (the unusual and the invalid)
# repeat in real segments ("n/a", "none", a shop's placeholder address): their outcomes are kept
# (at most 4,096 values of up to 320 characters: a few MB at worst).
_REMEMBERED = 4096
_REMEMBERED_LENGTH = 320


def _remembered(check: Callable[..., tuple[str, str]]) -> Callable[..., tuple[str, str]]:
    """`check` with the outcomes of its last _REMEMBERED values of up to _REMEMBERED_LENGTH kept."""
    kept = functools.lru_cache(maxsize=_REMEMBERED)(check)

    def outcome(raw: str, *context: str) -> tuple[str, str]:
        return (kept if len(raw) <= _REMEMBERED_LENGTH else check)(raw, *context)

    return outcome


_email_outcome = _remembered(_check_email)
_phone_outcome = _remembered(_check_phone)


def _generic_reason(message: str) -> str:
    """email-validator's reason without the parts that may quote the address (a label, characters
    of it): what follows a colon or sits in brackets. Reports must never hold the address."""
    message = message.removeprefix("After Unicode normalization: ")
    cut = min((i for i in (message.find(": "), message.find(" (")) if i >= 0), default=len(message))
    return message[:cut].rstrip(" .") + "."


def identifier_key(kind: str, value: str) -> int:
    """The dedupe key of one identifier (chunks get theirs from `fingerprints` all at once)."""
    return int(text_fingerprints([value if kind != "external_id" else "x:" + value])[0])


@functools.cache
def possible_lengths(code: str) -> frozenset[int] | None:
    """National number lengths after a country calling code, from phonenumbers' own metadata
    (None for no such code). A code's regions are loaded when it is first asked for: loading all
    ~250 of them costs 75 ms at every start."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(code)) if code.isdigit() else None
    if not regions or str(int(code)) != code:
        return None
    found: set[int] = set()
    for region in regions:
        meta = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(int(code), region)
        if meta is not None and meta.general_desc is not None:
            found.update(meta.general_desc.possible_length or ())
    return frozenset(found) or None


_E164_FORM = re.compile(r"\+[1-9][0-9]{6,14}").fullmatch
_NANP = re.compile(r"\+1[2-9][0-9]{2}[2-9][0-9]{6}").fullmatch


def _quick_e164(value: str) -> bool:
    """Already E.164 with a real country code and a possible length for it (and the NANP shape
    for +1): the common case for CDP data, checked without parsing."""
    if not _E164_FORM(value):
        return False
    if value[1] == "1":
        return _NANP(value) is not None
    for size in (1, 2, 3):
        lengths = possible_lengths(value[1 : 1 + size])
        if lengths is not None:
            return len(value) - 1 - size in lengths
    return False


def mask_attributes(attributes: Mapping[str, object]) -> str:
    """The masked primary identifier of a profile's attributes (for reports and logs)."""
    if attributes.get("email"):
        return mask_email(str(attributes["email"]))
    if attributes.get("phone_number"):
        return mask_phone(str(attributes["phone_number"]))
    return mask_text(str(attributes.get("external_id") or ""))


def serialize_profile(attributes: Mapping[str, object]) -> bytes:
    return dumps({"type": "profile", "attributes": attributes})


def identifier_text(attributes: Mapping[str, object]) -> str:
    """The primary identifier of a profile as its dedupe key hashes it: the email, else the
    phone number, else "x:" + the external id."""
    if attributes.get("email"):
        return str(attributes["email"])
    if attributes.get("phone_number"):
        return str(attributes["phone_number"])
    return "x:" + str(attributes.get("external_id") or "")


def mask_identifier_text(text: str) -> str:
    """The masked form of an `identifier_text` (an email holds "@", a phone number never does)."""
    if text.startswith("x:"):
        return mask_text(text[2:])
    return mask_email(text) if "@" in text else mask_phone(text)


def attributes_key(attributes: Mapping[str, object]) -> int:
    """The dedupe key of a profile, from its (normalized) attributes."""
    return int(text_fingerprints([identifier_text(attributes)])[0])


class ProfileMapper:
    """Applies a FieldMapping to rows: validates, normalizes and builds Klaviyo attributes.

    Hot path: `for_columns(header)` returns a function over a CSV row's list of values that reads
    only the mapped positions; `map(dict)` serves JSON Lines rows."""

    def __init__(self, mapping: FieldMapping) -> None:
        self.mapping = mapping
        self._region = mapping.default_region.upper()
        fields = mapping.fields
        # Every mapped input, in a fixed order: identifiers, plain fields, location, properties.
        self._ids = [(f, fields.get(f)) for f in IDENTIFIERS]
        self._id_columns = tuple(c for _, c in self._ids)
        self._plain = [(f, c) for f, c in fields.items() if f in PROFILE_FIELDS and f not in IDENTIFIERS]
        self._location = [(f, c) for f, c in fields.items() if f in LOCATION_FIELDS]
        self._properties = [(name, column) for column, name in mapping.properties.items()]
        self._columns = [c for _, c in self._ids if c] + [c for _, c in self._plain + self._location]
        self._text_count = len(self._columns)
        # Where each group starts in the values handed to _apply (identifiers come first).
        self._plain_names = [f for f, _ in self._plain]
        self._location_names = [f for f, _ in self._location]
        self._property_names = [name for name, _ in self._properties]
        self._plain_end = sum(1 for c in self._id_columns if c) + len(self._plain)
        self._location_end = self._plain_end + len(self._location)
        self._columns += [c for _, c in self._properties]
        self._missing_identifier = " and ".join(f for f, c in self._ids if c)
        self._first_identifier = next(f for f, c in self._ids if c)

    def for_columns(self, header: list[str]) -> Callable[[list[str]], Profile | Rejection]:
        positions = [header.index(c) for c in self._columns]
        pick = operator.itemgetter(*positions) if len(positions) > 1 else (lambda row: (row[positions[0]],))
        apply = self.apply_values

        def map_values(values: list[str]) -> Profile | Rejection:
            return apply(pick(values))

        return map_values

    def map_records(self, columns: list[str] | None, numbers: list[int], records: list[object]) -> MappedRows:
        """Maps CSV records (lists of values under `columns`) or JSON Lines records (dicts)."""
        apply = self.for_columns(columns) if columns is not None else self.map
        profiles: list[dict[str, object]] = []
        valid: list[int] = []
        rejections: list[tuple[int, Rejection]] = []
        for number, record in zip(numbers, records, strict=True):
            mapped = apply(record)  # type: ignore[arg-type]
            if type(mapped) is Profile:
                profiles.append(mapped.attributes)
                valid.append(number)
            else:
                rejections.append((number, mapped))  # type: ignore[arg-type]
        bodies = pa.array([serialize_profile(attributes) + b"," for attributes in profiles], pa.binary())
        identifiers = pa.array([identifier_text(attributes) for attributes in profiles], pa.string())
        return MappedRows(
            np.array(valid, dtype=np.int64),
            fingerprints(identifiers),
            bodies,
            lambda at: [mask_attributes(profiles[i]) for i in at.tolist()],
            rejections,
            identifiers,
        )

    def map(self, row: Mapping[str, object]) -> Profile | Rejection:
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
        return self._id_columns  # type: ignore[return-value]

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

    def apply_values(self, values: tuple) -> Profile | Rejection:  # type: ignore[type-arg]
        """Maps one row given as the values of `columns`, in that order."""
        attributes: dict[str, object] = {}
        identified = False
        at = 0
        email_column, phone_column, external_column = self._id_columns
        if email_column:
            raw = values[at].strip()
            at += 1
            if raw:
                email = raw.lower()
                if not _plain_email(email):
                    try:
                        email = normalize_email(raw)
                    except ValueError as exc:
                        return Rejection("email", f"email is not valid: {exc}", mask_email(raw))
                attributes["email"] = email
                identified = True
        if phone_column:
            raw = values[at].strip()
            at += 1
            if raw:
                if not _quick_e164(raw):
                    try:
                        raw = normalize_phone(raw, self._region)
                    except ValueError as exc:
                        return Rejection("phone_number", f"phone_number cannot be made E.164: {exc}", mask_phone(raw))
                attributes["phone_number"] = raw
                identified = True
        if external_column:
            raw = values[at].strip()
            at += 1
            if raw:
                if len(raw) > MAX_EXTERNAL_ID:
                    reason = f"external_id is longer than {MAX_EXTERNAL_ID} characters"
                    return Rejection("external_id", reason, mask_text(raw))
                attributes["external_id"] = raw
                identified = True
        if not identified:
            return Rejection(self._first_identifier, f"no identifier: {self._missing_identifier} empty", "")
        plain_end, location_end = self._plain_end, self._location_end
        for name, value in zip(self._plain_names, values[at:plain_end], strict=True):
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


class _NotText(Exception):
    def __init__(self, field: str, kind: str) -> None:
        self.field, self.kind = field, kind


def _text(value: object, column: str = "") -> str:
    if isinstance(value, str):
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise _NotText(column, type(value).__name__)
