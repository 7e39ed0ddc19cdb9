"""The threads sending a run's subscribe calls (see subscriber.py): groups of up to 10 calls of
1,000 profiles come through a CallQueue in row order; each call Klaviyo refuses for some profiles is
sent again without them. What is done is tracked so that a run interrupted for time goes on after
the rows whose calls were all made, counting and reporting each row once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from shared.engine.batching import PartNames
from shared.engine.callqueue import Call, CallQueue
from shared.engine.report import Counts, RejectLine, RejectsFile
from shared.engine.spec import ExportSpec
from shared.klaviyo import MAX_SUBSCRIBE_PROFILES, InvalidPayload, KlaviyoClient, KlaviyoError
from shared.mapping import ConsentReader, Subscribers
from shared.privacy import redact
from shared.telemetry import carry_run_context

# Threads sending subscribe calls: a few, so that a call's round trip does not hold the pace below
# the limit; the rate limiter, not this number, sets the pace.
_THREADS = 3
# Groups held in memory (about 1 MB each) before they wait in the spool file.
_HELD_GROUPS = 4
_POINTER_PREFIX = "/data/attributes/profiles/data/"
STOPPED = "the run stopped before this row was subscribed"


@dataclass
class _Group:
    """What came of a queued group of calls: profiles subscribed, and the lines of those not."""

    subscribed: int = 0
    missed: list[RejectLine] = field(default_factory=list)


class _Progress:
    """How far the run's subscriptions are done, for an interrupted run's next invocation: groups are
    queued in row order, so every consenting row up to the last row of the last group done with all
    before it done too (`through`, a packed row) needs no call again. Earlier invocations' progress
    is the base."""

    def __init__(self, saved: dict[str, Any]) -> None:
        self.through: int = saved.get("through", -1)
        self.subscribed: int = saved.get("subscribed", 0)
        self.missed: list[RejectLine] = [RejectLine(*line) for line in saved.get("missed", [])]
        self._lock = threading.Lock()
        self._queued: list[int] = []  # each group's last packed row, by its number
        self._done: dict[int, _Group] = {}
        self._next = 0  # the first group not yet folded into through

    def queued(self, last_row: int) -> int:
        with self._lock:
            self._queued.append(last_row)
            return len(self._queued) - 1

    def done(self, number: int, group: _Group) -> bool:
        """Notes a group done; True when that moves `through` on (every group before it is done)."""
        with self._lock:
            self._done[number] = group
            return self._next in self._done

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            while self._next in self._done:
                group = self._done.pop(self._next)
                self.subscribed += group.subscribed
                self.missed += group.missed
                self.through = self._queued[self._next]
                self._next += 1
            missed = [list(line) for line in self.missed]
            return {"through": self.through, "subscribed": self.subscribed, "missed": missed}


class SubscribeCalls:
    """Sends the queued groups of subscribe calls in threads of their own (started with the first).
    Writes the counts subscribed and not_subscribed of what it sends, under the run's subscription
    lock; `error` is the first fatal answer (nothing more is sent after it)."""

    def __init__(
        self,
        client: KlaviyoClient | None,
        spec: ExportSpec,
        historical_import: bool,
        reader: ConsentReader,
        counts: Counts,
        rejects: RejectsFile,
        parts: PartNames,
        lock: threading.Lock,
    ) -> None:
        self.client, self.spec, self.historical_import, self.reader = client, spec, historical_import, reader
        self.counts, self.rejects, self.parts, self._lock = counts, rejects, parts, lock
        self.error: KlaviyoError | None = None
        self.progress = _Progress({})
        self.paused = False  # the run's time is up: queued calls are left for the next invocation
        self.cancelled: str | None = None  # why a sending thread found the run must stop
        self._abandoned = False  # the run failed: queued calls are not sent
        self._queue = CallQueue(_HELD_GROUPS)
        self._pool: ThreadPoolExecutor | None = None
        self._senders: list[Future[None]] = []
        self._advanced = threading.Event()  # this invocation moved progress.through on

    def resume(self, saved: dict[str, Any]) -> None:
        """Goes on from an earlier invocation's progress (its counts and not-subscribed lines)."""
        self.progress = _Progress(saved)
        with self._lock:
            self.counts.subscribed += self.progress.subscribed
            self.counts.not_subscribed += len(self.progress.missed)
        if self.progress.missed:
            self.rejects.add_many(self.progress.missed)

    def put(self, call: Call) -> None:
        """Queues a group of calls (up to 10,000 profiles, in row order)."""
        if self._pool is None:
            initializer = carry_run_context(self.spec.thread_initializer)
            self._pool = ThreadPoolExecutor(_THREADS, thread_name_prefix="subscribe", initializer=initializer)
            self._senders = [self._pool.submit(self._send_calls) for _ in range(_THREADS)]
        self._queue.put(call._replace(number=self.progress.queued(int(call.rows[-1]))))

    def finish(self, deadline: float | None = None) -> bool:
        """Waits until every queued call is made (True), or until `deadline` (a time.monotonic()),
        when the calls stop where they are for the next invocation (False: see pause)."""
        self._queue.close()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        _, waiting = wait(self._senders, timeout=timeout)
        if waiting:
            # Past the deadline: once this invocation has moved `through` on (so that every
            # invocation makes progress), the calls stop.
            while waiting and not self._advanced.wait(0.05):
                waiting = {sender for sender in waiting if not sender.done()}
            self.paused = bool(waiting)
        for sender in self._senders:
            sender.result()
        return not waiting

    def pause(self) -> dict[str, Any]:
        """Stops for an interruption (queued calls are left) and returns the progress to save."""
        self.paused = True
        self.finish()
        return self.progress.snapshot()

    def close(self) -> None:
        self._abandoned = True
        self._queue.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._queue.discard()

    def _send_calls(self) -> None:
        while not self.paused and (group := self._queue.get()) is not None:
            entries = self.reader.entries(group.profiles)
            outcome = _Group()
            for start in range(0, len(group.rows), MAX_SUBSCRIBE_PROFILES):
                if self.paused:
                    return  # the rest is left for the next invocation
                end = min(start + MAX_SUBSCRIBE_PROFILES, len(group.rows))
                self._send_call(slice_call(group, start, end), entries.slice(start, end - start), outcome)
            if self.progress.done(group.number, outcome):
                self._advanced.set()

    def _send_call(self, call: Call, entries: pa.BinaryArray, outcome: _Group) -> None:
        if self._abandoned:
            self._missed(call.rows, STOPPED, outcome)
        elif self.error is not None:
            reason = f"not subscribed: an earlier call failed: {redact(str(self.error))}"
            self._missed(call.rows, reason, outcome)
        elif stop := self.spec.stop_reason():
            self.cancelled = stop
            self._missed(call.rows, STOPPED, outcome)
        else:
            try:
                self._send(call, entries, outcome)
            except KlaviyoError as exc:
                if exc.fatal:
                    self.error = self.error or exc
                self._missed(call.rows, f"Klaviyo did not take the subscription: {redact(str(exc))}", outcome)

    def _send(self, call: Call, entries: pa.BinaryArray, outcome: _Group) -> None:
        """One call; the profiles Klaviyo's 400 names are not subscribed, the others sent again."""
        assert self.client is not None
        try:
            self.client.subscriptions.subscribe(
                self.spec.list_id, joined(entries), len(entries), self.historical_import
            )
        except InvalidPayload as exc:
            bad = _refused(exc, len(call.rows))
            if not bad:
                raise
            for index, reason in bad.items():
                self._missed(call.rows[[index]], reason, outcome)
            keep = np.flatnonzero(~np.isin(np.arange(len(call.rows)), list(bad)))
            if len(keep):
                self._send(Call(call.profiles.take(keep), call.rows[keep]), entries.take(pa.array(keep)), outcome)
            return
        with self._lock:
            self.counts.subscribed += len(call.rows)
        outcome.subscribed += len(call.rows)

    def _missed(self, rows: np.ndarray, reason: str, outcome: _Group) -> None:
        """Consenting rows a call did not subscribe (named by where they are: no identifier is kept)."""
        lines = []
        for packed in rows.tolist():
            part, number = self.parts.row_of(packed)
            lines.append(RejectLine(part, number, "", "not_subscribed", "", reason))
        with self._lock:
            self.counts.not_subscribed += len(lines)
        outcome.missed.extend(lines)
        self.rejects.add_many(lines)


def slice_call(call: Call, start: int, end: int) -> Call:
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


def joined(entries: pa.BinaryArray) -> bytes:
    """The entries' bytes one after the other (each ends with its comma), without a copy per entry."""
    offsets = np.frombuffer(entries.buffers()[1], dtype=np.int32, count=len(entries) + 1, offset=4 * entries.offset)
    data = entries.buffers()[2]
    start, end = int(offsets[0]), int(offsets[-1])
    return b"" if data is None else data.slice(start, end - start).to_pybytes()
