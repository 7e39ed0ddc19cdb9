"""Telemetry: the run id and export name on every log record of a run, and run counts and durations as
OpenTelemetry metrics, exported to Application Insights when APPLICATIONINSIGHTS_CONNECTION_STRING is set.

Nothing here imports OpenTelemetry unless that setting is there (or a test hands in a meter provider),
so the app starts as fast without it. No personal data: the attributes are the export's name, the
run's status and its trigger."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

log = logging.getLogger(__name__)

CONNECTION_SETTING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
RUNS_METRIC = "klaviyo_export.runs"
RUN_DURATION_METRIC = "klaviyo_export.run.duration"
LOG_FIELDS = ("run_id", "export_name")
# The app's own loggers (shared.*) go to Application Insights; the host sends its own telemetry itself.
APP_LOGGER = "shared"

_current_run: ContextVar[tuple[str, str] | None] = ContextVar("current_run", default=None)
_install_lock = threading.Lock()
_log_fields_installed = False


# -- log records ------------------------------------------------------------------------------------
def _install_log_fields() -> None:
    """Adds run_id and export_name to every record created while a run is current, whichever logger
    creates it (ours, the Azure SDK's, urllib3's): a record factory sees them all, where a logger's
    filter would miss its children's records and a handler's filter depends on who installed the handler."""
    global _log_fields_installed
    with _install_lock:
        if _log_fields_installed:
            return
        previous = logging.getLogRecordFactory()

        def with_run_fields(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            current = _current_run.get()
            if current is not None:
                record.run_id, record.export_name = current
            return record

        logging.setLogRecordFactory(with_run_fields)
        _log_fields_installed = True


@contextlib.contextmanager
def run_context(run_id: str, export_name: str) -> Iterator[None]:
    """Every record logged inside (in this thread, and in pools started with `carry_run_context`)
    carries `run_id` and `export_name`."""
    _install_log_fields()
    token = _current_run.set((run_id, export_name))
    try:
        yield
    finally:
        _current_run.reset(token)


def carry_run_context(initializer: Callable[[], None] | None = None) -> Callable[[], None]:
    """A thread-pool initializer giving the pool's threads the current run's log fields (a new thread
    starts with an empty context), then running `initializer`."""
    current = _current_run.get()

    def initialize() -> None:
        if current is not None:
            _current_run.set(current)
        if initializer is not None:
            initializer()

    return initialize


# -- metrics ----------------------------------------------------------------------------------------
class RunMetrics:
    """A counter of finished runs and a histogram of their durations, by export, status and trigger."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("klaviyo_segment_export")
        self._runs = meter.create_counter(
            RUNS_METRIC, unit="{run}", description="runs that reached an outcome (succeeded, failed, ...)"
        )
        self._duration = meter.create_histogram(
            RUN_DURATION_METRIC, unit="s", description="seconds from a run's first start to its outcome"
        )

    def record(self, export_name: str, status: str, trigger: str, seconds: float | None) -> None:
        attributes = {"export_name": export_name, "status": status, "trigger": trigger}
        self._runs.add(1, attributes)
        if seconds is not None:
            self._duration.record(seconds, attributes)


_metrics: RunMetrics | None = None


def use_meter_provider(provider: MeterProvider | None) -> None:
    """Records run metrics through `provider` from now on (None: record nothing)."""
    global _metrics
    _metrics = RunMetrics(provider) if provider is not None else None


def run_finished(run: Mapping[str, Any]) -> None:
    """Counts a run that reached its outcome; its duration too if it ever started (a run skipped
    when planned never did)."""
    if _metrics is None:
        return
    started = run.get("first_started")
    seconds = max(0.0, time.time() - float(started)) if started else None
    _metrics.record(run["export_name"], run["status"], run.get("trigger", "unknown"), seconds)


def configure(env: Mapping[str, str] = os.environ) -> bool:
    """Sends the app's logs, traces and run metrics to Application Insights when the connection string
    is set; does nothing (and imports nothing) otherwise. A telemetry problem never stops the app."""
    connection_string = env.get(CONNECTION_SETTING, "").strip()
    if not connection_string:
        return False
    try:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider

        # The Functions worker configures the distro itself with PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY;
        # configuring it twice would send everything twice.
        if not isinstance(metrics.get_meter_provider(), SdkMeterProvider):
            from azure.monitor.opentelemetry import configure_azure_monitor

            configure_azure_monitor(connection_string=connection_string, logger_name=APP_LOGGER)
        use_meter_provider(metrics.get_meter_provider())
    except Exception as exc:
        log.warning("Application Insights telemetry is off: it could not be configured (%s)", type(exc).__name__)
        return False
    return True
