"""Connections, exports and runs as the admin API accepts and returns them (validated with pydantic)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.control.bounded import MAX_REASON_CHARS, MAX_STORED_JSON_CHARS, stored_size_problem
from shared.control.subscribe_model import SUBSCRIBE_DESCRIPTION as _SUBSCRIBE
from shared.control.subscribe_model import SubscribeIn
from shared.engine import Counts, RunReport
from shared.mapping import FieldMapping, MappingError
from shared.privacy import MAX_QUOTED_CHARS, short_name
from shared.sources import DEFAULT_FOLDER_MARKER, CsvDialect, LocateMode, is_cdm_metadata
from shared.sync import DEFAULT_MAX_REMOVAL_SHARE

# Lowercase letters, digits and single dashes: safe in URLs, table keys and blob paths.
NAME_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)]
SecretName = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z-]{1,127}$")]
ListId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,64}$")]
ContainerName = Annotated[str, StringConstraints(pattern=NAME_PATTERN, min_length=3, max_length=63)]
_BLOB_PATH = re.compile(r"^[^\x00-\x1f\\]{1,1024}$")

UsableBy = Literal["admins", "contributors"]
# RunStatus's values as the API shows them (a Literal keeps each schema inline in the OpenAPI document;
# tests/test_openapi.py checks the two agree).
RunState = Literal["queued", "running", "succeeded", "completed_with_rejects", "failed", "skipped", "cancelled"]
RunPhase = Literal["checking", "sending", "waiting_for_jobs", "removing"]
SegmentFormat = Literal["auto", "csv", "jsonl", "cdm", "parquet", "delta"]
EntityName = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\"]+$")]
SyncMode = Literal["add", "mirror"]
RemovalShare = Annotated[float, Field(ge=0.0, le=1.0)]
_SYNC_MODE = (
    "add: add and update profiles, never remove; mirror: the list ends each run holding exactly the segment's "
    "profiles (those who left it are removed from the list, never deleted or unsubscribed)"
)
_FULL = "send every profile, not only those new or changed since the export's last runs"
_MAX_REMOVAL_SHARE = "mirror: a run that would remove more than this share of the list removes nothing and fails"
_RECONCILE = (
    "read the list's members from Klaviyo first (1 call per 100 members): profiles taken off the list by hand are "
    "sent again and, in mirror mode, members not in the segment (added by hand or another tool) are removed"
)
_CONFIRM = "mirror: remove even when the safety stop would hold the removals back (empty segment, share passed)"
Delimiter = Literal[",", ";", "\t", "|"]
_VERSION = (
    "delta: the table version to read on every run (default: the latest, or the version whose commit fired the "
    "blob trigger)"
)
_ENTITY = "format cdm: the entity of model.json to export (may be left out when model.json lists one entity)"
# Each is stored as JSON in one Table Storage property: a body under the 64 KB limit may still not fit.
_STORED = f"its JSON at most {MAX_STORED_JSON_CHARS:,} characters"
_MAPPING = (
    'which column feeds which profile field: {"email": "Email", ..., "properties": {"<column>": "<property>"}, '
    f'"default_region": "US"}}; {_STORED} (about 1,000 custom properties with names of 10 characters)'
)


def csv_dialect(options: Mapping[str, Any] | None, delimiter: str | None = None) -> CsvDialect:
    """The dialect of an export's `csv` options (stored or submitted); `delimiter` is the export's own field."""
    options = options or {}
    columns = options.get("columns")
    return CsvDialect(
        bool(options.get("header", True)),
        tuple(columns) if columns is not None else None,
        options.get("escape"),
        options.get("quote") or '"',
        options.get("delimiter") or delimiter,
    )


def is_valid_name(name: str) -> bool:
    return bool(name) and len(name) <= 63 and bool(re.match(NAME_PATTERN, name))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ConnectionIn(_Strict):
    """PUT /api/connections/{name}."""

    display_name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    secret_name: SecretName = Field(description="Key Vault secret holding the Klaviyo private API key")
    usable_by: UsableBy = "admins"
    privacy_consent: bool = Field(
        False, description="true: the caller agrees that profile data leaves for Klaviyo (recorded with who and when)"
    )


class SegmentLocation(_Strict):
    """Where an export's segment lives: one blob, the newest blob under a prefix, or a folder of parts
    that is complete when its marker file (model.json) is there."""

    container: ContainerName
    blob: str | None = None
    prefix: str | None = None
    mode: LocateMode = "blob"
    marker: str = DEFAULT_FOLDER_MARKER

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
            raise ValueError(f"must be a plain file name such as {DEFAULT_FOLDER_MARKER}")
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


class CsvOptions(_Strict):
    """How the segment's CSV files are written: Spark and Data Factory write no header and escape quotes
    with a backslash by default (`{"header": false, "columns": [...], "escape": "\\\\"}`)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    header: bool = Field(True, description="the first row names the columns")
    columns: list[Annotated[str, StringConstraints(min_length=1, max_length=255)]] | None = Field(
        None, max_length=1000, description="the column names, in order, when there is no header row"
    )
    escape: str | None = Field(None, description="the character escaping a quote inside a quoted value, e.g. \\")
    quote: str = '"'
    delimiter: Delimiter | None = Field(None, description="default: sniffed among , ; TAB |")

    @model_validator(mode="after")
    def _readable(self) -> CsvOptions:
        csv_dialect(self.model_dump())  # raises ValueError naming the problem
        return self


