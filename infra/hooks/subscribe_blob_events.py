"""azd postdeploy hook (azure.yaml, posix and windows alike): subscribes segment_dropped to the segments
container's BlobCreated events by deploying infra/blob-events.bicep.

The subscription's webhook needs the host's `blobs_extension` system key, and the host creates that key
only once it has started with the deployed code
(https://learn.microsoft.com/azure/azure-functions/functions-event-grid-blob-trigger, "Build the
endpoint URL"). Right after `azd deploy` a Flex Consumption app may not have started yet, so this hook
wakes it (an anonymous GET of /api/openapi.json) and polls `az functionapp keys list` for the key, for
at most BLOBS_KEY_WAIT_SECONDS (300), then passes the key to the template as a @secure() parameter in a
parameters file readable only by this user (never on a command line, never printed).

Every `az` call names azd's subscription (AZURE_SUBSCRIPTION_ID), so the hook never acts on whatever
subscription the Azure CLI happens to have selected. Python (standard library only) rather than sh and
pwsh: one implementation for both, and azd already requires Python for a Python service.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent / "blob-events.bicep"
REQUIRED = (
    "AZURE_SUBSCRIPTION_ID",
    "AZURE_RESOURCE_GROUP",
    "AZURE_FUNCTION_APP_NAME",
    "FUNCTION_APP_URL",
    "EVENT_GRID_SYSTEM_TOPIC_NAME",
    "SEGMENTS_CONTAINER",
)
DEFAULT_WAIT_SECONDS = 300
DEFAULT_POLL_SECONDS = 10
PARAMETERS_SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#"


class HookError(Exception):
    """A message for the person running `azd up`; the hook exits non-zero with it."""


@dataclass(frozen=True)
class Target:
    """What the hook acts on, from the azd environment (`azd env get-values`)."""

    subscription: str
    resource_group: str
    app: str
    url: str
    topic: str
    container: str
    wait_seconds: float
    poll_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Target:
        missing = [name for name in REQUIRED if not env.get(name, "").strip()]
        if missing:
            raise HookError(
                f"{', '.join(missing)} not set: azd sets these from the deployment's outputs "
                "(`azd env get-values`); run `azd provision` first"
            )
        return cls(
            subscription=env["AZURE_SUBSCRIPTION_ID"].strip(),
            resource_group=env["AZURE_RESOURCE_GROUP"].strip(),
            app=env["AZURE_FUNCTION_APP_NAME"].strip(),
            url=env["FUNCTION_APP_URL"].strip().rstrip("/"),
            topic=env["EVENT_GRID_SYSTEM_TOPIC_NAME"].strip(),
            container=env["SEGMENTS_CONTAINER"].strip(),
            wait_seconds=_seconds(env, "BLOBS_KEY_WAIT_SECONDS", DEFAULT_WAIT_SECONDS),
            poll_seconds=_seconds(env, "BLOBS_KEY_POLL_SECONDS", DEFAULT_POLL_SECONDS),
        )


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HookError(f"{name} must be a number of seconds") from None
    if value < 0:
        raise HookError(f"{name} must be a number of seconds, zero or more")
    return value


@dataclass(frozen=True)
class AzResult:
    returncode: int
    stdout: str
    stderr: str


class AzureCli:
    """Runs `az` with the subscription added to every call."""

    def __init__(self, subscription: str) -> None:
        executable = shutil.which("az")  # az.cmd on Windows: subprocess needs the full name
        if executable is None:
            raise HookError("the Azure CLI (`az`) is not on PATH: install it and `az login`")
        self.executable, self.subscription = executable, subscription

    def run(self, *args: str) -> AzResult:
        done = subprocess.run(
            [self.executable, *args, "--subscription", self.subscription, "--only-show-errors"],
            capture_output=True,
            text=True,
            check=False,
        )
        return AzResult(done.returncode, done.stdout.strip(), done.stderr.strip())


def wake(url: str, timeout: float = 30.0) -> None:
    """One anonymous request: a Flex app scaled to zero starts an instance, and with it the host."""
    try:
        with urllib.request.urlopen(f"{url}/api/openapi.json", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError):
        pass  # still starting, or unreachable from here: the key poll below decides


def wait_for_key(
    target: Target,
    az: AzureCli,
    wake_app: Callable[[str], None] = wake,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """The host's blobs_extension key, once it exists; HookError after `target.wait_seconds`."""
    deadline = clock() + target.wait_seconds
    last_error = ""
    while True:
        wake_app(target.url)
        result = az.run(
            "functionapp", "keys", "list",
            "--resource-group", target.resource_group,
            "--name", target.app,
            "--query", "systemKeys.blobs_extension",
            "--output", "tsv",
        )  # fmt: skip
        if result.returncode == 0 and result.stdout:
            return result.stdout
        last_error = result.stderr or last_error
        left = deadline - clock()
        if left <= 0:
            raise HookError(_no_key_message(target, last_error))
        print(
            f"waiting for {target.app} to start and create its blobs_extension key ({left:.0f} s left)",
            flush=True,
        )
        sleep(min(target.poll_seconds, left))


def _no_key_message(target: Target, last_error: str) -> str:
    lines = [
        f"the host of {target.app} did not create its blobs_extension key within {target.wait_seconds:.0f} s,",
        "so segment_dropped is not subscribed to BlobCreated events (dropped segments start no run).",
        "Check that the app started: Azure portal -> the function app -> Log stream, or Application Insights",
        "(a missing setting or a failed import stops the host). Then run `azd hooks run postdeploy` again;",
        "BLOBS_KEY_WAIT_SECONDS=600 waits longer.",
    ]
    if last_error:
        lines.append(f"Last answer from az: {last_error}")
    return "\n".join(lines)


def subscribe(target: Target, az: AzureCli, key: str) -> None:
    """Deploys infra/blob-events.bicep; the key goes in through a parameters file only this user can read."""
    parameters = {
        "$schema": PARAMETERS_SCHEMA,
        "contentVersion": "1.0.0.0",
        "parameters": {"blobsExtensionKey": {"value": key}},
    }
    handle, path = tempfile.mkstemp(prefix="blob-events-", suffix=".json")  # mode 0600
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(parameters, file)
        result = az.run(
            "deployment", "group", "create",
            "--name", "blob-events",
            "--resource-group", target.resource_group,
            "--template-file", str(TEMPLATE),
            "--parameters", f"functionAppName={target.app}",
            f"systemTopicName={target.topic}",
            f"segmentsContainer={target.container}",
            "--parameters", f"@{path}",
            "--output", "none",
        )  # fmt: skip
    finally:
        os.unlink(path)
    if result.returncode != 0:
        raise HookError(f"deploying infra/blob-events.bicep failed: {result.stderr.replace(key, '***')}")


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    del argv  # no arguments: everything comes from the azd environment
    try:
        target = Target.from_env(env)
        az = AzureCli(target.subscription)
        key = wait_for_key(target, az)
        subscribe(target, az, key)
    except HookError as error:
        print(f"subscribe-blob-events: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"segment_dropped subscribed to BlobCreated events of container {target.container}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
