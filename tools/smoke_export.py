"""The optional end-to-end check of `scripts/smoke-test --klaviyo-list ID --connection NAME`: a 10-row
segment to a real (test) Klaviyo list through the deployed API, then the export and the segment file
removed. The 10 profiles (smoke-test+<tag>-<n>@example.com) stay on that list: Klaviyo holds them, and
only someone with the account removes them (the output says which).

The segment file goes in with `az storage blob upload --auth-mode login` (shared keys are off: the person
running `azd up` holds Storage Blob Data Contributor, infra/app/roles.bicep)."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from typing import Protocol

from tools.smoke_test import AzdValues, Outcome, Response, SmokeError, Target

ROWS = 10
NAME = "10-row export to the test list"
FINISHED = {"succeeded", "completed_with_rejects", "failed", "skipped", "cancelled"}


class SegmentStore(Protocol):
    container: str

    def upload(self, blob: str, data: bytes) -> None: ...

    def delete(self, blob: str) -> None: ...


class AzSegmentStore:
    """The segments container of the deployed storage account, through `az` on azd's subscription."""

    def __init__(self, values: AzdValues, run: Callable[[list[str]], str | None]) -> None:
        self.run = run
        self.subscription = values.get("AZURE_SUBSCRIPTION_ID")
        self.account = values.get("AZURE_STORAGE_ACCOUNT_NAME")
        self.container = values.get("SEGMENTS_CONTAINER") or "segments"
        if not (self.subscription and self.account):
            raise SmokeError("no storage account: run from the azd project (AZURE_STORAGE_ACCOUNT_NAME)")

    def _az(self, *args: str) -> str | None:
        common = ["--auth-mode", "login", "--account-name", self.account, "--container-name", self.container]
        return self.run(["az", "storage", "blob", *args, *common, "--subscription", self.subscription])

    def upload(self, blob: str, data: bytes) -> None:
        handle, path = tempfile.mkstemp(suffix=".csv")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            if self._az("upload", "--name", blob, "--file", path, "--overwrite", "--output", "none") is None:
                raise SmokeError(f"`az storage blob upload` of {self.container}/{blob} failed (a data role?)")
        finally:
            os.unlink(path)

    def delete(self, blob: str) -> None:
        self._az("delete", "--name", blob, "--output", "none")


def segment(tag: str) -> bytes:
    rows = [f"smoke-test+{tag}-{n}@example.com,Smoke{n}" for n in range(1, ROWS + 1)]
    return ("email,first_name\r\n" + "\r\n".join(rows) + "\r\n").encode()


def export_check(
    http: Callable[..., Response],
    target: Target,
    store: SegmentStore,
    list_id: str,
    connection: str,
    timeout: float = 600.0,
    poll: float = 5.0,
) -> Outcome:
    """Uploads the segment, saves an export, runs it, waits for the run; removes both whatever happens."""
    tag = secrets.token_hex(4)
    export, blob = f"smoke-{tag}", f"smoke-test/{tag}.csv"
    headers = {"x-functions-key": target.key, "content-type": "application/json"}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    body = {
        "connection": connection,
        "list_id": list_id,
        "segment": {"container": store.container, "blob": blob},
        "mapping": {"email": "email", "first_name": "first_name"},
    }
    try:
        store.upload(blob, segment(tag))
        saved = http("PUT", f"/api/exports/{export}", headers, json.dumps(body).encode())
        if saved.status not in (200, 201):
            return Outcome(NAME, False, f"saving export {export}: {saved.status} {_problem(saved)}")
        started = http("POST", f"/api/exports/{export}/runs", headers, b"")
        if started.status != 202:
            return Outcome(NAME, False, f"starting a run: {started.status} {_problem(started)}")
        return _wait(http, headers, json.loads(started.body)["run_id"], list_id, tag, timeout, poll)
    except SmokeError as error:
        return Outcome(NAME, False, str(error))
    finally:
        http("DELETE", f"/api/exports/{export}", headers)
        store.delete(blob)


def _wait(
    http: Callable[..., Response],
    headers: dict[str, str],
    run_id: str,
    list_id: str,
    tag: str,
    timeout: float,
    poll: float,
) -> Outcome:
    deadline = time.monotonic() + timeout
    while True:
        answer = http("GET", f"/api/runs/{run_id}", headers)
        run = json.loads(answer.body) if answer.status == 200 else {}
        if run.get("status") in FINISHED:
            break
        if time.monotonic() > deadline:
            return Outcome(NAME, False, f"run {run_id} not finished within {timeout:.0f} s ({run.get('status')})")
        time.sleep(poll)
    accepted = (run.get("counts") or {}).get("accepted")
    if run["status"] == "succeeded" and accepted == ROWS:
        where = f"smoke-test+{tag}-1..{ROWS}@example.com on list {list_id}"
        return Outcome(NAME, True, f"run {run_id}: {ROWS} profiles accepted ({where}: remove them in Klaviyo)")
    reason = run.get("reason") or f"accepted {accepted} of {ROWS}"
    return Outcome(NAME, False, f"run {run_id} {run['status']}: {reason}")


def _problem(answer: Response) -> str:
    """The API's error message ({"error": ...}), which names the field and why, never a submitted value."""
    try:
        return str(json.loads(answer.body).get("error") or "")
    except (ValueError, AttributeError):
        return ""