class ExportIn(_Strict):
    """PUT /api/exports/{name}. Saving an export never runs it."""

    connection: Name
    list_id: ListId
    segment: SegmentLocation
    format: SegmentFormat = "auto"
    delimiter: Delimiter | None = None
    csv: CsvOptions | None = Field(
        None, description=f"the CSV dialect: header row or column names, escape, quote; {_STORED}"
    )
    entity: EntityName | None = Field(None, description=_ENTITY)
    version: int | None = Field(None, ge=0, description=_VERSION)
    mapping: dict[str, Any] = Field(default_factory=lambda: {"email": "email"}, description=_MAPPING)
    enabled: bool = True
    run_always: bool = Field(False, description="timer runs it even when the segment has not changed")
    sync_mode: SyncMode = Field("add", description=_SYNC_MODE)
    full: bool = Field(False, description=_FULL)
    max_removal_share: RemovalShare = Field(DEFAULT_MAX_REMOVAL_SHARE, description=_MAX_REMOVAL_SHARE)
    confirm_removals: bool = Field(False, description=_CONFIRM + " on every run; prefer the per-run option")
    reconcile: bool = Field(False, description=_RECONCILE + " on every run")
    subscribe: SubscribeIn | None = Field(None, description=_SUBSCRIBE)

    @model_validator(mode="after")
    def _one_delimiter(self) -> ExportIn:
        if self.csv and self.csv.delimiter and self.delimiter and self.csv.delimiter != self.delimiter:
            raise ValueError("'delimiter' and 'csv.delimiter' differ: give one")
        return self

    @model_validator(mode="after")
    def _cdm_folder(self) -> ExportIn:
        if self.format != "cdm":
            return self
        segment = self.segment
        if not (segment.mode == "folder" and is_cdm_metadata(segment.marker)) and not (
            segment.mode == "blob" and is_cdm_metadata(str(segment.blob))
        ):
            raise ValueError(
                "format 'cdm' reads a folder in mode 'folder' (marker model.json or <name>.manifest.cdm.json), "
                "or names its model.json or manifest"
            )
        if self.csv:
            raise ValueError("format 'cdm' takes the CSV dialect from model.json: leave out 'csv'")
        return self

    @field_validator("mapping")
    @classmethod
    def _valid_mapping(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            return FieldMapping.from_dict(value).to_dict()
        except MappingError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("segment", "csv", "mapping")  # after _valid_mapping: the mapping as it is stored
    @classmethod
    def _storable(cls, value: Any) -> Any:
        """A field stored as JSON must fit one Table Storage property (the problem names the limit, not the value)."""
        problem = stored_size_problem(value.model_dump() if isinstance(value, BaseModel) else value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _version_of_a_table(self) -> ExportIn:
        if self.version is not None and (self.segment.mode != "folder" or self.format not in ("auto", "delta")):
            raise ValueError("'version' is for a Delta table: a segment in mode 'folder' with format 'delta' or 'auto'")
        return self


# -- what the API returns (the OpenAPI document's response schemas; the handlers pick these fields) -----
class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Consent(_Response):
    agreed_by: str
    agreed_at: AwareDatetime


class Connection(_Response):
    """A connection as the API returns it: never the API key, only the name of its Key Vault secret."""

    name: Name
    display_name: str
    secret_name: str
    usable_by: UsableBy
    created_at: AwareDatetime
    updated_at: AwareDatetime
    updated_by: str
    privacy_consent: Consent | None = Field(description="who agreed that profile data leaves for Klaviyo, and when")


class ConnectionList(_Response):
    connections: list[Connection]


class Export(_Response):
    name: Name
    connection: Name
    list_id: str
    segment: SegmentLocation
    format: SegmentFormat
    delimiter: Delimiter | None
    csv: CsvOptions | None
    entity: str | None
    version: int | None = Field(None, description=_VERSION)
    mapping: dict[str, Any]
    enabled: bool
    run_always: bool
    sync_mode: SyncMode
    full: bool
    max_removal_share: float
    confirm_removals: bool
    reconcile: bool
    subscribe: SubscribeIn | None = Field(None, description=_SUBSCRIBE)
    last_success_run: str | None = Field(
        description="the last run that did not fail: the timer skips the export while neither the segment's version "
        "nor the export's definition (connection, list, mapping, segment, format, sync options) changed since"
    )
    generation: str | None = Field(
        description="this export's generation: set when it is created, kept by edits, new when it is deleted and "
        "created again (its runs carry it as export_generation; null for an export not saved since generations "
        "were introduced)"
    )
    created_at: AwareDatetime
    updated_at: AwareDatetime
    updated_by: str


class ExportList(_Response):
    exports: list[Export]


class RunIn(_Strict):
    """POST /api/exports/{name}/runs (the body is optional): options for this run only."""

    full: bool = Field(False, description=_FULL)
    confirm_removals: bool = Field(False, description=_CONFIRM)
    reconcile: bool = Field(False, description=_RECONCILE)


class Run(_Response):
    """A run's record; fields not known yet are left out."""

    run_id: str
    export_name: Name
    trigger: Literal["http", "timer", "blob"]
    status: RunState
    requested_by: str
    created_at: AwareDatetime
    export_generation: str | None = Field(
        None, description="the generation of the export the run was started for (see Export.generation)"
    )
    attempts: int = Field(ge=0, description="times a worker claimed the run")
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    counts: Counts | None = Field(None, description="progress while running, the outcome once finished")
    reason: str | None = Field(
        None,
        description=f"why the run failed, was skipped or was cancelled (at most {MAX_REASON_CHARS:,} characters: a "
        f"longer one is cut, ending with how long it was; a column name in it at most {MAX_QUOTED_CHARS} characters)",
    )
    phase: RunPhase | None = Field(None, description="what the run is doing (or was doing when it ended)")
    cancel_requested: bool | None = Field(
        None, description="someone asked to cancel it (POST /api/runs/{run_id}/cancel); it stops within 2 s"
    )
    cancel_requested_by: str | None = Field(None, description="who asked to cancel it")
    source_version: str | None = Field(None, description="the segment's etag(s) the run read")
    jobs: int | None = Field(None, description="Klaviyo import jobs created")
    duration_seconds: float | None = None
    report_path: str | None = Field(None, description="<reports container>/<export>/<run id>/report.json")
    continuations: int | None = Field(None, description="times the run went on in a new invocation (time budget)")
    full: bool | None = Field(None, description="this run sends every profile (asked when it was started)")
    confirm_removals: bool | None = Field(None, description="this run may pass the mirror safety stop")
    reconcile: bool | None = Field(None, description="this run reads the list's members first")


class RunWithReport(Run):
    report: RunReport | None = Field(None, description="report.json, once the run has one (null if unreadable)")


class RunList(_Response):
    runs: list[Run] = Field(description="newest first, at most 50")


class Problem(_Response):
    field: str
    reason: str


class Error(_Response):
    error: str
    problems: list[Problem] | None = Field(None, description="one entry per invalid field (400 only)")


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
        # A location holds the names of fields the caller sent (an unknown one may be 40,000 characters).
        location = ".".join(short_name(p) for p in item["loc"]) or "body"
        reason = item["msg"]
        if item["type"] == "string_pattern_mismatch":
            reason = _PATTERN_RULES.get(location.rsplit(".", 1)[-1], "contains characters that are not allowed")
        elif item["type"] == "extra_forbidden":
            reason = "unknown field"
        problems.append({"field": location, "reason": reason.removeprefix("Value error, ")})
    return problems
