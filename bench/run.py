"""Benchmarks of issue 4: generated segments in Azurite exported by `klaviyo-export run` (a subprocess)
to the Klaviyo simulator (another subprocess), with Klaviyo's limits ("real") and without ("pipeline").

    python -m bench.run                       # everything (make bench); rewrites the table in BENCHMARKS.md
    python -m bench.run --sizes 100k,1m       # some sizes (and any mode); prints the table, saves JSON
    python -m bench.run --only 1m-real,shared-3x300k
    python -m bench.run --list                # the scenario names
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from azure.storage.blob import BlobServiceClient

from bench.stack import (
    API_KEY,
    ROOT,
    Export,
    Interrupted,
    ProcessResult,
    Simulator,
    exports,
    interruptible,
    process_cpu_seconds,
    wait_all,
)
from tools.azurite import Azurite
from tools.segment_gen import COLUMNS, Expected, upload_files, upload_segment, write_delta, write_parquet

RESULTS = ROOT / "bench" / "results"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"
CONTAINER = "segments"
MAPPING = [
    "phone_number=phone",
    "external_id=customer_id",
    "first_name=first_name",
    "last_name=last_name",
    "properties.loyalty_tier=loyalty_tier",
    "properties.lifetime_value=lifetime_value",
]  # email: the default `email` column
MODES = ("real", "pipeline")
# Issue 19: real limits and a one-second throttle storm once the first import job is accepted (the jobs
# in flight then get a 429), with the RateLimit-* headers ("storm") and without them, as behind a proxy
# that strips them ("noheaders"); the client must pace the second within 1.2 times the first.
EARLY_429_MODES = ("storm", "noheaders")
SIMULATOR_OPTIONS = {"noheaders": ("--no-rate-limit-headers",)}
MODE_LABELS = {
    "real": "real limits",
    "pipeline": "pipeline only",
    "storm": "real limits, early 429",
    "noheaders": "real limits, early 429, no RateLimit headers",
}
NO_HEADERS_SLOWDOWN = 1.2
SHARED = "shared-3x300k"
# A Customer Insights export (CDM folder): 4 headerless partitions quoting every field, CRLF, and model.json.
CDM = "1m-cdm-pipeline"
CDM_FOLDER, CDM_ENTITY, CDM_ROWS, CDM_PARTITIONS = "bench/cdm/", "Segment", 1_000_000, 4
SHARED_ROWS, SHARED_RUNS = 300_000, 3

# Issue 4's floors.
ACCEPT_ALL_SECONDS = 15.0
PIPELINE_ROWS_PER_SECOND = 150_000
RSS_BASE_BYTES, RSS_BYTES_PER_PROFILE = 250_000_000, 24


@dataclass(frozen=True)
class Dataset:
    name: str
    size: str  # what --sizes selects
    rows: int
    fmt: str
    seed: int
    modes: tuple[str, ...] = MODES

    @property
    def blob(self) -> str:
        """The segment's blob (a Delta table: the folder holding `_delta_log/`)."""
        return f"bench/{self.name}" if self.fmt == "delta" else f"bench/{self.name}.{self.fmt}"


DATASETS = [
    Dataset("100k", "100k", 100_000, "csv", 41),
    Dataset("1m", "1m", 1_000_000, "csv", 42, (*MODES, "storm", "noheaders")),
    Dataset("1m-jsonl", "1m", 1_000_000, "jsonl", 43),
    # Issue 17: a Parquet file (row groups of 128K rows) and a Delta table (4 commits of 250K rows, delta-rs).
    Dataset("1m-parquet", "1m", 1_000_000, "parquet", 45, ("pipeline",)),
    Dataset("1m-delta", "1m", 1_000_000, "delta", 46, ("pipeline",)),
    Dataset("10m", "10m", 10_000_000, "csv", 44),
]


@dataclass(frozen=True)
class Limits:
    timeout_scale: float  # a run may take 120 s + 1 s per 5,000 rows, times this
    max_rss_bytes: int  # the exporting processes of a scenario together, or they are killed
    repeat: int = 1  # runs of each scenario of up to 1M rows (the median is reported)


