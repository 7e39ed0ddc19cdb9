"""The API calls the browser console needs beyond connections, exports and runs: a segment's column names
(for the mapping editor) and a run's report.json and rejects.csv as downloads."""

from __future__ import annotations

import logging

from azure.core.exceptions import ResourceNotFoundError

# The API's own checks (roles, bodies, who may read a run), so these calls refuse exactly as the others do.
from shared.control.api import ApiError, ApiRequest, ApiResponse, Handler, _require_admin, _validated, _visible_run
from shared.control.auth import Caller
from shared.control.console_models import ColumnsIn
from shared.control.services import Services
from shared.control.triggers import export_segment
from shared.sources import SegmentError

log = logging.getLogger(__name__)
# A run's report files as the API hands them out: (file name, content type).
REPORT_FILES = {"report": ("report.json", "application/json"), "rejects": ("rejects.csv", "text/csv")}


def segment_columns(services: Services, request: ApiRequest, caller: Caller) -> ApiResponse:
    """The column names of a segment described as an export would describe it (saved or not yet): from the
    CSV header rows or the Parquet/Delta schemas; JSON Lines has none. Row values are never read out."""
    if request.method != "POST":
        raise ApiError(405, f"{request.method} is not allowed here")
    _require_admin(caller)  # only Admins edit exports, where the columns are offered
    submitted = _validated(ColumnsIn, request, "segment")
    try:
        source = export_segment(services, submitted.model_dump())
        headers = source.headers()
    except SegmentError as exc:
        raise ApiError(400, "the segment cannot be read", [{"field": "segment", "reason": str(exc)}]) from None
    columns: list[str] = []
    for part_columns in headers.values():
        columns += [c for c in part_columns if c not in columns]
    columns += [c for c in source.absent_columns if c not in columns]
    note = None if columns else "no header or schema to read the columns from (JSON Lines): type the column names"
    return ApiResponse(200, {"columns": columns, "parts": len(source.parts), "note": note})


def run_file(which: str) -> Handler:
    """A handler downloading the run's report.json or rejects.csv (the run's readers may download them)."""
    file_name, content_type = REPORT_FILES[which]

    def download(services: Services, request: ApiRequest, caller: Caller) -> ApiResponse:
        run = _visible_run(services, request, caller)
        if not run.get("report_path"):
            raise ApiError(404, f"run {run['run_id']} has no report yet ({run['status']})")
        container, _, report_blob = str(run["report_path"]).partition("/")
        blob = report_blob.rsplit("/", 1)[0] + "/" + file_name
        try:
            data = services.blobs.get_blob_client(container, blob).download_blob().readall()
        except ResourceNotFoundError:
            raise ApiError(404, f"run {run['run_id']}: its {file_name} is gone from the reports container") from None
        disposition = f'attachment; filename="{run["export_name"]}-{run["run_id"]}-{file_name}"'
        return ApiResponse(200, raw=data, content_type=content_type, headers={"Content-Disposition": disposition})

    download.__name__ = f"run_{which}"
    return download
