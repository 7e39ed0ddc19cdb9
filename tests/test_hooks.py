"""The azd hooks (azure.yaml) as azd runs them, with a fake `az` and `azd` on PATH: small scripts that
record their arguments and answer as the real ones would (no Azure here).

postdeploy (infra/hooks/subscribe_blob_events.py): waits for the host's blobs_extension key (a fresh app has
none until its host starts), bounded, with a message saying what to do; passes it to blob-events.bicep
without printing it; names azd's subscription on every az call. prepackage (build_package.py): the local
build's pip command line for the Functions host's Linux Python, and what .funcignore lets into the package.
postdown (new_vault_suffix.py): a new Key Vault name after `azd down`, as the soft-deleted vault keeps its own.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pathspec
import pytest
import yaml

from tests.test_infra import bicep

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / "infra" / "hooks"
SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
KEY = "blobsKey-0123456789abcdefABCDEF=="

FAKE_AZ = """#!{python}
# A stand-in for the Azure CLI: records each call (and the content of @parameter files) as a JSON line.
import json, os, sys
args = sys.argv[1:]
files = {{a[1:]: open(a[1:]).read() for a in args if a.startswith("@")}}
log = os.environ["FAKE_AZ_LOG"]
with open(log, "a") as out:
    out.write(json.dumps({{"args": args, "files": files}}) + "\\n")
calls = sum(1 for line in open(log) if '"keys", "list"' in line)
if args[:3] == ["functionapp", "keys", "list"]:
    after = int(os.environ.get("FAKE_AZ_KEY_AFTER", "0"))
    if after and calls >= after:
        print(os.environ["FAKE_AZ_KEY"])
        sys.exit(0)
    print("ERROR: Operation returned an invalid status 'Bad Request'", file=sys.stderr)
    sys.exit(1)
