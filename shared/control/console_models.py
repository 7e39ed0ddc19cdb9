"""The bodies of the API calls added for the browser console: a segment's column names."""

from __future__ import annotations

from pydantic import Field

from shared.control.models import CsvOptions, Delimiter, EntityName, SegmentFormat, SegmentLocation, _Response, _Strict


class ColumnsIn(_Strict):
    """POST /api/segment-columns: where a segment lives and how it is read (the fields of an export that say so)."""

    segment: SegmentLocation
    format: SegmentFormat = "auto"
    delimiter: Delimiter | None = None
    csv: CsvOptions | None = None
    entity: EntityName | None = None
    version: int | None = Field(None, ge=0)


class SegmentColumns(_Response):
    """The segment's column names, from its header rows or its files' schemas: never a row's values."""

    columns: list[str] = Field(description="in the order of the first part, then any more the other parts name")
    parts: int = Field(ge=0, description="the data files read for their header or schema")
    note: str | None = Field(None, description="why no columns could be offered (JSON Lines has no header)")
