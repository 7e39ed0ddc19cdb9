"""In-memory Klaviyo accounts for the simulator: keys, profiles, lists, import jobs and rate limits."""

from __future__ import annotations

import functools
import heapq
import math
import random
import re
import secrets
import string
import threading
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

ALL_SCOPES: frozenset[str] = frozenset(
    {
        "lists:read",
        "lists:write",
        "profiles:read",
        "profiles:write",
        "subscriptions:read",
        "subscriptions:write",
    }
)

# Klaviyo says "5MB" and "100KB" without saying which kilo; the decimal reading is the
# smaller one, so a client that passes here also passes against the real API.
MAX_BODY_BYTES = 5_000_000
MAX_PROFILE_BYTES = 100_000
MAX_PROFILES_PER_JOB = 10_000
MAX_LIST_RELATIONSHIP_IDS = 1_000
MAX_VALIDATION_ERRORS = 100
JOB_TTL_SECONDS = 7 * 24 * 3600
APPLY_CHUNK = 500

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LIST_ID_ALPHABET = string.ascii_letters + string.digits
# Profile ids are an invertible scramble of (account number, row), written like Klaviyo's
# 26-character ids, so a lookup by id needs no extra index over millions of profiles.
_ID_BITS = 96
_ID_MASK = (1 << _ID_BITS) - 1
_ID_MULTIPLIER = 0x9E3779B97F4A7C15F39CC061  # odd, so invertible modulo 2**96
_ID_INVERSE = pow(_ID_MULTIPLIER, -1, 1 << _ID_BITS)
_ID_SALT = 0x5A17C3E9D2B4F6081E3D5C7B
_ID_HEX = frozenset("0123456789ABCDEF")


