"""The benchmark's processes: Azurite (disk-backed), a Klaviyo simulator per run, and the exporting
command, each its own subprocess on 127.0.0.1, all stopped on exit, failure, Ctrl-C or SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "pk_bench_simulator_only_0000"
_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def process_cpu_seconds(pid: int | None) -> float:
    """User + system CPU time a process has used so far (from /proc; 0 where there is none)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class Interrupted(BaseException):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C so every `finally` stops what it started."""


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turns SIGTERM and SIGHUP into an exception for the duration (SIGINT already raises one)."""

    def stop(signum: int, _frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_group(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Stops a child started with its own session (and anything it started), politely first."""
    if process.returncode is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class Simulator:
    """`python -m tools.klaviyo_sim` in its own process, with one API key and the given lists."""

    def __init__(self, lists: Sequence[str], real_limits: bool, log_path: Path, options: Sequence[str] = ()) -> None:
        self.lists = list(lists)
        self.real_limits = real_limits
        self.options = list(options)  # more of the simulator's command-line options
        self.log_path = log_path
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Simulator:
        command = [sys.executable, "-m", "tools.klaviyo_sim", "--host", "127.0.0.1", "--port", "0"]
        # Both modes keep only identifiers and read jobs by a scan for emails (members still counted
        # exactly): the full parse and validation costs ~20 µs a profile, which on a 2-core machine
        # would cap both measurements at the simulator's speed, not the exporter's.
        command += ["--api-key", API_KEY, "--no-profile-attributes", "--fast-import"]
        for list_id in self.lists:
            command += ["--list", f"{list_id}:{list_id}"]
        if not self.real_limits:  # pipeline only: no rate limits, jobs done as soon as they are processed
            command += ["--no-rate-limits", "--processing-seconds", "0"]
        command += self.options
        log = self.log_path.open("wb")
        self._process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        log.close()
        stdout = self._process.stdout
        assert stdout is not None
        # Its first line names the URL; the reader then keeps draining so the pipe never fills.
        first = threading.Event()
        lines: list[bytes] = []

        def read() -> None:
            lines.append(stdout.readline())
            first.set()
            for _ in stdout:
                pass

        threading.Thread(target=read, daemon=True).start()
        first.wait(timeout)
        match = _LISTENING.search(lines[0].decode()) if lines else None
        if match is None:
            self.stop()
            raise RuntimeError(f"the Klaviyo simulator did not start (see {self.log_path})")
        self.url = match.group(1)
        return self

    def admin(self, path: str, timeout: float = 120.0) -> Any:
        with _LOCAL.open(f"{self.url}/_sim/{path}", timeout=timeout) as response:
            return orjson.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return dict(self.admin("stats"))

    def configure(self, **changes: Any) -> None:
        """Changes the running simulator's settings (its admin API's POST /_sim/config)."""
        request = urllib.request.Request(f"{self.url}/_sim/config", data=orjson.dumps(changes), method="POST")
        request.add_header("Content-Type", "application/json")
        with _LOCAL.open(request, timeout=30.0) as response:
            response.read()

    def member_count(self, list_id: str) -> int:
        return int(self.admin(f"lists/{list_id}/members?count_only=1")["count"])

    def cpu_seconds(self) -> float:
        """User + system CPU time the simulator has used so far."""
        return process_cpu_seconds(self._process.pid if self._process is not None else None)

    def stop(self) -> None:
        if self._process is not None:
            _stop_group(self._process)
            self._process = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class ProcessResult:
    """One exporting process, measured by the kernel (wait4) from spawn to exit."""

    exit_code: int | None  # negative: the signal that ended it; None: no figures (the launcher died)
    started_at: float  # epoch seconds, just before the spawn
    wall_seconds: float
    user_seconds: float
    system_seconds: float
    max_rss_bytes: int
    killed: str  # why the benchmark killed it ("" when it ended by itself)
    stderr_tail: str

    @property
    def cpu_seconds(self) -> float:
        return self.user_seconds + self.system_seconds


# A child's ru_maxrss starts at its parent's RSS when it was forked (Linux carries the forked memory's
# high-water mark over exec), so the benchmark, which has generated segments and grown, must not be
# the parent: this small launcher (~10 MB) spawns the command, names its pid, reaps it with wait4 and
# writes the kernel's figures for that process alone (also when the benchmark had to kill it).
_LAUNCHER = """
import json, os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
started, clock = time.time(), time.monotonic()
pid = os.posix_spawn(argv[0], argv, os.environ)
with open(out + ".pid", "w") as f:
    f.write(str(pid))
_, status, usage = os.wait4(pid, 0)
wall = time.monotonic() - clock
with open(out, "w") as f:
    json.dump({"exit_code": os.waitstatus_to_exitcode(status), "started_at": started, "wall_seconds": wall,
               "user_seconds": usage.ru_utime, "system_seconds": usage.ru_stime,
               "max_rss_bytes": usage.ru_maxrss * 1024}, f)  # Linux reports kilobytes
"""


class Export:
    """`klaviyo-export run ...` in its own session, under the launcher above; its output goes to a log."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.command = [sys.executable, "-m", "shared.cli", *args]
        self.env = env
        self.log_path = log_path
        self.usage_path = log_path.with_suffix(".usage.json")
        self.killed = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._started = 0.0

    def start(self) -> Export:
        log = self.log_path.open("wb")
        self._started_at, self._started = time.time(), time.monotonic()
        launcher = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(self.usage_path), *self.command]
        self._process = subprocess.Popen(
            launcher, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _child(self) -> int | None:
        try:
            return int(Path(str(self.usage_path) + ".pid").read_text())
        except (OSError, ValueError):
            return None

    def rss_bytes(self) -> int:
        """The exporting process's resident memory now (0 when it cannot be read)."""
        child = self._child()
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{child}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self, reason: str) -> None:
        """Kills the exporting process (its launcher still reports its figures), then anything left."""
        if not self.running:
            return
        self.killed = self.killed or reason
        child = self._child()
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        assert self._process is not None
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def result(self) -> ProcessResult:
        usage: dict[str, Any] = {}
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            usage = orjson.loads(self.usage_path.read_bytes())
        return ProcessResult(
            exit_code=usage.get("exit_code"),
            started_at=usage.get("started_at", self._started_at),
            wall_seconds=usage.get("wall_seconds", time.monotonic() - self._started),
            user_seconds=usage.get("user_seconds", 0.0),
            system_seconds=usage.get("system_seconds", 0.0),
            max_rss_bytes=usage.get("max_rss_bytes", 0),
            killed=self.killed,
            stderr_tail=_tail(self.log_path),
        )