if args[:3] == ["deployment", "group", "create"]:
    if os.environ.get("FAKE_AZ_DEPLOY_ERROR"):
        print(os.environ["FAKE_AZ_DEPLOY_ERROR"], file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
print("fake az: unexpected call " + " ".join(args), file=sys.stderr)
sys.exit(2)
"""

FAKE_AZD = """#!{python}
import json, os, sys
with open(os.environ["FAKE_AZD_LOG"], "a") as out:
    out.write(json.dumps(sys.argv[1:]) + "\\n")
"""


def install(bin_dir: Path, name: str, source: str) -> None:
    path = bin_dir / name
    path.write_text(source.format(python=sys.executable), encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


class WakeCounter:
    """The function app's URL: counts the anonymous GETs the hook sends to wake the host."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                counter.paths.append(self.path)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def app_url() -> Iterator[WakeCounter]:
    counter = WakeCounter()
    yield counter
    counter.server.shutdown()
    counter.server.server_close()


class Hook:
    """Runs a hook script the way azd does: a child process with the azd environment's values."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        install(self.bin, "az", FAKE_AZ)
        install(self.bin, "azd", FAKE_AZD)
        self.az_log, self.azd_log = tmp_path / "az.log", tmp_path / "azd.log"
        self.env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_AZ_LOG": str(self.az_log),
            "FAKE_AZD_LOG": str(self.azd_log),
            "FAKE_AZ_KEY": KEY,
            "TMPDIR": str(tmp_path),
        }

    def run(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(HOOKS / script)],
            env={**self.env, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def az_calls(self) -> list[dict[str, Any]]:
        if not self.az_log.exists():
            return []
        return [json.loads(line) for line in self.az_log.read_text().splitlines()]


@pytest.fixture
def hook(tmp_path: Path) -> Hook:
    return Hook(tmp_path)


def azd_environment(app_url: str, **overrides: str) -> dict[str, str]:
    values = {
        "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
        "AZURE_RESOURCE_GROUP": "rg-dev",
        "AZURE_FUNCTION_APP_NAME": "func-kse-abc",
        "FUNCTION_APP_URL": app_url,
        "EVENT_GRID_SYSTEM_TOPIC_NAME": "evgt-kse-abc",
        "SEGMENTS_CONTAINER": "segments",
        "BLOBS_KEY_POLL_SECONDS": "0.05",
    }
    return {**values, **overrides}


def test_the_postdeploy_hook_waits_for_the_key_and_subscribes_with_it_never_printing_it(
    hook: Hook, app_url: WakeCounter, tmp_path: Path
):
    """Defect: listKeys() in blob-events.bicep failed the first `azd up`, before the host had made the key."""
    done = hook.run("subscribe_blob_events.py", **azd_environment(app_url.url), FAKE_AZ_KEY_AFTER="3")

    assert done.returncode == 0, done.stderr
    calls = hook.az_calls()
    key_polls = [c for c in calls if c["args"][:3] == ["functionapp", "keys", "list"]]
    [deployment] = [c for c in calls if c["args"][:3] == ["deployment", "group", "create"]]
    assert len(key_polls) == 3 and len(app_url.paths) == 3  # woken before each poll
    assert set(app_url.paths) == {"/api/openapi.json"}
    assert "waiting for func-kse-abc to start and create its blobs_extension key" in done.stdout
    args = deployment["args"]
    assert args[args.index("--template-file") + 1] == str(ROOT / "infra" / "blob-events.bicep")
    assert {"functionAppName=func-kse-abc", "systemTopicName=evgt-kse-abc", "segmentsContainer=segments"} <= set(args)
    # The key reaches the template through a parameters file, gone afterwards; never on a command line.
    [(path, content)] = deployment["files"].items()
    assert json.loads(content)["parameters"] == {"blobsExtensionKey": {"value": KEY}}
    assert not Path(path).exists()
    assert not any(KEY in arg for call in calls for arg in call["args"])
    assert KEY not in done.stdout + done.stderr
    assert "segment_dropped subscribed to BlobCreated events of container segments" in done.stdout


def test_every_az_call_of_the_hook_names_azds_subscription(hook: Hook, app_url: WakeCounter):
    """Defect: the hook acted on whichever subscription the Azure CLI had selected, not azd's."""
    hook.run("subscribe_blob_events.py", **azd_environment(app_url.url), FAKE_AZ_KEY_AFTER="2")

    calls = hook.az_calls()
    assert len(calls) == 3
    for call in calls:
        args = call["args"]
        assert args[args.index("--subscription") + 1] == SUBSCRIPTION, args


def test_the_hook_gives_up_after_its_bound_and_says_what_to_do(hook: Hook, app_url: WakeCounter):
    started = time.monotonic()
    done = hook.run("subscribe_blob_events.py", **azd_environment(app_url.url, BLOBS_KEY_WAIT_SECONDS="1"))
    elapsed = time.monotonic() - started

    assert done.returncode == 1
    assert elapsed < 15
    polls = [c for c in hook.az_calls() if c["args"][:3] == ["functionapp", "keys", "list"]]
    assert len(polls) >= 2
    assert not any(c["args"][:2] == ["deployment", "group"] for c in hook.az_calls())
    message = done.stderr
    assert "the host of func-kse-abc did not create its blobs_extension key within 1 s" in message
    assert "dropped segments start no run" in message
    assert "azd hooks run postdeploy" in message and "BLOBS_KEY_WAIT_SECONDS" in message
    assert "Last answer from az: ERROR: Operation returned an invalid status 'Bad Request'" in message


def test_the_hook_refuses_to_guess_a_subscription(hook: Hook, app_url: WakeCounter):
    environment = azd_environment(app_url.url)
    del environment["AZURE_SUBSCRIPTION_ID"]

    done = hook.run("subscribe_blob_events.py", **environment)

    assert done.returncode == 1
    assert "AZURE_SUBSCRIPTION_ID not set" in done.stderr
    assert hook.az_calls() == []


@pytest.mark.parametrize("value", ["soon", "-5"])
def test_a_wrong_wait_setting_is_named(hook: Hook, app_url: WakeCounter, value: str):
    done = hook.run("subscribe_blob_events.py", **azd_environment(app_url.url, BLOBS_KEY_WAIT_SECONDS=value))

    assert done.returncode == 1
    assert "BLOBS_KEY_WAIT_SECONDS must be a number of seconds" in done.stderr
    assert value not in done.stderr
    assert hook.az_calls() == []


def test_a_failed_subscription_is_reported_without_the_key(hook: Hook, app_url: WakeCounter):
    error = f"ERROR: webhook validation failed for https://func-kse-abc/runtime/webhooks/blobs?code={KEY}"
    done = hook.run(
        "subscribe_blob_events.py", **azd_environment(app_url.url), FAKE_AZ_KEY_AFTER="1", FAKE_AZ_DEPLOY_ERROR=error
    )

    assert done.returncode == 1
    assert "deploying infra/blob-events.bicep failed: ERROR: webhook validation failed" in done.stderr
    assert KEY not in done.stdout + done.stderr and "code=***" in done.stderr


def test_blob_events_bicep_takes_the_key_as_a_secure_parameter():
    events = bicep("blob-events.bicep")
    key = events["parameters"]["blobsExtensionKey"]

    assert {"type": "secure"} in [{"type": d["type"]} for d in key["decorators"]]
    code = [line for line in (ROOT / "infra" / "blob-events.bicep").read_text().splitlines() if "//" not in line]
    assert not [line for line in code if "listKeys(" in line]
    assert "blobsExtensionKey" not in events.get("variables", {})


def test_no_site_setting_flex_consumption_rejects():
    """Defect: siteConfig.ftpsState made the Flex app's deployment fail ("FTPS not supported")."""
    site = bicep("app/function.bicep")["resources"]["site"]["config"]["properties"]

    assert "ftpsState" not in site["siteConfig"]
    assert "alwaysOn" not in site["siteConfig"]


# -- prepackage: the local build --------------------------------------------------------------------------
def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, HOOKS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_local_build_installs_linux_wheels_of_the_apps_python_into_python_packages():
    build = load("build_package")
    command = build.pip_command("python3")

    def value(flag: str) -> str:
        return command[command.index(flag) + 1]

    assert command[:4] == ["python3", "-m", "pip", "install"]
    assert value("--target") == str(ROOT / ".python_packages" / "lib" / "site-packages")
    assert value("--requirement") == str(ROOT / "requirements.txt")
    assert "--only-binary=:all:" in command and value("--implementation") == "cp"
    runtime = bicep("app/function.bicep")["resources"]["site"]["config"]["properties"]["functionAppConfig"]
    assert value("--python-version") == runtime["runtime"]["version"] == "3.11"
    platforms = [command[i + 1] for i, flag in enumerate(command) if flag == "--platform"]
    assert "manylinux2014_x86_64" in platforms and "manylinux_2_28_x86_64" in platforms
    assert "--no-compile" in command


@pytest.mark.slow
def test_every_pinned_requirement_has_a_linux_wheel_for_the_local_build(tmp_path: Path):
    """The local build installs only wheels (--only-binary): a pin without a CPython 3.11 manylinux x86-64
    wheel would fail `azd up` at packaging. pip resolves the whole set without installing (~10 s)."""
    build = load("build_package")
    report = tmp_path / "report.json"
    command = build.pip_command(sys.executable, target=tmp_path / "site-packages")

    done = subprocess.run([*command, "--dry-run", "--report", str(report)], capture_output=True, text=True)

    assert done.returncode == 0, done.stderr[-2000:]
    wheels = [item["download_info"]["url"].rsplit("/", 1)[-1] for item in json.loads(report.read_text())["install"]]
    pinned = {
        line.split("==")[0].lower() for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line
    }
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert pinned <= names
    assert all(w.endswith(".whl") and ("manylinux" in w or "-none-any" in w) for w in wheels), wheels


def test_azure_yaml_builds_locally_and_runs_each_hook_on_posix_and_windows():
    config = yaml.safe_load((ROOT / "azure.yaml").read_text(encoding="utf-8"))
    api = config["services"]["api"]
    hooks = {**config["hooks"], **{f"api.{name}": hook for name, hook in api["hooks"].items()}}

    assert api["remoteBuild"] is False
    expected = {
        "api.prepackage": "build_package.py",
        "postdeploy": "subscribe_blob_events.py",
        "postdown": "new_vault_suffix.py",
    }
    assert set(hooks) == set(expected)
    for name, script in expected.items():
        posix, windows = hooks[name]["posix"], hooks[name]["windows"]
        assert (posix["shell"], windows["shell"]) == ("sh", "pwsh")
        assert posix["run"] == f"python3 infra/hooks/{script}"
        assert windows["run"] == f"python infra/hooks/{script}; exit $LASTEXITCODE"  # pwsh ignores a failed exe
        assert posix["continueOnError"] is windows["continueOnError"] is False
        assert (HOOKS / script).is_file()


def packaged(paths: list[str]) -> set[str]:
    """The paths azd puts in the zip: those .funcignore (gitignore syntax) does not match."""
    spec = pathspec.GitIgnoreSpec.from_lines((ROOT / ".funcignore").read_text(encoding="utf-8").splitlines())
    return {path for path in paths if not spec.match_file(path)}


def test_the_package_holds_the_app_and_its_dependencies_but_not_tests_tools_or_bench():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    site = ".python_packages/lib/site-packages"
    dependencies = [f"{site}/pyarrow/__init__.py", f"{site}/numpy/tests/test_x.py", f"{site}/pkg/tools/util.py"]
    built = ["shared/__pycache__/cli.cpython-311.pyc", ".venv/bin/python", "local.settings.json", "app_env/x.py"]

    included = packaged([*tracked, *dependencies, *built])

    console = {f"shared/control/console/{name}" for name in ("index.html", "console.css", "console.js")}
    assert {"function_app.py", "host.json", "shared/cli.py", *console, *dependencies} <= included
    leftout = {"tests", "tools", "bench", "infra", "scripts", ".ci", "docs"}
    assert not {p for p in included if p.split("/")[0] in leftout}
    assert not set(built) & included
    assert not {p for p in included if p.endswith(".md") and "/" not in p}


def test_the_apps_code_imports_nothing_the_package_leaves_out():
    left_out = {"tests", "tools", "bench", "infra", "scripts"}
    sources = [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py"))]
    imported: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])

    assert "shared" in imported  # the scan sees the app's imports
    assert imported & left_out == set()


