"""Field mapping and validation: turns a segment row into a Klaviyo profile, or a reason it can't be."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import phonenumbers
from email_validator import EmailNotValidError, validate_email

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
_PLAIN_EMAIL = re.compile(
    r"^(?=.{1,254}\Z)[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:(?!..--)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\Z"
)
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
    """A valid row ready for Klaviyo: its attributes and its dedupe key."""

    attributes: dict[str, object]
    key: bytes  # stable 8-byte digest of the primary identifier
    masked: str  # the identifier, masked for reports and logs


class Rejection(NamedTuple):
    field: str
    reason: str
    masked: str


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


def normalize_email(raw: str) -> str:
    """Trimmed, lowercased and syntax-checked (no DNS); raises ValueError with the reason."""
    email = raw.strip().lower()
    if _PLAIN_EMAIL.match(email) and email.rsplit(".", 1)[-1] not in _SPECIAL_USE_TLDS:
        return email
    try:
        checked = validate_email(email, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(_without_value(str(exc), email)) from None
    return (checked.ascii_email or checked.normalized).lower()


def normalize_phone(raw: str, region: str) -> str:
    """E.164 form, using `region` for numbers without a country code; raises ValueError."""
    value = raw.strip()
    if not value:
        raise ValueError("empty")
    try:
        parsed = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"not a valid phone number for its country (default region {region})")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _without_value(message: str, value: str) -> str:
    # email-validator sometimes quotes the address; reports must never hold it.
    local, _, domain = value.partition("@")
    for secret in (value, local, domain):
        if len(secret) >= 4:
            message = message.replace(secret, "…")
    return message


def identifier_key(kind: str, value: str) -> bytes:
    return hashlib.blake2b(f"{kind}:{value}".encode(), digest_size=8).digest()


class ProfileMapper:
    """Applies a FieldMapping to rows: validates, normalizes and builds Klaviyo attributes."""

    def __init__(self, mapping: FieldMapping) -> None:
        self.mapping = mapping
        self._region = mapping.default_region.upper()
        self._plain = [(f, c) for f, c in mapping.fields.items() if f in PROFILE_FIELDS and f not in IDENTIFIERS]
        self._location = [(f, c) for f, c in mapping.fields.items() if f in LOCATION_FIELDS]
        self._properties = list(mapping.properties.items())
        self._email = mapping.fields.get("email")
        self._phone = mapping.fields.get("phone_number")
        self._external = mapping.fields.get("external_id")

    def map(self, row: Mapping[str, object]) -> Profile | Rejection:
        try:
            return self._map(row)
        except _NotText as exc:
            return Rejection(exc.field, f"{exc.field} is a JSON {exc.kind}, not text", "")

    def _map(self, row: Mapping[str, object]) -> Profile | Rejection:
        attributes: dict[str, object] = {}
        key: bytes | None = None
        masked = ""
        if self._email:
            raw = _text(row.get(self._email), self._email)
            if raw:
                try:
                    email = normalize_email(raw)
                except ValueError as exc:
                    return Rejection("email", f"email is not valid: {exc}", mask_email(raw.strip()))
                attributes["email"] = email
                key, masked = identifier_key("email", email), mask_email(email)
        if self._phone:
            raw = _text(row.get(self._phone), self._phone)
            if raw:
                try:
                    phone = normalize_phone(raw, self._region)
                except ValueError as exc:
                    return Rejection("phone_number", f"phone_number cannot be made E.164: {exc}", mask_phone(raw))
                attributes["phone_number"] = phone
                if key is None:
                    key, masked = identifier_key("phone", phone), mask_phone(phone)
        if self._external:
            raw = _text(row.get(self._external), self._external)
            if raw:
                if len(raw) > MAX_EXTERNAL_ID:
                    reason = f"external_id is longer than {MAX_EXTERNAL_ID} characters"
                    return Rejection("external_id", reason, mask_text(raw))
                attributes["external_id"] = raw
                if key is None:
                    key, masked = identifier_key("external_id", raw), mask_text(raw)
        if key is None:
            mapped = [f for f in IDENTIFIERS if self.mapping.fields.get(f)]
            return Rejection(mapped[0], f"no identifier: {' and '.join(mapped)} empty", "")
        for name, column in self._plain:
            value = _text(row.get(column), column)
            if value:
                attributes[name] = value
        if self._location:
            location = {}
            for name, column in self._location:
                value = _text(row.get(column), column)
                if value:
                    location[name] = value
            if location:
                attributes["location"] = location
        if self._properties:
            properties = {}
            for column, name in self._properties:
                value = row.get(column)
                if value is not None and value != "":
                    properties[name] = value
            if properties:
                attributes["properties"] = properties
        return Profile(attributes, key, masked)


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
