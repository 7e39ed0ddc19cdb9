"""The OpenAPI document: valid, complete against the app's routes, and served without a key or a caller."""

from __future__ import annotations

import re
from typing import get_args

import azure.functions as func
import orjson
import pytest
from openapi_spec_validator import validate

from shared.control import use_services
from shared.control.models import Run, RunState
from shared.control.openapi import document
from shared.control.triggers import Trigger
from shared.engine import RunStatus
from tests.api_contract import path_template
from tools.functions_host import FUNCTIONS


def _http_routes() -> dict[str, tuple[str, set[str]]]:
    """Each HTTP function's route and methods, as the worker indexes function_app."""
    routes = {}
    for name, function in FUNCTIONS.items():
        trigger = function.get_trigger()
        if trigger.type == "httpTrigger":
            routes[name] = (trigger.route, {str(m).lower() for m in trigger.methods})
    return routes


def _paths(route: str) -> set[str]:
    """The document's paths for a route: `exports/{name?}` is both /api/exports and /api/exports/{name}."""
    every_parameter = dict.fromkeys(re.findall(r"\{(\w+)\??\}", route), "x")
    return {path_template(route, {}), path_template(route, every_parameter)}


def test_the_document_is_valid_openapi():
    built = document("https://kse.azurewebsites.net")
    validate(built)
    assert built["openapi"].startswith("3.1")


@pytest.mark.parametrize("function", sorted(_http_routes()))
def test_every_route_of_the_app_is_documented_with_each_of_its_methods(function: str):
    route, methods = _http_routes()[function]
    paths = document()["paths"]
    documented = {method for path in _paths(route) if path in paths for method in paths[path] if method != "parameters"}
    assert methods <= documented, f"{function}: {sorted(methods - documented)} not in the document"


def test_the_document_has_no_path_or_method_the_app_does_not_serve():
    served = {
        (path, method) for route, methods in _http_routes().values() for path in _paths(route) for method in methods
    }
    documented = {
        (path, method) for path, item in document()["paths"].items() for method in item if method != "parameters"
    }
    assert documented <= served


def test_every_operation_names_its_roles_and_its_errors_have_the_error_schema():
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if method == "parameters" or path == "/api/openapi.json":
                continue
            assert operation["description"].startswith("Roles: "), (path, method)
            for status, response in operation["responses"].items():
                if int(status) >= 400 and not path.startswith("/api/console"):  # the console's refusals are pages
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)


def test_the_document_is_served_without_a_key_a_caller_or_storage(monkeypatch):
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    use_services(None)  # nothing configured: serving the document must not need the app's clients
    request = func.HttpRequest("GET", "https://kse.azurewebsites.net/api/openapi.json", headers={}, body=b"")
    response = FUNCTIONS["openapi_document"].get_user_function()(request)
    assert response.status_code == 200 and response.mimetype == "application/json"
    served = orjson.loads(response.get_body())
    assert served == document("https://kse.azurewebsites.net")
    assert served["servers"] == [{"url": "https://kse.azurewebsites.net"}]
    assert str(FUNCTIONS["openapi_document"].get_trigger().auth_level) == "ANONYMOUS"


def test_the_run_states_the_api_shows_are_the_engines_run_statuses():
    # The API spells each state out (so the document keeps its schemas inline); they must not drift.
    # INCOMPLETE is the engine's word for a run that goes back on the queue: the API shows it queued.
    assert set(get_args(RunState)) == {status.value for status in RunStatus} - {RunStatus.INCOMPLETE}


def test_the_triggers_the_api_shows_are_the_ones_that_start_runs():
    assert set(get_args(Run.model_fields["trigger"].annotation)) == {trigger.value for trigger in Trigger}