@dataclass
class Run:
    """One export's figures: the process (kernel), the simulator's view, the report, the checks."""

    list_id: str
    rows: int
    expected_valid: int
    expected_invalid: int
    expected_duplicates: int
    exit_code: int | None = None
    killed: str = ""  # why the benchmark killed it: time limit, memory cap
    wall_seconds: float = 0.0
    cpu_user_seconds: float = 0.0
    cpu_system_seconds: float = 0.0
    peak_rss_bytes: int = 0
    rss_floor_bytes: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    members: int | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    error: str = ""

    @property
    def correct(self) -> bool:
        return bool(self.checks) and all(self.checks.values())


@dataclass
class Result:
    """One scenario x mode."""

    scenario: str
    mode: str
    rows: int
    fmt: str
    status: str = "not run"  # ok | incorrect | failed | killed
    wall_seconds: float = 0.0  # first process start to last exit
    all_jobs_accepted_seconds: float | None = None  # first process start to the simulator's last 202
    all_jobs_done_seconds: float | None = None  # ... to the last job completed
    rows_per_second: float = 0.0
    peak_rss_bytes: int = 0  # the largest of the runs
    rss_floor_bytes: int = 0
    cpu_seconds: float = 0.0  # user + sys of every exporting process
    storage_cpu_seconds: float = 0.0  # Azurite's user + sys over the run
    jobs: int = 0  # import jobs the simulator accepted
    throttled: int = 0  # 429s the simulator sent
    retried_429: int = 0  # 429s the client retried (the report's `retries`)
    runs: list[Run] = field(default_factory=list)
    simulator: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    repeats: list[dict[str, Any]] = field(default_factory=list)  # every run of a repeated scenario


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = scenario_names()
    if args.list:
        print("\n".join(names))
        return 0
    selected = select(names, args)
    if not selected:
        print("no scenario selected; --list shows them", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)])
    full = selected == names
    write_markdown = args.markdown if args.markdown is not None else full
    print(f"scenarios: {', '.join(selected)}", flush=True)
    results: list[Result] = []
    started = datetime.now(UTC)
    code = git_state()  # what is measured: the working tree as it is now
    interrupted = False
    try:
        with interruptible():
            run_all(selected, Limits(args.timeout_scale, int(args.max_rss_gb * 1e9), args.repeat), results)
    except (KeyboardInterrupt, Interrupted) as exc:
        interrupted = True
        for result in results:
            if result.status == "not run":
                result.status = "interrupted"
        print(f"\ninterrupted ({exc!r}); everything the benchmark started has been stopped", file=sys.stderr)
    if not results:
        return 130 if interrupted else 1
    document = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": command,
        "machine": machine(),
        "git": code | {"changed_during_run": git_state()["fingerprint"] != code["fingerprint"]},
        "results": [asdict(r) for r in results],
    }
    print(f"\nraw results: {save_json(document).relative_to(ROOT)}")
    table = render(document)
    print("\n" + table)
    if write_markdown and not interrupted:
        update_markdown(table)
        print(f"\nupdated {BENCHMARKS_MD.relative_to(ROOT)}")
    if interrupted:
        return 130
    return 0 if all(r.status == "ok" for r in results) else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated scenario names (see --list)")
    parser.add_argument("--sizes", help="comma-separated sizes: 100k, 1m, 10m, 3x300k (the shared-account run)")
    parser.add_argument(
        "--modes", help="comma-separated modes: real, pipeline, storm, noheaders (the shared-account run is real)"
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--timeout-scale", type=float, default=1.0, help="multiply each run's time limit (120 s + 1 s per 5,000 rows)"
    )
    parser.add_argument(
        "--max-rss-gb",
        type=float,
        default=round(total_memory() / 2e9, 1),
        help="kill an export whose resident memory passes this (shared by concurrent ones; default: half the RAM)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each scenario of up to 1M rows; the table shows the median run, its range and the "
        "highest peak RSS of them all (default: 3)",
    )
    parser.add_argument(
        "--markdown",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rewrite the results table in BENCHMARKS.md (default: only when every scenario runs)",
    )
    return parser.parse_args(argv)


def scenario_names() -> list[str]:
    return [f"{d.name}-{mode}" for d in DATASETS for mode in d.modes] + [SHARED, CDM]


