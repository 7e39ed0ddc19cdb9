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
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.engine.batching import PartNames
from shared.engine.callqueue import Call
from shared.engine.checkpoint import RunCheckpoint
from shared.engine.report import Counts, RejectLine, RejectsFile
from shared.engine.spec import ExportSpec
from shared.engine.subscribe_calls import SubscribeCalls, slice_call
from shared.engine.unsubscriber import WithdrawnConsents
from shared.klaviyo import MAX_SUBSCRIBE_PROFILES, KlaviyoClient, KlaviyoError
from shared.mapping import ChunkConsent, ConsentReader, SubscribeOptions, Subscribers

log = logging.getLogger(__name__)

# Calls are queued 10 at a time (their JSON is written at once: Arrow's kernels cost about as much
# per call as per thousand rows).
_GROUP = 10 * MAX_SUBSCRIBE_PROFILES
# After a profile's body (its trailing comma) for its sync fingerprint: no subscription, subscribe, unsubscribe.
_MARKS = pa.array([b"|n", b"|s", b"|w"], pa.binary())


class ConsentValues(NamedTuple):
    """A chunk's profiles to import, as subscribing reads them: the part they come from, the consent
    and consented-at columns' values, and each profile's email and phone number (None: not mapped)."""

    source: str
    consent: pa.Array
    consented_at: pa.Array | None
    emails: pa.Array | None
    phones: pa.Array | None


class Subscriber:
    """The run's subscriptions: `add` a chunk's consent (run's thread), `complete` at the end, or
    `pause` when the run's time is up (its next invocation goes on: `resume`).

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
        self._lock = threading.Lock()
        self._pending: list[Call] = []  # consenting profiles not yet making a full call
        self._pending_count = 0
        self.withdrawn = WithdrawnConsents(client, spec, self.reader, counts, self._lock)
        self.calls = SubscribeCalls(
            client, spec, options.historical_import, self.reader, counts, rejects, parts, self._lock
        )

    def resume(self, saved: dict[str, Any]) -> None:
        """Goes on from an earlier invocation's progress: its rows are not subscribed again."""
        self.calls.resume(saved)
        self.withdrawn.resume(saved)

    def segment_read(self, checkpoint: RunCheckpoint, interrupted: bool) -> None:
        """The segment is read: the last call is queued (it goes out while the jobs are waited for);
        or the run's time is up, and the calls stop where they are, noted in the checkpoint."""
        self.flush()
        if interrupted:
            checkpoint.record_subscriptions({**self.calls.pause(), **self.withdrawn.progress()})

    @property
    def columns(self) -> list[str]:
        return self.options.columns

    def read(
        self, values: ConsentValues, numbers: np.ndarray, masked: Callable[[np.ndarray], list[str]]
    ) -> ChunkConsent:
        """A chunk's consent, for its profiles to import at their row numbers (`masked` gives the
        masked identifiers of profiles at positions): records the consenting rows that cannot be
        subscribed, and counts those without consent. `queue` then sends what is to be sent."""
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
        return read

    def marked(self, bodies: pa.BinaryArray, read: ChunkConsent) -> pa.BinaryArray:
        """The profile bodies with what is asked of their consent (subscribe, unsubscribe or
        nothing) appended, for a sync state's fingerprints: a delta run sends a profile again, and
        subscribes it again, only when that changed too."""
        marks = np.zeros(len(bodies), dtype=np.int8)
        marks[read.subscribe.positions] = 1
        marks[read.withdrawn.positions] = 2
        text = _MARKS.take(pa.array(marks))
        return pc.binary_join_element_wise(bodies, text, b"")

    def queue(self, read: ChunkConsent, rows: np.ndarray, sent: np.ndarray | None) -> None:
        """Queues the subscribe calls of a read chunk: its profiles at `rows` (packed), only those
        `sent` (a mask: a delta run's new and changed profiles; None: all)."""
        subscribe, withdrawn = read.subscribe, read.withdrawn
        if sent is not None:
            subscribe = subscribe.take(np.flatnonzero(sent[subscribe.positions]))
            withdrawn = withdrawn.take(np.flatnonzero(sent[withdrawn.positions]))
        if self.spec.dry_run:
            with self._lock:
                self.counts.subscribed += len(subscribe)
                self.counts.unsubscribed += len(withdrawn)
            return
        if len(withdrawn):
            self.withdrawn.add(Call(withdrawn, rows[withdrawn.positions]))
        through = self.calls.progress.through
        if through >= 0:  # an earlier invocation subscribed these
            subscribe = subscribe.take(np.flatnonzero(rows[subscribe.positions] > through))
        if len(subscribe):
            self._pending.append(Call(subscribe, rows[subscribe.positions]))
            self._pending_count += len(subscribe)
            if self._pending_count >= MAX_SUBSCRIBE_PROFILES:
                self._queue_full_calls()

    def flush(self) -> None:
        """Queues the profiles that did not make a full call."""
        if self._pending_count:
            self.calls.put(self._pending_call())

    def complete(self, stopped: bool, checkpoint: RunCheckpoint) -> bool:
        """Waits for every subscribe call, then (unless the run stopped early) unsubscribes the
        withdrawn consents; raises the fatal error a call met, which fails the run. Returns False
        when the run's time ran out first: the calls stopped, and the checkpoint notes how far."""
        if self.calls.paused:
            return True
        self.flush()
        finished = self.calls.finish(self.spec.deadline)
        if finished and not stopped and self.calls.error is None:
            outcome = self.withdrawn.send()
            if isinstance(outcome, KlaviyoError):
                raise outcome
            finished = outcome or bool(self.spec.stop_reason())  # cancelled: no next invocation
        if self.calls.error is not None:
            raise self.calls.error
        if not finished:
            checkpoint.record_subscriptions(self._progress())
        return finished

    def _progress(self) -> dict[str, Any]:
        return {**self.calls.progress.snapshot(), **self.withdrawn.progress()}

    def close(self) -> None:
        """Ends the sending threads; calls still queued (the run failed) are not sent."""
        self.calls.close()

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
            self.calls.put(slice_call(call, start, min(start + _GROUP, full)))
        if full < total:
            self._pending, self._pending_count = [slice_call(call, full, total)], total - full
