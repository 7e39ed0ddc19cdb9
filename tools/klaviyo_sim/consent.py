"""Marketing consent the simulator keeps per profile, and what the bulk subscription endpoints do to it.

Consent is not list membership (klaviyo-api.md, "Consent"). Each profile has a status per channel and
message type ("email.marketing", "sms.marketing", "sms.transactional", ...): SUBSCRIBED, UNSUBSCRIBED
or NEVER_SUBSCRIBED, with when it took effect and whether it came from a historical import; the email
suppressions (UNSUBSCRIBE, SPAM_COMPLAINT, ...); and the confirmations sent and not yet answered.
Profiles read with additional-fields[profile]=subscriptions carry it in Klaviyo's shape (render()).

Subscribing follows the list's opt-in process (the account's default without a list): single opt-in,
or historical_import with a past consented_at, subscribes at once and the profile joins the list when a
marketing channel was subscribed; double opt-in only sends a confirmation, and nothing changes until
the profile confirms (confirm()). Subscribing the email channel lifts UNSUBSCRIBE, SPAM_COMPLAINT
(the endpoint's description calls it SPAM_REPORT) and USER_SUPPRESSED suppressions, never a bounce.
Unsubscribing sets the named channels UNSUBSCRIBED for every profile given (an account with Klaviyo's
default global unsubscribe: a profile not on the list is unsubscribed all the same) and takes the
profiles off the given list.

Requests are applied before the 202 is answered: Klaviyo gives no job to wait for, so a test reads
the outcome straight after. A profile that cannot be applied (its identifiers belong to two profiles,
an unknown id) is skipped and counted, as Klaviyo's job would drop it without a word.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from .state import Account, ApiError, SimList, SimState, iso
from .subscriptions import ConsentChange, ConsentJob, ProfileRequest

SUBSCRIBED = "SUBSCRIBED"
UNSUBSCRIBED = "UNSUBSCRIBED"
NEVER_SUBSCRIBED = "NEVER_SUBSCRIBED"
# The reasons are those of a profile's subscriptions.email.marketing.suppression (EmailMarketingSuppression).
LIFTED_BY_SUBSCRIBE = frozenset({"UNSUBSCRIBE", "SPAM_COMPLAINT", "USER_SUPPRESSED"})
SUPPRESSION_REASONS = LIFTED_BY_SUBSCRIBE | {"HARD_BOUNCE", "INVALID_EMAIL"}
OPT_IN_PROCESSES = ("single_opt_in", "double_opt_in")
# Confirming by text message opts in to SMS and email; confirming by email, to email alone.
_CONFIRMED_BY = {"email": frozenset({"email"}), "phone": frozenset({"email", "sms", "whatsapp"})}


@dataclass(frozen=True)
class ChannelConsent:
    """One channel and message type's consent: its status, when it took effect (epoch seconds: the
    consented_at of a historical import, else the time of the request or confirmation) and how."""

    consent: str
    timestamp: float
    historical_import: bool = False
    custom_source: str | None = None
    method: str = "API"  # "DOUBLE_OPT_IN" once confirmed, "SUPPRESSION" when set by suppress()
    recorded_at: float | None = None  # when the simulator recorded it (Klaviyo's last_updated)


@dataclass(frozen=True)
class PendingConfirmation:
    """A confirmation sent for a double opt-in subscription, waiting for the profile's answer."""

    list_id: str | None
    changes: tuple[ConsentChange, ...]
    custom_source: str | None
    requested_at: float


@dataclass
class _Record:
    channels: dict[str, ChannelConsent] = field(default_factory=dict)
    pending: dict[str | None, PendingConfirmation] = field(default_factory=dict)
    suppressions: dict[str, float] = field(default_factory=dict)  # reason -> when

    def lift(self) -> None:
        for reason in LIFTED_BY_SUBSCRIBE:
            self.suppressions.pop(reason, None)


class ConsentView(NamedTuple):
    """What a test reads of one profile's consent (see ConsentBook.consent_of)."""

    profile_id: str
    email: str | None
    phone_number: str | None
    channels: dict[str, ChannelConsent]
    pending: dict[str | None, tuple[str, ...]]  # list id (None: no list) -> "email.marketing", ...
    suppressions: frozenset[str]
    lists: frozenset[str]
    confirmations_sent: int

    def status(self, channel: str) -> str:
        """The consent of "email.marketing", "sms.marketing", "sms.transactional", ..."""
        found = self.channels.get(channel)
        return found.consent if found else NEVER_SUBSCRIBED


def _marketing_json(consent: ChannelConsent | None) -> dict[str, Any]:
    if consent is None:
        return {
            "consent": NEVER_SUBSCRIBED,
            "consent_timestamp": None,
            "last_updated": None,
            "method": None,
            "method_detail": "",
            "custom_method_detail": None,
        }
    return {
        "consent": consent.consent,
        "consent_timestamp": iso(consent.timestamp),
        "last_updated": iso(consent.recorded_at),
        "method": consent.method,
        "method_detail": "",
        "custom_method_detail": consent.custom_source,
    }


