"""HTTP layer of the Klaviyo simulator: routing, header, scope and rate-limit checks, JSON:API bodies, admin routes."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from .consent import OPT_IN_PROCESSES, ConsentBook, ConsentView
from .faults import NO_FAULT, Fault, FaultInjector
from .state import (
    ALL_SCOPES,
    MAX_BODY_BYTES,
    MAX_LIST_RELATIONSHIP_IDS,
    Account,
    ApiError,
    ApiKey,
    ImportJob,
    RateDecision,
    RateLimit,
    SimList,
    SimState,
    SimulatorConfig,
    error_object,
    iso,
    scan_import,
    validate_import,
)
from .subscriptions import SUBSCRIBE, UNSUBSCRIBE, Operation, validate_consent_job

log = logging.getLogger(__name__)

JSONAPI = "application/vnd.api+json"
_ACCEPTABLE = frozenset({JSONAPI, "application/json", "application/*", "*/*"})
_BODY_TYPES = frozenset({JSONAPI, "application/json"})
_MAX_READ_BYTES = 64 * 1024 * 1024
_REVISION = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:\.[A-Za-z0-9_-]+)?")

_M = RateLimit(10, 150)
_L = RateLimit(75, 750)
_XS = RateLimit(1, 15)
_PROFILES = RateLimit(75, 700)  # GET /api/profiles (check)
# Values one any(field,[...]) filter may hold.
MAX_FILTER_VALUES = 100
_LIST_CREATE = RateLimit(10, 150, daily=150)
_PAGE = frozenset({"page[cursor]", "page[size]"})

_JOB_FIELDS = frozenset(
    {
        "completed_at",
        "completed_count",
        "created_at",
        "expires_at",
        "failed_count",
        "id",
        "started_at",
        "status",
        "total_count",
    }
)
_LIST_FIELDS = frozenset({"created", "id", "name", "opt_in_process", "updated"})
_ERROR_FIELDS = frozenset({"code", "detail", "id", "original_payload", "source", "source.pointer", "title"})
_PROFILE_FIELDS = frozenset(
    {
        "created",
        "email",
        "external_id",
        "first_name",
        "id",
        "image",
        "joined_group_at",
        "last_event_date",
        "last_name",
        "locale",
        "location",
        "organization",
        "phone_number",
        "predictive_analytics",
        "properties",
        "subscriptions",
        "title",
        "updated",
    }
)
_PROFILE_FIELD_PREFIXES = ("location.", "predictive_analytics.", "subscriptions.")
_JOB_STATUSES = ("queued", "processing", "complete")
_MEMBER_FILTERS = {
    "email": {"any", "equals"},
    "phone_number": {"any", "equals"},
    "push_token": {"any", "equals"},
    "_kx": {"equals"},
    "joined_group_at": {"greater-or-equal", "greater-than", "less-or-equal", "less-than"},
}
_LIST_FILTERS = {
    "name": {"any", "equals"},
    "id": {"any", "equals"},
    "created": {"greater-than"},
    "updated": {"greater-than"},
}
_JOB_FILTERS = {"status": {"any", "equals"}}
_PROFILE_FILTERS = {
    "id": {"any", "equals"},
    "email": {"any", "equals"},
    "phone_number": {"any", "equals"},
    "external_id": {"any", "equals"},
    "_kx": {"equals"},
    "created": {"greater-or-equal", "greater-than", "less-or-equal", "less-than"},
    "updated": {"greater-or-equal", "greater-than", "less-or-equal", "less-than"},
}
_DATETIME_FIELDS = frozenset({"joined_group_at", "created", "updated"})
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "greater-than": lambda a, b: a > b,
    "greater-or-equal": lambda a, b: a >= b,
    "less-than": lambda a, b: a < b,
    "less-or-equal": lambda a, b: a <= b,
}


# --------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """One Klaviyo operation: method, path template, needed scopes, rate limit and accepted query parameters."""

    method: str
    template: str
    action: str
    scopes: frozenset[str]
    limit: RateLimit
    query: frozenset[str] = frozenset()
    body: bool = False
    # (query parameter, value) that moves the call to a stricter limit, as additional-fields do.
    heavy: tuple[str, str, RateLimit] | None = None

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template))

    def limit_for(self, query: dict[str, str]) -> tuple[str, RateLimit]:
        group = f"{self.method} {self.template}"
        if self.heavy and self.heavy[1] in query.get(self.heavy[0], "").split(","):
            return f"{group} {self.heavy[0]}={self.heavy[1]}", self.heavy[2]
        return group, self.limit


def _scopes(*names: str) -> frozenset[str]:
    return frozenset(names)


_JOBS = "/api/profile-bulk-import-jobs"
ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/api/lists",
        "get_lists",
        _scopes("lists:read"),
        _L,
        _PAGE | {"fields[list]", "fields[flow]", "fields[tag]", "filter", "include", "sort"},
    ),
    Route(
        "POST",
        "/api/lists",
        "create_list",
        _scopes("lists:write"),
        _LIST_CREATE,
        frozenset({"fields[list]"}),
        body=True,
    ),
    Route(
        "GET",
        "/api/lists/{id}",
        "get_list",
        _scopes("lists:read"),
        _L,
        frozenset({"additional-fields[list]", "fields[flow]", "fields[list]", "fields[tag]", "include"}),
        heavy=("additional-fields[list]", "profile_count", _XS),
    ),
    Route(
        "PATCH", "/api/lists/{id}", "update_list", _scopes("lists:write"), _M, frozenset({"fields[list]"}), body=True
    ),
    Route("DELETE", "/api/lists/{id}", "delete_list", _scopes("lists:write"), _M),
    Route(
        "GET",
        "/api/lists/{id}/profiles",
        "get_list_profiles",
        _scopes("lists:read", "profiles:read"),
        _L,
        _PAGE | {"additional-fields[profile]", "fields[profile]", "filter", "sort"},
        heavy=("additional-fields[profile]", "predictive_analytics", _M),
    ),
    Route(
        "GET",
        "/api/profiles",
        "get_profiles",
        _scopes("profiles:read"),
        _PROFILES,
        _PAGE | {"additional-fields[profile]", "fields[profile]", "filter", "sort"},
        heavy=("additional-fields[profile]", "predictive_analytics", _M),
    ),
    Route(
        "GET",
        "/api/lists/{id}/relationships/profiles",
        "get_list_profile_ids",
        _scopes("lists:read", "profiles:read"),
        _L,
        _PAGE | {"filter", "sort"},
    ),
    Route(
        "POST",
        "/api/lists/{id}/relationships/profiles",
        "add_list_profiles",
        _scopes("lists:write", "profiles:write"),
        _M,
        body=True,
    ),
    Route(
        "DELETE",
        "/api/lists/{id}/relationships/profiles",
        "remove_list_profiles",
        _scopes("lists:write", "profiles:write"),
        _M,
        body=True,
    ),
    Route(
        "GET",
        _JOBS,
        "get_jobs",
        _scopes("lists:read", "profiles:read"),
        _M,
        _PAGE | {"fields[profile-bulk-import-job]", "filter", "sort"},
    ),
    Route(
        "POST",
        _JOBS,
        "create_job",
        _scopes("lists:write", "profiles:write"),
        _M,
        frozenset({"fields[profile-bulk-import-job]"}),
        body=True,
    ),
    Route(
        "GET",
        _JOBS + "/{id}",
        "get_job",
        _scopes("lists:read", "profiles:read"),
        _M,
        frozenset({"fields[list]", "fields[profile-bulk-import-job]", "include"}),
    ),
    Route(
        "GET",
        _JOBS + "/{id}/import-errors",
        "get_job_errors",
        _scopes("profiles:read"),
        _M,
        _PAGE | {"fields[import-error]"},
    ),
    Route(
        "GET",
        _JOBS + "/{id}/profiles",
        "get_job_profiles",
        _scopes("profiles:read"),
        _M,
        _PAGE | {"additional-fields[profile]", "fields[profile]"},
    ),
    Route("GET", _JOBS + "/{id}/relationships/profiles", "get_job_profile_ids", _scopes("profiles:read"), _M, _PAGE),
    Route("GET", _JOBS + "/{id}/lists", "get_job_lists", _scopes("lists:read"), _M, frozenset({"fields[list]"})),
    Route("GET", _JOBS + "/{id}/relationships/lists", "get_job_list_ids", _scopes("lists:read"), _M),
    Route(
        "POST",
        "/api/profile-subscription-bulk-create-jobs",
        "subscribe_profiles",
        _scopes("lists:write", "profiles:write", "subscriptions:write"),
        _L,
        body=True,
    ),
    Route(
        "POST",
        "/api/profile-subscription-bulk-delete-jobs",
        "unsubscribe_profiles",
        _scopes("lists:write", "profiles:write", "subscriptions:write"),
        _L,
        body=True,
    ),
)
_COMPILED = tuple((route, route.pattern) for route in ROUTES)


def match_route(method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
    """The route for method and path, its path parameters, and the methods the path allows."""
    allowed: list[str] = []
    for route, pattern in _COMPILED:
        found = pattern.fullmatch(path)
        if found is None:
            continue
        if route.method == method:
            return route, found.groupdict(), allowed
        allowed.append(route.method)
    return None, {}, allowed


# --------------------------------------------------------------------------- request parsing


@dataclass
class Request:
    """One authenticated /api/ call, as the operation handlers see it."""

    route: Route
    params: dict[str, str]
    query: dict[str, str]
    body: bytes
    account: Account
    base: str
    path: str

    @property
    def url(self) -> str:
        query = urlencode(list(self.query.items()))
        return f"{self.base}{self.path}" + (f"?{query}" if query else "")

    def page_url(self, cursor: str) -> str:
        query = dict(self.query)
        query["page[cursor]"] = cursor
        return f"{self.base}{self.path}?{urlencode(list(query.items()))}"


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = JSONAPI
    stream: Iterator[bytes] | None = None


@dataclass(frozen=True)
class Condition:
    op: str
    field: str
    value: Any


def document(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(status, orjson.dumps(payload))


def error_response(error: ApiError) -> Response:
    return Response(error.status, orjson.dumps({"errors": error.errors}), dict(error.headers))


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError.invalid(f"The request body is not valid JSON: {exc}", pointer="/data") from None


def check_revision(value: str | None) -> None:
    if value is None or not value.strip():
        raise ApiError.invalid("Missing required header: revision (format YYYY-MM-DD[.suffix]).", parameter="revision")
    found = _REVISION.fullmatch(value.strip())
    try:
        if found is None:
            raise ValueError(value)
        date(int(found[1]), int(found[2]), int(found[3]))
    except ValueError:
        raise ApiError.invalid(
            f"Invalid revision header {value!r}: use a date in the format YYYY-MM-DD[.suffix].", parameter="revision"
        ) from None


def acceptable(header: str | None) -> bool:
    if header is None or not header.strip():
        return True
    for part in header.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            if param.lower().startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if quality > 0 and media.lower() in _ACCEPTABLE:
            return True
    return False


def page_size(query: dict[str, str], default: int = 20, maximum: int = 100) -> int:
    raw = query.get("page[size]")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise ApiError.invalid(f"page[size] must be an integer from 1 to {maximum}.", parameter="page[size]")
    return int(raw)


def encode_cursor(kind: str, position: int) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_cursor(query: dict[str, str], kind: str) -> int | None:
    raw = query.get("page[cursor]")
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        found_kind, _, position = text.partition(":")
        if found_kind == kind and position.isdigit():
            return int(position)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ApiError.invalid("page[cursor] is not a cursor this endpoint issued.", parameter="page[cursor]")


def sparse(
    query: dict[str, str], resource: str, allowed: frozenset[str], prefixes: tuple[str, ...] = ()
) -> frozenset[str] | None:
    parameter = f"fields[{resource}]"
    raw = query.get(parameter)
    if raw is None:
        return None
    names = frozenset(name.strip() for name in raw.split(",") if name.strip())
    for name in names:
        if name not in allowed and not name.startswith(prefixes):
            raise ApiError.invalid(f"'{name}' is not a valid field for the resource '{resource}'.", parameter=parameter)
    return names


def pick(attributes: dict[str, Any], names: frozenset[str] | None) -> dict[str, Any]:
    if names is None:
        return attributes
    picked = {name: value for name, value in attributes.items() if name in names}
    location_parts = {name[9:] for name in names if name.startswith("location.")}
    if location_parts and "location" not in names and isinstance(attributes.get("location"), dict):
        picked["location"] = {k: v for k, v in attributes["location"].items() if k in location_parts}
    return picked


def _choice_list(query: dict[str, str], parameter: str, allowed: Iterable[str]) -> list[str]:
    raw = query.get(parameter)
    if raw is None:
        return []
    values = [value.strip() for value in raw.split(",") if value.strip()]
    valid = set(allowed)
    for value in values:
        if value not in valid:
            raise ApiError.invalid(f"'{value}' is not a valid value for {parameter}.", parameter=parameter)
    return values


def _sort(query: dict[str, str], allowed: Iterable[str]) -> tuple[str | None, bool]:
    raw = query.get("sort")
    if raw is None:
        return None, False
    if raw not in allowed:
        raise ApiError.invalid(f"'{raw}' is not a valid sort for this endpoint.", parameter="sort")
    return raw.lstrip("-"), raw.startswith("-")


# --------------------------------------------------------------------------- filters

_FILTER_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")|(?P<punct>[(),\[\]])|(?P<word>[^\s(),\[\]'\"]+))"
)


class _FilterParser:
    """Parses Klaviyo's filter syntax: op(field,value) joined by commas or and(...)."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.rstrip()
        while position < len(text):
            found = _FILTER_TOKEN.match(text, position)
            if found is None or found.end() == position:
                raise ValueError(f"unexpected character at {position}")
            kind = found.lastgroup or "word"
            self.tokens.append((kind, found[kind]))
            position = found.end()
        self.index = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, punct: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (punct is not None and token != ("punct", punct)):
            raise ValueError(f"expected {punct or 'a token'}")
        self.index += 1
        return token

    def expressions(self) -> list[tuple[str, str, Any]]:
        found = self.expression()
        while self.peek() == ("punct", ","):
            self.take(",")
            found += self.expression()
        return found

    def expression(self) -> list[tuple[str, str, Any]]:
        kind, op = self.take()
        if kind != "word":
            raise ValueError("expected an operator")
        self.take("(")
        if op == "and":
            found = self.expressions()
            self.take(")")
            return found
        if op in ("or", "not"):
            raise ValueError(f"the {op} operator is not supported here")
        kind, name = self.take()
        if kind != "word":
            raise ValueError("expected a field name")
        self.take(",")
        value = self.value()
        self.take(")")
        return [(op, name, value)]

    def value(self) -> Any:
        kind, text = self.take()
        if kind == "string":
            return re.sub(r"\\(.)", r"\1", text[1:-1])
        if (kind, text) == ("punct", "["):
            items = [self.value()]
            while self.peek() == ("punct", ","):
                self.take(",")
                items.append(self.value())
            self.take("]")
            return items
        if kind == "word":
            return {"true": True, "false": False, "null": None}.get(text, text)
        raise ValueError(f"unexpected {text!r}")


