"""Subscribes a run's consenting rows to marketing (the export's `subscribe` option): reads each
chunk's consent for the profiles it imports, records the consenting rows that cannot be subscribed,
and sends the rest to Klaviyo's bulk subscribe endpoint in calls of 1,000, in threads of its own so
the import path never waits for them (the calls are paced at 75/s, 750/min; a million consenting
rows take about 80 s at Klaviyo's limits). With `unsubscribe_withdrawn`, the rows that say no are
unsubscribed in calls of 100 once the import jobs are done (so that they are on the list by then:
Klaviyo unsubscribes a profile that is not on the list from all marketing)."""

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
from shared.engine.report import Counts, RejectLine, RejectsFile
from shared.engine.spec import ExportSpec
from shared.klaviyo import MAX_SUBSCRIBE_PROFILES, MAX_UNSUBSCRIBE_PROFILES, InvalidPayload, KlaviyoClient, KlaviyoError
from shared.mapping import ChunkConsent, ConsentReader, SubscribeOptions
from shared.privacy import redact
from shared.telemetry import carry_run_context

log = logging.getLogger(__name__)

# Threads sending subscribe calls: a few, so that a call's round trip does not hold the pace below
# the limit; the rate limiter, not this number, sets the pace.
_THREADS = 3
# Calls ready to send and waiting for a thread, at most (about 250 KB each): past it, the run's
# thread waits, so that memory stays bounded however far the subscriptions fall behind.
_QUEUED_CALLS = 64
_POINTER_PREFIX = "/data/attributes/profiles/data/"
_STOPPED = "the run stopped before this row was subscribed"


class _Call(NamedTuple):
    """One bulk subscribe call: the entries (each with a trailing comma) and their packed rows."""

    entries: pa.BinaryArray
    rows: np.ndarray


