"""`scripts/smoke-test`: after `azd up`, checks on the deployed app what the API's security rests on,
instead of assuming it (README "After deploying").

1. GET /api/openapi.json with no credentials: 200 (the one anonymous route; no data in it).
2. An API route with the function key and no token: 401 (App Service Authentication requires a token).
3. The same with a forged `x-ms-client-principal` claiming Admin and no token: 401. App Service
   Authentication sets that header itself: "External requests aren't allowed to set these headers, so
   they're present only if set by App Service"
   (https://learn.microsoft.com/azure/app-service/configure-authentication-user-identities). A 200 here
   means the header reached the app unchecked: anyone could act as an Admin.
4. An Admin's token without the function key: 200 (the routes are anonymous at the Functions host, so that
   the browser console, which has a sign-in session and no key, can call them: README "The console").
5. An Admin's token with the key: 200 (GET /api/connections needs the Admin role).
6. An Admin's token with the key and a forged principal holding no role: still 200 (the platform's
   header, from the token, replaced the forged one; a 403 means the forged one reached the app).
7. Optional (--klaviyo-list ID --connection NAME): a 10-row export end to end to a real test list
   (tools/smoke_export.py), then its export and segment file removed.

Credentials never go on the command line (shell history, process lists) and are never printed: the
function key and the token come from SMOKE_FUNCTION_KEY / SMOKE_TOKEN, or from `az` with azd's
environment (`azd env get-values`): `az functionapp keys list` and `az account get-access-token
--scope api://<AUTH_CLIENT_ID>/.default` (the Azure CLI must be pre-authorized on that app registration:
README "Deploy"). Exit status 0 when every check that ran passed, 1 otherwise, 2 when it could not start.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

OPENAPI = "/api/openapi.json"
ADMIN_ROUTE = "/api/connections"  # GET needs the Admin role (shared/control/api.py)
PRINCIPAL_HEADER = "x-ms-client-principal"
AZURE_CLI_APP_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"  # the Azure CLI's well-known client id


class SmokeError(Exception):
    """The smoke test cannot start: a missing URL or credential, said plainly."""


class Response(NamedTuple):
    status: int
    body: bytes


class Outcome(NamedTuple):
    """One check: passed True/False, or None when it was skipped (why in `detail`)."""

    name: str
    passed: bool | None
    detail: str


@dataclass(frozen=True)
class Target:
    url: str
    key: str
    token: str | None


class Http:
    """Plain HTTP with the standard library: the smoke test runs on any Python 3, without the venv."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:  # a cold start of a Flex app
        self.base_url, self.timeout = base_url.rstrip("/"), timeout

    def __call__(self, method: str, path: str, headers: Mapping[str, str], body: bytes | None = None) -> Response:
        request = urllib.request.Request(f"{self.base_url}{path}", data=body, method=method, headers=dict(headers))
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return Response(answer.status, answer.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.read())
        except (urllib.error.URLError, OSError) as error:  # no answer at all: status 0, the reason as body
            return Response(0, str(getattr(error, "reason", error)).encode())


def forged_principal(roles: Sequence[str]) -> str:
    """An `x-ms-client-principal` as App Service Authentication would send it, made up by the caller."""
    claims = [{"typ": "name", "val": "forged@smoke-test.invalid"}] + [{"typ": "roles", "val": r} for r in roles]
    principal = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(principal).encode()).decode()


def _expect(name: str, answer: Response, expected: int, meaning: dict[int, str]) -> Outcome:
    if answer.status == expected:
        return Outcome(name, True, str(answer.status))
    if answer.status == 0:
        return Outcome(name, False, f"expected {expected}, got no answer: {answer.body.decode(errors='replace')}")
    explanation = meaning.get(answer.status, "unexpected")
    return Outcome(name, False, f"expected {expected}, got {answer.status}: {explanation}")


def security_checks(http: Callable[..., Response], target: Target) -> list[Outcome]:
    """Checks 1 to 6 (module docstring); those needing a token are skipped without one."""
    key = {"x-functions-key": target.key}
    no_auth = "App Service Authentication is not in front of the app (AUTH_CLIENT_ID not set at deploy?)"
    refused = "the app refuses every call: App Service Authentication is off (AUTH_CLIENT_ID not set at deploy)"
    outcomes = [
        _expect("openapi.json without credentials", http("GET", OPENAPI, {}), 200, {401: "the route is not anonymous"}),
        _expect(
            "function key, no token", http("GET", ADMIN_ROUTE, key), 401, {200: no_auth, 403: no_auth, 500: refused}
        ),
        _expect(
            "function key, forged Admin principal, no token",
            http("GET", ADMIN_ROUTE, {**key, PRINCIPAL_HEADER: forged_principal(["Admin"])}),
            401,
            {
                200: f"the forged principal was trusted: {no_auth}",
                403: "a forged principal reached the app",
                500: refused,
            },
        ),
    ]
    if target.token is None:
        skipped = ["token, no function key", "Admin token", "Admin token, forged principal without roles"]
        return outcomes + [Outcome(name, None, "no token (SMOKE_TOKEN, or AUTH_CLIENT_ID and az)") for name in skipped]
    bearer = {"Authorization": f"Bearer {target.token}"}
    admin = http("GET", ADMIN_ROUTE, {**key, **bearer})
    outcomes += [
        _expect(
            "token, no function key",
            http("GET", ADMIN_ROUTE, bearer),
            200,
            {401: "the host still asks for a function key: the browser console cannot call the API"},
        ),
        _expect(
            "Admin token", admin, 200, {401: "the token was refused", 403: "the token's user lacks the Admin role"}
        ),
    ]
    if admin.status != 200:
        return outcomes + [Outcome("Admin token, forged principal without roles", None, "needs an Admin token")]
    forged = http("GET", ADMIN_ROUTE, {**key, **bearer, PRINCIPAL_HEADER: forged_principal([])})
    meaning = {403: "the forged principal replaced the token's: the app reads a header the caller set"}
    return outcomes + [_expect("Admin token, forged principal without roles", forged, 200, meaning)]