def parse_filter(raw: str | None, allowed: dict[str, set[str]]) -> list[Condition]:
    if raw is None:
        return []
    try:
        parser = _FilterParser(raw)
        parsed = parser.expressions()
        if parser.peek() is not None:
            raise ValueError("unexpected trailing input")
    except ValueError as exc:
        raise ApiError.invalid(f"Invalid filter: {exc}.", parameter="filter") from None
    conditions = []
    for op, name, value in parsed:
        if name not in allowed or op not in allowed[name]:
            raise ApiError.invalid(f"'{op}' is not a valid operator for the field '{name}'.", parameter="filter")
        if op == "any" and not isinstance(value, list):
            raise ApiError.invalid(f"any({name},...) needs a list of values.", parameter="filter")
        if op == "any" and not 1 <= len(value) <= MAX_FILTER_VALUES:
            raise ApiError.invalid(
                f"any({name},...) takes from 1 to {MAX_FILTER_VALUES} values; got {len(value)}.", parameter="filter"
            )
        if name in _DATETIME_FIELDS:
            value = _timestamp(value)
        conditions.append(Condition(op, name, value))
    return conditions


def _timestamp(value: Any) -> float:
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ApiError.invalid(f"{value!r} is not an ISO 8601 datetime.", parameter="filter") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return parsed.timestamp()


