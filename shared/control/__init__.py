"""The control plane: the HTTP API, roles, the table store, triggers and the queue worker's runs."""

from shared.control.auth import ADMIN, encode_principal
from shared.control.runs import execute_run, mark_poisoned, on_segment_blob, plan_scheduled_runs
from shared.control.services import Services, get_services, use_services

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
