"""Subscribes a run's consenting rows to marketing (the export's `subscribe` option): reads each
chunk's consent for the profiles it imports, records the consenting rows that cannot be subscribed,
and sends the rest to Klaviyo's bulk subscribe endpoint in calls of 1,000, in threads of their own,
so the import never waits for them (the calls are paced at 75/s, 750/min: a million consenting rows
take about 80 s at Klaviyo's limits, a fast import far less). With `unsubscribe_withdrawn`, the rows
that say no are unsubscribed in calls of 100 once the import jobs are done (so that they are on the
list by then: Klaviyo unsubscribes a profile that is not on the list from all marketing)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from shared.engine.batching import PartNames
from shared.engine.callqueue import Call, CallQueue
from shared.engine.report import Counts, RejectLine, RejectsFile
from shared.engine.spec import ExportSpec
from shared.klaviyo import MAX_SUBSCRIBE_PROFILES, MAX_UNSUBSCRIBE_PROFILES, InvalidPayload, KlaviyoClient, KlaviyoError
from shared.mapping import ConsentReader, SubscribeOptions, Subscribers
from shared.privacy import redact
from shared.telemetry import carry_run_context

log = logging.getLogger(__name__)

# Threads sending subscribe calls: a few, so that a call's round trip does not hold the pace below
# the limit; the rate limiter, not this number, sets the pace.
_THREADS = 3
# Calls are queued 10 at a time (their JSON is written at once: Arrow's kernels cost about as much
# per call as per thousand rows), and held in memory up to about 4 MB before they wait in the spool.
_GROUP = 10 * MAX_SUBSCRIBE_PROFILES
_HELD_GROUPS = 4
_POINTER_PREFIX = "/data/attributes/profiles/data/"
_STOPPED = "the run stopped before this row was subscribed"


class ConsentValues(NamedTuple):
    """A chunk's profiles to import, as subscribing reads them: the part they come from, the consent
    and consented-at columns' values, and each profile's email and phone number (None: not mapped)."""

    source: str
    consent: pa.Array
    consented_at: pa.Array | None
    emails: pa.Array | None
    phones: pa.Array | None


class Subscriber:
    """The run's subscriptions: `add` a chunk's consent (run's thread), `complete` at the end.

    It alone writes the counts subscribed, not_subscribed, no_consent and unsubscribed, under its
    own lock (the run's thread and the sending threads both change them)."""

    def __init__(
        self,
        client: KlaviyoClient | None,
        spec: ExportSpec,
        options: SubscribeOptions,
        counts: Counts,
        rejects: RejectsFile,
        parts: PartNames,
    ) -> None:
        self.client, self.spec, self.options = client, spec, options
        self.counts, self.rejects, self.parts = counts, rejects, parts
        self.reader = ConsentReader(options, time.time())
        self.error: KlaviyoError | None = None  # a fatal answer: nothing more is subscribed
        self._lock = threading.Lock()
        self._pending: list[Call] = []  # consenting profiles not yet making a full call
        self._pending_count = 0
        self._withdrawn: list[Call] = []
        self._queue = CallQueue(_HELD_GROUPS)
        self._pool: ThreadPoolExecutor | None = None
        self._senders: list[Future[None]] = []
        self._abandoned = False  # the run ended without complete(): queued calls are dropped

    @property
    def columns(self) -> list[str]:
        return self.options.columns

    def add(
        self, values: ConsentValues, numbers: np.ndarray, rows: np.ndarray, masked: Callable[[np.ndarray], list[str]]
    ) -> None:
        """A chunk's consent, for its profiles to import at their row numbers and packed rows;
        `masked` gives the masked identifiers of profiles at positions."""
        count = len(numbers)
        emails, phones = (v if v is not None else pa.nulls(count, pa.string()) for v in (values.emails, values.phones))
        read = self.reader.read(values.consent, values.consented_at, emails, phones)
        if read.not_subscribed:
            at = np.array([problem.position for problem in read.not_subscribed], dtype=np.int64)
            lines = [
                RejectLine(values.source, number, shown, "not_subscribed", problem.field, problem.reason)
                for problem, number, shown in zip(read.not_subscribed, numbers[at].tolist(), masked(at), strict=True)
            ]
            self.rejects.add_many(lines)
        with self._lock:
            self.counts.no_consent += read.no_consent
            self.counts.not_subscribed += sum(not problem.subscribed for problem in read.not_subscribed)
            if self.spec.dry_run:
                self.counts.subscribed += len(read.subscribe)
                self.counts.unsubscribed += len(read.withdrawn)
        if self.spec.dry_run:
            return
        if len(read.withdrawn):
            self._withdrawn.append(Call(read.withdrawn, rows[read.withdrawn.positions]))
        if len(read.subscribe):
            self._pending.append(Call(read.subscribe, rows[read.subscribe.positions]))
            self._pending_count += len(read.subscribe)
            if self._pending_count >= MAX_SUBSCRIBE_PROFILES:
                self._queue_full_calls()

    def flush(self) -> None:
        """Queues the profiles that did not make a full call."""
        if self._pending_count:
            self._put(self._pending_call())

    def complete(self, stopped: bool) -> None:
        """Waits for every subscribe call, then (unless the run stopped early) unsubscribes the
        withdrawn consents; raises the fatal error a call met, which fails the run."""
        self.flush()
        self._queue.close()
        for sender in self._senders:
            sender.result()
        if not stopped and self.error is None:
            self._unsubscribe_withdrawn()
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Ends the sending threads; calls still queued (the run failed) are not sent."""
        self._abandoned = True
        self._queue.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._queue.discard()

    def _pending_call(self) -> Call:
        pending, self._pending, self._pending_count = self._pending, [], 0
        if len(pending) == 1:
            return pending[0]
        profiles = [call.profiles for call in pending]
        times = [p.consented_at for p in profiles]
        joined = Subscribers(
            np.zeros(sum(len(p) for p in profiles), dtype=np.int64),
            pa.concat_arrays([p.email for p in profiles]),
            pa.concat_arrays([p.phone for p in profiles]),
            None if times[0] is None else pa.concat_arrays(times),  # all or none
        )
        return Call(joined, np.concatenate([call.rows for call in pending]))

    def _queue_full_calls(self) -> None:
        """Queues the pending profiles that fill calls of 1,000 (in groups of up to 10 calls) and
        keeps the rest pending."""
        call = self._pending_call()
        total = len(call.rows)
        full = total - total % MAX_SUBSCRIBE_PROFILES
        for start in range(0, full, _GROUP):
            self._put(_slice(call, start, min(start + _GROUP, full)))
        if full < total:
            self._pending, self._pending_count = [_slice(call, full, total)], total - full

    def _put(self, call: Call) -> None:
        if self._pool is None:
            initializer = carry_run_context(self.spec.thread_initializer)
            self._pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="subscribe", initializer=initializer)
            self._senders = [self._pool.submit(self._send_calls) for _ in range(_THREADS)]
        self._queue.put(call)

    def _send_calls(self) -> None:
        while (group := self._queue.get()) is not None:
            entries = self.reader.entries(group.profiles)
            for start in range(0, len(group.rows), MAX_SUBSCRIBE_PROFILES):
                end = min(start + MAX_SUBSCRIBE_PROFILES, len(group.rows))
                self._send_call(_slice(group, start, end), entries.slice(start, end - start))

    def _send_call(self, call: Call, entries: pa.BinaryArray) -> None:
        if self._abandoned:
            self._missed(call.rows, _STOPPED)
        elif self.error is not None:
            self._missed(call.rows, f"not subscribed: an earlier call failed: {redact(str(self.error))}")
        elif self.spec.stop_reason():
            self._missed(call.rows, _STOPPED)
        else:
            try:
                self._send(call, entries)
            except KlaviyoError as exc:
                if exc.fatal:
                    self.error = self.error or exc
                self._missed(call.rows, f"Klaviyo did not take the subscription: {redact(str(exc))}")

    def _send(self, call: Call, entries: pa.BinaryArray) -> None:
        """One call; the profiles Klaviyo's 400 names are not subscribed, the others sent again."""
        assert self.client is not None
        try:
            self.client.subscriptions.subscribe(
                self.spec.list_id, _joined(entries), len(entries), self.options.historical_import
            )
        except InvalidPayload as exc:
            bad = _refused(exc, len(call.rows))
            if not bad:
                raise
            for index, reason in bad.items():
                self._missed(call.rows[[index]], reason)
            keep = np.flatnonzero(~np.isin(np.arange(len(call.rows)), list(bad)))
            if len(keep):
                self._send(Call(call.profiles.take(keep), call.rows[keep]), entries.take(pa.array(keep)))
            return
        with self._lock:
            self.counts.subscribed += len(call.rows)

    def _unsubscribe_withdrawn(self) -> None:
        """Unsubscribes the rows that said no, 100 a call (after the import jobs put them on the list)."""
        withdrawn, self._withdrawn = self._withdrawn, []
        assert self.client is not None or not withdrawn
        for call in withdrawn:
            entries = self.reader.entries(call.profiles, consent="UNSUBSCRIBED")
            for start in range(0, len(entries), MAX_UNSUBSCRIBE_PROFILES):
                if self.spec.stop_reason():
                    return
                chunk = entries.slice(start, MAX_UNSUBSCRIBE_PROFILES)
                try:
                    self.client.subscriptions.unsubscribe(self.spec.list_id, _joined(chunk), len(chunk))  # type: ignore[union-attr]
                except KlaviyoError as exc:
                    if exc.fatal:
                        self.error = exc
                        return
                    log.warning("unsubscription of %d profiles failed: %s", len(chunk), exc)
                    continue
                with self._lock:
                    self.counts.unsubscribed += len(chunk)

    def _missed(self, rows: np.ndarray, reason: str) -> None:
        """Consenting rows a call did not subscribe (named by where they are: no identifier is kept)."""
        lines = []
        for packed in rows.tolist():
            part, number = self.parts.row_of(packed)
            lines.append(RejectLine(part, number, "", "not_subscribed", "", reason))
        with self._lock:
            self.counts.not_subscribed += len(lines)
        self.rejects.add_many(lines)


def _slice(call: Call, start: int, end: int) -> Call:
    profiles, length = call.profiles, end - start
    when = profiles.consented_at.slice(start, length) if profiles.consented_at is not None else None
    sliced = Subscribers(
        profiles.positions[start:end], profiles.email.slice(start, length), profiles.phone.slice(start, length), when
    )
    return Call(sliced, call.rows[start:end])


def _refused(exc: InvalidPayload, size: int) -> dict[int, str]:
    """The profiles of the call Klaviyo's 400 names, and why (its words, redacted)."""
    bad: dict[int, str] = {}
    for error in exc.errors:
        pointer = (error.get("source") or {}).get("pointer") or ""
        head = pointer[len(_POINTER_PREFIX) :].split("/", 1)[0] if pointer.startswith(_POINTER_PREFIX) else ""
        if head.isdigit() and int(head) < size:
            reason = redact(str(error.get("detail") or error.get("title") or "invalid"))
            bad.setdefault(int(head), f"Klaviyo refused the subscription: {reason}")
    return bad


def _joined(entries: pa.BinaryArray) -> bytes:
    """The entries' bytes one after the other (each ends with its comma), without a copy per entry."""
    offsets = np.frombuffer(entries.buffers()[1], dtype=np.int32, count=len(entries) + 1, offset=4 * entries.offset)
    data = entries.buffers()[2]
    start, end = int(offsets[0]), int(offsets[-1])
    return b"" if data is None else data.slice(start, end - start).to_pybytes()