class Subscriber:
    """The run's subscriptions: `add` a chunk's consent (run's thread), `finish` once the segment
    is read, `unsubscribe_withdrawn` once the import jobs are done, `close` at the end.

    It alone writes the counts subscribed, not_subscribed, no_consent and unsubscribed, under
    its own lock (the run's thread and its sending threads both change them)."""

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
        self._pending: list[_Call] = []  # entries not yet making a full call
        self._pending_count = 0
        self._withdrawn: list[_Call] = []
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []
        self._slots = threading.BoundedSemaphore(_QUEUED_CALLS + _THREADS)

    @property
    def columns(self) -> list[str]:
        return self.options.columns

    def add(
        self,
        source: str,
        consent: pa.Array,
        consented_at: pa.Array | None,
        bodies: pa.Array,
        numbers: np.ndarray,
        rows: np.ndarray,
        masked: Callable[[np.ndarray], list[str]],
    ) -> None:
        """A chunk's profiles to import (bodies, row numbers, packed rows) and their consent values."""
        read: ChunkConsent = self.reader.read(consent, consented_at, bodies)
        lines = []
        if read.not_subscribed:
            at = np.array([problem.position for problem in read.not_subscribed], dtype=np.int64)
            for problem, number, shown in zip(read.not_subscribed, numbers[at].tolist(), masked(at), strict=True):
                lines.append(RejectLine(source, number, shown, "not_subscribed", problem.field, problem.reason))
        missed = sum(not problem.subscribed for problem in read.not_subscribed)
        with self._lock:
            self.counts.no_consent += read.no_consent
            self.counts.not_subscribed += missed
            if self.spec.dry_run:
                self.counts.subscribed += len(read.entries)
                self.counts.unsubscribed += len(read.withdrawn)
        if lines:
            self.rejects.add_many(lines)
        if self.spec.dry_run:
            return
        if len(read.withdrawn):
            self._withdrawn.append(_Call(read.withdrawn, rows[read.withdrawn_positions]))
        if len(read.entries):
            self._pending.append(_Call(read.entries, rows[read.positions]))
            self._pending_count += len(read.entries)
            if self._pending_count >= MAX_SUBSCRIBE_PROFILES:
                self._send_full_calls()

    def flush(self) -> None:
        """Sends the entries that did not make a full call."""
        if self._pending_count:
            self._submit(self._pending_call())

    def finish(self) -> None:
        """Sends what is left and waits for every call; rows whose call was never made (the run
        stopped, or a fatal answer came) are counted not subscribed."""
        self.flush()
        for future in self._futures:
            future.result()
        self._futures = []

    def complete(self, stopped: bool) -> None:
        """The last subscribe calls waited for, then (unless the run stopped early) the withdrawn
        consents; raises the fatal error a call met, which fails the run."""
        self.finish()
        if not stopped and self.error is None:
            self.unsubscribe_withdrawn()
        if self.error is not None:
            raise self.error

    def unsubscribe_withdrawn(self) -> None:
        """Unsubscribes the rows that said no, 100 a call (after the import jobs put them on the list)."""
        withdrawn, self._withdrawn = self._withdrawn, []
        if not withdrawn or self.client is None or self.error is not None:
            return
        entries = pa.concat_arrays([call.entries for call in withdrawn])
        for start in range(0, len(entries), MAX_UNSUBSCRIBE_PROFILES):
            if self.spec.stop_reason():
                return
            chunk = entries.slice(start, MAX_UNSUBSCRIBE_PROFILES)
            try:
                self.client.subscriptions.unsubscribe(self.spec.list_id, _joined(chunk), len(chunk))
            except KlaviyoError as exc:
                if exc.fatal:
                    self.error = exc
                    return
                log.warning("unsubscription of %d profiles failed: %s", len(chunk), exc)
                continue
            with self._lock:
                self.counts.unsubscribed += len(chunk)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _pending_call(self) -> _Call:
        """Every pending entry as one call (split into calls of 1,000 by the caller)."""
        pending, self._pending, self._pending_count = self._pending, [], 0
        if len(pending) == 1:
            return pending[0]
        return _Call(pa.concat_arrays([c.entries for c in pending]), np.concatenate([c.rows for c in pending]))

    def _send_full_calls(self) -> None:
        """Submits the pending entries in calls of 1,000 and keeps the rest pending."""
        entries, rows = self._pending_call()
        full = len(rows) - len(rows) % MAX_SUBSCRIBE_PROFILES
        for start in range(0, full, MAX_SUBSCRIBE_PROFILES):
            end = start + MAX_SUBSCRIBE_PROFILES
            self._submit(_Call(entries.slice(start, MAX_SUBSCRIBE_PROFILES), rows[start:end]))
        if full < len(rows):
            self._pending, self._pending_count = [_Call(entries.slice(full), rows[full:])], len(rows) - full

    def _submit(self, call: _Call) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                _THREADS, thread_name_prefix="subscribe", initializer=carry_run_context(self.spec.thread_initializer)
            )
        self._slots.acquire()
        future = self._pool.submit(self._send_call, call)
        future.add_done_callback(lambda _: self._slots.release())
        self._futures = [f for f in self._futures if not f.done() or f.exception() is not None]
        self._futures.append(future)

    def _send_call(self, call: _Call) -> None:
        if self.error is not None:
            self._missed(call.rows, f"not subscribed: an earlier call failed: {redact(str(self.error))}")
            return
        if self.spec.stop_reason():
            self._missed(call.rows, _STOPPED)
            return
        try:
            self._send(call)
        except KlaviyoError as exc:
            if exc.fatal:
                self.error = self.error or exc
            self._missed(call.rows, f"Klaviyo did not take the subscription: {redact(str(exc))}")

    def _send(self, call: _Call) -> None:
        """One call; the profiles Klaviyo's 400 names are not subscribed, the others sent again."""
        assert self.client is not None
        try:
            self.client.subscriptions.subscribe(
                self.spec.list_id, _joined(call.entries), len(call.entries), self.options.historical_import
            )
        except InvalidPayload as exc:
            bad: dict[int, str] = {}
            for error in exc.errors:
                pointer = (error.get("source") or {}).get("pointer") or ""
                head = pointer[len(_POINTER_PREFIX) :].split("/", 1)[0] if pointer.startswith(_POINTER_PREFIX) else ""
                if head.isdigit() and int(head) < len(call.rows):
                    reason = redact(str(error.get("detail") or error.get("title") or "invalid"))
                    bad.setdefault(int(head), f"Klaviyo refused the subscription: {reason}")
            if not bad:
                raise
            for index, reason in bad.items():
                self._missed(call.rows[[index]], reason)
            keep = np.ones(len(call.rows), dtype=bool)
            keep[list(bad)] = False
            if keep.any():
                self._send(_Call(call.entries.filter(pa.array(keep)), call.rows[keep]))
            return
        with self._lock:
            self.counts.subscribed += len(call.rows)

    def _missed(self, rows: np.ndarray, reason: str) -> None:
        """Consenting rows a call did not subscribe (their identifiers are not kept: only where they are)."""
        lines = []
        for packed in rows.tolist():
            part, number = self.parts.row_of(packed)
            lines.append(RejectLine(part, number, "", "not_subscribed", "", reason))
        with self._lock:
            self.counts.not_subscribed += len(lines)
        self.rejects.add_many(lines)


def _joined(entries: pa.BinaryArray) -> bytes:
    """The entries' bytes one after the other (each ends with its comma), without a copy per entry."""
    offsets = np.frombuffer(entries.buffers()[1], dtype=np.int32, count=len(entries) + 1, offset=4 * entries.offset)
    data = entries.buffers()[2]
    start, end = int(offsets[0]), int(offsets[-1])
    return b"" if data is None else data.slice(start, end - start).to_pybytes()
