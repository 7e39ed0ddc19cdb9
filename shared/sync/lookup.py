"""Finds the profiles that left the segment on the list, by their identifiers (100 a call): Klaviyo's
profile ids come from the list itself at removal time, so no run has to learn them as it sends, and a
profile the list no longer holds needs no removal."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from shared.klaviyo import MAX_PAGE_SIZE, KlaviyoClient, KlaviyoError
from shared.telemetry import carry_run_context

log = logging.getLogger(__name__)

# Lookups in flight at once: Klaviyo answers each in a fraction of a second, and the client's rate
# limiter (750 list reads a minute) sets the pace, not this number.
_LOOKUP_THREADS = 4
_EXTERNAL = "x:"
# Why the run must stop now, or None (the engine's RunWatch, through ExportSpec.stop_reason).
StopReason = Callable[[], str | None]


class OnList(NamedTuple):
    """Of the profiles looked up: those found (their identifier fingerprints and Klaviyo profile ids)
    and those not found on the list (fingerprints)."""

    ids: np.ndarray
    profile_ids: list[str]
    absent: np.ndarray


class RemovalStopped(Exception):
    """The run must stop (cancelled, or its export changed) while it waits to remove: nothing is removed."""


def settle_import_jobs(client: KlaviyoClient, timeout: float, stop_reason: StopReason = lambda: None) -> None:
    """Waits until every import job the account had unfinished when asked is finished: a run that
    was killed or failed may have left jobs Klaviyo is still importing, and a leaver looked up before
    its job lands on the list would be missed. Raises KlaviyoError after `timeout` seconds, and
    RemovalStopped as soon as `stop_reason` gives a reason."""
    waiting = {job.id for job in client.unfinished_import_jobs()}
    if waiting:
        log.info("mirror: waiting for %d earlier import job(s) to finish before looking up leavers", len(waiting))
    deadline, pause = time.monotonic() + timeout, 0.1
    while waiting:
        reason = stop_reason()
        if reason:
            raise RemovalStopped(reason)
        if time.monotonic() > deadline:
            raise KlaviyoError(f"{len(waiting)} earlier import job(s) still not complete after {timeout:.0f} s")
        time.sleep(pause)
        pause = min(pause * 2, 5.0)
        waiting &= {job.id for job in client.unfinished_import_jobs()}


class _Query(NamedTuple):
    field: str  # email, phone_number (on the list) or external_id (among the account's profiles)
    values: list[str]
    texts: list[str]  # the identifier texts the values stand for, in the same order


def find_on_list(client: KlaviyoClient, list_id: str, ids: np.ndarray, texts: list[str]) -> OnList:
    """Looks up profiles (identifier fingerprints and texts, as identifier_text writes them) on the
    list: by email or phone number among the list's members; by external id among the account's
    profiles (Klaviyo filters members on neither), those found counting as on the list."""
    queries = list(_queries(texts))
    found: dict[str, str] = {}
    if queries:
        with ThreadPoolExecutor(_LOOKUP_THREADS, "lookup", initializer=carry_run_context(None)) as pool:
            for answer in pool.map(lambda query: _ask(client, list_id, query), queries):
                found.update(answer)
    hit = np.array([text in found for text in texts], dtype=bool)
    profile_ids = [found[text] for text, on in zip(texts, hit.tolist(), strict=True) if on]
    return OnList(ids[hit], profile_ids, ids[~hit])


def _queries(texts: list[str]) -> Iterator[_Query]:
    """The lookups for `texts`, up to 100 values each, grouped by the kind of identifier."""
    kinds: dict[str, tuple[list[str], list[str]]] = {}
    for text in texts:
        if text.startswith(_EXTERNAL):
            field, value = "external_id", text[len(_EXTERNAL) :]
        elif "@" in text:
            field, value = "email", text
        else:
            field, value = "phone_number", text
        values, originals = kinds.setdefault(field, ([], []))
        values.append(value)
        originals.append(text)
    for field, (values, originals) in kinds.items():
        for start in range(0, len(values), MAX_PAGE_SIZE):
            end = start + MAX_PAGE_SIZE
            yield _Query(field, values[start:end], originals[start:end])


def _ask(client: KlaviyoClient, list_id: str, query: _Query) -> dict[str, str]:
    """Identifier text -> Klaviyo profile id, for the texts of `query` that were found."""
    if query.field == "external_id":
        profiles = client.profiles_by(query.field, query.values)
    else:
        profiles = client.list_members_by(list_id, query.field, query.values)
    wanted = set(query.texts)
    found: dict[str, str] = {}
    for profile_id, attributes in profiles:
        for text in _texts_of(attributes):
            if text in wanted:
                found[text] = profile_id
    return found


def _texts_of(attributes: Mapping[str, object]) -> Iterable[str]:
    """Every identifier of a Klaviyo profile as identifier_text would write it."""
    if attributes.get("email"):
        yield str(attributes["email"]).lower()
    if attributes.get("phone_number"):
        yield str(attributes["phone_number"])
    if attributes.get("external_id"):
        yield _EXTERNAL + str(attributes["external_id"])
