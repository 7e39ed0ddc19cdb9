"""The control plane: the HTTP API, roles, the table store, triggers and the queue worker's runs."""

from shared.control.auth import ADMIN, encode_principal
from shared.control.executor import execute_run, mark_poisoned
from shared.control.services import Services, get_services, use_services
from shared.control.triggers import on_segment_blob, plan_scheduled_runs

__all__ = [
    "ADMIN",
    "Services",
    "encode_principal",
    "execute_run",
    "get_services",
    "mark_poisoned",
    "on_segment_blob",
    "plan_scheduled_runs",
    "use_services",
]