def _values(condition: Condition) -> list[Any]:
    return condition.value if isinstance(condition.value, list) else [condition.value]


# --------------------------------------------------------------------------- rendering


def render_job(job: ImportJob, base: str, names: frozenset[str] | None = None) -> dict[str, Any]:
    link = f"{base}{_JOBS}/{job.id}"
    attributes = {
        "status": job.status,
        "created_at": iso(job.created_at),
        "total_count": job.total_count,
        "completed_count": job.completed_count,
        "failed_count": job.failed_count,
        "completed_at": iso(job.completed_at),
        "expires_at": iso(job.expires_at),
        "started_at": iso(job.started_at),
    }
    return {
        "type": "profile-bulk-import-job",
        "id": job.id,
        "attributes": pick(attributes, names),
        "relationships": {
            "lists": {
                "data": [{"type": "list", "id": job.list_id}] if job.list_id else [],
                "links": {"self": f"{link}/relationships/lists", "related": f"{link}/lists"},
            },
            "profiles": {"links": {"self": f"{link}/relationships/profiles", "related": f"{link}/profiles"}},
            "import-errors": {"links": {"related": f"{link}/import-errors"}},
        },
        "links": {"self": link},
    }


def render_list(
    found: SimList, base: str, names: frozenset[str] | None = None, profile_count: bool = False
) -> dict[str, Any]:
    link = f"{base}/api/lists/{found.id}"
    attributes: dict[str, Any] = {
        "name": found.name,
        "created": iso(found.created),
        "updated": iso(found.updated),
        "opt_in_process": found.opt_in_process,
    }
    if profile_count:
        attributes["profile_count"] = len(found)
    if names is not None and profile_count:
        names = names | {"profile_count"}
    return {
        "type": "list",
        "id": found.id,
        "attributes": pick(attributes, names),
        "relationships": {
            "profiles": {"links": {"self": f"{link}/relationships/profiles", "related": f"{link}/profiles"}},
            "tags": {"links": {"self": f"{link}/relationships/tags", "related": f"{link}/tags"}},
            "flow-triggers": {
                "links": {"self": f"{link}/relationships/flow-triggers", "related": f"{link}/flow-triggers"}
            },
        },
        "links": {"self": link},
    }


