"""Validation of Klaviyo's bulk subscription bodies (profile-subscription-bulk-create-job and
profile-subscription-bulk-delete-job), as the OpenAPI description of revision 2026-07-15 gives them.

A body is checked all or nothing, like a bulk import: one bad profile fails the request with 400, and
each bad profile gets an error whose pointer names the field. What the checks produce is a ConsentJob:
the list, the historical_import flag and, for each profile, its identifiers and the consents it asks
for (applied by consent.ConsentBook).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from .state import ApiError, error_object, valid_email

MAX_SUBSCRIBE_PROFILES = 1_000
MAX_UNSUBSCRIBE_PROFILES = 100
_MAX_ERRORS = 100
_PHONE_DIGITS = 15


class ChannelSpec(NamedTuple):
    """One channel of a subscriptions object: the message types it takes and the identifier it needs."""

    kinds: frozenset[str]
    identifier: str
    # The types whose parameters carry consented_at (open tracking has consent alone).
    dated: frozenset[str]


@dataclass(frozen=True)
class Operation:
    """What one of the two endpoints accepts."""

    job_type: str
    consent: str
    max_profiles: int
    job_attributes: frozenset[str]
    profile_keys: frozenset[str]
    profile_attributes: frozenset[str]
    channels: dict[str, ChannelSpec]


_EMAIL = ChannelSpec(frozenset({"marketing", "open_tracking"}), "email", frozenset({"marketing"}))
_SMS = ChannelSpec(frozenset({"marketing", "transactional"}), "phone_number", frozenset({"marketing", "transactional"}))

SUBSCRIBE = Operation(
    job_type="profile-subscription-bulk-create-job",
    consent="SUBSCRIBED",
    max_profiles=MAX_SUBSCRIBE_PROFILES,
    job_attributes=frozenset({"profiles", "historical_import", "custom_source"}),
    profile_keys=frozenset({"type", "id", "attributes"}),
    profile_attributes=frozenset({"email", "phone_number", "subscriptions", "age_gated_date_of_birth"}),
    channels={"email": _EMAIL, "sms": _SMS, "whatsapp": _SMS},
)
UNSUBSCRIBE = Operation(
    job_type="profile-subscription-bulk-delete-job",
    consent="UNSUBSCRIBED",
    max_profiles=MAX_UNSUBSCRIBE_PROFILES,
    job_attributes=frozenset({"profiles"}),
    profile_keys=frozenset({"type", "attributes"}),
    profile_attributes=frozenset({"email", "phone_number", "subscriptions"}),
    channels={
        "email": ChannelSpec(_EMAIL.kinds, "email", frozenset()),
        "sms": ChannelSpec(_SMS.kinds, "phone_number", frozenset()),
        "whatsapp": ChannelSpec(_SMS.kinds | {"conversational"}, "phone_number", frozenset()),
    },
)
# Push needs device tokens, which the simulator does not keep: a request naming it is refused, not ignored.
_NOT_SIMULATED = frozenset({"push"})


class ConsentChange(NamedTuple):
    """One consent a profile asks for: channel ("email", "sms", "whatsapp"), message type
    ("marketing", ...) and, for a historical import, when consent was collected (epoch seconds)."""

    channel: str
    kind: str
    consented_at: float | None


class ProfileRequest(NamedTuple):
    position: int  # in the request's profiles array
    profile_id: str | None
    email: str | None  # lower-cased, as profiles are matched
    phone_number: str | None
    changes: tuple[ConsentChange, ...]


class ConsentJob(NamedTuple):
    """A checked subscribe or unsubscribe request."""

    subscribe: bool
    list_id: str | None
    historical_import: bool
    custom_source: str | None
    profiles: list[ProfileRequest]


class _Problem(Exception):
    """One profile's first problem: the pointer below the profile and what is wrong."""

    def __init__(self, suffix: str, detail: str) -> None:
        super().__init__(detail)
        self.suffix = suffix
        self.detail = detail


def valid_phone(value: object) -> bool:
    """E.164: a plus, a non-zero country code digit, at most 15 digits in all."""
    return (
        type(value) is str
        and value.startswith("+")
        and value[1:].isdigit()
        and value[1:].isascii()
        and value[1] != "0"
        and 7 <= len(value) - 1 <= _PHONE_DIGITS
    )


