"""scripts/smoke-test against the local Functions host (`make host`'s tools/functions_host.serve), for the
checks that apply here: the anonymous openapi.json, a 401 without a principal, and the forged principal,
which the local host (no App Service Authentication in front of it) trusts, so the smoke test must FAIL
there: that is the defect it exists to catch on a deployed app. A small stand-in for App Service
Authentication in front of the same host shows every check passing where the platform does its part. The
optional export runs end to end on the local host with the Klaviyo simulator. Credentials come from a fake
`az` and `azd` on PATH and are never printed."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.control.auth import ADMIN, encode_principal
from tests.conftest import App, member_emails
from tools.functions_host import serve
from tools.klaviyo_sim import KlaviyoSimulator
from tools.smoke_export import ROWS, export_check
from tools.smoke_test import Http, Target, main, parse_env_values

ROOT = Path(__file__).resolve().parent.parent
KEY, TOKEN = "fk-SECRET-function-key-0123", "tok-SECRET-entra-token-4567"
CLIENT_ID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(app: App) -> Iterator[str]:
    port = free_port()
    shutdown = serve(app.host, port, poll_seconds=0.2, watch_seconds=None)
    yield f"http://127.0.0.1:{port}"
    shutdown()


def lines(output: str) -> dict[str, str]:
    """'PASS  name: detail' lines -> {name: 'PASS detail'}."""
    found = {}
    for line in output.splitlines():
        label, _, rest = line.partition("  ")
        if label in ("PASS", "FAIL", "SKIP"):
            name, _, detail = rest.partition(": ")
            found[name] = f"{label} {detail}"
    return found


def test_on_a_host_without_app_service_authentication_the_forged_principal_check_fails(served: str, capsys):
    status = main(["--url", served, "--no-token"], env={"SMOKE_FUNCTION_KEY": KEY})

    out = capsys.readouterr().out
    results = lines(out)
    assert results["openapi.json without credentials"] == "PASS 200"
    assert results["function key, no token"] == "PASS 401"
    assert results["function key, forged Admin principal, no token"].startswith(
        "FAIL expected 401, got 200: the forged principal was trusted: App Service Authentication is not in front"
    )
    assert [name for name, result in results.items() if result.startswith("SKIP")] == [
        "token, no function key",
        "Admin token",
        "Admin token, forged principal without roles",
    ]
    assert "2 of 3 checks passed, 1 FAILED" in out
    assert status == 1
    assert KEY not in out


class EasyAuthFront:
    """Stands in for App Service Authentication in front of the local host: strips a client-sent
    x-ms-client-principal, sets its own from the bearer token, 401 without a token (the routes are
    anonymous at the Functions host: no key is asked for)."""

    def __init__(self, backend: str, tokens: dict[str, str]) -> None:
        front = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                status, body = front.forward(self.command, self.path, dict(self.headers.items()))
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.backend, self.tokens = backend, tokens
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def forward(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        headers = {k.lower(): v for k, v in headers.items() if k.lower() != "x-ms-client-principal"}
        if path != "/api/openapi.json":
            user = self.tokens.get(headers.get("authorization", "").removeprefix("Bearer "))
            if user is None:
                return 401, b""
            headers["x-ms-client-principal"] = encode_principal(user, ADMIN)
        request = urllib.request.Request(f"{self.backend}{path}", method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def test_behind_app_service_authentication_every_check_passes(served: str, capsys):
    front = EasyAuthFront(served, {TOKEN: "ada@contoso.example"})
    try:
        status = main(["--url", front.url], env={"SMOKE_FUNCTION_KEY": KEY, "SMOKE_TOKEN": TOKEN})
    finally:
        front.server.shutdown()

    out = capsys.readouterr().out
    assert status == 0, out
    assert "6 of 6 checks passed" in out
    assert KEY not in out and TOKEN not in out


FAKE_AZ = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as out:
    out.write(json.dumps(["az", *args]) + "\\n")
if args[:3] == ["functionapp", "keys", "list"]:
    print(os.environ["FAKE_KEY"])
elif args[:2] == ["account", "get-access-token"] and os.environ.get("FAKE_TOKEN"):
    print(os.environ["FAKE_TOKEN"])
else:
    print("AADSTS65001: The user or administrator has not consented to use the application", file=sys.stderr)
    sys.exit(1)
"""

FAKE_AZD = """#!{python}
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as out:
    out.write(json.dumps(["azd", *sys.argv[1:]]) + "\\n")
print(os.environ["FAKE_AZD_VALUES"])
"""