def select(names: list[str], args: argparse.Namespace) -> list[str]:
    chosen = names
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; --list shows them")
        chosen = [n for n in names if n in wanted]
    if args.sizes:
        sizes = {s.strip().lower() for s in args.sizes.split(",")}
        size_of = {f"{d.name}-{m}": d.size for d in DATASETS for m in d.modes} | {SHARED: "3x300k", CDM: "1m"}
        chosen = [n for n in chosen if size_of[n] in sizes]
    if args.modes:
        modes = {m.strip().lower() for m in args.modes.split(",")}
        chosen = [n for n in chosen if (n == SHARED and "real" in modes) or n.rsplit("-", 1)[-1] in modes]
    return chosen


# --------------------------------------------------------------------------- running


def run_all(selected: list[str], limits: Limits, results: list[Result]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="klaviyo-bench-"))
    try:
        print(f"starting Azurite (disk-backed, in {workdir})", flush=True)
        (workdir / "azurite").mkdir()
        with Azurite(location=str(workdir / "azurite")) as azurite:
            service = BlobServiceClient.from_connection_string(azurite.connection_string)
            service.create_container(CONTAINER)
            env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string, "KLAVIYO_API_KEY": API_KEY}
            env["NO_PROXY"] = env["no_proxy"] = ",".join(filter(None, ["127.0.0.1,localhost", env.get("NO_PROXY")]))
            env.pop("SegmentsStorage", None)
            for dataset in DATASETS:
                modes = [m for m in dataset.modes if f"{dataset.name}-{m}" in selected]
                if not modes:
                    continue
                expected = generate(service, dataset.blob, dataset.rows, dataset.seed, fmt=dataset.fmt, workdir=workdir)
                for mode in modes:
                    times = limits.repeat if dataset.rows <= 1_000_000 else 1
                    tries = []
                    for _ in range(max(1, times)):
                        result = Result(f"{dataset.name}-{mode}", mode, dataset.rows, dataset.fmt)
                        tries.append(result)
                        run_scenario(result, [dataset.blob], [expected], env, workdir, limits, azurite)
                    results.append(median_of(tries))
                container = service.get_container_client(CONTAINER)
                for blob in container.list_blobs(name_starts_with=dataset.blob):
                    container.delete_blob(blob.name)
            if SHARED in selected:
                blobs = [f"bench/shared-{k}.csv" for k in range(SHARED_RUNS)]
                # Disjoint row numbers, so the three segments share no email, phone or customer id.
                expected_each = [
                    generate(service, b, SHARED_ROWS, 50 + k, start=k * SHARED_ROWS) for k, b in enumerate(blobs)
                ]
                result = Result(SHARED, "real", SHARED_ROWS * SHARED_RUNS, "csv")
                results.append(result)
                run_scenario(result, blobs, expected_each, env, workdir, limits, azurite)
            if CDM in selected:
                expected = generate_cdm(service, azurite)
                tries = []
                for _ in range(max(1, limits.repeat)):
                    tries.append(Result(CDM, "pipeline", CDM_ROWS, "cdm"))
                    run_scenario(tries[-1], [CDM_FOLDER], [expected], env, workdir, limits, azurite)
                results.append(median_of(tries))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def median_of(tries: list[Result]) -> Result:
    """The run with the median rows/s, holding every run's figures and the highest peak RSS of them
    all (the memory floor must hold in every run); a run that did not pass is reported instead."""
    failed = [t for t in tries if t.status != "ok"]
    chosen = failed[0] if failed else sorted(tries, key=lambda t: t.rows_per_second)[len(tries) // 2]
    if len(tries) > 1:
        chosen.repeats = [
            {
                "wall_seconds": t.wall_seconds,
                "all_jobs_accepted_seconds": t.all_jobs_accepted_seconds,
                "rows_per_second": t.rows_per_second,
                "peak_rss_bytes": t.peak_rss_bytes,
                "status": t.status,
            }
            for t in tries
        ]
        chosen.peak_rss_bytes = max(t.peak_rss_bytes for t in tries)
        for k, run in enumerate(chosen.runs):
            run.peak_rss_bytes = max(t.runs[k].peak_rss_bytes for t in tries if len(t.runs) > k)
    return chosen


def generate(
    service: BlobServiceClient,
    blob: str,
    rows: int,
    seed: int,
    start: int = 0,
    fmt: str = "csv",
    workdir: Path | None = None,
) -> Expected:
    began = time.monotonic()
    print(f"generating {rows:,} rows into {CONTAINER}/{blob} ...", end=" ", flush=True)
    if fmt in ("parquet", "delta"):  # written to a local file or folder, then uploaded as it is
        local = Path(tempfile.mkdtemp(prefix="segment-", dir=workdir))
        if fmt == "parquet":
            folder, _, name = blob.rpartition("/")
            expected = write_parquet(local / name, rows, seed, start)
            upload_files(service.get_container_client(CONTAINER), local, folder + "/")
        else:
            expected = write_delta(local / "table", rows, seed)
            upload_files(service.get_container_client(CONTAINER), local / "table", blob + "/")
        shutil.rmtree(local, ignore_errors=True)
    else:
        expected = upload_segment(service.get_blob_client(CONTAINER, blob), rows, seed, start=start)
    print(
        f"{time.monotonic() - began:.0f} s ({expected.invalid:,} invalid, {expected.duplicates:,} duplicates)",
        flush=True,
    )
    return expected


def generate_cdm(service: BlobServiceClient, azurite: Azurite) -> Expected:
    """CDM_PARTITIONS partitions of disjoint rows as Customer Insights writes them, then model.json listing
    them by absolute URL (https://learn.microsoft.com/common-data-model/model-json)."""
    each = CDM_ROWS // CDM_PARTITIONS
    total = Expected(valid_emails=None)
    partitions = []
    for k in range(CDM_PARTITIONS):
        name = f"{CDM_FOLDER}{CDM_ENTITY}/2026/12/07/0930/{CDM_ENTITY}_{k + 1}.csv"
        print(f"generating {each:,} rows into {CONTAINER}/{name} ...", flush=True)
        part = upload_segment(service.get_blob_client(CONTAINER, name), each, 60 + k, start=k * each, cdm=True)
        total.rows, total.invalid, total.duplicates = (
            total.rows + part.rows,
            total.invalid + part.invalid,
            total.duplicates + part.duplicates,
        )
        location = f"https://{service.account_name}.blob.core.windows.net/{CONTAINER}/{name}"
        settings = {"$type": "CsvFormatSettings", "columnHeaders": False, "csvStyle": "CsvStyle.QuoteAlways"}
        partitions.append({"name": f"{CDM_ENTITY}_{k + 1}", "location": location, "fileFormatSettings": settings})
    attributes = [{"name": c, "dataType": "string"} for c in COLUMNS]
    entity = {"$type": "LocalEntity", "name": CDM_ENTITY, "attributes": attributes, "partitions": partitions}
    model = {"name": "bench", "version": "1.0", "entities": [entity]}
    service.get_blob_client(CONTAINER, f"{CDM_FOLDER}model.json").upload_blob(orjson.dumps(model), overwrite=True)
    return total


def run_scenario(
    result: Result,
    blobs: list[str],
    expected: list[Expected],
    env: dict[str, str],
    workdir: Path,
    limits: Limits,
    storage: Azurite,
) -> None:
    """Starts a simulator, then one export per blob (all at once, each into its own list), and measures."""
    real = result.mode != "pipeline"
    list_ids = [f"L{k}{result.scenario.replace('-', '')}"[:40] for k in range(len(blobs))]
    logs = workdir / "logs" / result.scenario
    logs.mkdir(parents=True, exist_ok=True)
    timeout = (120 + max(e.rows for e in expected) / 5_000) * limits.timeout_scale
    max_rss_bytes = limits.max_rss_bytes // len(blobs)
    print(f"\n== {result.scenario}: {result.rows:,} rows, {MODE_LABELS[result.mode]}", flush=True)
    for list_id, e in zip(list_ids, expected, strict=True):
        result.runs.append(
            Run(
                list_id,
                e.rows,
                e.valid,
                e.invalid,
                e.duplicates,
                rss_floor_bytes=RSS_BASE_BYTES + RSS_BYTES_PER_PROFILE * e.valid,
            )
        )
    try:
        with Simulator(list_ids, real, logs / "simulator.log", SIMULATOR_OPTIONS.get(result.mode, ())) as simulator:
            # Pipeline only: the client's own pace is lifted too, or it would measure our rate limiter.
            run_env = {**env, "KLAVIYO_BASE_URL": simulator.url, "KLAVIYO_RATE_LIMITS": "published" if real else "off"}
            commands = [
                Export(export_args(blob, run.list_id, logs / f"report-{k}.json"), run_env, logs / f"export-{k}.log")
                for k, (blob, run) in enumerate(zip(blobs, result.runs, strict=True))
            ]
            storage_cpu = process_cpu_seconds(storage.pid)
            with exports(commands), early_429(simulator, result.mode):
                processes = wait_all(commands, timeout, max_rss_bytes)
            result.storage_cpu_seconds = process_cpu_seconds(storage.pid) - storage_cpu
            stats = simulator.stats() | {"cpu_seconds": simulator.cpu_seconds()}
            for k, (run, process) in enumerate(zip(result.runs, processes, strict=True)):
                record_run(run, process, logs / f"report-{k}.json", simulator)
    except (KeyboardInterrupt, Interrupted):
        raise
    except Exception as exc:  # a scenario that breaks is recorded, the next one still runs
        result.status, result.error = "failed", f"{type(exc).__name__}: {exc}"
        print(f"   FAILED: {result.error}", flush=True)
        return
    summarize(result, processes, stats)
    print_result(result)


@contextlib.contextmanager
def early_429(simulator: Simulator, mode: str) -> Iterator[None]:
    """In the storm modes: a one-second throttle storm as soon as the simulator accepts the first import job."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            if simulator.stats().get("jobs_created", 0) >= 1:
                simulator.configure(throttle_storm_every=3600.0, throttle_storm_seconds=1.0)
                return

    thread = threading.Thread(target=watch, daemon=True)
    if mode in EARLY_429_MODES:
        thread.start()
    try:
        yield
    finally:
        done.set()
        if thread.is_alive():
            thread.join()


def export_args(blob: str, list_id: str, report: Path) -> list[str]:
    args = ["run", f"{CONTAINER}/{blob}", "--list-id", list_id, "--no-progress", "--report", str(report)]
    args += ["--export-name", "bench"]
    if blob == CDM_FOLDER:
        args += ["--format", "cdm", "--entity", CDM_ENTITY]
    for item in MAPPING:
        args += ["--map", item]
    return args


def record_run(run: Run, process: ProcessResult, report_path: Path, simulator: Simulator) -> None:
    run.exit_code, run.killed = process.exit_code, process.killed
    run.wall_seconds = process.wall_seconds
    run.cpu_user_seconds, run.cpu_system_seconds = process.user_seconds, process.system_seconds
    run.peak_rss_bytes = process.max_rss_bytes
    if report_path.exists():
        run.report = orjson.loads(report_path.read_bytes())
        run.report.pop("job_ids", None)  # hundreds of ids say nothing here
    run.members = simulator.member_count(run.list_id)
    counts = run.report.get("counts", {})
    run.checks = {
        "exit code 0": process.exit_code == 0,
        "rows read = rows generated": counts.get("rows_read") == run.rows,
        "sent + rejected + duplicates = rows read": counts.get("rows_read", -1)
        == counts.get("sent", 0) + counts.get("rejected", 0) + counts.get("duplicates", 0),
        "rejected = invalid rows generated": counts.get("rejected") == run.expected_invalid,
        "duplicates = duplicate rows generated": counts.get("duplicates") == run.expected_duplicates,
        "list members = valid distinct rows": run.members == run.expected_valid,
    }
    if process.killed:
        run.error = f"{process.killed} ({process.wall_seconds:.0f} s, peak RSS {process.max_rss_bytes / 1e6:,.0f} MB)"
    elif not run.correct:
        run.error = process.stderr_tail[-1500:]


def summarize(result: Result, processes: list[ProcessResult], stats: dict[str, Any]) -> None:
    first_start = min(p.started_at for p in processes)
    result.wall_seconds = max(p.started_at + p.wall_seconds for p in processes) - first_start
    if stats.get("last_job_accepted_at") is not None:
        result.all_jobs_accepted_seconds = stats["last_job_accepted_at"] - first_start
    if stats.get("last_job_completed_at") is not None:
        result.all_jobs_done_seconds = stats["last_job_completed_at"] - first_start
    rows_read = sum(r.report.get("counts", {}).get("rows_read", 0) for r in result.runs)
    result.rows_per_second = rows_read / result.wall_seconds if result.wall_seconds else 0.0
    worst = max(result.runs, key=lambda r: r.peak_rss_bytes - r.rss_floor_bytes)
    result.peak_rss_bytes, result.rss_floor_bytes = worst.peak_rss_bytes, worst.rss_floor_bytes
    result.cpu_seconds = sum(p.cpu_seconds for p in processes)
    result.jobs = int(stats.get("jobs_created", 0))
    result.throttled = int(stats.get("throttled", 0))
    result.retried_429 = sum(int(r.report.get("retries", {}).get("retried_429", 0)) for r in result.runs)
    result.simulator = {k: v for k, v in stats.items() if k != "requests_by_endpoint"}
    if any(r.killed for r in result.runs):
        result.status = "killed"
    elif any(r.exit_code != 0 for r in result.runs):
        result.status = "failed"
    else:
        result.status = "ok" if all(r.correct for r in result.runs) else "incorrect"
    result.error = "; ".join(f"{r.list_id}: {r.error}" for r in result.runs if r.error)


def print_result(r: Result) -> None:
    accepted = f"{r.all_jobs_accepted_seconds:.1f} s" if r.all_jobs_accepted_seconds is not None else "-"
    print(
        f"   {r.status}: {r.wall_seconds:.1f} s wall, {r.rows_per_second:,.0f} rows/s, every job accepted at "
        f"{accepted}, peak RSS {r.peak_rss_bytes / 1e6:.0f} MB (floor {r.rss_floor_bytes / 1e6:.0f} MB), "
        f"CPU {r.cpu_seconds:.1f} s (simulator {r.simulator.get('cpu_seconds', 0):.1f} s, Azurite "
        f"{r.storage_cpu_seconds:.1f} s), {r.jobs} jobs, "
        f"429s {r.throttled} (client retried {r.retried_429})",
        flush=True,
    )
    for run in r.runs:
        for check, ok in run.checks.items():
            if not ok:
                print(f"   check failed ({run.list_id}): {check}", flush=True)
        if run.error:
            print(f"   {run.list_id}: {run.error}", flush=True)


# --------------------------------------------------------------------------- reporting


def total_memory() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 8 * 10**9


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_bytes": total_memory(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines() if line]
    commit = git("rev-parse", "--short", "HEAD").strip()
    # The engine and tools as they are, committed or not (new files in shared/ included).
    tree = (
        commit
        + git("diff", "HEAD", "--", "shared", "tools")
        + git("ls-files", "--others", "--exclude-standard", "shared")
    )
    return {
        "commit": commit,
        "subject": git("log", "-1", "--format=%s").strip(),
        "uncommitted": changed,
        "fingerprint": hashlib.sha256(tree.encode()).hexdigest()[:16],
    }


def save_json(document: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = document["started_at"].replace(":", "").replace("-", "")
    path = RESULTS / f"bench-{stamp}.json"
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    path.write_bytes(data)
    (RESULTS / "latest.json").write_bytes(data)
    return path


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _rate(r: dict[str, Any]) -> str:
    """Rows/s, and for a repeated scenario the range of its runs (the figure is the median run's)."""
    rates = [t["rows_per_second"] for t in r.get("repeats") or []]
    if len(rates) < 2:
        return f"{r['rows_per_second']:,.0f}"
    return f"{r['rows_per_second']:,.0f} (median of {len(rates)}: {min(rates):,.0f}–{max(rates):,.0f})"


def _mark(ok: bool) -> str:
    return "met" if ok else "**not met**"


def floors(results: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(floor, scenario, measured, met) for each floor of issue 4 and each run it applies to."""
    rows: list[tuple[str, str, str, str]] = []
    by_name = {r["scenario"]: r for r in results}
    for r in results:
        name, ok = r["scenario"], r["status"] == "ok"
        if r["status"] == "interrupted":
            continue
        if r["mode"] == "real" and r["rows"] == 1_000_000:
            accepted = r["all_jobs_accepted_seconds"]
            met = ok and accepted is not None and accepted <= ACCEPT_ALL_SECONDS
            rows.append(
                ("1M rows, real limits: every job accepted ≤ 15 s", name, f"{_seconds(accepted)} s", _mark(met))
            )
        if r["mode"] == "pipeline" and r["rows"] >= 1_000_000:
            met = ok and r["rows_per_second"] >= PIPELINE_ROWS_PER_SECOND
            rows.append(
                ("pipeline only: ≥ 150,000 rows/s end to end", name, f"{r['rows_per_second']:,.0f} rows/s", _mark(met))
            )
        for run in r["runs"]:
            if run["peak_rss_bytes"]:
                met = run["peak_rss_bytes"] <= run["rss_floor_bytes"]
                label = name if len(r["runs"]) == 1 else f"{name} ({run['list_id']})"
                rows.append(
                    (
                        "peak RSS ≤ 250 MB + 24 B × distinct profiles",
                        label,
                        f"{run['peak_rss_bytes'] / 1e6:,.0f} MB ≤ {run['rss_floor_bytes'] / 1e6:,.0f} MB",
                        _mark(met),
                    )
                )
        with_headers = by_name.get(name.replace("-noheaders", "-storm")) if name.endswith("-noheaders") else None
        if with_headers is not None and with_headers["all_jobs_accepted_seconds"] is not None:
            accepted, paced = r["all_jobs_accepted_seconds"], with_headers["all_jobs_accepted_seconds"]
            met = ok and accepted is not None and accepted <= NO_HEADERS_SLOWDOWN * paced
            rows.append(
                (
                    "no RateLimit headers, early 429: every job accepted ≤ 1.2 × with them (issue 19)",
                    name,
                    f"{_seconds(accepted)} s ≤ 1.2 × {_seconds(paced)} s",
                    _mark(met),
                )
            )
        if r["rows"] == 10_000_000:
            rows.append(("10M rows complete, every row accounted for", name, r["status"], _mark(ok)))
        if r["scenario"] == SHARED:
            complete = sum(1 for run in r["runs"] if run["checks"] and all(run["checks"].values()))
            measured = (
                f"{complete}/{len(r['runs'])} lists complete, {r['throttled']} 429s, {_seconds(r['wall_seconds'])} s"
            )
            rows.append(("three 300k runs on one account all finish", name, measured, _mark(ok)))
    return rows


def render(document: dict[str, Any]) -> str:
    m, g = document["machine"], document["git"]
    commit = g["commit"] + (f" + uncommitted changes to {', '.join(g['uncommitted'])}" if g["uncommitted"] else "")
    if g.get("changed_during_run"):
        commit += " (**the code changed during the run**: the rows may measure different versions)"
    lines = [
        f"Run {document['started_at']} on {m['cpu']}, {m['cores']} cores, {m['ram_bytes'] / 2**30:.0f} GiB RAM "
        f"({m['os']}, Python {m['python']}); commit {commit}.",
        "",
        f"Command: `{document['command']}`",
        "",
        "| scenario | rows | mode | status | wall s | every job accepted at s | rows/s | peak RSS MB (floor) "
        "| CPU s (simulator's, Azurite's) | jobs | 429s (sim / client retries) |",
        "|---|--:|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in document["results"]:
        lines.append(
            f"| {r['scenario']} | {r['rows']:,} | {MODE_LABELS[r['mode']]} "
            f"| {r['status']} | {_seconds(r['wall_seconds'])} | {_seconds(r['all_jobs_accepted_seconds'])} "
            f"| {_rate(r)} | {r['peak_rss_bytes'] / 1e6:,.0f} ({r['rss_floor_bytes'] / 1e6:,.0f}) "
            f"| {r['cpu_seconds']:.1f} ({r['simulator'].get('cpu_seconds', 0):.1f}, "
            f"{r.get('storage_cpu_seconds', 0):.1f}) | {r['jobs']:,} "
            f"| {r['throttled']} / {r['retried_429']} |"
        )
    lines += ["", "| floor (issue 4) | scenario | measured | |", "|---|---|---|---|"]
    lines += [f"| {f} | {s} | {v} | {ok} |" for f, s, v, ok in floors(document["results"])]
    failures = [(r["scenario"], r["error"]) for r in document["results"] if r["error"]]
    if failures:
        lines += ["", "Failures:", ""]
        lines += [f"- {name}: `{' '.join(error.split())[:400]}`" for name, error in failures]
    return "\n".join(lines)


def update_markdown(table: str) -> None:
    section = f"{BEGIN}\n{table}\n{END}"
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    BENCHMARKS_MD.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