def parse_datetime(value: object) -> float | None:
    """An ISO 8601 date-time as epoch seconds (no offset means UTC), or None when it is not one."""
    if type(value) is not str or "T" not in value.upper():
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def validate_consent_job(document: object, operation: Operation, now: float) -> ConsentJob:
    """Checks a bulk subscribe or unsubscribe body all or nothing; returns the job or raises ApiError."""
    if type(document) is not dict or type(document.get("data")) is not dict:
        raise ApiError.invalid("The request body must be a JSON:API document with a data object.", pointer="/data")
    data = document["data"]
    if data.get("type") != operation.job_type:
        raise ApiError.invalid(f"type must be '{operation.job_type}'.", pointer="/data/type")
    _no_unknown(data, {"type", "attributes", "relationships"}, "/data", "this resource")
    attributes = data.get("attributes")
    if type(attributes) is not dict:
        raise ApiError.invalid("attributes must be an object.", pointer="/data/attributes")
    _no_unknown(attributes, operation.job_attributes, "/data/attributes", f"the resource '{operation.job_type}'")
    historical = attributes.get("historical_import")
    if historical is not None and type(historical) is not bool:
        raise ApiError.invalid("historical_import must be true or false.", pointer="/data/attributes/historical_import")
    source = attributes.get("custom_source")
    if source is not None and type(source) is not str:
        raise ApiError.invalid("custom_source must be a string.", pointer="/data/attributes/custom_source")
    profiles = attributes.get("profiles")
    if type(profiles) is not dict or type(profiles.get("data")) is not list:
        raise ApiError.invalid("profiles.data must be an array of profiles.", pointer="/data/attributes/profiles")
    _no_unknown(profiles, {"data"}, "/data/attributes/profiles", "profiles")
    items = profiles["data"]
    if not 1 <= len(items) <= operation.max_profiles:
        raise ApiError.invalid(
            f"Send between 1 and {operation.max_profiles} profiles per request; got {len(items)}.",
            pointer="/data/attributes/profiles/data",
        )
    list_id = _list_id(data.get("relationships"))
    checker = _ProfileChecker(operation, bool(historical), now)
    accepted: list[ProfileRequest] = []
    errors: list[dict[str, Any]] = []
    for index, resource in enumerate(items):
        try:
            accepted.append(checker.check(index, resource))
        except _Problem as problem:
            pointer = f"/data/attributes/profiles/data/{index}{problem.suffix}"
            errors.append(error_object(400, "invalid", "Invalid input.", problem.detail, pointer=pointer))
            if len(errors) >= _MAX_ERRORS:
                break
    if errors:
        raise ApiError(400, errors)
    return ConsentJob(operation is SUBSCRIBE, list_id, bool(historical), source, accepted)


def _no_unknown(members: dict[str, Any], allowed: frozenset[str] | set[str], pointer: str, what: str) -> None:
    unknown = sorted(members.keys() - allowed)
    if unknown:
        raise ApiError.invalid(f"'{unknown[0]}' is not a valid field for {what}.", pointer=f"{pointer}/{unknown[0]}")


def _list_id(relationships: object) -> str | None:
    """The list of relationships.list (optional: without one the account's opt-in setting applies)."""
    if relationships is None:
        return None
    if type(relationships) is not dict:
        raise ApiError.invalid("relationships must be an object.", pointer="/data/relationships")
    _no_unknown(relationships, {"list"}, "/data/relationships", "relationships")
    if "list" not in relationships:
        return None
    link = relationships["list"]
    if type(link) is not dict or type(link.get("data")) is not dict:
        raise ApiError.invalid(
            'relationships.list must be {"data": {"type": "list", "id": ...}}.', pointer="/data/relationships/list/data"
        )
    entry = link["data"]
    if entry.get("type") != "list":
        raise ApiError.invalid("type must be 'list'.", pointer="/data/relationships/list/data/type")
    list_id = entry.get("id")
    if type(list_id) is not str or not list_id:
        raise ApiError.invalid("id must be the list's id.", pointer="/data/relationships/list/data/id")
    _no_unknown(entry, {"type", "id"}, "/data/relationships/list/data", "a list identifier")
    return list_id