def wait_all(commands: Sequence[Export], timeout: float, max_rss_bytes: int) -> list[ProcessResult]:
    """Waits for every export to exit; kills one that passes the time limit or the memory cap (so a
    runaway export fails its scenario instead of the machine)."""
    deadline = time.monotonic() + timeout
    while any(c.running for c in commands):
        for command in commands:
            if command.running and command.rss_bytes() > max_rss_bytes:
                command.stop(f"killed: resident memory passed the cap of {max_rss_bytes / 1e6:,.0f} MB")
        if time.monotonic() > deadline:
            for command in commands:
                command.stop(f"killed: still running after the time limit of {timeout:,.0f} s")
        time.sleep(0.2)
    return [c.result() for c in commands]


def _tail(path: Path, limit: int = 2000) -> str:
    with contextlib.suppress(OSError), path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - limit))
        return f.read().decode(errors="replace")
    return ""


@contextlib.contextmanager
def exports(commands: Sequence[Export]) -> Iterator[Sequence[Export]]:
    """Starts the exports together; any still running on the way out (an error, Ctrl-C) is killed."""
    try:
        for command in commands:
            command.start()
        yield commands
    finally:
        for command in commands:
            command.stop("killed: the benchmark stopped")


def replace_marked_block(path: Path, begin: str, end: str, table: str, heading: str) -> None:
    """Puts `table` between the `begin` and `end` markers of the markdown file, or, the first time, at its end
    under `heading`."""
    text = path.read_text(encoding="utf-8")
    block = f"{begin}\n{table}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def simulator_env(url: str, real: bool) -> dict[str, str]:
    """The environment of an export against a simulator: this process's without the app's storage, the
    simulator's address and key, and the client's pace (Klaviyo's published limits when `real`, else none)."""
    env = {k: v for k, v in os.environ.items() if k != "SegmentsStorage"}
    env.update(KLAVIYO_BASE_URL=url, KLAVIYO_API_KEY=API_KEY, NO_PROXY="127.0.0.1,localhost")
    env["KLAVIYO_RATE_LIMITS"] = "published" if real else "off"
    return env


def export_args(segment: Path, list_id: str, report: Path, name: str, mapping: Sequence[str], *extra: str) -> list[str]:
    """The command line of one export of `segment` to `list_id` (without progress, with a report)."""
    args = ["run", str(segment), "--list-id", list_id, "--no-progress", "--report", str(report)]
    args += ["--export-name", name, *extra]
    for item in mapping:
        args += ["--map", item]
    return args


@dataclass
class SimulatedExport:
    """One export run to its end against a simulator: the process, the requests and import jobs it
    made there, and its report ({} when it wrote none)."""

    process: ProcessResult
    requests: int
    jobs: int
    report: dict[str, Any]


def simulated_export(
    simulator: Simulator, args: Sequence[str], env: dict[str, str], log_path: Path, report: Path, timeout: float
) -> SimulatedExport:
    before = simulator.stats()
    command = Export(args, env, log_path)
    with exports([command]):
        (process,) = wait_all([command], timeout, 1 << 40)
    after = simulator.stats()
    document = orjson.loads(report.read_bytes()) if report.exists() else {}
    requests, jobs = after["requests"] - before["requests"], after["jobs_created"] - before["jobs_created"]
    return SimulatedExport(process, requests, jobs, document)


def copy_rows(source: Path, target: Path, share: float, edit: Callable[[bytes], bytes | None]) -> int:
    """Copies a generated segment, passing every 1/share-th row through `edit` (None leaves the row out);
    returns how many rows it changed or left out."""
    step = max(1, round(1 / share))
    edited = 0
    with source.open("rb") as src, target.open("wb") as out:
        out.write(src.readline())
        for number, line in enumerate(src):
            if number % step == step // 2:
                new = edit(line)
                edited += new != line
                if new is None:
                    continue
                line = new
            out.write(line)
    return edited
