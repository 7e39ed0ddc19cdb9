"""Telemetry setup: nothing without APPLICATIONINSIGHTS_CONNECTION_STRING, the Azure Monitor distro with it,
and never a broken app. Each case runs in a fresh interpreter (the OpenTelemetry providers are global)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Every endpoint on a closed local port: nothing leaves the machine (statsbeat and the Azure VM metadata
# lookup are turned off; the App Service resource detector reads only the environment).
LOCAL_CONNECTION = (
    "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
    "IngestionEndpoint=http://127.0.0.1:9/;LiveEndpoint=http://127.0.0.1:9/"
)

PROBE = """
import logging, sys, time
started = time.perf_counter()
import function_app
from shared import telemetry
imported = time.perf_counter() - started
otel = sorted({m.split(".")[0] + "." + m.split(".")[1] for m in sys.modules
               if m.startswith(("opentelemetry.", "azure.monitor."))})
handlers = [type(h).__name__ for h in logging.getLogger(telemetry.APP_LOGGER).handlers]
print(repr({"otel": otel, "handlers": handlers, "metrics": telemetry._metrics is not None, "seconds": imported}))
"""


def _probe(tmp_path: Path, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("APPLICATIONINSIGHTS_", "OTEL_"))}
    environment.update(
        {
            "TMPDIR": str(tmp_path),  # the exporter's offline storage
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
            "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "azure_app_service",
            **env,
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = eval(done.stdout.strip().splitlines()[-1])  # a repr of plain values printed by PROBE
    result["stderr"] = done.stderr
    return result


def test_without_the_connection_string_nothing_of_opentelemetry_is_imported(tmp_path: Path):
    result = _probe(tmp_path)
    assert result["otel"] == [] and not result["metrics"]
    assert result["handlers"] == []


def test_with_the_connection_string_logs_and_run_metrics_go_to_application_insights(tmp_path: Path):
    result = _probe(tmp_path, APPLICATIONINSIGHTS_CONNECTION_STRING=LOCAL_CONNECTION)
    assert "azure.monitor" in result["otel"] and result["metrics"]
    assert result["handlers"] == ["LoggingHandler"], "the app's own loggers are exported"


@pytest.mark.parametrize("value", ["not a connection string", "InstrumentationKey=not-a-guid"])
def test_a_bad_connection_string_turns_telemetry_off_and_the_app_still_starts(tmp_path: Path, value: str):
    result = _probe(tmp_path, APPLICATIONINSIGHTS_CONNECTION_STRING=value)
    assert not result["metrics"]
    assert "Application Insights telemetry is off" in result["stderr"]
    assert value not in result["stderr"], "the setting's value is not logged"