def render_profile(
    account: Account,
    row: int,
    base: str,
    names: frozenset[str] | None,
    joined: float | None = None,
    consents: ConsentBook | None = None,
) -> dict[str, Any]:
    """A profile resource; consents given: with its subscriptions (additional-fields[profile]=subscriptions)."""
    attributes = account.profiles.record(row)
    attributes["created"] = iso(attributes["created"])
    attributes["updated"] = iso(attributes["updated"])
    if joined is not None:
        attributes["joined_group_at"] = iso(joined)
    if consents is not None:
        attributes["subscriptions"] = consents.render(account, row)
    pid = account.profile_id(row)
    return {
        "type": "profile",
        "id": pid,
        "attributes": pick(attributes, names),
        "links": {"self": f"{base}/api/profiles/{pid}"},
    }


def collection(request: Request, data: list[dict[str, Any]], next_cursor: str | None) -> Response:
    links = {"self": request.url, "next": request.page_url(next_cursor) if next_cursor else None, "prev": None}
    return document({"data": data, "links": links})


def _server_error(status: int) -> Response:
    if status in (502, 504):
        # Gateways in front of Klaviyo answer these with HTML, not JSON:API.
        title = f"{status} {HTTPStatus(status).phrase}"
        body = (
            f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
            "<hr><center>cloudflare</center></body></html>"
        )
        return Response(status, body.encode(), content_type="text/html")
    code, title = (
        ("error", "A server error occurred.") if status == 500 else ("service_unavailable", "Service unavailable.")
    )
    return error_response(ApiError.single(status, code, title, f"Simulated {status} response."))


def _payload_too_large() -> ApiError:
    return ApiError.single(413, "payload_too_large", "Payload too large.", f"The body exceeds {MAX_BODY_BYTES} bytes.")


def _challenge() -> Response:
    body = (
        b'<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title></head>'
        b"<body><noscript>Enable JavaScript and cookies to continue</noscript></body></html>"
    )
    return Response(403, body, {"cf-mitigated": "challenge"}, content_type="text/html; charset=UTF-8")


# --------------------------------------------------------------------------- operations