# -- postdown: a Key Vault name no soft-deleted vault holds ---------------------------------------------------
def test_after_azd_down_the_next_vault_gets_a_new_name(hook: Hook):
    """Defect: purge protection keeps a deleted vault's name for 90 days; the next `azd up` collided with it."""
    first, second = hook.run("new_vault_suffix.py"), hook.run("new_vault_suffix.py")

    assert first.returncode == second.returncode == 0
    calls = [json.loads(line) for line in hook.azd_log.read_text().splitlines()]
    suffixes = []
    for call in calls:
        assert call[:3] == ["env", "set", "KEY_VAULT_SUFFIX"]
        assert re.fullmatch(r"[0-9a-f]{4}", call[3])
        suffixes.append(call[3])
    assert len(suffixes) == 2 and suffixes[0] != suffixes[1]  # 1 in 65,536 that two draws match
    assert "the next `azd up` of this environment creates a new Key Vault" in first.stdout

    main = bicep("main.bicep")
    assert {"type": "max_length", "argument": 4} in main["parameters"]["keyVaultSuffix"]["decorators"]
    name = main["modules"]["vault"]["config"]["params"]["name"]
    assert name == "${take('kv-${prefix}-${token}', 24 - length(keyVaultSuffix))}${keyVaultSuffix}"
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["keyVaultSuffix"] == {"value": "${KEY_VAULT_SUFFIX}"}
