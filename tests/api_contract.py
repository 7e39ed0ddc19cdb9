"""Checks the app's real HTTP exchanges against its OpenAPI document (openapi-core)."""

from __future__ import annotations

import re
from typing import NamedTuple

import azure.functions as func
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from shared.control.openapi import document

DOCUMENT = document()
_OPENAPI = OpenAPI.from_dict(DOCUMENT)
_HOST = "http://localhost:7071"


class Exchange(NamedTuple):
    method: str
    path: str  # the document's path template, e.g. /api/exports/{name}
    status: int


def documented_exchanges() -> set[Exchange]:
    return {
        Exchange(method.upper(), path, int(status))
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method != "parameters"
        for status in operation["responses"]
    }


def path_template(route: str, params: dict[str, str]) -> str:
    """A function's route as the document's path: `exports/{name?}` is /api/exports/{name} when the request
    has a name, /api/exports when not."""
    for name in re.findall(r"\{(\w+)\?\}", route):
        route = route.replace(f"{{{name}?}}", f"{{{name}}}" if params.get(name) else "").rstrip("/")
    return "/api/" + route


def check_exchange(
    method: str, route: str, params: dict[str, str], headers: dict[str, str], body: bytes, response: func.HttpResponse
) -> Exchange:
    """Raises unless the response is one the document declares for this operation, with that body and
    those headers; a request the app accepted must match the document too (path parameters, body)."""
    template = path_template(route, params)
    path = template.format(**params)
    payload = response.get_body()
    _OPENAPI.validate_response(
        MockRequest(_HOST, method.lower(), path, path_pattern=template, view_args=params),
        MockResponse(
            payload,
            status_code=response.status_code,
            headers=dict(response.headers),
            content_type=response.mimetype if payload else None,
        ),
    )
    if response.status_code < 300:
        # The function key is checked by the Functions host before the app sees a request.
        request_headers = {"x-functions-key": "k", **headers}
        _OPENAPI.validate_request(
            MockRequest(
                _HOST, method.lower(), path, path_pattern=template, view_args=params, headers=request_headers, data=body
            )
        )
    return Exchange(method.upper(), template, response.status_code)