def run_launcher(tmp_path: Path, app_url: str, token: str | None) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    """scripts/smoke-test as a deployer runs it, with no credentials given: az and azd provide them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, source in (("az", FAKE_AZ), ("azd", FAKE_AZD)):
        (bin_dir / name).write_text(source.format(python=sys.executable))
        (bin_dir / name).chmod(0o755 | stat.S_IXUSR)
    values = {
        "FUNCTION_APP_URL": app_url,
        "AZURE_SUBSCRIPTION_ID": "sub-of-azd",
        "AZURE_RESOURCE_GROUP": "rg-dev",
        "AZURE_FUNCTION_APP_NAME": "func-kse-abc",
        "AUTH_CLIENT_ID": CLIENT_ID,
    }
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_KEY": KEY,
        "FAKE_TOKEN": token or "",
        "FAKE_AZD_VALUES": "\n".join(f'{name}="{value}"' for name, value in values.items()),
    }
    done = subprocess.run(
        [str(ROOT / "scripts" / "smoke-test")], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    calls = [json.loads(line) for line in (tmp_path / "calls.log").read_text().splitlines()]
    return done, calls


def test_the_launcher_reads_azds_environment_and_gets_key_and_token_from_az_without_printing_them(
    served: str, tmp_path: Path
):
    done, calls = run_launcher(tmp_path, served, TOKEN)

    assert calls[0] == ["azd", "env", "get-values"]
    [keys] = [c for c in calls if c[1:4] == ["functionapp", "keys", "list"]]
    assert keys[keys.index("--subscription") + 1] == "sub-of-azd"
    assert keys[keys.index("--name") + 1] == "func-kse-abc" and keys[keys.index("--resource-group") + 1] == "rg-dev"
    [token] = [c for c in calls if c[1:3] == ["account", "get-access-token"]]
    assert token[token.index("--scope") + 1] == f"api://{CLIENT_ID}/.default"
    results = lines(done.stdout)
    assert results["openapi.json without credentials"] == "PASS 200"
    # The local host has no App Service Authentication: a token alone identifies nobody there.
    assert results["Admin token"] == "FAIL expected 200, got 401: the token was refused"
    assert done.returncode == 1
    assert KEY not in done.stdout + done.stderr and TOKEN not in done.stdout + done.stderr


def test_without_a_token_from_az_the_smoke_test_says_the_cli_must_be_pre_authorized(served: str, tmp_path: Path):
    done, _calls = run_launcher(tmp_path, served, token=None)

    assert f"`az account get-access-token --scope api://{CLIENT_ID}/.default` failed" in done.stdout
    assert "04b07795-8ddb-461a-bbee-02f9e1bf7b46" in done.stdout and "pre-authorized" in done.stdout
    assert lines(done.stdout)["Admin token"].startswith("SKIP")


def test_without_an_app_url_the_smoke_test_says_where_it_comes_from(capsys, monkeypatch):
    monkeypatch.setenv("PATH", "")  # no azd to ask

    status = main([], env={})

    assert status == 2
    assert "no app URL: pass --url, or run from the azd project (FUNCTION_APP_URL)" in capsys.readouterr().err


def test_azd_env_values_are_parsed_as_azd_prints_them():
    text = 'AZURE_LOCATION="westeurope"\nFUNCTION_APP_URL="https://func-kse-abc.azurewebsites.net"\nEMPTY=""\n'

    assert parse_env_values(text) == {
        "AZURE_LOCATION": "westeurope",
        "FUNCTION_APP_URL": "https://func-kse-abc.azurewebsites.net",
        "EMPTY": "",
    }


class LocalSegments:
    """The local host's segments container (Azurite), in place of `az storage blob upload`."""

    def __init__(self, app: App) -> None:
        self.app, self.container = app, app.segments

    def upload(self, blob: str, data: bytes) -> None:
        self.app.upload(blob, data)

    def delete(self, blob: str) -> None:
        self.app.services.blobs.get_blob_client(self.container, blob).delete_blob()

    def names(self) -> list[str]:
        return [b.name for b in self.app.services.blobs.get_container_client(self.container).list_blobs()]


def test_the_optional_export_sends_ten_rows_end_to_end_then_removes_the_export_and_the_file(
    app: App, served: str, klaviyo: KlaviyoSimulator, list_id: str, monkeypatch
):
    monkeypatch.setenv("LOCAL_AUTH_BYPASS_ROLE", ADMIN)  # the local host has no App Service Authentication
    app.put_connection()
    segments = LocalSegments(app)

    outcome = export_check(Http(served), Target(served, KEY, None), segments, list_id, "main", timeout=60, poll=0.2)

    assert outcome.passed is True, outcome.detail
    assert f"{ROWS} profiles accepted" in outcome.detail and "remove them in Klaviyo" in outcome.detail
    smoke = {email for email in member_emails(klaviyo, list_id) if email.startswith("smoke-test+")}
    assert len(smoke) == ROWS
    assert app.services.store.list_exports() == [] and segments.names() == []


def test_an_app_that_does_not_answer_fails_each_check_with_the_reason(capsys):
    port = free_port()  # nothing listens there

    status = main(["--url", f"http://127.0.0.1:{port}", "--no-token"], env={"SMOKE_FUNCTION_KEY": KEY})

    out = capsys.readouterr().out
    assert status == 1
    assert lines(out)["openapi.json without credentials"].startswith("FAIL expected 200, got no answer: ")
    assert "0 of 3 checks passed, 3 FAILED" in out
