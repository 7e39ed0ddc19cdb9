"""Marketing consent read from a segment: which rows say yes, when they consented, and each
consenting row's entry for Klaviyo's bulk subscription call, all column-wise (no object per row).

An export's `subscribe` options (SubscribeOptions) name the channels, the consent column and its yes
values, and optionally a consented-at column. ConsentReader reads a chunk's consent for the profiles
it is about to import: it is given the consent values, the consented-at values and the profiles'
email and phone number (already checked and normalised by the mapper, see MappedRows) and
returns who to subscribe and, for consenting rows that cannot be subscribed, why not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.mapping.columnar import _escaped
from shared.mapping.config import MappingError
from shared.privacy import short_name

CHANNELS = ("email", "sms")
DEFAULT_CONSENT_VALUES = ("true", "yes", "1", "y")
# Where a channel's consent goes, and the identifier Klaviyo needs for it.
_IDENTIFIER_OF = {"email": "email", "sms": "phone_number"}
_MAX_CONSENT_VALUE = 100
_NAMES = {"email": "email", "sms": "SMS"}
_MISSING = {"email": "no email address for email", "sms": "no phone number for SMS"}

# The ISO 8601 shapes taken: a date, or a date and time with an optional zone (none means UTC).
_ISO_DATE = r"^\d{4}-\d\d-\d\d$"
_ISO_DATETIME = r"^\d{4}-\d\d-\d\d[T ]\d\d(:\d\d(:\d\d(\.\d{1,9})?)?)?([zZ]|[+-]\d\d(:?\d\d)?)?$"
_ZONED = r"([zZ]|[+-]\d\d(:?\d\d)?)$"
_UTC = pa.timestamp("us", tz="UTC")
_EMPTY = pa.scalar("", pa.string())


def _s(text: str) -> pa.Scalar:
    return pa.scalar(text, pa.string())


@dataclass(frozen=True)
class SubscribeOptions:
    """Which consenting rows to subscribe, and how (see README "Subscriptions").

    `historical_import` subscribes at once, without the list's double opt-in confirmation, with
    each row's consented_at (the run's start time when there is no consented-at column).
    `unsubscribe_withdrawn` unsubscribes the rows whose consent value is set and not a yes value."""

    channels: tuple[str, ...]
    consent_column: str
    consent_values: tuple[str, ...] = DEFAULT_CONSENT_VALUES
    consented_at_column: str | None = None
    historical_import: bool = True
    unsubscribe_withdrawn: bool = False

    def __post_init__(self) -> None:
        channels = tuple(self.channels)
        if not channels or any(channel not in CHANNELS for channel in channels):
            raise MappingError("subscribe.channels: give email, sms or both")
        if len(set(channels)) != len(channels):
            raise MappingError("subscribe.channels: a channel is named twice")
        if not isinstance(self.consent_column, str) or not self.consent_column.strip():
            raise MappingError("subscribe.consent_column: the column name is empty")
        if self.consented_at_column is not None and (
            not isinstance(self.consented_at_column, str) or not self.consented_at_column.strip()
        ):
            raise MappingError("subscribe.consented_at_column: the column name is empty")
        values = tuple(self.consent_values)
        if not values or any(not isinstance(v, str) or not v.strip() or len(v) > _MAX_CONSENT_VALUE for v in values):
            raise MappingError(
                f"subscribe.consent_values: give one or more non-empty texts of at most {_MAX_CONSENT_VALUE} characters"
            )
        object.__setattr__(self, "channels", tuple(c for c in CHANNELS if c in channels))
        object.__setattr__(self, "consent_values", values)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SubscribeOptions:
        channels = data.get("channels")
        values = data.get("consent_values") or DEFAULT_CONSENT_VALUES
        if not isinstance(channels, list | tuple) or not isinstance(values, list | tuple):
            raise MappingError("subscribe: channels and consent_values must be lists")
        return cls(
            tuple(channels),  # the items are checked in __post_init__
            data.get("consent_column"),  # type: ignore[arg-type]
            tuple(values),
            data.get("consented_at_column"),  # type: ignore[arg-type]
            bool(data.get("historical_import", True)),
            bool(data.get("unsubscribe_withdrawn", False)),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "channels": list(self.channels),
            "consent_column": self.consent_column,
            "consent_values": list(self.consent_values),
            "consented_at_column": self.consented_at_column,
            "historical_import": self.historical_import,
            "unsubscribe_withdrawn": self.unsubscribe_withdrawn,
        }

    @property
    def columns(self) -> list[str]:
        """The segment columns the options read."""
        return [self.consent_column] + ([self.consented_at_column] if self.consented_at_column else [])

    def describe(self) -> str:
        """A short line for logs and reports (column names shortened, never values)."""
        return f"{'+'.join(self.channels)} when {short_name(self.consent_column)!r} says yes"


class NotSubscribed(NamedTuple):
    """A consenting profile (its position among those given) not subscribed, or not on every channel."""

    position: int
    field: str
    reason: str
    subscribed: bool  # subscribed on another channel it asked for


class Subscribers(NamedTuple):
    """Profiles to send to a subscription call: their positions among those given, and their email,
    phone number and (with historical_import) consent time, as text ("" where there is none)."""

    positions: np.ndarray
    email: pa.Array
    phone: pa.Array
    consented_at: pa.Array | None

    def __len__(self) -> int:
        return len(self.positions)

    def take(self, at: np.ndarray) -> Subscribers:
        indices = pa.array(at, pa.int64())
        when = self.consented_at.take(indices) if self.consented_at is not None else None
        return Subscribers(self.positions[at], self.email.take(indices), self.phone.take(indices), when)


class ChunkConsent(NamedTuple):
    """A chunk's consent: the consenting profiles to subscribe; those not subscribed (on any or on
    every channel asked); how many rows gave no consent; and with unsubscribe_withdrawn, the rows
    whose consent is withdrawn (consented_at None)."""

    subscribe: Subscribers
    not_subscribed: list[NotSubscribed]
    no_consent: int
    withdrawn: Subscribers


class ConsentReader:
    """Reads consent with SubscribeOptions' rules; `now` (epoch seconds) is when consent dates must
    precede, and the consent time of a historical import without a consented-at column.

    `read` is all column kernels (no object per row but for the rows that cannot be subscribed);
    `entries` writes the JSON of a call's profiles, on the thread that sends it."""

    def __init__(self, options: SubscribeOptions, now: float) -> None:
        self.options = options
        self.now = now
        self._yes = pa.array(sorted({v.strip().lower() for v in options.consent_values}), pa.string())
        fallback = np.datetime64(int(now), "s").astype("datetime64[s]")
        self._fallback = _s(f"{fallback}+00:00")

    def read(self, consent: pa.Array, consented_at: pa.Array | None, email: pa.Array, phone: pa.Array) -> ChunkConsent:
        """The arguments are aligned, one item per profile to import: the consent and consented-at
        columns' values, and the profile's normalised email and phone number ("" or null if none)."""
        said = pc.utf8_lower(pc.utf8_trim_whitespace(_text(consent)))
        yes = _np(pc.is_in(said, value_set=self._yes))
        given = _np(pc.greater(pc.binary_length(said), 0))
        email, phone = _text(email), _text(phone)
        positions = np.flatnonzero(yes)
        chosen = pa.array(yes)
        email_yes, phone_yes = email.filter(chosen), phone.filter(chosen)
        problems: dict[int, NotSubscribed] = {}
        chosen_at = consented_at.filter(chosen) if consented_at is not None else None
        when = self._consent_times(chosen_at, len(positions), problems)
        has = {"email": _present(email_yes), "sms": _present(phone_yes)}
        wanted = self.options.channels
        sendable = np.zeros(len(positions), dtype=bool)
        for channel in wanted:
            sendable |= has[channel]
        bad_time = np.zeros(len(positions), dtype=bool)
        bad_time[list(problems)] = True
        sendable &= ~bad_time
        lacking_any = np.zeros(len(positions), dtype=bool)
        for channel in wanted:
            lacking_any |= ~has[channel]
        for at in np.flatnonzero(lacking_any & ~bad_time).tolist():
            lacking = [channel for channel in wanted if not has[channel][at]]
            reason = ", ".join(_MISSING[channel] for channel in lacking)
            others = [_NAMES[channel] for channel in wanted if has[channel][at]]
            if others:
                reason += f"; subscribed to {' and '.join(others)} only"
            problems[at] = NotSubscribed(at, _IDENTIFIER_OF[lacking[0]], reason, bool(others))
        subscribers = Subscribers(positions, email_yes, phone_yes, when).take(np.flatnonzero(sendable))
        not_subscribed = [p._replace(position=int(positions[p.position])) for _, p in sorted(problems.items())]
        withdrawn = self._withdrawn(given & ~yes, email, phone)
        return ChunkConsent(subscribers, not_subscribed, int(np.count_nonzero(~yes)), withdrawn)

    def _consent_times(
        self, values: pa.Array | None, count: int, problems: dict[int, NotSubscribed]
    ) -> pa.Array | None:
        """Each consenting row's consent time as ISO 8601 in UTC (None: not sent, without
        historical_import); an empty, unreadable or future one is a problem of that row. Each
        distinct value is read once (a column of dates repeats them)."""
        if not self.options.historical_import:
            return None
        if values is None:
            return pa.repeat(self._fallback, count)
        encoded = pc.dictionary_encode(pc.utf8_trim_whitespace(_text(values)))
        indices = _np(encoded.indices)
        fine, codes = self._read_times(encoded.dictionary)
        field = self.options.consented_at_column or "consented_at"
        row_codes = codes[indices]
        for at in np.flatnonzero(row_codes).tolist():
            problems[at] = NotSubscribed(at, field, _TIME_PROBLEMS[row_codes[at]], False)
        return fine.take(encoded.indices)

    def _read_times(self, text: pa.Array) -> tuple[pa.Array, np.ndarray]:
        """Distinct consent times: each as ISO 8601 in UTC ("" if it is not usable), and a problem
        code (0: fine, else an index of _TIME_PROBLEMS)."""
        empty = _np(pc.equal(pc.binary_length(text), 0))
        shaped = _np(pc.match_substring_regex(text, _ISO_DATETIME)) | _np(pc.match_substring_regex(text, _ISO_DATE))
        dated = pc.match_substring_regex(text, _ISO_DATE)
        zoned = pc.match_substring_regex(text, _ZONED)
        full = pc.if_else(
            dated,
            pc.binary_join_element_wise(text, _s("T00:00:00Z"), _EMPTY),
            pc.if_else(zoned, text, pc.binary_join_element_wise(text, _s("Z"), _EMPTY)),
        )
        stamps = _parse_times(pc.if_else(pa.array(shaped), full, pa.scalar(None, pa.string())))
        readable = _np(pc.is_valid(stamps))
        future = np.zeros(len(text), dtype=bool)
        future[readable] = _np(pc.greater(stamps.filter(pa.array(readable)), pa.scalar(int(self.now * 1e6), _UTC)))
        codes = np.zeros(len(text), dtype=np.int8)
        codes[~readable] = _UNREADABLE
        codes[empty] = _EMPTY_TIME
        codes[future] = _FUTURE
        seconds = pc.cast(stamps, pa.timestamp("s", tz="UTC"), safe=False)
        return pc.fill_null(pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%S+00:00"), _EMPTY), codes

    def _withdrawn(self, said_no: np.ndarray, email: pa.Array, phone: pa.Array) -> Subscribers:
        """The rows that said no and have an identifier for a channel (only with unsubscribe_withdrawn)."""
        if not self.options.unsubscribe_withdrawn:
            said_no = np.zeros(len(said_no), dtype=bool)
        chosen = pa.array(said_no)
        rows = Subscribers(np.flatnonzero(said_no), email.filter(chosen), phone.filter(chosen), None)
        usable = np.zeros(len(rows), dtype=bool)
        for channel in self.options.channels:
            usable |= _present(rows.email if channel == "email" else rows.phone)
        return rows.take(np.flatnonzero(usable))

    def entries(self, profiles: Subscribers, consent: str = "SUBSCRIBED") -> pa.BinaryArray:
        """The profiles of a subscription call (each serialized and followed by a comma): their
        identifiers, then the channels asked that they have an identifier for; consent
        "UNSUBSCRIBED" for an unsubscription call (no consent time)."""
        if not len(profiles):
            return pa.array([], pa.binary())
        email, phone = _escaped(profiles.email), profiles.phone
        has_email, has_phone = pc.greater(pc.binary_length(email), 0), pc.greater(pc.binary_length(phone), 0)
        when = profiles.consented_at if consent == "SUBSCRIBED" else None
        pieces: list[pa.Array | pa.Scalar] = [
            _s('{"type":"profile","attributes":{'),
            pc.if_else(has_email, pc.binary_join_element_wise(_s('"email":"'), email, _s('",'), _EMPTY), _EMPTY),
            pc.if_else(has_phone, pc.binary_join_element_wise(_s('"phone_number":"'), phone, _s('",'), _EMPTY), _EMPTY),
            _s('"subscriptions":{'),
        ]
        for index, channel in enumerate(self.options.channels):
            parameters: list[pa.Array | pa.Scalar] = [_s(f'"{channel}":{{"marketing":{{"consent":"{consent}"')]
            if when is not None:
                parameters += [_s(',"consented_at":"'), when, _s('"')]
            parameters.append(_s("}}"))
            piece = pc.binary_join_element_wise(*parameters, _EMPTY)
            if index:  # after the email channel, when the row has one
                piece = pc.if_else(has_email, pc.binary_join_element_wise(_s(","), piece, _EMPTY), piece)
            pieces.append(pc.if_else(has_email if channel == "email" else has_phone, piece, _EMPTY))
        pieces.append(_s("}}},"))
        return pc.binary_join_element_wise(*pieces, _EMPTY).cast(pa.binary())


_EMPTY_TIME, _UNREADABLE, _FUTURE = 1, 2, 3
_TIME_PROBLEMS = {
    _EMPTY_TIME: "consented_at is empty (a historical import needs it)",
    _UNREADABLE: "consented_at is not an ISO 8601 date or date-time",
    _FUTURE: "consented_at is in the future",
}


def _present(values: pa.Array) -> np.ndarray:
    return _np(pc.greater(pc.binary_length(values), 0))


def _text(values: pa.Array) -> pa.Array:
    """Any column as text ("" for null): a Parquet boolean reads true/false, a number its digits."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    return values.fill_null(_EMPTY)


def _parse_times(values: pa.Array) -> pa.Array:
    """ISO 8601 texts as UTC timestamps, null where a text is null or not a real time (month 13)."""
    try:
        return pc.cast(values, _UTC)
    except pa.ArrowInvalid:  # one bad value fails the whole cast: this chunk is parsed one by one
        parsed = []
        for value in values.to_pylist():
            try:
                parsed.append(pc.cast(pa.array([value], pa.string()), _UTC)[0].value)
            except pa.ArrowInvalid:
                parsed.append(None)
        return pa.array(parsed, pa.int64()).cast(_UTC)


def _np(mask: pa.Array) -> np.ndarray:
    return mask.to_numpy(zero_copy_only=False)
