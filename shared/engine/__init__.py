"""One export run: stream, map, dedupe, batch, upload, follow the jobs, checkpoint and report."""

from shared.engine.checkpoint import BlobCheckpoints, FileCheckpoints
from shared.engine.exporter import run_export
from shared.engine.progress import ProgressBar, ProgressLog
from shared.engine.report import Counts, RejectLine, RejectsFile, RunReport
from shared.engine.spec import (
    DEFAULT_UPLOAD_THREADS,
    ConfigurationError,
    ExportSpec,
    Phase,
    ProgressCallback,
    RunWatch,
)
from shared.engine.status import TERMINAL_STATUSES, RunStatus

__all__ = [
    "BlobCheckpoints",
    "ConfigurationError",
    "Counts",
    "DEFAULT_UPLOAD_THREADS",
    "ExportSpec",
    "FileCheckpoints",
    "Phase",
    "ProgressBar",
    "ProgressCallback",
    "ProgressLog",
    "RejectLine",
    "RejectsFile",
    "RunReport",
    "RunStatus",
    "RunWatch",
    "TERMINAL_STATUSES",
    "run_export",
]
