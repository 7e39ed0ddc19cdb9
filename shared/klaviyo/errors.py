"""Klaviyo's failed answers sorted once, in one table: which stop the run, and what each one says."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import orjson
import requests

from shared.privacy import redact

# The statuses that are worth sending again: throttling, and the server's passing failures.
RETRY_STATUSES = (429, 500, 502, 503, 504, 524)


class KlaviyoError(Exception):
    """A Klaviyo call failed; `fatal` errors (bad key, missing scope, unknown list) stop the run."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        fatal: bool = False,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.fatal = status, code, fatal
        self.errors = errors or []


class InvalidPayload(KlaviyoError):
    """Klaviyo refused a whole import job (400) because of one or more profiles in it."""


@dataclass(frozen=True)
class ErrorRule:
    """How one kind of failed answer is reported.

    `message` is a template with the fields what (the call), status, code and detail (Klaviyo's own
    words, redacted). `shown_code` stands in the message when Klaviyo's answer names no code, and
    `code` replaces the answer's code on the error when set. An `invalid_payload` rule raises
    InvalidPayload carrying Klaviyo's list of errors, whose pointers name the profiles at fault."""

    fatal: bool
    message: str
    shown_code: str | None = None
    code: str | None = None
    invalid_payload: bool = False


FATAL, NOT_FATAL = True, False

# A 403 from Klaviyo's edge asking for a browser (it sometimes challenges cloud addresses): it says
# nothing about the key's scopes, and the client retries it before it gets here.
CHALLENGE = "challenge"

_SCOPES_NEEDED = "Needed: profiles:read, profiles:write, lists:read, lists:write"
_ANSWERED = "{what}: Klaviyo answered {status}: {detail}"
_KEPT_FAILING = "{what}: Klaviyo kept failing ({status}) after retries"

# What each status (or the challenge) means; a status not listed is reported with OTHER_STATUS.
ERROR_RULES: dict[int | str, ErrorRule] = {
    401: ErrorRule(
        FATAL, "{what}: Klaviyo rejected the API key (401 {code}): {detail}", shown_code="not_authenticated"
    ),
    CHALLENGE: ErrorRule(
        NOT_FATAL,
        "{what}: Klaviyo's edge kept answering with a browser challenge (403); try again later",
        code=CHALLENGE,
    ),
    403: ErrorRule(
        FATAL,
        "{what}: the API key lacks a required scope (403 {code}): {detail}. " + _SCOPES_NEEDED,
        shown_code="permission_denied",
    ),
    404: ErrorRule(FATAL, "{what}: not found in this Klaviyo account (404)"),
    400: ErrorRule(NOT_FATAL, "{what}: Klaviyo refused the request (400): {detail}", invalid_payload=True),
    **{status: ErrorRule(NOT_FATAL, _KEPT_FAILING) for status in RETRY_STATUSES},
    # Method not allowed, body too large, wrong content type: sending the same again cannot help.
    405: ErrorRule(FATAL, _ANSWERED),
    413: ErrorRule(FATAL, _ANSWERED),
    415: ErrorRule(FATAL, _ANSWERED),
}
OTHER_STATUS = ErrorRule(NOT_FATAL, _ANSWERED)


def is_challenge(response: requests.Response) -> bool:
    return response.status_code == 403 and response.headers.get("cf-mitigated", "").lower() == "challenge"


def error_for(response: requests.Response, what: str) -> KlaviyoError:
    """The error a failed answer to the call `what` raises, as ERROR_RULES says."""
    status = response.status_code
    errors: list[dict[str, Any]] = []
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError):  # proxies and challenges send HTML
        errors = orjson.loads(response.content).get("errors") or []
    first = errors[0] if errors else {}
    code, detail = first.get("code"), redact(str(first.get("detail") or first.get("title") or response.reason))
    rule = ERROR_RULES.get(CHALLENGE if is_challenge(response) else status, OTHER_STATUS)
    message = rule.message.format(what=what, status=status, code=code or rule.shown_code, detail=detail)
    if rule.invalid_payload:
        return InvalidPayload(message, status, code, errors=errors)
    return KlaviyoError(message, status, rule.code or code, fatal=rule.fatal)
