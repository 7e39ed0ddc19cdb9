"""`make host` as the README uses it: the local Functions host over HTTP, its stand-in for the blob
trigger, what it prints, the upload command, the sample segment, and stopping it cleanly."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from tests.conftest import ADMIN_HEADERS, App, member_emails
from tools.functions_host import serve
from tools.klaviyo_sim import KlaviyoSimulator
from tools.local_stack import API_KEY, SAMPLE_BLOB

ROOT = Path(__file__).resolve().parent.parent
_EXPORT = re.compile(r"\s+export (?P<name>\w+)='?(?P<value>[^' ]+)'?(\s+#.*)?")
SEGMENT = b"email,first_name,tier\r\nann@example.com,Ann,gold\r\nbob@example.com,Bob,silver\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s")


def finished_runs(base: str, export: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = requests.get(f"{base}/api/exports/{export}/runs", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return [r for r in response.json()["runs"] if r["status"] not in ("queued", "running")]


@pytest.fixture
def served(app: App) -> Iterator[str]:
    port = free_port()
    shutdown = serve(app.host, port, poll_seconds=0.2, watch_seconds=0.2)
    yield f"http://127.0.0.1:{port}"
    shutdown()


def test_a_segment_dropped_on_the_local_host_starts_a_run(
    app: App, served: str, klaviyo: KlaviyoSimulator, list_id: str
) -> None:
    """README defect: the local host had no blob trigger, so dropping a file started nothing."""
    app.upload("before.csv", SEGMENT)  # there before the host watched: not a new drop
    app.put_connection()
    export = {
        "connection": "main",
        "list_id": list_id,
        "segment": {"container": app.segments, "blob": "vip.csv"},
        "mapping": {"email": "email", "properties": {"tier": "loyalty_tier"}},
    }
    put = requests.put(f"{served}/api/exports/vip", data=orjson.dumps(export), headers=ADMIN_HEADERS, timeout=10)
    assert put.status_code == 201, put.text
    assert finished_runs(served, "vip", ADMIN_HEADERS) == []

    app.upload("vip.csv", SEGMENT)
    first = wait_for(lambda: finished_runs(served, "vip", ADMIN_HEADERS))
    assert [(r["trigger"], r["status"]) for r in first] == [("blob", "succeeded")]
    assert member_emails(klaviyo, list_id) == {"ann@example.com", "bob@example.com"}
    tiers = {m["email"]: m["properties"] for m in klaviyo.list_members(list_id)}
    assert tiers["ann@example.com"] == {"loyalty_tier": "gold"}  # column tier -> property loyalty_tier

    app.upload("vip.csv", SEGMENT + b"cy@example.com,Cy,gold\r\n")  # overwritten: a new version, a new run
    second = wait_for(lambda: len(runs := finished_runs(served, "vip", ADMIN_HEADERS)) == 2 and runs)
    assert [(r["trigger"], r["status"]) for r in second] == [("blob", "succeeded")] * 2
    assert "cy@example.com" in member_emails(klaviyo, list_id)

    app.upload("other.csv", SEGMENT)  # no export reads it: nothing runs
    time.sleep(1.0)
    assert len(finished_runs(served, "vip", ADMIN_HEADERS)) == 2


class HostProcess:
    """`python -m tools.functions_host` as `make host` starts it, with its printed lines collected."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for name in ("LOCAL_AUTH_BYPASS_ROLE", "WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME", "AzureWebJobsStorage"):
            env.pop(name, None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tools.functions_host", "--port", str(self.port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.azurite_pids: list[int] = []
        try:
            self.printed = self.read_until("export KLAVIYO_API_KEY=")
        except BaseException:
            self.stop()
            raise
        self.azurite_pids = self.children()  # the host's only child process
        exported = (_EXPORT.fullmatch(line) for line in self.printed)
        self.exports = {m["name"]: m["value"] for m in exported if m}
        blob_endpoint = re.search(r"BlobEndpoint=http://127\.0\.0\.1:(\d+)/", self.exports["AzureWebJobsStorage"])
        folder = re.search(r"^state .* in (/\S+): ", "\n".join(self.printed), re.MULTILINE)
        assert blob_endpoint and folder, self.printed
        self.blob_port, self.azurite_folder = int(blob_endpoint[1]), Path(folder[1])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def read_until(self, text: str, timeout: float = 90.0) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while not seen or text not in seen[-1]:
            try:
                seen.append(self.lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"the host did not print {text!r}:\n" + "\n".join(seen)) from None
        return seen

    def children(self) -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False)
        return [int(pid) for pid in found.stdout.split()]

    def stop(self) -> None:
        """SIGTERM first (SIGKILL would leave the host's Azurite running); then whatever it left behind."""
        children = self.azurite_pids or self.children()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in children:  # only if the host failed to stop them: a test must not leak them either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def host_process(tmp_path: Path) -> Iterator[HostProcess]:
    host = HostProcess(tmp_path)
    yield host
    host.stop()


def test_the_host_prints_the_simulator_key_and_its_upload_command_and_sample_work(
    host_process: HostProcess, tmp_path: Path
) -> None:
    """README defects: the simulator's API key was not printed, there was no upload command, and
    segments/demo/vip-customers.csv (the command line example) did not exist."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **host_process.exports}
    assert host_process.exports["KLAVIYO_API_KEY"] == API_KEY
    base = f"http://127.0.0.1:{host_process.port}"
    admin = {"x-ms-client-principal": host_process.exports["PRINCIPAL"]}
    list_id = host_process.exports["LIST_ID"]

    connection = {"display_name": "Main", "secret_name": "klaviyo-api-key", "privacy_consent": True}
    assert requests.put(f"{base}/api/connections/main", json=connection, headers=admin, timeout=10).status_code == 201
    export = {"connection": "main", "list_id": list_id, "segment": {"container": "segments", "blob": "vip.csv"}}
    assert requests.put(f"{base}/api/exports/vip", json=export, headers=admin, timeout=10).status_code == 201
    (tmp_path / "vip.csv").write_bytes(SEGMENT)
    upload = subprocess.run(
        [sys.executable, "-m", "tools.local_stack", "upload", "vip.csv"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert upload.returncode == 0, upload.stderr
    assert upload.stdout.strip() == f"uploaded {len(SEGMENT)} bytes to segments/vip.csv"
    runs = wait_for(lambda: finished_runs(base, "vip", admin))
    assert [(r["trigger"], r["status"], r["counts"]["accepted"]) for r in runs] == [("blob", "succeeded", 2)]

    cli = subprocess.run(
        [sys.executable, "-m", "shared.cli", "run", f"segments/{SAMPLE_BLOB}", "--list-id", list_id, "--no-progress"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "  rows read   1,000" in cli.stdout.splitlines()


def test_the_upload_command_says_what_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AzureWebJobsStorage"} | {"PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "tools.local_stack", "upload", "vip.csv"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr.strip()) == (
        2,
        "AzureWebJobsStorage is not set: export it as `make host` prints it",
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_host_leaves_no_azurite_running(host_process: HostProcess, stop_signal: signal.Signals) -> None:
    """README defect: a host killed with SIGTERM left Azurite listening (and its data folder behind)."""
    assert port_open(host_process.blob_port)
    assert host_process.azurite_folder.is_dir()
    host_process.process.send_signal(stop_signal)
    assert host_process.process.wait(timeout=60) == 0
    assert not port_open(host_process.blob_port)
    assert not host_process.azurite_folder.exists()
