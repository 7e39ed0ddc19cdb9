"""Command line: `klaviyo-export run SEGMENT --list-id ID ...` runs one export with the same engine as the app."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from azure.core.exceptions import ResourceExistsError

from shared.cli_subscribe import add_subscribe_options, subscribe_options
from shared.engine import (
    ConfigurationError,
    ExportSpec,
    FileCheckpoints,
    ProgressBar,
    ProgressLog,
    RejectsFile,
    RunReport,
    RunStatus,
    run_export,
)
from shared.klaviyo import KlaviyoError
from shared.mapping import DEFAULT_REGION, STANDARD_FIELDS, FieldMapping, MappingError
from shared.secrets import KeyVaultSecrets, SecretError
from shared.settings import Settings, StorageConnection
from shared.sources import (
    CsvDialect,
    SegmentError,
    SegmentSource,
    blob_delta_segment,
    blob_segment,
    cdm_blob_segment,
    cdm_local_segment,
    governs_blobs,
    governs_local,
    has_delta_log,
    is_local_delta,
    local_delta_segment,
    local_segment,
)
from shared.storage import blob_service, save_report, split_blob_path
from shared.sync import DEFAULT_MAX_REMOVAL_SHARE, BlobSyncState, FolderSyncState, SyncStateStore

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="klaviyo-export", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="export one segment into a Klaviyo list")
    _add_input_options(run)
    _add_delivery_options(run)
    _add_sync_options(run)
    add_subscribe_options(run)
    return parser


def _add_input_options(run: argparse.ArgumentParser) -> None:
    """What to read and how it maps onto Klaviyo profiles."""
    run.add_argument("segment", help="a local file or folder, or container/blob/path in blob storage")
    run.add_argument("--list-id", required=True, help="the Klaviyo list to add the profiles to")
    run.add_argument("--email-field", default=None, help='column holding the email (default: email; "" for none)')
    run.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help=f"map a column to a profile field ({', '.join(STANDARD_FIELDS)}) "
        "or to a custom property as properties.NAME=COLUMN; repeatable",
    )
    run.add_argument("--default-region", default=DEFAULT_REGION, help="region for phone numbers without +country code")
    run.add_argument(
        "--format",
        choices=["csv", "jsonl", "cdm", "parquet", "delta"],
        help="input format (default: from the file name; cdm for a folder whose model.json lists entities "
        "or that holds one *.manifest.cdm.json, delta for a folder holding _delta_log/)",
    )
    run.add_argument(
        "--entity", help="--format cdm: the entity of model.json or the manifest to export (default: its only one)"
    )
    run.add_argument("--version", type=int, help="Delta table: the version to read (default: the latest)")
    run.add_argument("--delimiter", help="CSV delimiter (default: sniffed among , ; TAB |)")
    run.add_argument("--no-header", action="store_true", help="CSV files have no header row (name the --columns)")
    run.add_argument("--columns", metavar="A,B,C", help="with --no-header: the column names, in order")
    run.add_argument("--escape", help="CSV escape character, e.g. '\\' (Spark's and Data Factory's default)")
    run.add_argument("--quote", default='"', help='CSV quote character (default ")')


def _add_delivery_options(run: argparse.ArgumentParser) -> None:
    """Where the API key, storage and reports are, and how the run shows progress, stops and goes on."""
    run.add_argument("--dry-run", action="store_true", help="read, validate and report; send nothing")
    run.add_argument("--report", type=Path, help="also write the report JSON (and rejects CSV beside it) here")
    run.add_argument("--export-name", default="cli", help="name used in reports (default: cli)")
    run.add_argument(
        "--connection-string", help="storage connection string (default: AzureWebJobsStorage or an identity-based one)"
    )
    run.add_argument("--key-vault-url", help="read the API key from this Key Vault (with --secret-name)")
    run.add_argument("--secret-name", help="the Key Vault secret holding the Klaviyo API key")
    run.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    run.add_argument(
        "--checkpoint",
        type=Path,
        help="keep progress in this file; if it exists, go on from it (a crashed or stopped run "
        "resumes without sending an accepted batch again)",
    )
    run.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="stop after about this long, checkpoint (needs --checkpoint) and exit 3",
    )


def _add_sync_options(run: argparse.ArgumentParser) -> None:
    """How the run compares the segment with earlier runs and with the list."""
    run.add_argument(
        "--mode",
        choices=["add", "mirror"],
        default="add",
        help="add: add and update profiles, never remove (default); mirror: the list ends holding exactly the "
        "segment's profiles (those who left it are removed from the list, never deleted or unsubscribed); "
        "needs --state",
    )
    run.add_argument(
        "--state",
        metavar="LOCATION",
        help="where the sync state lives between runs: a local folder (an existing path, or one starting "
        "with / . or ~), else container/path in blob storage; with it, a run sends only new and changed profiles",
    )
    run.add_argument("--full", action="store_true", help="send every profile, whatever the sync state says")
    run.add_argument(
        "--confirm-removals",
        action="store_true",
        help="mirror: remove even when the safety stop would hold the removals back (empty segment, or more "
        "than --max-removal-share of the list)",
    )
    run.add_argument(
        "--max-removal-share",
        type=float,
        default=DEFAULT_MAX_REMOVAL_SHARE,
        metavar="SHARE",
        help="mirror: a run that would remove more than this share of the list removes nothing (default %(default)s)",
    )
    run.add_argument(
        "--reconcile",
        action="store_true",
        help="read the list's members from Klaviyo first (1 call per 100 members; needs --state): profiles "
        "taken off the list by hand are sent again and, with --mode mirror, members not in the segment "
        "(added by hand or by another tool) are removed too",
    )


def sync_state_store(location: str, service_for: Callable[[], BlobServiceClient]) -> SyncStateStore:
    """--state LOCATION: a local folder, or container/path in blob storage."""
    if Path(location).exists() or location.startswith(("/", ".", "~")):
        return FolderSyncState(Path(location).expanduser())
    container, path = split_blob_path(location)
    client = service_for().get_container_client(container)
    with contextlib.suppress(ResourceExistsError):
        client.create_container()
    return BlobSyncState(client, path)


def parse_mapping(args: argparse.Namespace) -> FieldMapping:
    fields: dict[str, str] = {}
    properties: dict[str, str] = {}
    for item in args.map:
        name, sep, column = item.partition("=")
        if not sep or not name or not column:
            raise MappingError(f"--map {item!r}: expected FIELD=COLUMN")
        if name.startswith("properties."):
            properties[column] = name.removeprefix("properties.")
        else:
            fields[name] = column
    if args.email_field is not None:
        fields["email"] = args.email_field
    fields.setdefault("email", "email")
    if not fields["email"]:  # --email-field "": profiles identified by phone or external id only
        del fields["email"]
    return FieldMapping(fields, properties, args.default_region)


def _dialect(args: argparse.Namespace) -> CsvDialect:
    """The CSV dialect of --no-header, --columns, --escape, --quote and --delimiter."""
    columns = tuple(c.strip() for c in args.columns.split(",")) if args.columns is not None else None
    if columns is not None and not args.no_header:
        raise ConfigurationError("--columns names the columns of files without a header row: add --no-header")
    try:
        return CsvDialect(not args.no_header, columns, args.escape or None, args.quote, args.delimiter)
    except ValueError as exc:
        raise ConfigurationError(f"CSV options: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except (ConfigurationError, MappingError, SegmentError, SecretError, ValueError) as exc:
        print(f"klaviyo-export: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KlaviyoError as exc:
        print(f"klaviyo-export: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    mapping = parse_mapping(args)
    storage = _BlobStorage(_storage_connection(args, settings))
    in_blob_storage = not Path(args.segment).exists()
    source = _segment(args, storage, in_blob_storage)
    client = None if args.dry_run else settings.klaviyo_client(_api_key(args))
    _check_options(args)
    checkpoints = FileCheckpoints(args.checkpoint) if args.checkpoint else None
    sync_state = sync_state_store(args.state, storage.service) if args.state else None
    spec = _export_spec(args, settings, mapping, checkpoints)
    progress = (
        ProgressBar(source.reading)
        if sys.stderr.isatty() and not args.no_progress
        else ProgressLog(spec.run_id, reading=source.reading)
    )
    if isinstance(progress, ProgressLog):
        logging.getLogger("shared").setLevel(logging.INFO)
    rejects = RejectsFile()
    try:
        report = run_export(source, spec, client, progress, rejects, checkpoints, sync_state)
    finally:
        if isinstance(progress, ProgressBar):
            progress.close()
    if in_blob_storage:
        _save_in_blob_storage(storage.service(), settings.reports_container, report, rejects)
    if args.report:
        _write_report_file(args.report, report, rejects)
    rejects.discard()
    return _outcome(report, checkpoints)


def _segment(args: argparse.Namespace, storage: _BlobStorage, in_blob_storage: bool) -> SegmentSource:
    """The segment SEGMENT names: a file, a folder of parts, a Delta table (a folder holding _delta_log/)
    or a CDM folder (its model.json lists entities, or it holds one *.manifest.cdm.json; SEGMENT may also
    name that file)."""
    dialect = _dialect(args)
    if args.entity and args.format not in ("cdm", None):
        raise ConfigurationError("--entity names an entity of a CDM folder's model.json: use --format cdm")
    if in_blob_storage:
        container_name, path = split_blob_path(args.segment)
        container = storage.service().get_container_client(container_name)
        if args.format == "delta" or (args.format is None and has_delta_log(container, path)):
            return blob_delta_segment(container, path, args.version)
        _no_version(args)
        if args.format == "cdm" or (args.format is None and governs_blobs(container, path)):
            return cdm_blob_segment(container, path, _no_csv_options(args, dialect))
        return blob_segment(container, path, args.format, dialect)
    folder = Path(args.segment)
    if args.format == "delta" or (args.format is None and is_local_delta(folder)):
        return local_delta_segment(folder, args.version)
    _no_version(args)
    if args.format == "cdm" or (args.format is None and governs_local(folder)):
        return cdm_local_segment(folder, _no_csv_options(args, dialect))
    return local_segment(folder, args.format, dialect)


def _no_csv_options(args: argparse.Namespace, dialect: CsvDialect) -> str | None:
    """The entity of a CDM folder, whose model.json gives the CSV dialect: CSV options are refused."""
    if dialect != CsvDialect():
        raise ConfigurationError(
            f"{args.segment}: a CDM folder's model.json gives the CSV dialect; leave out the CSV options"
        )
    return args.entity


class _BlobStorage:
    """The blob service of --connection-string (else of the app's storage setting), created when first
    needed: a local segment without a sync state in blob storage never connects."""

    def __init__(self, connection: StorageConnection) -> None:
        self._connection = connection
        self._service: BlobServiceClient | None = None

    def service(self) -> BlobServiceClient:
        if self._service is None:
            self._service = blob_service(self._connection)
        return self._service


def _storage_connection(args: argparse.Namespace, settings: Settings) -> StorageConnection:
    if args.connection_string:
        return StorageConnection.from_string(args.connection_string, "--connection-string")
    return settings.storage


def _no_version(args: argparse.Namespace) -> None:
    if args.version is not None:
        raise ConfigurationError("--version is for a Delta table (a folder holding _delta_log/)")


def _check_options(args: argparse.Namespace) -> None:
    """Refuses option combinations that cannot work, before anything is read or sent."""
    if args.time_budget and not args.checkpoint:
        raise ConfigurationError("--time-budget needs --checkpoint (where to go on from)")
    if args.reconcile and not args.state:
        raise ConfigurationError("--reconcile needs --state")
    if args.mode == "mirror" and not args.state:
        raise ConfigurationError("--mode mirror needs --state (where the profiles put on the list are recorded)")
    if not 0 <= args.max_removal_share <= 1:
        raise ConfigurationError("--max-removal-share is a share of the list, between 0 and 1")


def _export_spec(
    args: argparse.Namespace, settings: Settings, mapping: FieldMapping, checkpoints: FileCheckpoints | None
) -> ExportSpec:
    """The engine's spec from the command's options; a run with a checkpoint goes on as the same run."""
    spec = ExportSpec(
        args.export_name,
        args.list_id,
        mapping,
        dry_run=args.dry_run,
        max_in_flight=settings.upload_concurrency,
        mode=args.mode,
        full=args.full,
        confirm_removals=args.confirm_removals,
        max_removal_share=args.max_removal_share,
        reconcile=args.reconcile,
        subscribe=subscribe_options(args),
    )
    if checkpoints is not None and (existing := checkpoints.load()) is not None:
        spec.run_id = existing.run_id
    if args.time_budget:
        spec.deadline = time.monotonic() + args.time_budget
    return spec


def _save_in_blob_storage(service: BlobServiceClient, container: str, report: RunReport, rejects: RejectsFile) -> None:
    """A segment read from blob storage gets its report and rejects there too, as the app's runs do."""
    try:
        save_report(service, container, report, rejects)
    except Exception as exc:  # a run whose report is lost must not pass for a success
        report.status = RunStatus.FAILED
        report.error = f"the report could not be written to blob storage ({type(exc).__name__})"


def _write_report_file(path: Path, report: RunReport, rejects: RejectsFile) -> None:
    """--report: the report JSON at `path` and the rejects CSV beside it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        rejects_path = path.with_name(path.stem + ".rejects.csv")
        rejects_path.write_bytes(rejects.read_bytes())
        report.rejects_file = str(rejects_path)
        path.write_bytes(report.to_json())
    except OSError as exc:  # a run whose report is lost must not pass for a success
        report.status = RunStatus.FAILED
        report.error = f"the report could not be written to {path}: {exc.strerror or exc}"


def _outcome(report: RunReport, checkpoints: FileCheckpoints | None) -> int:
    """Prints the summary and gives the exit code; a finished run's checkpoint is no longer needed."""
    print(report.summary())
    if report.status == RunStatus.INCOMPLETE:
        print("incomplete: the time budget ran out; run the same command again to go on from the checkpoint")
        return EXIT_INCOMPLETE
    if checkpoints is not None and report.status != RunStatus.FAILED:
        checkpoints.delete()
    return EXIT_FAILED if report.status == RunStatus.FAILED else EXIT_OK


def _api_key(args: argparse.Namespace) -> str:
    if args.key_vault_url or args.secret_name:
        if not (args.key_vault_url and args.secret_name):
            raise ConfigurationError("--key-vault-url and --secret-name go together")
        return KeyVaultSecrets(args.key_vault_url).get(args.secret_name)
    key = os.environ.get("KLAVIYO_API_KEY", "")
    if not key:
        raise ConfigurationError("no API key: set KLAVIYO_API_KEY, or give --key-vault-url and --secret-name")
    return key


def entry() -> NoReturn:
    """The command: main, then an exit that skips the interpreter's teardown, which after a big
    run frees its heap object by object (about 0.25 s at 1M rows) for a process that ends anyway."""
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