def _key(change: ConsentChange) -> str:
    return f"{change.channel}.{change.kind}"


class ConsentBook:
    """Every account's consent records, changed by the subscription endpoints and read by tests."""

    def __init__(self, state: SimState) -> None:
        self._state = state
        self._records: dict[tuple[str, int], _Record] = {}
        self._confirmations: Counter[tuple[str, int]] = Counter()
        self._default_opt_in: dict[str, str] = {}
        self._counts: Counter[str] = Counter()

    # ---- the endpoints

    def apply(self, account: Account, job: ConsentJob) -> None:
        """Applies a checked request; raises ApiError when its list is not one of the account's."""
        state = self._state
        with state.lock:
            target = None
            if job.list_id is not None:
                target = state.find_list(job.list_id, account)
                if target is None:
                    raise ApiError.invalid(
                        "The list does not exist in this account.", pointer="/data/relationships/list/data/id"
                    )
            now = state.clock()
            for profile in job.profiles:
                row = self._row(account, profile, now)
                if row is None:
                    self._counts["profiles_skipped"] += 1
                elif job.subscribe:
                    self._subscribe(account, row, profile, job, target, now)
                else:
                    self._unsubscribe(account, row, profile, target, now)
            if target is not None:
                target.updated = now
            self._counts["subscribe_requests" if job.subscribe else "unsubscribe_requests"] += 1

    def _row(self, account: Account, profile: ProfileRequest, now: float) -> int | None:
        """The profile's row, created when no profile has its identifiers; None when they name two profiles."""
        store = account.profiles
        by_email = store.by_email.get(profile.email) if profile.email else None
        by_phone = store.by_phone.get(profile.phone_number) if profile.phone_number else None
        found = {row for row in (by_email, by_phone) if row is not None}
        if profile.profile_id is not None:
            row = account.row_of(profile.profile_id)
            if row is None or not found <= {row}:
                return None
        elif len(found) > 1:
            return None
        elif found:
            row = found.pop()
        else:
            return store.insert(profile.email, profile.phone_number, None, {}, None, now)
        # Only a new identifier changes the profile (merge would re-encode its stored attributes).
        if (profile.email and store.email[row] != profile.email) or (
            profile.phone_number and store.phone[row] != profile.phone_number
        ):
            store.merge(row, profile.email, profile.phone_number, None, {}, None, now)
        return row

    def _record(self, account: Account, row: int) -> _Record:
        return self._records.setdefault((account.name, row), _Record())

    def _subscribe(
        self, account: Account, row: int, profile: ProfileRequest, job: ConsentJob, target: SimList | None, now: float
    ) -> None:
        record = self._record(account, row)
        if any(change.channel == "email" for change in profile.changes):
            record.lift()
        process = target.opt_in_process if target is not None else self.default_opt_in(account.name)
        if job.historical_import or process != "double_opt_in":
            self._grant(record, profile.changes, job.historical_import, job.custom_source, "API", now)
            if target is not None and any(change.kind == "marketing" for change in profile.changes):
                target.add(row, now)
            self._counts["profiles_subscribed"] += 1
            return
        record.pending[job.list_id] = PendingConfirmation(job.list_id, profile.changes, job.custom_source, now)
        self._confirmations[(account.name, row)] += 1
        self._counts["confirmations_sent"] += 1

    @staticmethod
    def _grant(
        record: _Record,
        changes: tuple[ConsentChange, ...],
        historical: bool,
        custom_source: str | None,
        method: str,
        now: float,
    ) -> None:
        for change in changes:
            when = change.consented_at if change.consented_at is not None else now
            record.channels[_key(change)] = ChannelConsent(SUBSCRIBED, when, historical, custom_source, method, now)

    def _unsubscribe(
        self, account: Account, row: int, profile: ProfileRequest, target: SimList | None, now: float
    ) -> None:
        record = self._record(account, row)
        named = {_key(change) for change in profile.changes}
        for key in named:
            record.channels[key] = ChannelConsent(UNSUBSCRIBED, now, recorded_at=now)
        if "email.marketing" in named:
            record.suppressions.setdefault("UNSUBSCRIBE", now)
        # A confirmation answered after an unsubscribe must not subscribe those channels again.
        for list_id, pending in list(record.pending.items()):
            kept = tuple(change for change in pending.changes if _key(change) not in named)
            if kept:
                record.pending[list_id] = replace(pending, changes=kept)
            else:
                del record.pending[list_id]
        if target is not None:
            target.remove(row)
        self._counts["profiles_unsubscribed"] += 1

    # ---- test controls

    def default_opt_in(self, account: str) -> str:
        return self._default_opt_in.get(account, "single_opt_in")

    def set_default_opt_in(self, process: str, account: str = "default") -> None:
        """The opt-in process of subscriptions made without a list."""
        if process not in OPT_IN_PROCESSES:
            raise ValueError(f"opt-in process must be one of {', '.join(OPT_IN_PROCESSES)}")
        self._default_opt_in[account] = process

    def _find(self, identifier: str, account: str) -> tuple[Account, int] | None:
        owner = self._state.accounts.get(account)
        if owner is None:
            return None
        store = owner.profiles
        row = store.by_phone.get(identifier) if identifier.startswith("+") else store.by_email.get(identifier.lower())
        return None if row is None else (owner, row)

    def consent_of(self, identifier: str, account: str = "default") -> ConsentView | None:
        """The consent of the profile with this email or phone number, None when there is no such profile."""
        with self._state.lock:
            found = self._find(identifier, account)
            if found is None:
                return None
            owner, row = found
            record = self._records.get((owner.name, row)) or _Record()
            return ConsentView(
                profile_id=owner.profile_id(row),
                email=owner.profiles.email[row],
                phone_number=owner.profiles.phone[row],
                channels=dict(record.channels),
                pending={
                    list_id: tuple(_key(change) for change in pending.changes)
                    for list_id, pending in record.pending.items()
                },
                suppressions=frozenset(record.suppressions),
                lists=frozenset(list_id for list_id, item in owner.lists.items() if row in item.position),
                confirmations_sent=self._confirmations[(owner.name, row)],
            )

    def subscribed(self, list_id: str, channel: str) -> set[str]:
        """The list's members SUBSCRIBED to marketing on the channel: their emails, or phone numbers for SMS."""
        with self._state.lock:
            found = self._state.find_list(list_id)
            if found is None:
                raise KeyError(list_id)
            owner = found.account
            column = owner.profiles.email if channel == "email" else owner.profiles.phone
            key = f"{channel}.marketing"
            members = []
            for row in found.position:
                record = self._records.get((owner.name, row))
                consent = record.channels.get(key) if record else None
                value = column[row]
                if consent is not None and consent.consent == SUBSCRIBED and value is not None:
                    members.append(value)
            return set(members)

    def confirm(self, identifier: str, list_id: str | None, account: str = "default") -> bool:
        """The profile answers the confirmation sent for list_id (None: a subscription without a list),
        by email or, when identifier is a phone number, by text. False when none is waiting."""
        state = self._state
        with state.lock:
            found = self._find(identifier, account)
            record = self._records.get((found[0].name, found[1])) if found else None
            pending = record.pending.get(list_id) if record else None
            if found is None or record is None or pending is None:
                return False
            owner, row = found
            channels = _CONFIRMED_BY["phone" if identifier.startswith("+") else "email"]
            confirmed = tuple(change for change in pending.changes if change.channel in channels)
            if not confirmed:
                return False
            rest = tuple(change for change in pending.changes if change.channel not in channels)
            if rest:
                record.pending[list_id] = replace(pending, changes=rest)
            else:
                del record.pending[list_id]
            now = state.clock()
            if any(change.channel == "email" for change in confirmed):
                record.lift()
            self._grant(record, confirmed, False, pending.custom_source, "DOUBLE_OPT_IN", now)
            target = state.find_list(list_id, owner) if list_id is not None else None
            if target is not None and any(change.kind == "marketing" for change in confirmed):
                target.add(row, now)
                target.updated = now
            return True

    def suppress(self, email: str, reason: str = "SPAM_COMPLAINT", account: str = "default") -> None:
        """Suppresses the profile's email (as an unsubscribe link, a spam report or a bounce would)."""
        if reason not in SUPPRESSION_REASONS:
            raise ValueError(f"reason must be one of {', '.join(sorted(SUPPRESSION_REASONS))}")
        with self._state.lock:
            found = self._find(email, account)
            if found is None:
                raise KeyError(email)
            record = self._record(*found)
            now = self._state.clock()
            record.suppressions[reason] = now
            if reason in ("UNSUBSCRIBE", "SPAM_COMPLAINT"):
                withdrawn = ChannelConsent(UNSUBSCRIBED, now, method="SUPPRESSION", recorded_at=now)
                record.channels["email.marketing"] = withdrawn

    def render(self, account: Account, row: int) -> dict[str, Any]:
        """The profile's subscriptions object as Klaviyo returns it (schema Subscriptions): email and SMS."""
        record = self._records.get((account.name, row)) or _Record()
        email = _marketing_json(record.channels.get("email.marketing"))
        email["can_receive_email_marketing"] = not record.suppressions  # "no global suppressions"
        double_optin = record.channels.get("email.marketing")
        email["double_optin"] = double_optin is not None and double_optin.method == "DOUBLE_OPT_IN"
        email["suppression"] = [{"reason": r, "timestamp": iso(at)} for r, at in sorted(record.suppressions.items())]
        email["list_suppressions"] = []
        sms = {kind: _marketing_json(record.channels.get(f"sms.{kind}")) for kind in ("marketing", "transactional")}
        for kind, value in sms.items():
            value[f"can_receive_sms_{kind}"] = value["consent"] == SUBSCRIBED
            del value["custom_method_detail"]
        return {"email": {"marketing": email}, "sms": sms}

    def counts(self) -> dict[str, int]:
        with self._state.lock:
            return dict(self._counts)
