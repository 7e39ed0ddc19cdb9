"""`make demo`: real exports end to end on the local stack (Azurite, the Klaviyo simulator, a local
Key Vault): once with the command line, once through the Functions app's own code."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from shared.control import ADMIN, encode_principal
from tools.functions_host import LocalFunctionsHost
from tools.local_stack import API_KEY, SECRET_NAME, LocalStack
from tools.segment_gen import Expected, encode, generate_rows

ROWS = 50_000
BLOB = "demo/vip-customers.csv"
MAPPING = {
    "email": "email",
    "phone_number": "phone",
    "external_id": "customer_id",
    "first_name": "first_name",
    "last_name": "last_name",
    "city": "city",
    "country": "country",
    "properties": {"loyalty_tier": "loyalty_tier", "lifetime_value": "lifetime_value"},
}


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def check(label: str, ok: bool) -> bool:
    print(f"  {'ok  ' if ok else 'FAIL'} {label}", flush=True)
    return ok


CONSOLE_URL = "http://127.0.0.1:7071/api/console"  # where `make host` serves it


def main() -> int:
    say("starting Azurite, the Klaviyo simulator and a local Key Vault on free loopback ports")
    with LocalStack() as stack:
        container = stack.services.settings.segments_container
        print(
            f"Azurite blob port {stack.azurite.ports['blob']}, Klaviyo simulator {stack.klaviyo.url}, "
            f"Key Vault {stack.vault.url}"
        )

        say(f"writing a segment of {ROWS:,} synthetic profiles to {container}/{BLOB}")
        expected = Expected()
        data = b"".join(encode(generate_rows(ROWS, seed=2026, expected=expected)))
        stack.services.segments.get_blob_client(container, BLOB).upload_blob(data)
        print(
            f"{len(data):,} bytes; {expected.invalid:,} rows deliberately invalid, "
            f"{expected.duplicates:,} deliberate duplicates, {expected.valid:,} valid distinct profiles"
        )

        ok = cli_export(stack, container, expected)
        ok = functions_export(stack, expected) and ok
        say("demo " + ("succeeded" if ok else "FAILED") + "; stopping everything it started")
    # The demo's stack is gone now; `make host` keeps one running, with the console on it.
    print(f"\nthe console in a browser: run `make host`, then open {CONSOLE_URL}", flush=True)
    return 0 if ok else 1


def cli_export(stack: LocalStack, container: str, expected: Expected) -> bool:
    say("1. klaviyo-export run: the command line, on the same engine")
    list_id = stack.list_id
    report_path = Path(tempfile.mkdtemp(prefix="klaviyo-demo-")) / "report.json"
    env = {
        **os.environ,
        "AzureWebJobsStorage": stack.azurite.connection_string,
        "KLAVIYO_BASE_URL": stack.klaviyo.url,
        "KLAVIYO_API_KEY": API_KEY,
    }
    maps = [f"{field}={column}" for field, column in MAPPING.items() if field != "properties"]
    maps += [f"properties.{name}={column}" for name, column in MAPPING["properties"].items()]
    command = [
        sys.executable,
        "-m",
        "shared.cli",
        "run",
        f"{container}/{BLOB}",
        "--list-id",
        list_id,
        "--export-name",
        "vip-customers",
        "--report",
        str(report_path),
    ]
    for item in maps:
        command += ["--map", item]
    print("$ klaviyo-export " + " ".join(command[3:]), flush=True)
    started = time.monotonic()
    exit_code = subprocess.call(command, env=env)
    elapsed = time.monotonic() - started
    report = orjson.loads(report_path.read_bytes())
    counts = report["counts"]
    emails = {m.get("email") for m in stack.klaviyo.list_members(list_id)}
    print(f"the command took {elapsed:.1f} s; list {list_id} now holds {len(emails):,} profiles")
    return all(
        [
            check("exit code 0", exit_code == 0),
            check(
                "every row accounted for: sent + rejected + duplicates = rows read",
                counts["sent"] + counts["rejected"] + counts["duplicates"] == counts["rows_read"] == ROWS,
            ),
            check("the list holds exactly the valid profiles", emails == expected.valid_emails),
        ]
    )


def functions_export(stack: LocalStack, expected: Expected) -> bool:
    say("2. the Functions app: configure through the admin API, run on demand, follow the run")
    host = LocalFunctionsHost(stack.services)
    admin = {"x-ms-client-principal": encode_principal("admin@contoso.example", ADMIN)}
    list_id = stack.klaviyo.create_list("VIP customers (from the Functions app)")

    def call(method: str, path: str, body: dict | None = None) -> dict:
        response = host.http(method, path, orjson.dumps(body) if body is not None else b"", admin)
        payload = orjson.loads(response.get_body()) if response.get_body() else {}
        shown = {k: v for k, v in payload.items() if k != "report"}
        print(f"{method} /api/{path} -> {response.status_code} {orjson.dumps(shown).decode()[:300]}", flush=True)
        return payload

    call(
        "PUT",
        "connections/klaviyo-main",
        {
            "display_name": "Klaviyo (main account)",
            "secret_name": SECRET_NAME,
            "usable_by": "contributors",
            "privacy_consent": True,
        },
    )
    call(
        "PUT",
        "exports/vip-customers",
        {
            "connection": "klaviyo-main",
            "list_id": list_id,
            "segment": {"container": stack.services.settings.segments_container, "blob": BLOB},
            "mapping": MAPPING,
        },
    )
    run = call("POST", "exports/vip-customers/runs")
    started = time.monotonic()
    print(f"queue function: {host.deliver_queue()} run message(s) executed in {time.monotonic() - started:.1f} s")
    finished = call("GET", f"runs/{run['run_id']}")
    emails = {m.get("email") for m in stack.klaviyo.list_members(list_id)}
    counts = finished.get("counts", {})
    print(f"list {list_id} now holds {len(emails):,} profiles; report at {finished.get('report_path')}")
    return all(
        [
            check(
                "the run completed (rejected rows listed in its report)",
                finished.get("status") == "completed_with_rejects",
            ),
            check(
                "every row accounted for",
                counts.get("sent", 0) + counts.get("rejected", 0) + counts.get("duplicates", 0)
                == counts.get("rows_read")
                == ROWS,
            ),
            check("the list holds exactly the valid profiles", emails == expected.valid_emails),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
