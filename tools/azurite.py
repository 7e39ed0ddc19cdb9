"""Starts Azurite (blob, queue, table) on free loopback ports for tests, the demo and benchmarks."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_INITIAL_OLD_SPACE_MB = 256
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://127\.0\.0\.1:(\d+)")


class Azurite:
    """An Azurite process with its data in a temporary folder; a context manager."""

    def __init__(self, location: str | None = None, in_memory: bool = False) -> None:
        self._own_location = location is None
        self.location = location or tempfile.mkdtemp(prefix="azurite-")
        self.in_memory = in_memory
        self.ports: dict[str, int] = {}
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 60.0) -> Azurite:
        """Starts Azurite; started again after `stop_process`, on the same ports with the same data."""
        binary = ROOT / "node_modules" / ".bin" / "azurite"
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run `npm ci` (make does it)")
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is missing: Azurite runs on Node.js")
        command = [
            node,
            # V8 starts the old space just above Azurite's ~50 MB of live objects: serving a blob then
            # ran a mark-compact every ~0.1 s (2-3 s of CPU per 250 MB). Room to grow ends the thrash.
            f"--initial-old-space-size={_INITIAL_OLD_SPACE_MB}",
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.ports.get("blob", 0)),
            "--queueHost",
            "127.0.0.1",
            "--queuePort",
            str(self.ports.get("queue", 0)),
            "--tableHost",
            "127.0.0.1",
            "--tablePort",
            str(self.ports.get("table", 0)),
            "--skipApiVersionCheck",
            "--loose",
            "--disableProductStyleUrl",
            "--disableTelemetry",
        ]
        # Azurite refuses --location together with --inMemoryPersistence; it runs in that folder either way.
        command += ["--inMemoryPersistence"] if self.in_memory else ["--location", self.location]
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.location
        )
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        assert self._process.stdout is not None
        self.ports = {}
        while len(self.ports) < 3:
            line = self._process.stdout.readline()
            if not line:
                raise RuntimeError("Azurite exited during start-up:\n" + "".join(seen))
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                self.ports[match.group(1).lower()] = int(match.group(2))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("Azurite did not start in time:\n" + "".join(seen))
        # Keep draining its output so a chatty Azurite never blocks on a full pipe.
        import threading

        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for _ in self._process.stdout:
            pass

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.ports['blob']}/{ACCOUNT};"
            f"QueueEndpoint=http://127.0.0.1:{self.ports['queue']}/{ACCOUNT};"
            f"TableEndpoint=http://127.0.0.1:{self.ports['table']}/{ACCOUNT};"
        )

    @property
    def pid(self) -> int | None:
        """The running Azurite's process id."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def stop_process(self) -> None:
        """Stops Azurite but keeps its data and ports (a storage outage; `start` ends it)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def stop(self) -> None:
        self.stop_process()
        if self._own_location:
            shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
