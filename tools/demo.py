"""`make demo`: a real export end to end on the local stack (Azurite + the Klaviyo simulator)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from azure.storage.blob import BlobServiceClient

from tools.azurite import Azurite
from tools.klaviyo_sim import KlaviyoSimulator, SimulatorConfig
from tools.segment_gen import Expected, encode, generate_rows

ROWS = 50_000
CONTAINER, BLOB = "segments", "demo/vip-customers.csv"
DEMO_KEY = "pk_demo_local_simulator_only"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    say("starting Azurite and the Klaviyo simulator on free loopback ports")
    with Azurite() as azurite, KlaviyoSimulator(SimulatorConfig(processing_seconds=0.2)) as klaviyo:
        klaviyo.add_api_key(DEMO_KEY)
        list_id = klaviyo.create_list("VIP customers")
        print(
            f"Azurite blob endpoint http://127.0.0.1:{azurite.ports['blob']}, Klaviyo simulator {klaviyo.url}, "
            f"list {list_id}"
        )

        say(f"writing a segment of {ROWS:,} synthetic profiles to {CONTAINER}/{BLOB}")
        expected = Expected()
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        service.create_container(CONTAINER)
        data = b"".join(encode(generate_rows(ROWS, seed=2026, expected=expected)))
        service.get_blob_client(CONTAINER, BLOB).upload_blob(data)
        print(
            f"{len(data):,} bytes; {expected.invalid:,} rows deliberately invalid, "
            f"{expected.duplicates:,} deliberate duplicates"
        )

        say("klaviyo-export run (the same engine the Functions app runs)")
        report_path = Path(tempfile.mkdtemp(prefix="klaviyo-demo-")) / "report.json"
        env = {
            **os.environ,
            "AzureWebJobsStorage": azurite.connection_string,
            "KLAVIYO_BASE_URL": klaviyo.url,
            "KLAVIYO_API_KEY": DEMO_KEY,
        }
        command = [
            sys.executable,
            "-m",
            "shared.cli",
            "run",
            f"{CONTAINER}/{BLOB}",
            "--list-id",
            list_id,
            "--export-name",
            "vip-customers",
            "--map",
            "phone_number=phone",
            "--map",
            "external_id=customer_id",
            "--map",
            "first_name=first_name",
            "--map",
            "last_name=last_name",
            "--map",
            "city=city",
            "--map",
            "country=country",
            "--map",
            "properties.loyalty_tier=loyalty_tier",
            "--map",
            "properties.lifetime_value=lifetime_value",
            "--report",
            str(report_path),
        ]
        print("$ klaviyo-export run " + " ".join(command[4:]), flush=True)
        started = time.monotonic()
        exit_code = subprocess.call(command, env=env)
        elapsed = time.monotonic() - started

        say("result")
        report = orjson.loads(report_path.read_bytes())
        members = klaviyo.list_members(list_id)
        emails = {m.get("email") for m in members}
        counts = report["counts"]
        accounted = counts["sent"] + counts["rejected"] + counts["duplicates"] == counts["rows_read"] == ROWS
        print(f"exit code {exit_code}; the export took {elapsed:.1f} s (command start to finish)")
        print(
            f"profiles now in simulated list {list_id}: {len(members):,} "
            f"(expected {expected.valid:,} valid, distinct profiles)"
        )
        print(f"every row accounted for (sent + rejected + duplicates = rows read): {accounted}")
        print(f"the list holds exactly the valid profiles: {emails == expected.valid_emails}")
        print(f"report: {report_path}\nrejected and duplicate rows: {report['rejects_file']}")
        ok = exit_code == 0 and accounted and emails == expected.valid_emails
        say("demo " + ("succeeded" if ok else "FAILED") + "; stopping Azurite and the simulator")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
