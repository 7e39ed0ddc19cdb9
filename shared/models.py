"""Connections, exports and runs as the admin API accepts and returns them (validated with pydantic)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from shared.mapping import FieldMapping, MappingError

# Lowercase letters, digits and single dashes: safe in URLs, table keys and blob paths.
NAME_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)]
SecretName = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z-]{1,127}$")]
ListId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,64}$")]
ContainerName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, min_length=3, max_length=63)]
_BLOB_PATH = re.compile(r"^[^\x00-\x1f\\]{1,1024}$")

USABLE_BY = ("admins", "contributors")
RUN_STATES = ("queued", "running", "succeeded", "completed_with_rejects", "failed", "skipped")
TERMINAL_STATES = ("succeeded", "completed_with_rejects", "failed", "skipped")


def is_valid_name(name: str) -> bool:
    return bool(name) and len(name) <= 63 and bool(re.match(NAME_PATTERN, name))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ConnectionIn(_Strict):
    """PUT /api/connections/{name}."""

    display_name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    secret_name: SecretName = Field(description="Key Vault secret holding the Klaviyo private API key")
    usable_by: Literal["admins", "contributors"] = "admins"
    privacy_consent: bool = Field(
        False, description="true: the caller agrees that profile data leaves for Klaviyo (recorded with who and when)"
    )


class SegmentLocation(_Strict):
    """Where an export's segment lives: one blob, the newest blob under a prefix, or a folder of parts
    that is complete when its marker file (model.json) is there."""

    container: ContainerName
    blob: str | None = None
    prefix: str | None = None
    mode: Literal["blob", "newest", "folder"] = "blob"
    marker: str = "model.json"

    @field_validator("blob", "prefix")
    @classmethod
    def _safe_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not _BLOB_PATH.match(value) or any(p in ("..", ".") for p in value.split("/")) or value.startswith("/"):
            raise ValueError("must be a blob path without '..', '.', a leading '/', backslashes or control characters")
        return value

    @field_validator("marker")
    @classmethod
    def _plain_marker(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9._-]{1,255}$", value) or value in (".", ".."):
            raise ValueError("must be a plain file name such as model.json")
        return value

    @model_validator(mode="after")
    def _one_location(self) -> SegmentLocation:
        if self.mode == "blob":
            if not self.blob or self.prefix:
                raise ValueError("mode 'blob' needs 'blob' (the blob's name) and no 'prefix'")
        elif not self.prefix or self.blob:
            raise ValueError(f"mode '{self.mode}' needs 'prefix' and no 'blob'")
        elif not self.prefix.endswith("/"):
            self.prefix += "/"
        return self


class ExportIn(_Strict):
    """PUT /api/exports/{name}. Saving an export never runs it."""

    connection: Name
    list_id: ListId
    segment: SegmentLocation
    format: Literal["auto", "csv", "jsonl"] = "auto"
    delimiter: Literal[",", ";", "\t", "|"] | None = None
    mapping: dict[str, Any] = Field(default_factory=lambda: {"email": "email"})
    enabled: bool = True
    run_always: bool = Field(False, description="timer runs it even when the segment has not changed")

    @field_validator("mapping")
    @classmethod
    def _valid_mapping(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            return FieldMapping.from_dict(value).to_dict()
        except MappingError as exc:
            raise ValueError(str(exc)) from None


_PATTERN_RULES = {
    "connection": "must be lowercase letters, digits and single dashes (at most 63)",
    "container": "must be a storage container name: lowercase letters, digits and single dashes (3 to 63)",
    "list_id": "must be a Klaviyo list id: letters and digits only",
    "secret_name": "must be a Key Vault secret name: letters, digits and dashes (1 to 127)",
}


def validation_problems(error: ValidationError) -> list[dict[str, str]]:
    """Each problem as {field, reason}, without echoing the submitted values."""
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        location = ".".join(str(p) for p in item["loc"]) or "body"
        reason = item["msg"]
        if item["type"] == "string_pattern_mismatch":
            reason = _PATTERN_RULES.get(location.rsplit(".", 1)[-1], "contains characters that are not allowed")
        elif item["type"] == "extra_forbidden":
            reason = "unknown field"
        problems.append({"field": location, "reason": reason.removeprefix("Value error, ")})
    return problems
