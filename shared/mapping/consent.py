"""Marketing consent read from a segment: which rows say yes, when they consented, and each
consenting row's entry for Klaviyo's bulk subscription call, all column-wise (no object per row).

An export's `subscribe` options (SubscribeOptions) name the channels, the consent column and its yes
values, and optionally a consented-at column. ConsentReader reads a chunk's consent for the profiles
it is about to import: it is given the consent values, the consented-at values and the serialized
profile bodies (whose identifiers, already checked and normalised by the mapper, it reuses) and
returns the subscription entries and, for consenting rows that cannot be subscribed, why not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.mapping.config import MappingError
from shared.privacy import short_name

CHANNELS = ("email", "sms")
DEFAULT_CONSENT_VALUES = ("true", "yes", "1", "y")
# Where a channel's consent goes, and the identifier Klaviyo needs for it.
_IDENTIFIER_OF = {"email": "email", "sms": "phone_number"}
_MAX_CONSENT_VALUE = 100
_NAMES = {"email": "email", "sms": "SMS"}
_MISSING = {"email": "no email address for email", "sms": "no phone number for SMS"}

# A profile body starts with its identifiers, in this order (rows.serialize_profile and the
# columnar mapper both write email, phone_number, external_id first): their JSON text is reused.
_IDENTIFIERS = (
    r'^\{"type":"profile","attributes":\{'
    r'(?:"email":"(?P<email>(?:[^"\\]|\\.)*)",?)?'
    r'(?:"phone_number":"(?P<phone>[^"]*)")?'
)
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


class ChunkConsent(NamedTuple):
    """A chunk's consent: entries (serialized subscription profiles, each with a trailing comma)
    and the positions they came from; consenting profiles not subscribed; how many rows gave no
    consent; and with unsubscribe_withdrawn, the unsubscription entries of rows that said no."""

    entries: pa.BinaryArray
    positions: np.ndarray
    not_subscribed: list[NotSubscribed]
    no_consent: int
    withdrawn: pa.BinaryArray
    withdrawn_positions: np.ndarray


class ConsentReader:
    """Reads consent with SubscribeOptions' rules; `now` (epoch seconds) is when consent dates must
    precede, and the consent time of a historical import without a consented-at column."""

    def __init__(self, options: SubscribeOptions, now: float) -> None:
        self.options = options
        self.now = now
        self._yes = pa.array(sorted({v.strip().lower() for v in options.consent_values}), pa.string())
        fallback = np.datetime64(int(now), "s").astype("datetime64[s]")
        self._fallback = _s(f"{fallback}+00:00")

    def read(self, consent: pa.Array, consented_at: pa.Array | None, bodies: pa.Array) -> ChunkConsent:
        """`consent`, `consented_at` and `bodies` are aligned: one item per profile to import."""
        said = pc.utf8_lower(pc.utf8_trim_whitespace(_text(consent)))
        yes = _np(pc.is_in(said, value_set=self._yes))
        given = _np(pc.greater(pc.binary_length(said), 0))
        no_consent = int(np.count_nonzero(~yes))
        positions = np.flatnonzero(yes)
        idents = pc.extract_regex(pc.cast(bodies, pa.string()), _IDENTIFIERS)
        emails, phones = idents.field("email"), idents.field("phone")
        problems: dict[int, NotSubscribed] = {}
        chosen = pa.array(yes)
        email, phone = emails.filter(chosen), phones.filter(chosen)
        chosen_at = consented_at.filter(chosen) if consented_at is not None else None
        when = self._consent_times(chosen_at, len(positions), problems)
        has = {"email": _np(pc.greater(pc.binary_length(email), 0)), "sms": _np(pc.greater(pc.binary_length(phone), 0))}
        wanted = self.options.channels
        sendable = np.zeros(len(positions), dtype=bool)
        for channel in wanted:
            sendable |= has[channel]
        bad_time = np.zeros(len(positions), dtype=bool)
        bad_time[list(problems)] = True
        sendable &= ~bad_time
        missing = {channel: np.flatnonzero(~has[channel] & ~bad_time) for channel in wanted}
        for at in sorted(set(np.concatenate(list(missing.values())).tolist())):
            lacking = [channel for channel in wanted if not has[channel][at]]
            reason = ", ".join(_MISSING[channel] for channel in lacking)
            others = [_NAMES[channel] for channel in wanted if has[channel][at]]
            if others:
                reason += f"; subscribed to {' and '.join(others)} only"
            problems[at] = NotSubscribed(at, _IDENTIFIER_OF[lacking[0]], reason, bool(others))
        send = pa.array(sendable)
        entries = self._entries(email.filter(send), phone.filter(send), when.filter(send) if when is not None else None)
        withdrawn, withdrawn_at = self._withdrawn(given & ~yes, emails, phones)
        not_subscribed = [p._replace(position=int(positions[p.position])) for _, p in sorted(problems.items())]
        return ChunkConsent(entries, positions[sendable], not_subscribed, no_consent, withdrawn, withdrawn_at)

    def _consent_times(
        self, values: pa.Array | None, count: int | None, problems: dict[int, NotSubscribed]
    ) -> pa.Array | None:
        """Each consenting row's consent time as ISO 8601 in UTC (None: not sent, without
        historical_import); an empty, unreadable or future one is a problem of that row."""
        if not self.options.historical_import:
            return None
        if values is None:
            return None if count is None else _repeat(self._fallback, count)
        text = pc.utf8_trim_whitespace(_text(values))
        empty = _np(pc.equal(pc.binary_length(text), 0))
        shaped = _np(pc.match_substring_regex(text, _ISO_DATETIME)) | _np(pc.match_substring_regex(text, _ISO_DATE))
        dated = pc.match_substring_regex(text, _ISO_DATE)
        zoned = pc.match_substring_regex(text, _ZONED)
        full = pc.if_else(
            dated,
            pc.binary_join_element_wise(text, _s("T00:00:00Z"), _EMPTY),
            pc.if_else(zoned, text, pc.binary_join_element_wise(text, _s("Z"), _EMPTY)),
        )
        full = pc.if_else(pa.array(shaped), full, pa.scalar(None, pa.string()))
        stamps = _parse_times(full)
        readable = _np(pc.is_valid(stamps))
        future = np.zeros(len(text), dtype=bool)
        future[readable] = _np(pc.greater(stamps.filter(pa.array(readable)), pa.scalar(int(self.now * 1e6), _UTC)))
        field = self.options.consented_at_column or "consented_at"
        for at in np.flatnonzero(empty).tolist():
            problems[at] = NotSubscribed(at, field, "consented_at is empty (a historical import needs it)", False)
        for at in np.flatnonzero(~empty & ~readable).tolist():
            problems[at] = NotSubscribed(at, field, "consented_at is not an ISO 8601 date or date-time", False)
        for at in np.flatnonzero(future).tolist():
            problems[at] = NotSubscribed(at, field, "consented_at is in the future", False)
        seconds = pc.cast(stamps, pa.timestamp("s", tz="UTC"), safe=False)
        fine = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%S+00:00")
        return pc.fill_null(fine, _EMPTY)

    def _entries(self, email: pa.Array, phone: pa.Array, when: pa.Array | None) -> pa.BinaryArray:
        """The subscription profiles: identifiers, then the channels the row has an identifier for."""
        count = len(email)
        if count == 0:
            return pa.array([], pa.binary())
        pieces: list[pa.Array | pa.Scalar] = [_s('{"type":"profile","attributes":{')]
        has_email = pc.greater(pc.binary_length(email), 0)
        has_phone = pc.greater(pc.binary_length(phone), 0)
        pieces.append(
            pc.if_else(has_email, pc.binary_join_element_wise(_s('"email":"'), email, _s('",'), _EMPTY), _EMPTY)
        )
        pieces.append(
            pc.if_else(has_phone, pc.binary_join_element_wise(_s('"phone_number":"'), phone, _s('",'), _EMPTY), _EMPTY)
        )
        pieces.append(_s('"subscriptions":{'))
        for index, channel in enumerate(self.options.channels):
            parameters: list[pa.Array | pa.Scalar] = [_s(f'"{channel}":{{"marketing":{{"consent":"SUBSCRIBED"')]
            if when is not None:
                parameters += [_s(',"consented_at":"'), when, _s('"')]
            parameters.append(_s("}}"))
            piece = pc.binary_join_element_wise(*parameters, _EMPTY)
            present = has_email if channel == "email" else has_phone
            if index:  # a comma before it when an earlier channel is there
                earlier = has_email
                piece = pc.if_else(earlier, pc.binary_join_element_wise(_s(","), piece, _EMPTY), piece)
            pieces.append(pc.if_else(present, piece, _EMPTY))
        pieces.append(_s("}}},"))
        return pc.binary_join_element_wise(*pieces, _EMPTY).cast(pa.binary())

    def _withdrawn(self, said_no: np.ndarray, emails: pa.Array, phones: pa.Array) -> tuple[pa.BinaryArray, np.ndarray]:
        """Unsubscription entries for the rows that said no (only with unsubscribe_withdrawn)."""
        if not self.options.unsubscribe_withdrawn or not said_no.any():
            return pa.array([], pa.binary()), np.zeros(0, dtype=np.int64)
        chosen = pa.array(said_no)
        email, phone = emails.filter(chosen), phones.filter(chosen)
        has_email = _np(pc.greater(pc.binary_length(email), 0))
        has_phone = _np(pc.greater(pc.binary_length(phone), 0))
        usable = np.zeros(len(email), dtype=bool)
        for channel in self.options.channels:
            usable |= has_email if channel == "email" else has_phone
        keep = pa.array(usable)
        email, phone = email.filter(keep), phone.filter(keep)
        e, p = pc.greater(pc.binary_length(email), 0), pc.greater(pc.binary_length(phone), 0)
        pieces: list[pa.Array | pa.Scalar] = [
            _s('{"type":"profile","attributes":{'),
            pc.if_else(e, pc.binary_join_element_wise(_s('"email":"'), email, _s('",'), _EMPTY), _EMPTY),
            pc.if_else(p, pc.binary_join_element_wise(_s('"phone_number":"'), phone, _s('",'), _EMPTY), _EMPTY),
            _s('"subscriptions":{'),
        ]
        for index, channel in enumerate(self.options.channels):
            piece: pa.Array | pa.Scalar = _s(f'"{channel}":{{"marketing":{{"consent":"UNSUBSCRIBED"}}}}')
            if index:
                piece = pc.if_else(e, _s("," + piece.as_py()), piece)
            pieces.append(pc.if_else(e if channel == "email" else p, piece, _EMPTY))
        pieces.append(_s("}}},"))
        entries = pc.binary_join_element_wise(*pieces, _EMPTY).cast(pa.binary())
        return entries, np.flatnonzero(said_no)[usable]


def _repeat(value: pa.Scalar, count: int) -> pa.Array:
    return pa.array([value.as_py()], pa.string()).take(pa.array(np.zeros(count, dtype=np.int64)))


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