class KlaviyoApi:
    """The Klaviyo operations the simulator serves; each takes a checked Request and returns a Response."""

    def __init__(self, state: SimState, consents: ConsentBook) -> None:
        self.state = state
        self.consents = consents

    # ---- lists

    def _list(self, request: Request) -> SimList:
        found = self.state.find_list(request.params["id"], request.account)
        if found is None:
            raise ApiError.not_found(f"A list with id {request.params['id']} does not exist.")
        return found

    def get_lists(self, request: Request) -> Response:
        query = request.query
        size = page_size(query, default=10, maximum=10)
        conditions = parse_filter(query.get("filter"), _LIST_FILTERS)
        names = sparse(query, "list", _LIST_FIELDS)
        _choice_list(query, "include", ("flow-triggers", "tags"))
        key, descending = _sort(query, ("created", "-created", "id", "-id", "name", "-name", "updated", "-updated"))
        offset = decode_cursor(query, "lists") or 0
        with self.state.lock:
            lists = list(request.account.lists.values())
        for condition in conditions:
            if condition.field in ("name", "id"):
                wanted = set(_values(condition))
                lists = [item for item in lists if getattr(item, condition.field) in wanted]
            else:
                lists = [item for item in lists if getattr(item, condition.field) > condition.value]
        if key is not None:
            lists.sort(key=lambda item: getattr(item, key), reverse=descending)
        page = lists[offset : offset + size]
        more = offset + size < len(lists)
        data = [render_list(item, request.base, names) for item in page]
        return collection(request, data, encode_cursor("lists", offset + size) if more else None)

    def create_list(self, request: Request) -> Response:
        data = parse_json(request.body)
        resource = data.get("data") if isinstance(data, dict) else None
        if not isinstance(resource, dict) or resource.get("type") != "list":
            raise ApiError.invalid('The body must be {"data": {"type": "list", "attributes": {...}}}.', pointer="/data")
        attributes = resource.get("attributes")
        name = attributes.get("name") if isinstance(attributes, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise ApiError.invalid("name is required.", pointer="/data/attributes/name")
        opt_in = attributes.get("opt_in_process")
        if opt_in not in (None, "single_opt_in", "double_opt_in"):
            raise ApiError.invalid(
                "opt_in_process must be single_opt_in or double_opt_in.", pointer="/data/attributes/opt_in_process"
            )
        created = self.state.create_list(name, request.account)
        created.opt_in_process = opt_in or "single_opt_in"
        names = sparse(request.query, "list", _LIST_FIELDS)
        return document({"data": render_list(created, request.base, names), "links": {"self": request.url}}, 201)

    def get_list(self, request: Request) -> Response:
        found = self._list(request)
        extra = _choice_list(request.query, "additional-fields[list]", ("profile_count",))
        _choice_list(request.query, "include", ("flow-triggers", "tags"))
        names = sparse(request.query, "list", _LIST_FIELDS | {"profile_count"})
        with self.state.lock:
            body = {
                "data": render_list(found, request.base, names, profile_count=bool(extra)),
                "links": {"self": request.url},
            }
        return document(body)

    def update_list(self, request: Request) -> Response:
        found = self._list(request)
        data = parse_json(request.body)
        resource = data.get("data") if isinstance(data, dict) else None
        if not isinstance(resource, dict) or resource.get("type") != "list" or resource.get("id") != found.id:
            raise ApiError.invalid(
                'The body must be {"data": {"type": "list", "id": <this list>, ...}}.', pointer="/data"
            )
        attributes = resource.get("attributes") or {}
        name = attributes.get("name")
        if name is not None:
            if not isinstance(name, str) or not name.strip():
                raise ApiError.invalid("name must be a non-empty string.", pointer="/data/attributes/name")
            found.name = name
        found.updated = self.state.clock()
        return document({"data": render_list(found, request.base, sparse(request.query, "list", _LIST_FIELDS))})

    def delete_list(self, request: Request) -> Response:
        self.state.delete_list(self._list(request).id)
        return Response(204, content_type=None)

    def _member_page(self, request: Request, found: SimList) -> tuple[list[tuple[int, float]], str | None]:
        query = request.query
        size = page_size(query)
        conditions = parse_filter(query.get("filter"), _MEMBER_FILTERS)
        _, descending = _sort(query, ("joined_group_at", "-joined_group_at"))
        cursor = decode_cursor(query, "members")
        store = request.account.profiles
        with self.state.lock:
            start = cursor if cursor is not None else (len(found.order) - 1 if descending else 0)
            candidates: set[int] | None = None
            times: list[Condition] = []
            for condition in conditions:
                if condition.field == "joined_group_at":
                    times.append(condition)
                    continue
                if condition.field == "email":
                    rows = {store.by_email.get(str(value).lower()) for value in _values(condition)}
                elif condition.field == "phone_number":
                    rows = {store.by_phone.get(str(value)) for value in _values(condition)}
                else:
                    rows = set()  # push tokens and exchange ids are not simulated
                rows.discard(None)
                candidates = rows if candidates is None else candidates & rows
            if candidates is None:
                members: Iterable[tuple[int, int, float]] = found.scan(start, descending)
            else:
                slots = sorted(
                    ((found.position[row], row) for row in candidates if row in found.position), reverse=descending
                )
                members = [
                    (slot, row, found.joined[slot])
                    for slot, row in slots
                    if (slot <= start if descending else slot >= start)
                ]
            page: list[tuple[int, float]] = []
            next_cursor = None
            for slot, row, joined in members:
                if not all(_COMPARE[c.op](joined, c.value) for c in times):
                    continue
                if len(page) == size:
                    next_cursor = encode_cursor("members", slot)
                    break
                page.append((row, joined))
        return page, next_cursor

    def get_list_profiles(self, request: Request) -> Response:
        found = self._list(request)
        names = sparse(request.query, "profile", _PROFILE_FIELDS, _PROFILE_FIELD_PREFIXES)
        consents = self._with_subscriptions(request)
        page, next_cursor = self._member_page(request, found)
        with self.state.lock:
            data = [render_profile(request.account, row, request.base, names, joined, consents) for row, joined in page]
        return collection(request, data, next_cursor)

    def _with_subscriptions(self, request: Request) -> ConsentBook | None:
        extra = _choice_list(request.query, "additional-fields[profile]", ("subscriptions", "predictive_analytics"))
        return self.consents if "subscriptions" in extra else None

    def get_profiles(self, request: Request) -> Response:
        """The account's profiles, by row (the order they were created), filtered on their identifiers."""
        query = request.query
        size = page_size(query)
        names = sparse(query, "profile", _PROFILE_FIELDS - {"joined_group_at"}, _PROFILE_FIELD_PREFIXES)
        consents = self._with_subscriptions(request)
        _, descending = _sort(query, ("created", "-created", "id", "-id"))
        conditions = parse_filter(query.get("filter"), _PROFILE_FILTERS)
        cursor = decode_cursor(query, "profiles")
        account = request.account
        store = account.profiles
        with self.state.lock:
            rows: Iterable[int] = self._profile_rows(account, conditions)
            if descending:
                rows = (row for row in reversed(list(rows)) if cursor is None or row <= cursor)
            elif cursor is not None:
                rows = (row for row in rows if row >= cursor)
            times = [(store.created if c.field == "created" else store.updated, c) for c in conditions]
            times = [(column, c) for column, c in times if c.field in ("created", "updated")]
            page: list[int] = []
            next_cursor = None
            for row in rows:
                if not all(_COMPARE[c.op](column[row], c.value) for column, c in times):
                    continue
                if len(page) == size:
                    next_cursor = encode_cursor("profiles", row)
                    break
                page.append(row)
            data = [render_profile(account, row, request.base, names, None, consents) for row in page]
        return collection(request, data, next_cursor)

    @staticmethod
    def _profile_rows(account: Account, conditions: list[Condition]) -> Iterable[int]:
        """The rows the identifier conditions allow, in row order (every row without one)."""
        store = account.profiles
        candidates: set[int] | None = None
        for condition in conditions:
            if condition.field in ("created", "updated"):
                continue
            values = [str(value) for value in _values(condition)]
            if condition.field == "id":
                found = {account.row_of(value) for value in values}
            elif condition.field == "email":
                found = {store.by_email.get(value.lower()) for value in values}
            elif condition.field == "phone_number":
                found = {store.by_phone.get(value) for value in values}
            elif condition.field == "external_id":
                found = {store.by_external_id.get(value) for value in values}
            else:
                found = set()  # exchange ids (_kx) are not simulated
            found.discard(None)
            rows = {row for row in found if row is not None}
            candidates = rows if candidates is None else candidates & rows
        if candidates is None:
            return range(len(store.email))
        return sorted(candidates)

    def get_list_profile_ids(self, request: Request) -> Response:
        found = self._list(request)
        page, next_cursor = self._member_page(request, found)
        data = [{"type": "profile", "id": request.account.profile_id(row)} for row, _ in page]
        return collection(request, data, next_cursor)

    def _relationship_rows(self, request: Request) -> list[int]:
        body = parse_json(request.body)
        entries = body.get("data") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise ApiError.invalid('data must be an array of {"type": "profile", "id": ...}.', pointer="/data")
        if not 1 <= len(entries) <= MAX_LIST_RELATIONSHIP_IDS:
            raise ApiError.invalid(
                f"Send between 1 and {MAX_LIST_RELATIONSHIP_IDS} profiles per request; got {len(entries)}.",
                pointer="/data",
            )
        rows: list[int] = []
        missing: list[dict[str, Any]] = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or entry.get("type") != "profile" or not isinstance(entry.get("id"), str):
                raise ApiError.invalid('Each entry must be {"type": "profile", "id": "..."}.', pointer=f"/data/{index}")
            row = request.account.row_of(entry["id"])
            if row is None:
                if len(missing) < 100:
                    missing.append(
                        error_object(
                            404,
                            "not_found",
                            "Not found.",
                            f"Profile {entry['id']} does not exist.",
                            pointer=f"/data/{index}/id",
                        )
                    )
                continue
            rows.append(row)
        if missing:
            raise ApiError(404, missing)
        return rows

    def add_list_profiles(self, request: Request) -> Response:
        found = self._list(request)
        self.state.change_membership(found, self._relationship_rows(request), add=True)
        return Response(204, content_type=None)

    def remove_list_profiles(self, request: Request) -> Response:
        found = self._list(request)
        self.state.change_membership(found, self._relationship_rows(request), add=False)
        return Response(204, content_type=None)

    # ---- bulk import jobs

    def _job(self, request: Request) -> ImportJob:
        job = self.state.find_job(request.params["id"], request.account)
        if job is None:
            raise ApiError.not_found(f"A bulk import job with id {request.params['id']} does not exist.")
        return job

    def create_job(self, request: Request) -> Response:
        names = sparse(request.query, "profile-bulk-import-job", _JOB_FIELDS)
        scanned = scan_import(request.body) if self.state.config.fast_import else None
        if scanned is not None:
            job = self.state.create_job(request.account, [], scanned.list_id, scanned=scanned)
        else:
            pending, list_id = validate_import(parse_json(request.body))
            job = self.state.create_job(request.account, pending, list_id)
        with self.state.lock:
            data = render_job(job, request.base, names)
        return document({"data": data, "links": {"self": data["links"]["self"]}}, 202)

    def get_jobs(self, request: Request) -> Response:
        query = request.query
        size = page_size(query)
        names = sparse(query, "profile-bulk-import-job", _JOB_FIELDS)
        statuses: set[str] | None = None
        for condition in parse_filter(query.get("filter"), _JOB_FILTERS):
            wanted = set(_values(condition))
            if not wanted <= set(_JOB_STATUSES):
                raise ApiError.invalid(f"status must be one of {', '.join(_JOB_STATUSES)}.", parameter="filter")
            statuses = wanted if statuses is None else statuses & wanted
        _, descending = _sort(query, ("created_at", "-created_at"))
        cursor = decode_cursor(query, "jobs")
        with self.state.lock:
            jobs = request.account.jobs
            start = cursor if cursor is not None else (len(jobs) - 1 if descending else 0)
            positions = range(start, -1, -1) if descending else range(start, len(jobs))
            data: list[dict[str, Any]] = []
            next_cursor = None
            for position in positions:
                job = jobs[position]
                if statuses is not None and job.status not in statuses:
                    continue
                if len(data) == size:
                    next_cursor = encode_cursor("jobs", position)
                    break
                data.append(render_job(job, request.base, names))
        return collection(request, data, next_cursor)

    def get_job(self, request: Request) -> Response:
        job = self._job(request)
        names = sparse(request.query, "profile-bulk-import-job", _JOB_FIELDS)
        include = _choice_list(request.query, "include", ("lists",))
        list_names = sparse(request.query, "list", _LIST_FIELDS)
        with self.state.lock:
            body: dict[str, Any] = {"data": render_job(job, request.base, names), "links": {"self": request.url}}
            if include:
                found = self.state.find_list(job.list_id, request.account) if job.list_id else None
                body["included"] = [render_list(found, request.base, list_names)] if found else []
        return document(body)

    def _offset_page(self, request: Request, kind: str, total: int) -> tuple[range, str | None]:
        size = page_size(request.query)
        offset = decode_cursor(request.query, kind) or 0
        end = min(offset + size, total)
        return range(offset, end), encode_cursor(kind, end) if end < total else None

    def get_job_errors(self, request: Request) -> Response:
        job = self._job(request)
        names = sparse(request.query, "import-error", _ERROR_FIELDS)
        if names is not None and "source.pointer" in names:
            names = names | {"source"}
        with self.state.lock:
            positions, next_cursor = self._offset_page(request, "errors", len(job.errors))
            data = []
            for position in positions:
                error = job.errors[position]
                attributes = {name: error[name] for name in ("code", "title", "detail", "source", "original_payload")}
                data.append({"type": "import-error", "id": error["id"], "attributes": pick(attributes, names)})
        return collection(request, data, next_cursor)

    def get_job_profiles(self, request: Request) -> Response:
        job = self._job(request)
        names = sparse(request.query, "profile", _PROFILE_FIELDS - {"joined_group_at"}, _PROFILE_FIELD_PREFIXES)
        consents = self._with_subscriptions(request)
        with self.state.lock:
            positions, next_cursor = self._offset_page(request, "job-profiles", len(job.profile_rows))
            rows = [job.profile_rows[p] for p in positions]
            data = [render_profile(request.account, row, request.base, names, None, consents) for row in rows]
        return collection(request, data, next_cursor)

    def get_job_profile_ids(self, request: Request) -> Response:
        job = self._job(request)
        with self.state.lock:
            positions, next_cursor = self._offset_page(request, "job-profiles", len(job.profile_rows))
            data = [{"type": "profile", "id": request.account.profile_id(job.profile_rows[p])} for p in positions]
        return collection(request, data, next_cursor)

    def get_job_lists(self, request: Request) -> Response:
        job = self._job(request)
        names = sparse(request.query, "list", _LIST_FIELDS)
        found = self.state.find_list(job.list_id, request.account) if job.list_id else None
        data = [render_list(found, request.base, names)] if found else []
        return collection(request, data, None)

    def get_job_list_ids(self, request: Request) -> Response:
        job = self._job(request)
        return collection(request, [{"type": "list", "id": job.list_id}] if job.list_id else [], None)

    # ---- subscriptions (consent.py, subscriptions.py)

    def _consent_job(self, request: Request, operation: Operation) -> Response:
        job = validate_consent_job(parse_json(request.body), operation, self.state.clock())
        self.consents.apply(request.account, job)
        return Response(202, content_type=None)  # no body: there is no job to poll

    def subscribe_profiles(self, request: Request) -> Response:
        return self._consent_job(request, SUBSCRIBE)

    def unsubscribe_profiles(self, request: Request) -> Response:
        return self._consent_job(request, UNSUBSCRIBE)


# --------------------------------------------------------------------------- admin routes


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(payload: Any, status: int = 200) -> Response:
    return Response(status, orjson.dumps(payload), content_type="application/json")


class Admin:
    """The /_sim/ routes that drive a simulator running in another process."""

    def __init__(self, simulator: KlaviyoSimulator) -> None:
        self.simulator = simulator

    def handle(self, method: str, path: str, query: str, body: bytes) -> Response:
        parts = path.strip("/").split("/")[1:]
        payload = orjson.loads(body) if body else {}
        if not isinstance(payload, dict):
            raise AdminError(400, "the body must be a JSON object")
        sim = self.simulator
        match method, parts:
            case "POST", ["keys"]:
                key = payload.get("key")
                scopes = payload.get("scopes", sorted(ALL_SCOPES))
                if not isinstance(key, str) or not isinstance(scopes, list):
                    raise AdminError(400, 'send {"key": str, "scopes"?: [str], "account"?: str}')
                account = payload.get("account", "default")
                sim.add_api_key(key, scopes, account)
                return _json({"key": key, "scopes": sorted(scopes), "account": account}, 201)
            case "POST", ["lists"]:
                name = payload.get("name")
                if not isinstance(name, str):
                    raise AdminError(400, 'send {"name": str, "list_id"?: str, "account"?: str}')
                list_id = sim.create_list(name, payload.get("account", "default"), payload.get("list_id"))
                return _json({"id": list_id}, 201)
            case "GET", ["lists", list_id, "members"]:
                if sim.state.find_list(list_id) is None:
                    raise AdminError(404, f"no list {list_id}")
                if dict(parse_qsl(query)).get("count_only") in ("1", "true"):
                    return _json({"count": sim.list_member_count(list_id)})
                return Response(200, content_type="application/json", stream=_member_stream(sim.state, list_id))
            case "DELETE", ["lists", list_id]:
                if not sim.state.delete_list(list_id):
                    raise AdminError(404, f"no list {list_id}")
                return Response(204, content_type=None)
            case "GET", ["consent"]:
                identifier = dict(parse_qsl(query)).get("identifier", "")
                view = sim.consent_of(identifier, dict(parse_qsl(query)).get("account", "default"))
                if view is None:
                    raise AdminError(404, "no profile with that identifier")
                return _json(_consent_json(view))
            case "GET", ["stats"]:
                return _json(sim.stats)
            case "GET", ["config"]:
                return _json(sim.config.as_dict())
            case "POST", ["config"]:
                sim.configure(**payload)
                return _json(sim.config.as_dict())
        raise AdminError(404, f"no admin route {method} {path}")


def _consent_json(view: ConsentView) -> dict[str, Any]:
    return {
        "profile_id": view.profile_id,
        "channels": {
            name: {**vars(consent), "timestamp": iso(consent.timestamp)} for name, consent in view.channels.items()
        },
        "pending": {list_id or "": list(channels) for list_id, channels in view.pending.items()},
        "suppressions": sorted(view.suppressions),
        "lists": sorted(view.lists),
        "confirmations_sent": view.confirmations_sent,
    }


def _member_stream(state: SimState, list_id: str) -> Iterator[bytes]:
    yield b"["
    first = True
    for batch in state.member_records(list_id):
        if not batch:
            continue
        encoded = orjson.dumps(batch)[1:-1]
        yield encoded if first else b"," + encoded
        first = False
    yield b"]"


# --------------------------------------------------------------------------- HTTP


_JOB_ROUTE = re.compile(r"/api/profile-bulk-import-jobs(?:/[^/]+)?/?")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], simulator: KlaviyoSimulator) -> None:
        self.simulator = simulator
        self.api = KlaviyoApi(simulator.state, simulator.consents)
        self.admin = Admin(simulator)
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KlaviyoSimulator/1.0"
    disable_nagle_algorithm = True
    timeout = 300
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.open_connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class names it so
        log.debug("%s " + format, self.address_string(), *args)

    def dispatch(self) -> None:
        target, _, query = self.path.partition("?")
        if not _JOB_ROUTE.fullmatch(target):  # creating and reading jobs leave the store unread
            self.server.simulator.state.settle()
        if target == "/_sim" or target.startswith("/_sim/"):
            self._admin(target, query)
        else:
            self._api(target, query)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_OPTIONS = dispatch

    # ---- body and response I/O

    def _content_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            return 0

    def _read_body(self) -> bytes | None:
        """The whole request body, or None when it is too large to read (the connection then closes)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = self._content_length()
        if length > _MAX_READ_BYTES:
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes | None:
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > _MAX_READ_BYTES:
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline(3)

    def _reset(self) -> None:
        """Reads part of the body, then drops the connection with a TCP reset and no response."""
        length = self._content_length()
        if length:
            self.rfile.read(min(length // 2, 65536))
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _write(self, response: Response) -> None:
        head = [f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}", f"Date: {self.date_time_string()}"]
        head.append(f"Server: {self.server_version}")
        if response.content_type:
            head.append(f"Content-Type: {response.content_type}")
        if response.stream is not None:
            head.append("Transfer-Encoding: chunked")
        elif response.status != 204:
            head.append(f"Content-Length: {len(response.body)}")
        head.extend(f"{name}: {value}" for name, value in response.headers.items())
        if self.close_connection:
            head.append("Connection: close")
        prefix = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if response.stream is None:
            # One write: headers and body in separate segments would wait on delayed ACKs.
            self.wfile.write(prefix + response.body)
            return
        self.wfile.write(prefix)
        for chunk in response.stream:
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")

    # ---- admin

    def _admin(self, target: str, query: str) -> None:
        body = self._read_body()
        if body is None:
            self.close_connection = True
            response = _json({"error": "body too large"}, 413)
        else:
            try:
                response = self.server.admin.handle(self.command, target.rstrip("/"), query, body)
            except AdminError as exc:
                response = _json({"error": str(exc)}, exc.status)
            except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as exc:
                response = _json({"error": str(exc)}, 400)
        self._write(response)

    # ---- api

    def _api(self, target: str, query: str) -> None:
        simulator = self.server.simulator
        stats = simulator.state.stats
        path = target.rstrip("/") or "/"
        route, params, allowed = match_route(self.command, path)
        stats.count(stats.requests, f"{self.command} {route.template if route else '(unmatched)'}")
        fault = simulator.faults.decide() if path == "/api" or path.startswith("/api/") else NO_FAULT
        if fault.kind == "reset":
            stats.count(stats.faults, "reset")
            self._reset()
            return
        body = self._read_body()
        if body is None:
            self.close_connection = True
            response = error_response(_payload_too_large())
        else:
            try:
                response = self._api_response(route, params, allowed, path, query, body, fault)
            except ApiError as exc:
                response = error_response(exc)
        if fault.delay:
            stats.count(stats.faults, "slow")
            time.sleep(fault.delay)
        stats.count(stats.responses, str(response.status))
        self._write(response)

    def _api_response(
        self,
        route: Route | None,
        params: dict[str, str],
        allowed: list[str],
        path: str,
        query: str,
        body: bytes,
        fault: Fault,
    ) -> Response:
        simulator = self.server.simulator
        state = simulator.state
        if fault.kind is not None:
            state.stats.count(state.stats.faults, fault.kind)
            if fault.kind == "storm":
                raise ApiError.throttled(fault.retry_after)
            return _server_error(fault.status) if fault.kind == "error" else _challenge()
        if route is None:
            if allowed:
                raise ApiError(
                    405,
                    [
                        error_object(
                            405,
                            "method_not_allowed",
                            f'Method "{self.command}" not allowed.',
                            f"Allowed: {', '.join(allowed)}.",
                        )
                    ],
                    {"Allow": ", ".join(allowed)},
                )
            raise ApiError.not_found(f"No API route matches {path}.")
        api_key = self._authenticate(state)
        check_revision(self.headers.get("revision"))
        if not acceptable(self.headers.get("Accept")):
            raise ApiError.single(
                406,
                "not_acceptable",
                "Could not satisfy the request Accept header.",
                f"Accept {JSONAPI} or application/json.",
            )
        parsed_query = dict(parse_qsl(query, keep_blank_values=True))
        decision = RateDecision(True)
        if state.config.rate_limits:
            group, limit = route.limit_for(parsed_query)
            decision = state.rate_limiter.acquire(api_key.account.name, group, limit)
            if not decision.allowed:
                raise ApiError.throttled(decision.retry_after)
        missing = route.scopes - api_key.scopes
        if missing:
            raise ApiError.single(
                403,
                "permission_denied",
                "You do not have permission to perform this action.",
                f"This API key is missing the scope(s): {', '.join(sorted(missing))}.",
            )
        if body or route.body:
            content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if content_type not in _BODY_TYPES:
                raise ApiError.single(
                    415,
                    "unsupported_media_type",
                    f'Unsupported media type "{content_type}" in request.',
                    f"Send the body as {JSONAPI}.",
                )
        if len(body) > MAX_BODY_BYTES:
            raise _payload_too_large()
        if route.body and not body:
            raise ApiError.invalid("This request needs a JSON:API body.", pointer="/data")
        for name in parsed_query:
            if name not in route.query:
                raise ApiError.invalid(f"'{name}' is not a valid query parameter for this endpoint.", parameter=name)
        host = self.headers.get("Host") or simulator.url.split("://", 1)[-1]
        request = Request(route, params, parsed_query, body, api_key.account, f"http://{host}", path)
        response: Response = getattr(self.server.api, route.action)(request)
        if 200 <= response.status < 300 and state.config.rate_limit_headers:
            response.headers.update(decision.headers)
        return response

    def _authenticate(self, state: SimState) -> ApiKey:
        header = self.headers.get("Authorization")
        scheme, _, key = (header or "").partition(" ")
        if scheme != "Klaviyo-API-Key" or not key.strip():
            raise ApiError.single(
                401,
                "not_authenticated",
                "Authentication credentials were not provided.",
                "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
            )
        api_key = state.authenticate(key.strip())
        if api_key is None:
            raise ApiError.single(
                401,
                "not_authenticated",
                "Incorrect authentication credentials.",
                "Incorrect authentication credentials.",
            )
        return api_key


# --------------------------------------------------------------------------- public API


class KlaviyoSimulator:
    """A Klaviyo API simulator on a local port, driven from Python or through its /_sim/ admin routes."""

    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SimulatorConfig()
        self.state = SimState(self.config)
        self.consents = ConsentBook(self.state)
        self.faults = FaultInjector(self.config)
        self.url = ""
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        if self._server is not None:
            return self.url
        server = _Server(self._address, self)
        host, port = server.server_address[:2]
        self.url = f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"
        self.state.start()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.state.stop()

    def __enter__(self) -> KlaviyoSimulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add_api_key(self, key: str, scopes: Iterable[str] = ALL_SCOPES, account: str = "default") -> None:
        self.state.add_api_key(key, scopes, account)

    def remove_api_key(self, key: str) -> None:
        """Revokes a key: its next request gets 401."""
        if not self.state.remove_api_key(key):
            raise KeyError(key)

    def create_list(
        self, name: str, account: str = "default", list_id: str | None = None, opt_in_process: str = "single_opt_in"
    ) -> str:
        if opt_in_process not in OPT_IN_PROCESSES:
            raise ValueError(f"opt_in_process must be one of {', '.join(OPT_IN_PROCESSES)}")
        created = self.state.create_list(name, account, list_id)
        created.opt_in_process = opt_in_process
        return created.id

    def list_members(self, list_id: str) -> list[dict[str, Any]]:
        self.state.settle()
        return [record for batch in self.state.member_records(list_id) for record in batch]

    def list_member_count(self, list_id: str) -> int:
        self.state.settle()
        found = self.state.find_list(list_id)
        if found is None:
            raise KeyError(list_id)
        return len(found)

    def delete_list(self, list_id: str) -> None:
        if not self.state.delete_list(list_id):
            raise KeyError(list_id)

    def configure(self, **changes: Any) -> None:
        self.config = self.config.changed(**changes)
        self.state.reconfigure(self.config)
        self.faults.reconfigure(self.config)

    def wait_for_jobs(self, timeout: float = 30.0) -> bool:
        """True once every import job has completed, False if timeout passes first."""
        return self.state.wait_for_jobs(timeout)

    # ---- consent (consent.ConsentBook)

    def consent_of(self, identifier: str, account: str = "default") -> ConsentView | None:
        """The consent of the profile with this email or phone number (None: no such profile)."""
        return self.consents.consent_of(identifier, account)

    def subscribed(self, list_id: str, channel: str) -> set[str]:
        """Members of the list subscribed to marketing on the channel ("email": their emails, "sms": phones)."""
        return self.consents.subscribed(list_id, channel)

    def confirm(self, identifier: str, list_id: str | None, account: str = "default") -> bool:
        """The profile answers its double opt-in confirmation; False when none was waiting."""
        return self.consents.confirm(identifier, list_id, account)

    def suppress(self, email: str, reason: str = "SPAM_REPORT", account: str = "default") -> None:
        self.consents.suppress(email, reason, account)

    def set_default_opt_in(self, process: str, account: str = "default") -> None:
        """The account's opt-in process for subscriptions made without a list (single_opt_in at first)."""
        self.consents.set_default_opt_in(process, account)

    @property
    def stats(self) -> dict[str, Any]:
        return {**self.state.stats.snapshot(), "subscriptions": self.consents.counts()}