@dataclass
class SimulatorConfig:
    """Behaviour of one simulator: rate limiting, job timing and injected faults."""

    rate_limits: bool = True
    # False answers without RateLimit-* headers, as behind a proxy that strips them; a 429 still
    # carries Retry-After.
    rate_limit_headers: bool = True
    processing_seconds: float = 0.05
    processing_seconds_per_profile: float = 0.0
    error_rate: float = 0.0
    throttle_storm_every: float = 0.0
    throttle_storm_seconds: float = 0.0
    reset_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    challenge_rate: float = 0.0
    profile_failure_rate: float = 0.0
    seed: int | None = None
    # False keeps only each profile's identifiers (list members are still counted and matched
    # exactly; attributes read back are empty): for benchmarks of millions of profiles.
    keep_attributes: bool = True
    # True reads a bulk import body by a scan for its profiles' emails instead of a full parse and
    # validation (see scan_import), so the simulator's own cost stays small next to the client's
    # when both share a small machine: for benchmarks only.
    fast_import: bool = False

    def __post_init__(self) -> None:
        for name in ("error_rate", "reset_rate", "slow_rate", "challenge_rate", "profile_failure_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        for name in (
            "processing_seconds",
            "processing_seconds_per_profile",
            "throttle_storm_every",
            "throttle_storm_seconds",
            "slow_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    def changed(self, **changes: Any) -> SimulatorConfig:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown simulator setting(s): {', '.join(unknown)}")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def error_object(
    status: int,
    code: str,
    title: str,
    detail: str,
    *,
    pointer: str | None = "/data",
    parameter: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    source: dict[str, str] = {"parameter": parameter} if parameter is not None else {"pointer": pointer or "/data"}
    return {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code,
        "title": title,
        "detail": detail,
        "source": source,
        "links": {},
        "meta": meta or {},
    }


class ApiError(Exception):
    """A JSON:API error response: status, its error objects and extra headers."""

    def __init__(self, status: int, errors: list[dict[str, Any]], headers: dict[str, str] | None = None) -> None:
        super().__init__(errors[0]["detail"] if errors else str(status))
        self.status = status
        self.errors = errors
        self.headers = headers or {}

    @classmethod
    def single(
        cls,
        status: int,
        code: str,
        title: str,
        detail: str,
        *,
        pointer: str | None = "/data",
        parameter: str | None = None,
        headers: dict[str, str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> ApiError:
        return cls(
            status,
            [error_object(status, code, title, detail, pointer=pointer, parameter=parameter, meta=meta)],
            headers,
        )

    @classmethod
    def invalid(cls, detail: str, *, pointer: str | None = "/data", parameter: str | None = None) -> ApiError:
        return cls.single(400, "invalid", "Invalid input.", detail, pointer=pointer, parameter=parameter)

    @classmethod
    def not_found(cls, detail: str = "Not found.") -> ApiError:
        return cls.single(404, "not_found", "Not found.", detail)

    @classmethod
    def throttled(cls, retry_after: int) -> ApiError:
        unit = "second" if retry_after == 1 else "seconds"
        return cls.single(
            429,
            "throttled",
            "Request was throttled.",
            f"Request was throttled. Expected available in {retry_after} {unit}.",
            headers={"Retry-After": str(retry_after)},
        )


def crockford(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        out.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(out))


def profile_id(account_number: int, row: int) -> str:
    packed = ((account_number << 48) | row) ^ _ID_SALT
    return f"01{(packed * _ID_MULTIPLIER) & _ID_MASK:024X}"


def parse_profile_id(pid: str) -> tuple[int, int] | None:
    if len(pid) != 26 or not pid.startswith("01") or not _ID_HEX.issuperset(pid):
        return None
    packed = ((int(pid[2:], 16) * _ID_INVERSE) & _ID_MASK) ^ _ID_SALT
    return packed >> 48, packed & ((1 << 48) - 1)


def iso(timestamp: float | None) -> str | None:
    """ISO 8601 in UTC, the way Klaviyo writes its timestamps."""
    return None if timestamp is None else _iso(timestamp)


@functools.lru_cache(maxsize=8192)
def _iso(timestamp: float) -> str:
    # Profiles applied together share one timestamp, so listing members formats few distinct ones.
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def new_job_id() -> str:
    return crockford(int(time.time() * 1000), 10) + crockford(secrets.randbits(80), 16)


# --------------------------------------------------------------------------- rate limits


@dataclass(frozen=True)
class RateLimit:
    """Burst (per second), steady (per minute) and optional daily request limits of one endpoint."""

    burst: int
    steady: int
    daily: int | None = None

    def windows(self) -> tuple[tuple[int, float], ...]:
        windows = ((self.burst, 1.0), (self.steady, 60.0))
        return windows + ((self.daily, 86400.0),) if self.daily else windows


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: int = 0
    headers: dict[str, str] = field(default_factory=dict)


class RateLimiter:
    """Fixed windows per (account, endpoint group), each opened by the first request after the previous one closed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str, float], list[float]] = {}

    def acquire(self, account: str, group: str, limit: RateLimit) -> RateDecision:
        now = self._clock()
        with self._lock:
            states = []
            blocked_until = 0.0
            for allowed, size in limit.windows():
                key = (account, group, size)
                state = self._windows.get(key)
                if state is None or now >= state[0] + size:
                    state = self._windows[key] = [now, 0.0]
                if state[1] >= allowed:
                    blocked_until = max(blocked_until, state[0] + size)
                states.append((allowed, size, state))
            if blocked_until:
                return RateDecision(False, retry_after=max(1, math.ceil(blocked_until - now)))
            for _, _, state in states:
                state[1] += 1
            # Klaviyo's RateLimit-* headers describe the steady (one-minute) window.
            allowed, size, state = states[1]
            return RateDecision(
                True,
                headers={
                    "RateLimit-Limit": str(allowed),
                    "RateLimit-Remaining": str(max(0, allowed - int(state[1]))),
                    "RateLimit-Reset": str(max(1, math.ceil(state[0] + size - now))),
                },
            )


# --------------------------------------------------------------------------- validation

PendingProfile = tuple[int, str | None, dict[str, Any], dict[str, Any] | None]
"""(index in the request, requested profile id, attributes, meta) of one accepted profile."""

_IDENTIFIERS = frozenset({"email", "phone_number", "external_id"})
_PROFILE_KEYS = frozenset({"type", "id", "attributes", "meta"})
_PROFILE_ATTRIBUTES = frozenset(
    {
        "email",
        "phone_number",
        "external_id",
        "_kx",
        "first_name",
        "last_name",
        "organization",
        "locale",
        "title",
        "image",
        "location",
        "properties",
    }
)
LOCATION_KEYS: tuple[str, ...] = (
    "address1",
    "address2",
    "city",
    "country",
    "latitude",
    "longitude",
    "region",
    "zip",
    "timezone",
    "ip",
)
_LOCATION_KEY_SET = frozenset(LOCATION_KEYS)
_EMPTY_LOCATION: dict[str, Any] = dict.fromkeys(LOCATION_KEYS)
_TEXT_ATTRIBUTES = ("first_name", "last_name", "organization", "locale", "title", "image")
_COORDINATES = frozenset({"latitude", "longitude"})
_META_KEYS = frozenset({"patch_properties", "patch_identifiers"})
_PATCH_PROPERTY_KEYS = frozenset({"append", "unappend", "unset"})
_JOB_DATA_KEYS = frozenset({"type", "attributes", "relationships"})

# Possessive quantifiers keep the match linear; domain labels may not start or end with a hyphen.
_EMAIL_MATCH = re.compile(
    r"(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]++(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]++)*+"
    r"@(?:[A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+\.)++[A-Za-z][A-Za-z0-9]++(?:-++[A-Za-z0-9]++)*+"
).fullmatch
_PHONE_MATCH = re.compile(r"\+[1-9][0-9]{6,14}").fullmatch


def valid_email(value: object) -> bool:
    if type(value) is not str or len(value) > 254:
        return False
    if not value.isascii():
        local, at, domain = value.rpartition("@")
        if not at or not local.isascii():
            return False
        try:
            value = local + "@" + domain.encode("idna").decode("ascii")
        except UnicodeError:
            return False
    return _EMAIL_MATCH(value) is not None


def _attribute_problem(attributes: dict[str, Any]) -> tuple[str, str] | None:
    if not attributes.keys() <= _PROFILE_ATTRIBUTES:
        name = sorted(attributes.keys() - _PROFILE_ATTRIBUTES)[0]
        return (f"/attributes/{name}", f"'{name}' is not a valid field for the resource 'profile'.")
    email = attributes.get("email")
    phone = attributes.get("phone_number")
    external_id = attributes.get("external_id")
    if email is None and phone is None and external_id is None:
        return ("/attributes/", "A profile needs at least one identifier: email, phone_number or external_id.")
    if email is not None and not valid_email(email):
        return ("/attributes/email", "Invalid email address.")
    if phone is not None and (type(phone) is not str or _PHONE_MATCH(phone) is None):
        return ("/attributes/phone_number", "Invalid phone number format (Example of a valid format: +13239169023).")
    if external_id is not None and (type(external_id) is not str or not external_id or external_id.isspace()):
        return ("/attributes/external_id", "external_id must be a non-blank string.")
    for name, value in attributes.items():
        if type(value) is str or value is None:
            continue
        if name == "location":
            problem = _location_problem(value)
            if problem:
                return problem
        elif name != "properties" or type(value) is not dict:
            return (f"/attributes/{name}", f"{name} must be {'an object' if name == 'properties' else 'a string'}.")
    return None


def _location_problem(location: object) -> tuple[str, str] | None:
    if type(location) is not dict:
        return ("/attributes/location", "location must be an object.")
    if not location.keys() <= _LOCATION_KEY_SET:
        name = sorted(location.keys() - _LOCATION_KEY_SET)[0]
        return (f"/attributes/location/{name}", f"'{name}' is not a valid field for a profile location.")
    for name, value in location.items():
        if type(value) is str or value is None or (name in _COORDINATES and type(value) in (int, float)):
            continue
        return (f"/attributes/location/{name}", f"location.{name} must be a string.")
    return None


def _meta_problem(meta: object) -> tuple[str, str] | None:
    if type(meta) is not dict or not meta.keys() <= _META_KEYS:
        return ("/meta", "meta may only hold patch_properties and patch_identifiers objects.")
    patch = meta.get("patch_properties")
    if patch is not None:
        if type(patch) is not dict or not patch.keys() <= _PATCH_PROPERTY_KEYS:
            return ("/meta/patch_properties", "patch_properties may only hold append, unappend and unset.")
        for name in ("append", "unappend"):
            if patch.get(name) is not None and type(patch[name]) is not dict:
                return (f"/meta/patch_properties/{name}", f"{name} must be an object.")
        unset = patch.get("unset")
        if (
            unset is not None
            and type(unset) is not str
            and (type(unset) is not list or not all(type(item) is str for item in unset))
        ):
            return ("/meta/patch_properties/unset", "unset must be a string or a list of strings.")
    identifiers = meta.get("patch_identifiers")
    if identifiers is not None and type(identifiers) is not dict:
        return ("/meta/patch_identifiers", "patch_identifiers must be an object.")
    return None


def _profile_problem(resource: object, dumps: Callable[[Any], bytes]) -> tuple[str, str] | None:
    if type(resource) is not dict:
        return ("", "Each profile must be a resource object.")
    if resource.get("type") != "profile":
        return ("/type", "type must be 'profile'.")
    if not resource.keys() <= _PROFILE_KEYS:
        name = sorted(resource.keys() - _PROFILE_KEYS)[0]
        return (f"/{name}", f"'{name}' is not a valid member of a profile resource object.")
    pid = resource.get("id")
    if pid is not None and type(pid) is not str:
        return ("/id", "id must be a string.")
    attributes = resource.get("attributes")
    if type(attributes) is not dict:
        return ("/attributes", "attributes must be an object.")
    problem = _attribute_problem(attributes)
    if problem:
        return problem
    meta = resource.get("meta")
    if meta is not None:
        problem = _meta_problem(meta)
        if problem:
            return problem
    if len(dumps(resource)) > MAX_PROFILE_BYTES:
        return ("", f"A profile may be at most {MAX_PROFILE_BYTES} bytes.")
    return None


def validate_import(document: object) -> tuple[list[PendingProfile], str | None]:
    """Checks a ProfileImportJobCreateQuery all or nothing; returns its profiles and list id or raises ApiError."""
    if type(document) is not dict or type(document.get("data")) is not dict:
        raise ApiError.invalid("The request body must be a JSON:API document with a data object.", pointer="/data")
    data = document["data"]
    if data.get("type") != "profile-bulk-import-job":
        raise ApiError.invalid("type must be 'profile-bulk-import-job'.", pointer="/data/type")
    if not data.keys() <= _JOB_DATA_KEYS:
        name = sorted(data.keys() - _JOB_DATA_KEYS)[0]
        raise ApiError.invalid(f"'{name}' is not a valid member of this resource.", pointer=f"/data/{name}")
    attributes = data.get("attributes")
    if type(attributes) is not dict:
        raise ApiError.invalid("attributes must be an object.", pointer="/data/attributes")
    if not attributes.keys() <= {"profiles"}:
        name = sorted(attributes.keys() - {"profiles"})[0]
        raise ApiError.invalid(
            f"'{name}' is not a valid field for the resource 'profile-bulk-import-job'.",
            pointer=f"/data/attributes/{name}",
        )
    profiles = attributes.get("profiles")
    if type(profiles) is not dict or type(profiles.get("data")) is not list:
        raise ApiError.invalid("profiles.data must be an array of profiles.", pointer="/data/attributes/profiles")
    items = profiles["data"]
    if not 1 <= len(items) <= MAX_PROFILES_PER_JOB:
        raise ApiError.invalid(
            f"A job must hold between 1 and {MAX_PROFILES_PER_JOB} profiles; got {len(items)}.",
            pointer="/data/attributes/profiles/data",
        )
    list_id = _job_list_id(data.get("relationships"))

    errors: list[dict[str, Any]] = []
    accepted: list[PendingProfile] = []
    dumps = orjson.dumps
    for index, resource in enumerate(items):
        problem = _profile_problem(resource, dumps)
        if problem is None:
            if not errors:
                accepted.append((index, resource.get("id"), resource["attributes"], resource.get("meta")))
            continue
        suffix, detail = problem
        errors.append(
            error_object(
                400, "invalid", "Invalid input.", detail, pointer=f"/data/attributes/profiles/data/{index}{suffix}"
            )
        )
        if len(errors) >= MAX_VALIDATION_ERRORS:
            break
    if errors:
        raise ApiError(400, errors)
    return accepted, list_id


_SCAN_LIST = re.compile(r'\{(?:"type":"list","id":"([^"\\]*)"|"id":"([^"\\]*)","type":"list")\}')
_LIST_TYPE = '"type":"list"'


class ScannedImport(NamedTuple):
    """A bulk import body read by scan_import: its profile count and list id now, its emails when
    they are needed (settle), so that the scan costs the benchmarks' shared cores almost nothing."""

    text: str
    count: int
    list_id: str | None

    def emails(self) -> list[str]:
        """The profiles' emails, lower-cased. Each "email" member's value runs to the next quote
        (there are no escapes): a split, twice as fast as a regular expression."""
        pieces = self.text.split('"email":"')[1:]
        return [piece[: piece.find('"')].lower() for piece in pieces]


def scan_import(body: bytes) -> ScannedImport | None:
    """The fast_import reading of a bulk import body, found by a scan of the text rather than a parse.
    Profiles are taken to be known by their email alone and are not validated. None when the scan is
    not unambiguous (a profile without exactly one plain email, any escape, more than one list, too
    many profiles...): the full validation then decides.
    """
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    if '"type":"profile-bulk-import-job"' not in text:
        return None
    if "\\" in text:  # an escape anywhere: the values are not all plain
        return None
    count = text.count('"type":"profile"')
    # Without escapes a string holds no quote: each '"email":"' opens an email value, closed by the next quote.
    if not 1 <= count <= MAX_PROFILES_PER_JOB or text.count('"email":"') != count:
        return None
    lists = _scan_lists(text)
    if lists is None or len(lists) > 1 or (not lists and '"relationships"' in text):
        return None
    return ScannedImport(text, count, lists[0] if lists else None)


def _scan_lists(text: str) -> list[str] | None:
    """The ids of list identifiers, each found from its "type" member (the expression alone would try
    every "{" of the body); None when one of those members is not part of a list identifier."""
    found: list[str] = []
    at = text.find(_LIST_TYPE)
    while at >= 0:
        match = _SCAN_LIST.match(text, text.rfind("{", 0, at))
        if match is None:
            return None
        found.append(match.group(1) or match.group(2))
        at = text.find(_LIST_TYPE, at + len(_LIST_TYPE))
    return found


def _job_list_id(relationships: object) -> str | None:
    if relationships is None:
        return None
    if type(relationships) is not dict or not relationships.keys() <= {"lists"}:
        raise ApiError.invalid("relationships may only hold lists.", pointer="/data/relationships")
    lists = relationships.get("lists")
    if lists is None:
        return None
    if type(lists) is not dict or type(lists.get("data")) is not list:
        raise ApiError.invalid("relationships.lists.data must be an array.", pointer="/data/relationships/lists/data")
    entries = lists["data"]
    if len(entries) > 1:
        raise ApiError.invalid(
            "A bulk import job may add profiles to at most one list.", pointer="/data/relationships/lists/data"
        )
    if not entries:
        return None
    entry = entries[0]
    if type(entry) is not dict or entry.get("type") != "list" or type(entry.get("id")) is not str:
        raise ApiError.invalid(
            'Each list must be {"type": "list", "id": ...}.', pointer="/data/relationships/lists/data/0"
        )
    return entry["id"]


# --------------------------------------------------------------------------- profiles


class ProfileStore:
    """One account's profiles in parallel columns with identifier indexes; rows are never deleted.

    Identifiers live in their own columns. Everything else stays as the JSON of the attributes last
    merged; identifier keys and nulls inside that JSON mean nothing, so a new profile is stored
    with a single dumps of what was sent. The JSON is kept as str: orjson's bytes are carved from
    a 1 KB malloc buffer, and keeping millions of them costs several KB of memory each.
    """

    def __init__(self) -> None:
        self.keep_attributes = True
        self.email: list[str | None] = []
        self.phone: list[str | None] = []
        self.external_id: list[str | None] = []
        self.extra: list[str] = []
        self.created = array("d")
        self.updated = array("d")
        self.by_email: dict[str, int] = {}
        self.by_phone: dict[str, int] = {}
        self.by_external_id: dict[str, int] = {}

    def exists(self, row: int) -> bool:
        return 0 <= row < len(self.email)

    def insert(
        self,
        email: str | None,
        phone: str | None,
        external_id: str | None,
        attributes: dict[str, Any],
        meta: dict[str, Any] | None,
        now: float,
    ) -> int:
        """Adds a profile whose identifiers (email already lower-cased) belong to no one yet."""
        row = len(self.email)
        self.email.append(email)
        self.phone.append(phone)
        self.external_id.append(external_id)
        self.created.append(now)
        self.updated.append(now)
        if email is not None:
            self.by_email[email] = row
        if phone is not None:
            self.by_phone[phone] = row
        if external_id is not None:
            self.by_external_id[external_id] = row
        if not self.keep_attributes:
            self.extra.append("{}")  # one shared object: 8 bytes a profile
            return row
        if meta and meta.get("patch_properties"):
            attributes = dict(attributes)
            _patch_properties(attributes, meta)
        self.extra.append(orjson.dumps(attributes).decode())
        return row

    def merge(
        self,
        row: int,
        email: str | None,
        phone: str | None,
        external_id: str | None,
        attributes: dict[str, Any],
        meta: dict[str, Any] | None,
        now: float,
    ) -> None:
        """Updates a profile: a null or absent field never clears what is stored; properties merge key by key."""
        self._set_identifier(row, email, self.email, self.by_email)
        self._set_identifier(row, phone, self.phone, self.by_phone)
        self._set_identifier(row, external_id, self.external_id, self.by_external_id)
        self.updated[row] = now
        if not self.keep_attributes:
            return
        current: dict[str, Any] = orjson.loads(self.extra[row])
        for name, value in attributes.items():
            if value is None or name in _IDENTIFIERS:
                continue
            if name == "location":
                location = current.get("location") or {}
                location.update((k, v) for k, v in value.items() if v is not None)
                current["location"] = location
            elif name == "properties":
                properties = current.get("properties") or {}
                properties.update(value)
                current["properties"] = properties
            else:
                current[name] = value
        if meta and meta.get("patch_properties"):
            _patch_properties(current, meta)
        self.extra[row] = orjson.dumps(current).decode()

    def upsert_emails(self, emails: list[str], now: float) -> Sequence[int]:
        """The rows of profiles known by these (lower-cased) emails alone, adding the new ones (fast_import)."""
        first = len(self.email)
        setdefault = self.by_email.setdefault
        rows: list[int] = []
        new: list[str] = []
        for email in emails:  # one lookup an email: a new one gets the next row as it goes in
            row = setdefault(email, first + len(new))
            if row == first + len(new):
                new.append(email)
            rows.append(row)
        blanks: list[str | None] = [None] * len(new)
        self.email.extend(new)
        self.phone.extend(blanks)
        self.external_id.extend(blanks)
        self.extra.extend(["{}"] * len(new))
        stamps = array("d", [now]) * len(new)
        self.created.extend(stamps)
        self.updated.extend(stamps)
        # All new and distinct (a first import): a range, which its list can take without a membership check.
        return range(first, first + len(new)) if len(new) == len(emails) else rows

    @staticmethod
    def _set_identifier(row: int, value: str | None, column: list[str | None], index: dict[str, int]) -> None:
        if value is None:
            return
        old = column[row]
        if old == value:
            return
        if old is not None:
            index.pop(old, None)
        column[row] = value
        index[value] = row

    def record(self, row: int) -> dict[str, Any]:
        """The profile's attributes as Klaviyo returns them (absent fields are null)."""
        extra: dict[str, Any] = orjson.loads(self.extra[row])
        return {
            "email": self.email[row],
            "phone_number": self.phone[row],
            "external_id": self.external_id[row],
            "first_name": extra.get("first_name"),
            "last_name": extra.get("last_name"),
            "organization": extra.get("organization"),
            "locale": extra.get("locale"),
            "title": extra.get("title"),
            "image": extra.get("image"),
            "created": self.created[row],
            "updated": self.updated[row],
            "last_event_date": None,
            "location": {**_EMPTY_LOCATION, **(extra.get("location") or {})},
            "properties": extra.get("properties") or {},
        }


def _patch_properties(target: dict[str, Any], meta: dict[str, Any]) -> None:
    patch = meta.get("patch_properties")
    if not patch:
        return
    properties = target.get("properties") or {}
    target["properties"] = properties
    for name, value in (patch.get("append") or {}).items():
        current = properties.get(name)
        items = current if isinstance(current, list) else ([] if current is None else [current])
        items.extend(value if isinstance(value, list) else [value])
        properties[name] = items
    for name, value in (patch.get("unappend") or {}).items():
        current = properties.get(name)
        if isinstance(current, list):
            drop = value if isinstance(value, list) else [value]
            properties[name] = [item for item in current if item not in drop]
    unset = patch.get("unset")
    for name in [unset] if isinstance(unset, str) else unset or []:
        properties.pop(name, None)
    if not properties:
        del target["properties"]


# --------------------------------------------------------------------------- lists


class SimList:
    """A list's members in join order; a removed member leaves a stale slot so cursors stay valid."""

    def __init__(self, list_id: str, name: str, account: Account, now: float) -> None:
        self.id = list_id
        self.name = name
        self.account = account
        self.created = now
        self.updated = now
        self.opt_in_process = "single_opt_in"
        self.order = array("q")
        self.joined = array("d")
        self.position: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.position)

    def add(self, row: int, now: float) -> bool:
        if row in self.position:
            return False
        self.position[row] = len(self.order)
        self.order.append(row)
        self.joined.append(now)
        return True

    def add_many(self, rows: Iterable[int], now: float, created: bool = False) -> None:
        """Adds the rows not on the list yet (`created`: profiles just created, on no list)."""
        position = self.position
        fresh = list(rows) if created else [row for row in dict.fromkeys(rows) if row not in position]
        position.update(zip(fresh, range(len(self.order), len(self.order) + len(fresh)), strict=True))
        self.order.extend(fresh)
        self.joined.extend(array("d", [now]) * len(fresh))

    def remove(self, row: int) -> bool:
        return self.position.pop(row, None) is not None

    def scan(self, start: int, descending: bool) -> Iterator[tuple[int, int, float]]:
        """(slot, row, joined) of live members from slot start onwards, in either direction."""
        order, joined, position = self.order, self.joined, self.position
        slots = range(start, -1, -1) if descending else range(start, len(order))
        for slot in slots:
            row = order[slot]
            if position.get(row) == slot:
                yield slot, row, joined[slot]


# --------------------------------------------------------------------------- jobs


@dataclass(eq=False)
class ImportJob:
    """One bulk profile import job and what its processing produced."""

    id: str
    account: Account
    list_id: str | None
    total_count: int
    created_at: float
    expires_at: float
    pending: list[PendingProfile] | None
    status: str = "queued"
    scanned: ScannedImport | None = None  # instead of pending (fast_import)
    started_at: float | None = None
    completed_at: float | None = None
    completed_count: int = 0
    failed_count: int = 0
    profile_rows: array = field(default_factory=lambda: array("q"))
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ApiKey:
    key: str
    account: Account
    scopes: frozenset[str]


class Account:
    """One Klaviyo account: its profiles, lists and import jobs (rate limits are keyed by its name)."""

    def __init__(self, name: str, number: int) -> None:
        self.name = name
        self.number = number
        self.profiles = ProfileStore()
        self.lists: dict[str, SimList] = {}
        self.jobs: list[ImportJob] = []

    def profile_id(self, row: int) -> str:
        return profile_id(self.number, row)

    def row_of(self, pid: str) -> int | None:
        parsed = parse_profile_id(pid)
        if parsed is None or parsed[0] != self.number or not self.profiles.exists(parsed[1]):
            return None
        return parsed[1]


class Stats:
    """Thread-safe counters the simulator reports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()
        self.times: dict[str, float] = {}

    def count(self, counter: Counter[str], key: str, amount: int = 1) -> None:
        with self._lock:
            counter[key] += amount

    def mark(self, event: str, when: float) -> None:
        """Records when `event` first and last happened (the simulator's clock, epoch seconds by default)."""
        with self._lock:
            self.times.setdefault(f"first_{event}_at", when)
            self.times[f"last_{event}_at"] = when

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": sum(self.requests.values()),
                "requests_by_endpoint": dict(self.requests),
                "responses": dict(self.responses),
                "throttled": self.responses.get("429", 0),
                "faults": dict(self.faults),
                "jobs_created": self.totals["jobs_created"],
                "profiles_submitted": self.totals["profiles_submitted"],
                "profiles_imported": self.totals["profiles_imported"],
                "profiles_failed": self.totals["profiles_failed"],
                # When the first and last import job was accepted and completed (None before any).
                **{
                    f"{edge}_{event}_at": self.times.get(f"{edge}_{event}_at")
                    for event in ("job_accepted", "job_completed")
                    for edge in ("first", "last")
                },
            }


class SimState:
    """Every account, key, list and job of one simulator, and the worker that runs import jobs."""

    def __init__(self, config: SimulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.lock = threading.RLock()
        self.stats = Stats()
        self.rate_limiter = RateLimiter()
        self.keys: dict[str, ApiKey] = {}
        self.accounts: dict[str, Account] = {}
        self.lists: dict[str, SimList] = {}
        self.jobs: dict[str, ImportJob] = {}
        self._rng = random.Random(config.seed)
        self._schedule: list[tuple[float, int, str, ImportJob]] = []
        self._sequence = 0
        self._unfinished = 0
        self._unsettled: list[tuple[ImportJob, ScannedImport, float]] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._worker: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> None:
        if self._worker is None:
            self._stopping = False
            self._worker = threading.Thread(target=self._run_jobs, name="klaviyo-sim-jobs", daemon=True)
            self._worker.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5)
            self._worker = None

    def reconfigure(self, config: SimulatorConfig) -> None:
        if config.seed != self.config.seed:
            self._rng = random.Random(config.seed)
        self.config = config

    # ---- accounts, keys and lists

    def account(self, name: str) -> Account:
        with self.lock:
            account = self.accounts.get(name)
            if account is None:
                account = self.accounts[name] = Account(name, len(self.accounts) + 1)
            return account

    def add_api_key(self, key: str, scopes: Iterable[str], account: str) -> ApiKey:
        if not key or any(c.isspace() for c in key):
            raise ValueError("an API key must be non-empty and hold no whitespace")
        api_key = ApiKey(key, self.account(account), frozenset(scopes))
        with self.lock:
            self.keys[key] = api_key
        return api_key

    def remove_api_key(self, key: str) -> bool:
        with self.lock:
            return self.keys.pop(key, None) is not None

    def authenticate(self, key: str) -> ApiKey | None:
        return self.keys.get(key)

    def create_list(self, name: str, account: str | Account, list_id: str | None = None) -> SimList:
        owner = account if isinstance(account, Account) else self.account(account)
        with self.lock:
            if list_id is None:
                list_id = "".join(secrets.choice(_LIST_ID_ALPHABET) for _ in range(6))
                while list_id in self.lists:
                    list_id = "".join(secrets.choice(_LIST_ID_ALPHABET) for _ in range(6))
            elif not list_id or "/" in list_id or list_id in self.lists:
                raise ValueError(f"list id {list_id!r} is empty, holds a slash or is taken")
            new = SimList(list_id, name, owner, self.clock())
            self.lists[list_id] = owner.lists[list_id] = new
            return new

    def delete_list(self, list_id: str) -> bool:
        with self.lock:
            found = self.lists.pop(list_id, None)
            if found is None:
                return False
            del found.account.lists[list_id]
            return True

    def find_list(self, list_id: str, account: Account | None = None) -> SimList | None:
        found = self.lists.get(list_id)
        if found is None or (account is not None and found.account is not account):
            return None
        return found

    def member_records(self, list_id: str) -> Iterator[list[dict[str, Any]]]:
        """The list's members in join order, a batch at a time: id, identifiers and the attributes that are set."""
        with self.lock:
            found = self.lists.get(list_id)
            if found is None:
                raise KeyError(list_id)
            members = [(row, joined) for _, row, joined in found.scan(0, False)]
        account = found.account
        store = account.profiles
        loads = orjson.loads
        for start in range(0, len(members), 1000):
            batch = []
            with self.lock:
                for row, joined in members[start : start + 1000]:
                    extra = loads(store.extra[row])
                    record = {name: extra.get(name) for name in _TEXT_ATTRIBUTES}
                    record["id"] = account.profile_id(row)
                    record["email"] = store.email[row]
                    record["phone_number"] = store.phone[row]
                    record["external_id"] = store.external_id[row]
                    location = extra.get("location")
                    record["location"] = {k: v for k, v in location.items() if v is not None} if location else {}
                    record["properties"] = extra.get("properties") or {}
                    record["created"] = iso(store.created[row])
                    record["updated"] = iso(store.updated[row])
                    record["joined_group_at"] = iso(joined)
                    batch.append(record)
            yield batch

    # ---- list relationships

    def change_membership(self, found: SimList, rows: list[int], add: bool) -> None:
        now = self.clock()
        with self.lock:
            for row in rows:
                if add:
                    found.add(row, now)
                else:
                    found.remove(row)
            found.updated = now

    # ---- import jobs

    def create_job(
        self, account: Account, pending: list[PendingProfile], list_id: str | None, scanned: ScannedImport | None = None
    ) -> ImportJob:
        """A queued job of the validated profiles, or (fast_import) of the profiles known by their emails."""
        now = self.clock()
        submitted = len(pending) if scanned is None else scanned.count
        with self.lock:
            if list_id is not None and self.find_list(list_id, account) is None:
                raise ApiError.invalid(f"List ID {list_id} does not exist.", pointer="/data")
            job = ImportJob(
                id=new_job_id(),
                account=account,
                list_id=list_id,
                total_count=submitted,
                created_at=now,
                expires_at=now + JOB_TTL_SECONDS,
                pending=pending,
                scanned=scanned,
            )
            self.jobs[job.id] = job
            account.jobs.append(job)
        self.stats.count(self.stats.totals, "jobs_created")
        self.stats.mark("job_accepted", now)
        self.stats.count(self.stats.totals, "profiles_submitted", submitted)
        config = self.config
        with self._wake:
            self._unfinished += 1
            self._push(now + config.processing_seconds / 2, "start", job)
        return job

    def find_job(self, job_id: str, account: Account) -> ImportJob | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.account is account else None

    def wait_for_jobs(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._unfinished:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.wait(min(remaining, 0.05))
        return True

    def _push(self, when: float, phase: str, job: ImportJob) -> None:
        self._sequence += 1
        heapq.heappush(self._schedule, (when, self._sequence, phase, job))
        self._wake.notify_all()

    def _run_jobs(self) -> None:
        while True:
            with self._wake:
                while not self._stopping:
                    if self._schedule:
                        delay = self._schedule[0][0] - self.clock()
                        if delay <= 0:
                            break
                        self._wake.wait(delay)
                    else:
                        self._wake.wait()
                if self._stopping:
                    return
                _, _, phase, job = heapq.heappop(self._schedule)
            if phase == "start":
                self._process(job)
                config = self.config
                per_profile = config.processing_seconds_per_profile * job.total_count
                done_at = job.created_at + config.processing_seconds + per_profile
                with self._wake:
                    self._push(max(done_at, self.clock()), "finish", job)
            else:
                completed_at = self.clock()
                with self.lock:
                    job.status = "complete"
                    job.completed_at = completed_at
                self.stats.mark("job_completed", completed_at)
                with self._wake:
                    self._unfinished -= 1
                    self._wake.notify_all()

    def _process(self, job: ImportJob) -> None:
        with self.lock:
            job.status = "processing"
            job.started_at = self.clock()
        if job.scanned is not None:
            self._process_scanned(job)
            return
        pending = job.pending or []
        job.pending = None
        account = job.account
        store = account.profiles
        store.keep_attributes = self.config.keep_attributes
        by_email, by_phone, by_external_id = store.by_email, store.by_phone, store.by_external_id
        rows = job.profile_rows
        for start in range(0, len(pending), APPLY_CHUNK):
            failure_rate = self.config.profile_failure_rate
            random_draw = self._rng.random
            with self.lock:
                target = self.lists.get(job.list_id) if job.list_id else None
                now = self.clock()
                done = 0
                for item in pending[start : start + APPLY_CHUNK]:
                    if failure_rate and random_draw() < failure_rate:
                        self._fail(job, item, "processing_failed", "Profile could not be processed.", "")
                        continue
                    _, requested_id, attributes, meta = item
                    email = attributes.get("email")
                    if email is not None:
                        email = email.lower()
                    phone = attributes.get("phone_number")
                    external_id = attributes.get("external_id")
                    if (
                        requested_id is None
                        and (email is None or email not in by_email)
                        and (phone is None or phone not in by_phone)
                        and (external_id is None or external_id not in by_external_id)
                    ):
                        row = store.insert(email, phone, external_id, attributes, meta, now)
                    else:
                        found = self._existing_row(job, account, item, email, phone, external_id)
                        if found is None:
                            continue
                        row = found
                        store.merge(row, email, phone, external_id, attributes, meta, now)
                    rows.append(row)
                    done += 1
                    if target is not None:
                        target.add(row, now)
                job.completed_count += done
        self.stats.count(self.stats.totals, "profiles_imported", job.completed_count)
        self.stats.count(self.stats.totals, "profiles_failed", job.failed_count)

    def _process_scanned(self, job: ImportJob) -> None:
        # The profiles go into the store when it is next read (settle): a client sees the same
        # store, and the benchmarks do not charge Klaviyo's own work to the export sharing the cores.
        scanned, job.scanned = job.scanned, None
        assert scanned is not None
        with self.lock:
            job.completed_count = scanned.count
            self._unsettled.append((job, scanned, self.clock()))
        self.stats.count(self.stats.totals, "profiles_imported", job.completed_count)

    def settle(self) -> None:
        """Applies the profiles of completed fast imports to the store and their lists."""
        with self.lock:
            pending, self._unsettled = self._unsettled, []
            for job, scanned, now in pending:
                target = self.lists.get(job.list_id) if job.list_id else None
                rows = job.account.profiles.upsert_emails(scanned.emails(), now)
                job.profile_rows.extend(rows)
                if target is not None:
                    target.add_many(rows, now, created=isinstance(rows, range))

    def _existing_row(
        self,
        job: ImportJob,
        account: Account,
        item: PendingProfile,
        email: str | None,
        phone: str | None,
        external_id: str | None,
    ) -> int | None:
        """The row an upsert updates, or None after recording why it cannot (unknown id, identifier conflict)."""
        store = account.profiles
        matches = [
            (name, row)
            for name, row in (
                ("external_id", store.by_external_id.get(external_id) if external_id is not None else None),
                ("email", store.by_email.get(email) if email is not None else None),
                ("phone_number", store.by_phone.get(phone) if phone is not None else None),
            )
            if row is not None
        ]
        requested_id = item[1]
        if requested_id is not None:
            target = account.row_of(requested_id)
            if target is None:
                self._fail(job, item, "not_found", f"Profile {requested_id} does not exist.", "/id")
                return None
        else:
            target = matches[0][1]
        for name, row in matches:
            if row != target:
                self._fail(
                    job,
                    item,
                    "duplicate_profile",
                    f"A profile already exists with one of these identifiers: {name} belongs to profile "
                    f"{account.profile_id(row)}.",
                    f"/attributes/{name}",
                    title="Conflict.",
                )
                return None
        return target

    @staticmethod
    def _fail(
        job: ImportJob, item: PendingProfile, code: str, detail: str, suffix: str, title: str = "Invalid input."
    ) -> None:
        job.failed_count += 1
        job.errors.append(
            {
                "id": str(uuid.uuid4()),
                "code": code,
                "title": title,
                "detail": detail,
                "source": {"pointer": f"/data/attributes/profiles/data/{item[0]}{suffix}"},
                "original_payload": item[2],
            }
        )