class _ProfileChecker:
    """Checks one profile resource of a request and reads what it asks for."""

    def __init__(self, operation: Operation, historical: bool, now: float) -> None:
        self.operation = operation
        self.historical = historical
        self.now = now

    def check(self, index: int, resource: object) -> ProfileRequest:
        operation = self.operation
        if type(resource) is not dict:
            raise _Problem("", "Each profile must be a resource object.")
        if resource.get("type") != "profile":
            raise _Problem("/type", "type must be 'profile'.")
        _member_check(resource, operation.profile_keys, "", "a profile resource object")
        profile_id = resource.get("id")
        if profile_id is not None and type(profile_id) is not str:
            raise _Problem("/id", "id must be a string.")
        attributes = resource.get("attributes")
        if type(attributes) is not dict:
            raise _Problem("/attributes", "attributes must be an object.")
        _member_check(attributes, operation.profile_attributes, "/attributes", "the resource 'profile'")
        email, phone = attributes.get("email"), attributes.get("phone_number")
        if email is None and phone is None:
            raise _Problem("/attributes", "Either email or phone_number is required.")
        if email is not None and not valid_email(email):
            raise _Problem("/attributes/email", "Invalid email address.")
        if phone is not None and not valid_phone(phone):
            raise _Problem(
                "/attributes/phone_number", "Invalid phone number format (Example of a valid format: +13239169023)."
            )
        birth = attributes.get("age_gated_date_of_birth")
        if birth is not None and not _is_date(birth):
            raise _Problem("/attributes/age_gated_date_of_birth", "age_gated_date_of_birth must be a YYYY-MM-DD date.")
        changes = self._changes(attributes.get("subscriptions"), attributes)
        return ProfileRequest(index, profile_id, email.lower() if email else None, phone, changes)

    def _changes(self, subscriptions: object, attributes: dict[str, Any]) -> tuple[ConsentChange, ...]:
        pointer = "/attributes/subscriptions"
        if type(subscriptions) is not dict:
            raise _Problem(pointer, "subscriptions is required: an object naming the channels.")
        changes: list[ConsentChange] = []
        for channel, parameters in subscriptions.items():
            spec = self.operation.channels.get(channel)
            if channel in _NOT_SIMULATED:
                raise _Problem(f"{pointer}/{channel}", f"The simulator does not model {channel} subscriptions.")
            if spec is None:
                raise _Problem(f"{pointer}/{channel}", f"'{channel}' is not a valid channel.")
            if parameters is None:
                continue
            if type(parameters) is not dict:
                raise _Problem(f"{pointer}/{channel}", f"{channel} must be an object.")
            _member_check(parameters, spec.kinds, f"{pointer}/{channel}", f"the {channel} channel")
            for kind, value in parameters.items():
                if value is not None:
                    changes.append(self._change(channel, kind, value, spec, f"{pointer}/{channel}/{kind}"))
            if attributes.get(spec.identifier) is None and any(c.channel == channel for c in changes):
                raise _Problem(f"/attributes/{spec.identifier}", f"The {channel} channel needs {spec.identifier}.")
        if not changes:
            raise _Problem(pointer, "Name at least one channel and message type.")
        return tuple(changes)

    def _change(self, channel: str, kind: str, value: object, spec: ChannelSpec, pointer: str) -> ConsentChange:
        consent = self.operation.consent
        if type(value) is not dict:
            raise _Problem(pointer, f"{kind} must be an object.")
        dated = kind in spec.dated
        _member_check(value, {"consent", "consented_at"} if dated else {"consent"}, pointer, f"{channel}.{kind}")
        if value.get("consent") != consent:
            raise _Problem(f"{pointer}/consent", f"consent must be '{consent}'.")
        raw = value.get("consented_at")
        if not dated:
            return ConsentChange(channel, kind, None)
        if not self.historical:
            if raw is not None:
                raise _Problem(
                    f"{pointer}/consented_at", "consented_at is only allowed when historical_import is true."
                )
            return ConsentChange(channel, kind, None)
        if raw is None:
            raise _Problem(f"{pointer}/consented_at", "consented_at is required when historical_import is true.")
        when = parse_datetime(raw)
        if when is None:
            raise _Problem(f"{pointer}/consented_at", "consented_at must be an ISO 8601 date-time.")
        if when > self.now:
            raise _Problem(f"{pointer}/consented_at", "consented_at must be in the past.")
        return ConsentChange(channel, kind, when)


def _member_check(members: dict[str, Any], allowed: frozenset[str] | set[str], pointer: str, what: str) -> None:
    unknown = sorted(members.keys() - allowed)
    if unknown:
        raise _Problem(f"{pointer}/{unknown[0]}", f"'{unknown[0]}' is not a valid field for {what}.")


def _is_date(value: object) -> bool:
    if type(value) is not str:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10