class AzdValues:
    """azd's environment: this process's variables first, then `azd env get-values` (KEY="value" lines)."""

    def __init__(self, env: Mapping[str, str], run: Callable[[list[str]], str | None]) -> None:
        self.env, self.run = env, run
        self._values: dict[str, str] | None = None

    def get(self, name: str) -> str:
        if self.env.get(name, "").strip():
            return self.env[name].strip()
        if self._values is None:
            self._values = parse_env_values(self.run(["azd", "env", "get-values"]) or "")
        return self._values.get(name, "").strip()


def parse_env_values(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip():
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values[name.strip()] = value
    return values


def run_tool(command: list[str]) -> str | None:
    """A tool's standard output, or None when it is missing or fails (its error output is not shown)."""
    executable = shutil.which(command[0])
    if executable is None:
        return None
    done = subprocess.run([executable, *command[1:]], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def resolve(args: argparse.Namespace, values: AzdValues, run: Callable[[list[str]], str | None]) -> Target:
    """The app's URL, its function key and (unless --no-token) a token, from the environment or az."""
    url = args.url or values.get("FUNCTION_APP_URL")
    if not url:
        raise SmokeError("no app URL: pass --url, or run from the azd project (FUNCTION_APP_URL)")
    key = values.env.get("SMOKE_FUNCTION_KEY", "").strip() or _key_from_az(values, run)
    token = None if args.no_token else values.env.get("SMOKE_TOKEN", "").strip() or _token_from_az(values, run)
    return Target(url.rstrip("/"), key, token or None)


def _key_from_az(values: AzdValues, run: Callable[[list[str]], str | None]) -> str:
    subscription, group, app = (
        values.get(n) for n in ("AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_FUNCTION_APP_NAME")
    )
    if not (subscription and group and app):
        raise SmokeError("no function key: set SMOKE_FUNCTION_KEY, or run from the azd project (az reads it)")
    key = run(["az", "functionapp", "keys", "list", "--subscription", subscription, "--resource-group", group,
               "--name", app, "--query", "functionKeys.default", "--output", "tsv"])  # fmt: skip
    if not key:
        raise SmokeError(f"`az functionapp keys list` gave no default function key for {app}: is `az login` done?")
    return key


def _token_from_az(values: AzdValues, run: Callable[[list[str]], str | None]) -> str | None:
    client_id = values.get("AUTH_CLIENT_ID")
    if not client_id:
        print("no AUTH_CLIENT_ID in azd's environment: the checks that need a token are skipped", flush=True)
        return None
    token = run(["az", "account", "get-access-token", "--scope", f"api://{client_id}/.default",
                 "--query", "accessToken", "--output", "tsv"])  # fmt: skip
    if not token:
        print(
            f"`az account get-access-token --scope api://{client_id}/.default` failed: the Azure CLI "
            f'({AZURE_CLI_APP_ID}) must be pre-authorized on the app registration (README "Deploy"); '
            "the checks that need a token are skipped",
            flush=True,
        )
    return token


def report(outcomes: Sequence[Outcome]) -> int:
    for outcome in outcomes:
        label = {True: "PASS", False: "FAIL", None: "SKIP"}[outcome.passed]
        print(f"{label}  {outcome.name}: {outcome.detail}", flush=True)
    failed = sum(1 for o in outcomes if o.passed is False)
    ran = sum(1 for o in outcomes if o.passed is not None)
    print(f"{ran - failed} of {ran} checks passed" + (f", {failed} FAILED" if failed else ""), flush=True)
    return 1 if failed else 0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scripts/smoke-test", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="the app's URL (default: FUNCTION_APP_URL from azd's environment)")
    parser.add_argument("--no-token", action="store_true", help="skip the checks that need an Entra token")
    parser.add_argument("--klaviyo-list", metavar="ID", help="also run a 10-row export to this test list")
    parser.add_argument("--connection", help="the connection (Klaviyo account) of that export")
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] = os.environ) -> int:
    args = parser().parse_args(argv)
    if args.klaviyo_list and not args.connection:
        parser().error("--klaviyo-list needs --connection NAME (an existing connection to that Klaviyo account)")
    values = AzdValues(env, run_tool)
    try:
        target = resolve(args, values, run_tool)
    except SmokeError as error:
        print(f"smoke-test: {error}", file=sys.stderr, flush=True)
        return 2
    http = Http(target.url)
    outcomes = security_checks(http, target)
    if args.klaviyo_list:
        from tools.smoke_export import AzSegmentStore, export_check

        store = AzSegmentStore(values, run_tool)
        outcomes.append(export_check(http, target, store, args.klaviyo_list, args.connection))
    return report(outcomes)


if __name__ == "__main__":
    sys.exit(main())
