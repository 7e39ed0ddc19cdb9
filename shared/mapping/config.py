"""The field mapping: which segment column feeds which Klaviyo profile field or custom property."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import phonenumbers

from shared.privacy import short_name, short_names

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
DEFAULT_REGION = "US"  # for phone numbers written without their country code
_PROPERTY_NAME = re.compile(r"^[^\x00-\x1f]{1,255}$")


class MappingError(ValueError):
    """The mapping itself is wrong (a run-level configuration error)."""


@dataclass(frozen=True)
class FieldMapping:
    """Which input column feeds which Klaviyo profile field, and which become custom properties."""

    fields: dict[str, str] = field(default_factory=lambda: {"email": "email"})
    properties: dict[str, str] = field(default_factory=dict)  # column -> property name
    default_region: str = DEFAULT_REGION

    def __post_init__(self) -> None:
        unknown = sorted(set(self.fields) - set(STANDARD_FIELDS))
        if unknown:
            raise MappingError(f"unknown profile field(s) {short_names(unknown)}; known: {', '.join(STANDARD_FIELDS)}")
        for name, column in self.fields.items():
            if not isinstance(column, str) or not column.strip():
                raise MappingError(f"field {name!r}: the column name is empty")
        if not any(self.fields.get(i) for i in IDENTIFIERS):
            raise MappingError("map at least one identifier column: email, phone_number or external_id")
        # Problems name the entry and the rule, never the submitted value (it may be anything: a
        # 900-level nested list, 60 KB of text).
        for column, prop in self.properties.items():
            if not column.strip():
                raise MappingError("properties: a column name is empty")
            if not isinstance(prop, str) or not _PROPERTY_NAME.fullmatch(prop):
                raise MappingError(
                    f"properties.{short_name(column)}: invalid property name (text of 1 to 255 characters, "
                    "no control characters)"
                )
        if phonenumbers.country_code_for_region(self.default_region.upper()) == 0:
            raise MappingError("default_region: not a known ISO 3166 region code (such as US, GB or DE)")

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> FieldMapping:
        """Builds a mapping from its JSON form: {"email": "Email", ..., "properties": {...}}."""
        fields = {k: v for k, v in data.items() if k not in ("properties", "default_region")}
        properties = data.get("properties") or {}
        if not isinstance(properties, dict):
            raise MappingError("properties must be an object of column -> property name")
        region = data.get("default_region") or DEFAULT_REGION
        if not isinstance(region, str):
            raise MappingError("default_region: must be an ISO 3166 region code (text, such as US)")
        columns = {name: column for name, column in fields.items() if isinstance(column, str)}
        if len(columns) != len(fields):
            raise MappingError("every mapped field must name a column (a string)")
        return cls(columns, dict(properties), region)

    def to_dict(self) -> dict[str, object]:
        return {**self.fields, "properties": dict(self.properties), "default_region": self.default_region}

    @property
    def columns(self) -> set[str]:
        return set(self.fields.values()) | set(self.properties)

    def missing_columns(self, header: list[str]) -> list[str]:
        return sorted(self.columns - set(header))
